"""What the block scale (``mpg.block_scale``) reads under each object, by how the object moves.

Growing, shrinking and still look-alikes do not translate, so ``mpg.block_flow`` cannot tell
them apart. This runs ``mask_prior.block_scale`` (no weights) on the BEiT-3 inputs of synthetic
videos, frame t against frame t - gap, and reads the log scale and the evidence at the cell
under each object's centroid (objects of at least 20 pixels, every other frame), then prints
per motion kind their mean, spread and the share of positive log scales. An object that grows by
1.75 over 24 frames has log scale ln(1.75) * gap / 23 (0.146 at gap 6).

    .venv/bin/python scripts/probe_scale.py --seed 1000 --videos 40 --gap 6
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpg_sam2_ros.core.modeling.mask_prior import block_scale  # noqa: E402
from mpg_sam2_ros.core.pipeline import load_pipeline  # noqa: E402
from mpg_sam2_ros.training.datasets import ReferringClip  # noqa: E402
from mpg_sam2_ros.training.forward import make_batch  # noqa: E402
from mpg_sam2_ros.training.synthetic import generate_video  # noqa: E402


def measure(seed: int, videos: int, gap: int, min_pixels: int = 20) -> dict:
    """{motion kind: [(log scale, evidence), ...]} at each sampled object's centroid cell."""
    pipe = load_pipeline(None, [], None)  # only its preprocessing (BEiT-3 input size) is used
    model, tokenizer = pipe.model, pipe.tokenizer
    cell = model.config.beit3.patch_size
    values = defaultdict(list)
    for index in range(videos):
        video = generate_video(seed, index)
        t_len, h, w = video.labels.shape
        if t_len <= gap:
            raise ValueError(f"videos of {t_len} frames have no frame {gap} back")
        clip = ReferringClip(video=video.name, exp_id="", text="the object", exp_type=None,
                             frame_names=[str(f) for f in range(t_len)], frames=video.frames, masks=video.labels > 0)
        images = make_batch([clip], model, tokenizer).mm[0]
        with torch.no_grad():
            logscale, evidence = block_scale(images[gap:], images[:-gap], cell=cell)
        g = logscale.shape[-1]
        for obj in video.objects:
            for t in range(gap, t_len, 2):
                here = video.labels[t] == obj.oid
                if here.sum() < min_pixels:
                    continue
                ys, xs = np.nonzero(here)
                cy, cx = int(ys.mean() / h * g), int(xs.mean() / w * g)
                values[obj.motion].append((float(logscale[t - gap, 0, cy, cx]), float(evidence[t - gap, 0, cy, cx])))
    return values


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--gap", type=int, default=6)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    values = measure(args.seed, args.videos, args.gap)
    out = {"seed": args.seed, "videos": args.videos, "gap": args.gap, "by_motion": {}}
    for kind, rows in sorted(values.items()):
        v = np.array(rows)
        out["by_motion"][kind] = {"samples": len(v), "log_scale_mean": round(float(v[:, 0].mean()), 4),
                                  "log_scale_sd": round(float(v[:, 0].std()), 4),
                                  "positive_share": round(float((v[:, 0] > 0).mean()), 3),
                                  "evidence_mean": round(float(v[:, 1].mean()), 4)}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
