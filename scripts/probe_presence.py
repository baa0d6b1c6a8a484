"""How well the object score tells absent frames from present ones, and what a stricter
presence threshold would do to J&F.

Runs the streaming engine on held-out synthetic videos (as ``mpg-sam2 bench-accuracy``) and
keeps, for every expression and frame, the presence probability sigmoid(object-score logit), the
ground truth's presence, and J and F of the predicted mask and of an empty one. A threshold t
then blanks the frames whose probability is below t (the engine already blanks those at or
below 0.5: SAM 2 empties a mask whose logit is <= 0), and J&F, per type, the false-positive
rate on absent frames and the miss rate on present frames are recomputed exactly, without
running the model again. Also prints the ROC AUC of the probability for "present".

``--write`` calibrates the checkpoint: the highest threshold of the grid whose J&F is within
``--tolerance`` points of the J&F at 0.5 goes into the file's model config
(``presence_threshold``, the default of the engine, ``segment``, ``bench-accuracy`` and the
node), with how it was chosen under the metadata key ``presence_calibration``. Calibrate on a
seed you will not report.

  .venv/bin/python scripts/probe_presence.py --seed 555 --videos 30 --out presence.json
  .venv/bin/python scripts/probe_presence.py --checkpoint runs/x/model.safetensors --seed 555 --write
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mpg_sam2_ros.core.evaluation import boundary_f, region_similarity  # noqa: E402
from mpg_sam2_ros.core.pipeline import load_pipeline  # noqa: E402
from mpg_sam2_ros.core.segment import run_streaming  # noqa: E402
from mpg_sam2_ros.training.datasets import RefYouTubeVOS  # noqa: E402
from mpg_sam2_ros.training.synthetic import EXPRESSION_TYPES, SyntheticConfig, write_split  # noqa: E402


def collect(checkpoint: str | None, seed: int, videos: int, window: int,
            synthetic: SyntheticConfig = SyntheticConfig()) -> list[dict]:
    """One row per expression: type, and per frame: prob, present, J/F of the mask and of an empty one."""
    pipe = load_pipeline(None, (), checkpoint)
    model, tokenizer = pipe.model.eval(), pipe.tokenizer
    rows = []
    with tempfile.TemporaryDirectory(prefix="probe_presence_") as tmp:
        write_split(Path(tmp), seed=seed, videos=videos, cfg=synthetic)
        split = RefYouTubeVOS(Path(tmp))
        for video in split.videos:
            if not video.expressions:
                continue
            indices = list(range(len(video.frame_names)))
            frames = list(split.read_frames(video, indices))
            # the engine's gate at 0.5 (SAM 2's rule), whatever threshold the checkpoint carries
            res = run_streaming(model, tokenizer, frames, [e.text for e in video.expressions], window=window,
                                policy={"presence_threshold": 0.5})
            for k, expr in enumerate(video.expressions):
                gt = split.expression_masks(expr, indices)
                empty = np.zeros_like(gt[0], dtype=bool)
                rows.append({
                    "type": expr.exp_type,
                    "prob": res.scores[k].astype(float),
                    "present": gt.reshape(len(indices), -1).any(1),
                    "predicted": res.masks[k].reshape(len(indices), -1).any(1),
                    "jf": np.array([(region_similarity(p, g) + boundary_f(p, g)) / 2 for p, g in zip(res.masks[k], gt)]),
                    "jf_empty": np.array([(region_similarity(empty, g) + boundary_f(empty, g)) / 2 for g in gt]),
                })
    return rows


def hold(prob: np.ndarray, t: float, keep: float) -> np.ndarray:
    """Hysteresis: shown where the probability exceeds ``t``, or exceeds ``keep`` (< t) on a
    frame right after a shown one."""
    shown, out = False, np.zeros(len(prob), dtype=bool)
    for i, p in enumerate(prob):
        shown = bool(p > t or (shown and p > keep))
        out[i] = shown
    return out


def at_threshold(rows: list[dict], t: float, keep_t: float | None = None) -> dict:
    """J&F, per type, false-positive and miss rates with the gate at ``t`` (with ``keep_t``: the
    hysteresis of ``hold``, which the engine does not have; it asks whether it would help)."""
    per_type: dict[str, list[float]] = {x: [] for x in EXPRESSION_TYPES}
    overall, fp, absent, missed, present = [], 0, 0, 0, 0
    for r in rows:
        # the engine's rule: shown where the probability exceeds t (or the hold rule, asked)
        keep = r["prob"] > t if keep_t is None else hold(r["prob"], t, keep_t)
        jf = np.where(keep, r["jf"], r["jf_empty"]).mean()
        overall.append(jf)
        per_type.setdefault(r["type"], []).append(jf)
        shown = r["predicted"] & keep
        fp += int((~r["present"] & shown).sum())
        absent += int((~r["present"]).sum())
        missed += int((r["present"] & ~shown).sum())
        present += int(r["present"].sum())
    return {"threshold": t, **({"keep": keep_t} if keep_t is not None else {}), "J&F": round(100 * float(np.mean(overall)), 2),
            "by_type": {k: round(100 * float(np.mean(v)), 2) for k, v in per_type.items() if v},
            "false_positive_rate": round(fp / max(1, absent), 4), "missed_rate": round(missed / max(1, present), 4)}


def auc(rows: list[dict]) -> float:
    """P(prob of a present frame > prob of an absent one), ties counted half."""
    prob = np.concatenate([r["prob"] for r in rows])
    present = np.concatenate([r["present"] for r in rows])
    pos, neg = prob[present], prob[~present]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    allp = np.concatenate([pos, neg])
    for v in np.unique(allp):  # average ranks of ties
        same = allp == v
        ranks[same] = ranks[same].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def calibrate(grid: list[dict], tolerance: float) -> dict:
    """The entry of the highest threshold whose J&F is within ``tolerance`` of the J&F at 0.5."""
    base = next((r for r in grid if r["threshold"] == 0.5), None)
    if base is None:
        raise SystemExit("probe_presence: --write needs 0.5 in --thresholds (the reference)")
    return max((r for r in grid if r["J&F"] >= base["J&F"] - tolerance), key=lambda r: r["threshold"])


def write_calibration(checkpoint: str, result: dict, tolerance: float) -> dict:
    """Store the calibrated threshold in ``checkpoint``'s model config (see the module docstring)."""
    import dataclasses

    from mpg_sam2_ros.core.checkpoint import read_checkpoint_config, set_checkpoint_config

    grid = result["thresholds"]
    pick, base = calibrate(grid, tolerance), next(r for r in grid if r["threshold"] == 0.5)
    cfg = read_checkpoint_config(checkpoint)
    record = {"presence_threshold": pick["threshold"],
              "rule": f"highest of {[r['threshold'] for r in grid]} with J&F within {tolerance} of J&F at 0.5",
              "data": f"synthetic seed {result['seed']}, {result['videos']} videos, window {result['window']}",
              "at_0.5": {k: base[k] for k in ("J&F", "false_positive_rate", "missed_rate")},
              "chosen": {k: pick[k] for k in ("J&F", "false_positive_rate", "missed_rate")},
              "auc_present": result["auc_present"]}
    set_checkpoint_config(checkpoint, dataclasses.replace(cfg, presence_threshold=pick["threshold"]),
                          extra={"presence_calibration": json.dumps(record)})
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="weights (default: the bundled model)")
    ap.add_argument("--seed", type=int, default=555)
    ap.add_argument("--videos", type=int, default=30)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--frames", type=int, default=SyntheticConfig.frames, help="frames per video (200: long streams)")
    ap.add_argument("--thresholds", type=float, nargs="+",
                    default=[0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99])
    ap.add_argument("--keep", type=float, default=None,
                    help="also score hysteresis: each threshold T above KEEP keeps a shown object shown while its "
                         "probability stays above KEEP (not an engine policy: it asks whether one would help)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--write", action="store_true",
                    help="store the calibrated threshold in --checkpoint's model config (needs --checkpoint)")
    ap.add_argument("--tolerance", type=float, default=0.5, help="J&F points a calibrated threshold may cost")
    args = ap.parse_args()
    if args.write and not args.checkpoint:
        ap.error("--write needs --checkpoint (the file to calibrate)")
    if args.write:  # before the long run: the file must be ours (the config lives in its metadata)
        from mpg_sam2_ros.core.checkpoint import CheckpointError, read_checkpoint_config

        try:
            read_checkpoint_config(args.checkpoint)
        except CheckpointError as exc:
            ap.error(f"--write: {exc}")
    rows = collect(args.checkpoint, args.seed, args.videos, args.window, SyntheticConfig(frames=args.frames))
    result = {"checkpoint": args.checkpoint or "bundled", "seed": args.seed, "videos": args.videos, "frames": args.frames,
              "window": args.window, "expressions": len(rows), "auc_present": round(auc(rows), 4),
              "thresholds": [at_threshold(rows, t) for t in args.thresholds]}
    if args.keep is not None:
        result["hysteresis"] = [at_threshold(rows, t, args.keep) for t in args.thresholds if t > args.keep]
    if args.write:
        result["calibration"] = write_calibration(args.checkpoint, result, args.tolerance)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
