"""Where do the masks of one expression type go: on the target, on its look-alike, or on both?

``probe_prior.py`` asks whether the MPG's prior (Eq. 3) points at the named object; this asks the
same of the masks the streaming engine returns. For each expression of the type on the synthetic
videos of a seed, every frame's mask is compared with the target's and with its look-alikes'
(the generator's distractors: for motion, the same shape and colour moving otherwise). Prints JSON, for all frames and for the first 4 / the rest: mean IoU with the target
and with the look-alikes, the median mask area over the target's, and how often the mask covers
more than half of the target, of a look-alike, or of both.

    .venv/bin/python scripts/probe_twins.py --seed 777 --videos 10 --type motion
"""

from __future__ import annotations

import argparse
import json

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
    from mpg_sam2_ros.training.synthetic import generate_video

    pipe = load_pipeline(None, [], args.checkpoint)
    rows = []  # frame, IoU target, IoU look-alikes, area / target's, covered part of target, of look-alikes
    for index in range(args.videos):
        video = generate_video(args.seed, index)  # what bench-accuracy's split of the seed holds
        exprs = [e for e in video.expressions if e.type == args.type and e.distractors]
        if not exprs:
            continue
        res = run_streaming(pipe.model, pipe.tokenizer, list(video.frames), [e.text for e in exprs], window=args.window)
        for k, expr in enumerate(exprs):
            for i, label in enumerate(video.labels):
                mask, tgt, twin = res.masks[k, i], label == expr.target, np.isin(label, expr.distractors)
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
