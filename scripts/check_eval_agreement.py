"""Check ``mpg-sam2 eval`` against the official DAVIS 2017 metric code on random inputs.

The official code is not a dependency of this package; point this script at a checkout of
davis2017-evaluation (it needs numpy, opencv and scikit-image importable):

    python scripts/check_eval_agreement.py --davis-root /path/to/davis2017-evaluation [--cases 300]

It writes random prediction/ground-truth folders (blobs, noise, thin lines, single pixels,
empty and full masks, masks touching the border, perturbed copies of the ground truth, sizes
from 1x1 to 480x854), runs our folder evaluation on them, recomputes every frame with the
official ``db_eval_iou`` / ``db_eval_boundary`` (averaged over frames, then sequences, as the
Ref-YouTube-VOS and MeViS evaluations do) and prints the largest differences as JSON on the
0-100 scale. Exits 1 if any differs by more than --tolerance (0.01).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np


def random_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = rng.integers(0, 8)
    m = np.zeros((h, w), np.uint8)
    if kind == 0:
        return m
    if kind == 1:
        return np.ones((h, w), np.uint8)
    if kind == 2:
        return (rng.random((h, w)) < rng.uniform(0.01, 0.6)).astype(np.uint8)
    if kind == 3:
        m[rng.integers(0, h), rng.integers(0, w)] = 1
        return m
    if kind == 4:  # thin lines
        for _ in range(rng.integers(1, 4)):
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(m, p1, p2, 1, 1)
        return m
    for _ in range(rng.integers(1, 5)):  # ellipses and rectangles, possibly cut by the border
        cx, cy = int(rng.integers(-w // 4, w + w // 4 + 1)), int(rng.integers(-h // 4, h + h // 4 + 1))
        ax, ay = int(rng.integers(1, max(2, w // 2))), int(rng.integers(1, max(2, h // 2)))
        if rng.random() < 0.5:
            cv2.ellipse(m, (cx, cy), (ax, ay), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        else:
            cv2.rectangle(m, (cx - ax, cy - ay), (cx + ax, cy + ay), 1, -1)
    return m


def perturb(rng: np.random.Generator, gt: np.ndarray) -> np.ndarray:
    kind = rng.integers(0, 5)
    if kind == 0:
        return gt.copy()
    if kind == 1:
        dy, dx = rng.integers(-6, 7, size=2)
        return np.roll(np.roll(gt, int(dy), 0), int(dx), 1)
    if kind == 2:
        k = np.ones((int(rng.integers(2, 6)),) * 2, np.uint8)
        return cv2.dilate(gt, k) if rng.random() < 0.5 else cv2.erode(gt, k)
    if kind == 3:
        flip = rng.random(gt.shape) < 0.02
        return np.where(flip, 1 - gt, gt).astype(np.uint8)
    return random_mask(rng, *gt.shape)


SIZES = [(1, 1), (1, 7), (5, 1), (3, 3), (9, 16), (24, 32), (64, 48), (120, 160), (240, 426), (480, 854)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--davis-root", required=True, help="checkout of davis2017-evaluation (contains davis2017/metrics.py)")
    ap.add_argument("--cases", type=int, default=300, help="random sequences")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=0.01, help="largest allowed difference on the 0-100 scale")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(args.davis_root).resolve()))
    if not hasattr(np, "bool"):  # the official code uses np.bool (removed in numpy 1.24-1.26)
        np.bool = bool
    from davis2017.metrics import db_eval_boundary, db_eval_iou

    from mpg_sam2_ros.core.evaluation import evaluate_folders

    rng = np.random.default_rng(args.seed)
    worst = {"frame_J": 0.0, "frame_F": 0.0, "seq_J": 0.0, "seq_F": 0.0, "J": 0.0, "F": 0.0, "J&F": 0.0}
    results = {}
    for bound_th in (0.008, 0.02, 3):
        with tempfile.TemporaryDirectory() as tmp:
            pred_root, gt_root = Path(tmp, "pred"), Path(tmp, "gt")
            official: dict[str, tuple[float, float]] = {}
            frames = 0
            for c in range(args.cases):
                h, w = SIZES[rng.integers(0, len(SIZES))]
                t = int(rng.integers(1, 6))
                gts = np.stack([random_mask(rng, h, w) for _ in range(t)])
                preds = np.stack([perturb(rng, g) for g in gts])
                seq = f"video_{c:04d}/{int(rng.integers(0, 4))}"
                for i in range(t):
                    for root, arr in ((pred_root, preds), (gt_root, gts)):
                        (root / seq).mkdir(parents=True, exist_ok=True)
                        cv2.imwrite(str(root / seq / f"{i:05d}.png"), arr[i] * 255)
                j = np.atleast_1d(db_eval_iou(gts, preds))
                f = np.atleast_1d(db_eval_boundary(gts, preds, bound_th=bound_th))
                official[seq] = (100 * float(j.mean()), 100 * float(f.mean()))
                frames += t
            ours = evaluate_folders(pred_root, gt_root, bound_th=bound_th).as_dict()
            for seq, (oj, of) in official.items():
                s = ours["per_sequence"][seq]
                worst["seq_J"] = max(worst["seq_J"], abs(s["J"] - oj))
                worst["seq_F"] = max(worst["seq_F"], abs(s["F"] - of))
            oj = float(np.mean([v[0] for v in official.values()]))
            of = float(np.mean([v[1] for v in official.values()]))
            worst["J"] = max(worst["J"], abs(ours["J"] - oj))
            worst["F"] = max(worst["F"], abs(ours["F"] - of))
            worst["J&F"] = max(worst["J&F"], abs(ours["J&F"] - (oj + of) / 2))
            results[str(bound_th)] = {"sequences": len(official), "frames": frames,
                                      "ours": {k: ours[k] for k in ("J", "F", "J&F")},
                                      "official": {"J": round(oj, 4), "F": round(of, 4), "J&F": round((oj + of) / 2, 4)}}
    # per frame, directly on arrays (no PNG round trip)
    from mpg_sam2_ros.core.evaluation import boundary_f, region_similarity

    for _ in range(args.cases * 3):
        h, w = SIZES[rng.integers(0, len(SIZES))]
        g = random_mask(rng, h, w)
        p = perturb(rng, g)
        worst["frame_J"] = max(worst["frame_J"], abs(100 * region_similarity(p, g) - 100 * float(db_eval_iou(g, p))))
        worst["frame_F"] = max(worst["frame_F"], abs(100 * boundary_f(p, g) - 100 * float(db_eval_boundary(g, p))))
    agree = max(worst.values()) <= args.tolerance
    print(json.dumps({"bound_th": results, "max_abs_diff": {k: round(v, 6) for k, v in worst.items()},
                      "tolerance": args.tolerance, "agree": agree}, indent=2))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
