"""J&F evaluation of mask folders (``mpg-sam2 eval``), with the DAVIS 2017 definitions.

- J (region similarity): |P ∩ G| / |P ∪ G|, and 1 when both masks are empty.
- F (contour accuracy): the boundary F-measure. Each mask's boundary is a one-pixel map
  (a pixel is on it when it differs from its right, lower or lower-right neighbour, outside
  the image counting as background; the last row compares only to the right, the last column
  only downwards, the corner pixel is never on it). A boundary pixel of one mask matches when
  the other mask's boundary, dilated by a disk of radius ceil(0.008 · image diagonal), covers
  it. Precision = matched predicted boundary / predicted boundary, recall = matched
  ground-truth boundary / ground-truth boundary, F = 2PR / (P + R); an empty boundary on one
  side gives (P, R) = (1, 0) or (0, 1), both empty gives F = 1.

Both are averaged over the frames of a sequence, then over sequences, as the Ref-YouTube-VOS
and MeViS evaluations do, and reported on a 0-100 scale. ``J&F`` is the mean of the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

MASK_SUFFIXES = (".png",)


class EvalError(ValueError):
    """The folders cannot be evaluated at all (no ground truth found, unreadable layout)."""


# ----- per-frame metrics ---------------------------------------------------------------
def region_similarity(pred: np.ndarray, gt: np.ndarray) -> float:
    """J for one frame: intersection over union of two boolean masks (1 if both empty)."""
    pred, gt = _pair(pred, gt)
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & gt) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a boolean mask (see the module docstring), bool [H, W]."""
    m = np.asarray(mask, dtype=bool)
    right = np.zeros_like(m)
    right[:, :-1] = m[:, 1:]
    down = np.zeros_like(m)
    down[:-1, :] = m[1:, :]
    diag = np.zeros_like(m)
    diag[:-1, :-1] = m[1:, 1:]
    b = (m != right) | (m != down) | (m != diag)
    b[-1, :] = m[-1, :] != right[-1, :]
    b[:, -1] = m[:, -1] != down[:, -1]
    b[-1, -1] = False
    return b


def disk(radius: int) -> np.ndarray:
    """uint8 disk structuring element: offsets (dy, dx) with dy² + dx² <= radius²."""
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy * yy + xx * xx <= r * r).astype(np.uint8)


def boundary_tolerance(shape: tuple[int, int], bound_th: float = 0.008) -> int:
    """Dilation radius in pixels: ``bound_th`` itself if >= 1, else ceil(bound_th · diagonal)."""
    if bound_th >= 1:
        return int(math.ceil(bound_th))
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    """F for one frame: boundary precision/recall with disk tolerance (DAVIS 2017)."""
    pred, gt = _pair(pred, gt)
    pb, gb = boundary_map(pred), boundary_map(gt)
    n_pred, n_gt = int(np.count_nonzero(pb)), int(np.count_nonzero(gb))
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0  # (P, R) = (1, 0) or (0, 1)
    kernel = disk(boundary_tolerance(pred.shape, bound_th))
    pred_dil = cv2.dilate(pb.astype(np.uint8), kernel).astype(bool)
    gt_dil = cv2.dilate(gb.astype(np.uint8), kernel).astype(bool)
    precision = np.count_nonzero(pb & gt_dil) / n_pred
    recall = np.count_nonzero(gb & pred_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.ndim != 2 or gt.ndim != 2:
        raise ValueError(f"masks must be 2-D, got {pred.shape} and {gt.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"mask sizes differ: prediction {pred.shape}, ground truth {gt.shape}")
    return pred.astype(bool), gt.astype(bool)


# ----- folders -------------------------------------------------------------------------
def read_mask(path: str | Path) -> np.ndarray:
    """A mask PNG as bool [H, W]: nonzero = foreground. Palette PNGs are read as their indices
    (so index 0 is background whatever its colour); colour PNGs are foreground where any
    colour channel is nonzero (alpha ignored). ``ValueError`` if it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            arr = np.array(img)
    except (OSError, UnidentifiedImageError) as exc:
        raise ValueError(f"cannot read mask {path}: {exc}") from exc
    if arr.ndim == 3:
        arr = arr[..., :3].any(axis=-1) if arr.shape[-1] in (3, 4) else arr.any(axis=-1)
    if arr.ndim != 2:
        raise ValueError(f"mask {path} has shape {arr.shape}")
    return arr != 0


def find_sequences(root: str | Path) -> dict[str, dict[str, Path]]:
    """Every folder under ``root`` that holds mask PNGs is a sequence, keyed by its path
    relative to ``root`` (``video`` or ``video/exp_id``); frames are keyed by file stem."""
    root = Path(root)
    if not root.is_dir():
        raise EvalError(f"not a folder: {root}")
    seqs: dict[str, dict[str, Path]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in MASK_SUFFIXES:
            key = path.parent.relative_to(root).as_posix()
            seqs.setdefault(key, {})[path.stem] = path
    return seqs


@dataclass
class SequenceScore:
    J: float
    F: float
    frames: int

    def as_dict(self) -> dict:
        return {"J": round(100 * self.J, 4), "F": round(100 * self.F, 4),
                "J&F": round(50 * (self.J + self.F), 4), "frames": self.frames}


def score_sequence(preds: Iterable[np.ndarray], gts: Iterable[np.ndarray], *, bound_th: float = 0.008) -> SequenceScore:
    """J and F of one sequence given as arrays (bool [H, W] per frame), averaged over frames:
    what ``evaluate_folders`` computes for one folder."""
    js, fs = [], []
    for pred, gt in zip(preds, gts, strict=True):
        js.append(region_similarity(pred, gt))
        fs.append(boundary_f(pred, gt, bound_th))
    if not js:
        raise ValueError("a sequence needs at least one frame")
    return SequenceScore(J=float(np.mean(js)), F=float(np.mean(fs)), frames=len(js))


@dataclass
class EvalReport:
    """Scores and every problem met. Missing predictions (sequences, frames, unreadable or
    wrong-size files) are scored as empty masks, the usual penalty; predicted frames or
    sequences without ground truth are not scored; unreadable ground truth is not scored.
    All of them are listed in ``problems``."""

    sequences: dict[str, SequenceScore] = field(default_factory=dict)
    problems: dict[str, object] = field(default_factory=dict)

    @property
    def J(self) -> float:
        return float(np.mean([s.J for s in self.sequences.values()])) if self.sequences else float("nan")

    @property
    def F(self) -> float:
        return float(np.mean([s.F for s in self.sequences.values()])) if self.sequences else float("nan")

    def problem_count(self) -> int:
        return sum(len(v) for v in self.problems.values())

    def as_dict(self) -> dict:
        return {
            "J": round(100 * self.J, 4),
            "F": round(100 * self.F, 4),
            "J&F": round(50 * (self.J + self.F), 4),
            "sequences": len(self.sequences),
            "frames": sum(s.frames for s in self.sequences.values()),
            "per_sequence": {k: s.as_dict() for k, s in self.sequences.items()},
            "problems": self.problems,
        }


def evaluate_folders(pred_dir: str | Path, gt_dir: str | Path, *, bound_th: float = 0.008,
                     progress: Callable[[Iterable, int], Iterable] | None = None) -> EvalReport:
    """J and F of every ground-truth sequence under ``gt_dir`` against ``pred_dir``
    (same relative folder, frames matched by file name). ``progress(iterable, total)``
    wraps the loop over sequences (e.g. ``tqdm``)."""
    gt_seqs = find_sequences(gt_dir)
    if not gt_seqs:
        raise EvalError(f"no ground-truth masks (*.png) under {gt_dir}")
    pred_seqs = find_sequences(pred_dir)
    report = EvalReport()
    problems: dict[str, list] = {
        "missing_sequences": [], "extra_sequences": sorted(set(pred_seqs) - set(gt_seqs)),
        "missing_frames": [], "extra_frames": [], "size_mismatch": [], "unreadable": [],
    }
    items: Iterable = gt_seqs.items()
    if progress is not None:
        items = progress(items, len(gt_seqs))
    for seq, gt_frames in items:
        pred_frames = pred_seqs.get(seq)
        if pred_frames is None:
            problems["missing_sequences"].append(seq)
            pred_frames = {}
        problems["extra_frames"] += [f"{seq}/{n}" for n in sorted(set(pred_frames) - set(gt_frames))]
        js, fs = [], []
        for name, gt_path in gt_frames.items():
            try:
                gt = read_mask(gt_path)
            except ValueError as exc:
                problems["unreadable"].append(f"ground truth {seq}/{name}: {exc}")
                continue
            pred = np.zeros_like(gt)
            if name not in pred_frames:
                if seq in pred_seqs:
                    problems["missing_frames"].append(f"{seq}/{name}")
            else:
                try:
                    p = read_mask(pred_frames[name])
                except ValueError as exc:
                    problems["unreadable"].append(f"prediction {seq}/{name}: {exc}")
                else:
                    if p.shape != gt.shape:
                        problems["size_mismatch"].append(
                            {"frame": f"{seq}/{name}", "pred": list(p.shape), "gt": list(gt.shape)})
                    else:
                        pred = p
            js.append(region_similarity(pred, gt))
            fs.append(boundary_f(pred, gt, bound_th))
        if js:
            report.sequences[seq] = SequenceScore(J=float(np.mean(js)), F=float(np.mean(fs)), frames=len(js))
    report.problems = {k: v for k, v in problems.items() if v}
    if not report.sequences:
        raise EvalError(f"no readable ground-truth frame under {gt_dir}")
    return report
