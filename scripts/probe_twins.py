"""Where do the masks of one expression type go: on the target, on its look-alike, or on both?

``probe_prior.py`` asks whether the MPG's prior (Eq. 3) points at the named object; this asks the
same of the masks the streaming engine returns. For each expression of the type on the synthetic
videos of a seed, every frame's mask is compared with the target's and with its look-alikes'
(the other objects of the same category: for motion, the same shape and colour moving
otherwise). Prints JSON, for all frames and for the first 4 / the rest: mean IoU with the target
and with the look-alikes, the median mask area over the target's, and how often the mask covers
more than half of the target, of a look-alike, or of both.

    .venv/bin/python scripts/probe_twins.py --seed 777 --videos 10 --type motion
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="weights (default: the bundled model)")
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--videos", type=int, default=10)
    ap.add_argument("--type", default="motion", choices=("appearance", "spatial", "motion"))
    ap.add_argument("--window", type=int, default=8)
    args = ap.parse_args()

    from mpg_sam2_ros.core.pipeline import load_pipeline
    from mpg_sam2_ros.core.segment import run_streaming
    from mpg_sam2_ros.training.datasets import RefYouTubeVOS
    from mpg_sam2_ros.training.synthetic import SyntheticConfig, write_split

    pipe = load_pipeline(None, [], args.checkpoint)
    rows = []  # frame, IoU target, IoU look-alikes, area / target's, covered part of target, of look-alikes
    with tempfile.TemporaryDirectory(prefix="probe_twins_") as root:
        write_split(root, seed=args.seed, videos=args.videos, cfg=SyntheticConfig())
        split = RefYouTubeVOS(root)
        meta = json.loads((split.root / "meta.json").read_text())["videos"]
        for video in split.videos:
            exprs = [e for e in video.expressions if e.exp_type == args.type]
            if not exprs:
                continue
            indices = list(range(len(video.frame_names)))
            frames = list(split.read_frames(video, indices))
            labels = np.stack([split.read_label(video, i) for i in indices])
            res = run_streaming(pipe.model, pipe.tokenizer, frames, [e.text for e in exprs], window=args.window)
            objects = meta[video.video]["objects"]
            for k, expr in enumerate(exprs):
                target = expr.obj_ids[0]
                twins = [int(o) for o, d in objects.items()
                         if int(o) != target and d["category"] == objects[str(target)]["category"]]
                if not twins:
                    continue
                for i in indices:
                    mask, tgt, twin = res.masks[k, i], labels[i] == target, np.isin(labels[i], twins)
                    if not tgt.any() or not twin.any():
                        continue
                    rows.append((i, _iou(mask, tgt), _iou(mask, twin), mask.sum() / tgt.sum(),
                                 (mask & tgt).sum() / tgt.sum(), (mask & twin).sum() / twin.sum()))
    r = np.array(rows, float).reshape(-1, 6)
    out = {"checkpoint": args.checkpoint or "bundled", "seed": args.seed, "videos": args.videos, "type": args.type,
           "window": args.window}
    for name, sel in (("all_frames", r[:, 0] >= 0), ("frames_0_3", r[:, 0] < 4), ("frames_4_on", r[:, 0] >= 4)):
        x = r[sel]
        out[name] = {
            "frames": int(len(x)),
            "iou_target": round(float(x[:, 1].mean()), 3), "iou_lookalike": round(float(x[:, 2].mean()), 3),
            "area_over_target_median": round(float(np.median(x[:, 3])), 2),
            "covers_target": round(float((x[:, 4] > 0.5).mean()), 3),
            "covers_lookalike": round(float((x[:, 5] > 0.5).mean()), 3),
            "covers_both": round(float(((x[:, 4] > 0.5) & (x[:, 5] > 0.5)).mean()), 3),
        } if len(x) else {"frames": 0}
    print(json.dumps(out))
    return 0


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


if __name__ == "__main__":
    raise SystemExit(main())
