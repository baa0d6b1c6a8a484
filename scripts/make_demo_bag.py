"""Write the bundled demo input: assets/demo/ = a ROS 2 bag (mcap, JPEG CompressedImage at 12 Hz,
10 s) of a held-out synthetic video, ground-truth masks per expression named by header stamp,
and demo.json (the two commands: a motion expression and an appearance or spatial one).

    .venv/bin/python scripts/make_demo_bag.py [--out assets/demo] [--seed 20261121]

Deterministic: the same seed gives the same video (the generator depends only on seed and
index); the video is the first of the seed where both targets stay visible in >= 90 % of the
frames, have different colours, and the scene has at least three colours. The seed is not one the training recipes use (1000) or bench-accuracy's defaults.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mpg_sam2_ros.core.io import write_mask  # noqa: E402
from mpg_sam2_ros.replay.bags import stamp_name, write_image_bag  # noqa: E402
from mpg_sam2_ros.training.synthetic import SyntheticConfig, generate_video  # noqa: E402

RATE_HZ, FRAMES, START_NS = 12.0, 120, 1_763_700_000 * 10**9


def pick(seed: int, cfg: SyntheticConfig, max_index: int = 200):
    for index in range(max_index):
        v = generate_video(seed, index, cfg)
        visible = {e.text: float(np.mean([(lab == e.target).any() for lab in v.labels])) for e in v.expressions}
        motion = [e for e in v.expressions if e.type == "motion" and visible[e.text] >= 0.9 and "still" not in e.text]
        other = [e for e in v.expressions if e.type in ("appearance", "spatial") and visible[e.text] >= 0.9]
        color = {o.oid: o.color for o in v.objects}
        pairs = [(m, o) for m in motion for o in other if color[m.target] != color[o.target]]
        if pairs and len(set(color.values())) >= 3:  # something to look at: several colours
            return index, v, list(pairs[0])
    raise SystemExit(f"no video of seed {seed} fits in {max_index} tries")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "assets" / "demo"))
    ap.add_argument("--seed", type=int, default=20261121)
    args = ap.parse_args()
    cfg = SyntheticConfig(frames=FRAMES)
    index, video, exprs = pick(args.seed, cfg)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_image_bag(out / "bag", list(video.frames), rate_hz=RATE_HZ, storage="mcap", topic="/camera/image_raw/compressed",
                    compressed="jpeg", start_ns=START_NS, frame_id="camera")
    for i, lab in enumerate(video.labels):
        ns = START_NS + int(round(i * 1e9 / RATE_HZ))
        for k, e in enumerate(exprs):
            write_mask(out / "gt" / f"object_{k}" / f"{stamp_name((ns // 10**9, ns % 10**9))}.png", lab == e.target)
    meta = {
        "texts": [e.text for e in exprs], "types": [e.type for e in exprs],
        "image_topic": "/camera/image_raw/compressed", "rate_hz": RATE_HZ, "frames": FRAMES,
        "size": [cfg.width, cfg.height], "source": {"generator_seed": args.seed, "video_index": index},
        "made_by": "scripts/make_demo_bag.py",
    }
    (out / "demo.json").write_text(json.dumps(meta, indent=2) + "\n")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(json.dumps({**meta, "bytes": size}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
