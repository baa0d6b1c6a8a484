"""Ref-YouTube-VOS / MeViS submissions (``mpg-sam2 submit``): the offline runner on every
video of a split, masks written as ``Annotations/<video>/<exp_id>/<frame>.png`` and zipped.

A split is described by ``meta_expressions.json``::

    {"videos": {"<video>": {"expressions": {"<exp_id>": {"exp": "the dog ..."}, ...},
                            "frames": ["00000", "00005", ...]}}}

with the frames in ``JPEGImages/<video>/<frame>.jpg``. All expressions of a video are decoded
together (one SAM 2 encoding per frame). Masks are 0/255 PNGs at the frame size, which both
evaluation servers read as foreground where nonzero.
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .inference.offline import OfflineRunner
from .io import IMAGE_SUFFIXES, read_frame, write_mask
from .pipeline import load_pipeline
from .preprocess import FrameError
from .text import TextError

log = logging.getLogger(__name__)


@dataclass
class VideoMeta:
    frames: list[str]
    expressions: dict[str, str]  # exp_id -> referring expression


def read_meta_expressions(path: str | Path) -> dict[str, VideoMeta]:
    """Parse a ``meta_expressions.json``; ``ValueError`` naming the first malformed entry."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"meta expressions not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from exc
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, dict):
        raise ValueError(f"{path}: expected an object with a 'videos' object")
    out = {}
    for vid, entry in videos.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("frames"), list) or not isinstance(entry.get("expressions"), dict):
            raise ValueError(f"{path}: video {vid!r} needs 'frames' (list) and 'expressions' (object)")
        exps = {}
        for exp_id, exp in entry["expressions"].items():
            if not isinstance(exp, dict) or "exp" not in exp:
                raise ValueError(f"{path}: video {vid!r} expression {exp_id!r} has no 'exp'")
            exps[str(exp_id)] = exp["exp"]
        out[vid] = VideoMeta(frames=[str(f) for f in entry["frames"]], expressions=exps)
    return out


class SubmissionWriter:
    """Writes ``<root>/Annotations/<video>/<exp_id>/<frame>.png`` and zips the tree."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.annotations = self.root / "Annotations"

    def write(self, video: str, exp_id: str, frames: Sequence[str], masks: np.ndarray) -> None:
        """masks: bool [T, H, W], one per frame name."""
        if len(frames) != len(masks):
            raise ValueError(f"{video}/{exp_id}: {len(masks)} masks for {len(frames)} frames")
        for name, mask in zip(frames, masks):
            write_mask(self.annotations / video / exp_id / f"{name}.png", mask)

    def zip(self, path: str | Path | None = None) -> Path:
        """Zip ``Annotations/`` (entries named ``Annotations/...``), stored uncompressed: the PNGs
        are compressed already."""
        path = Path(path) if path else self.root / "submission.zip"
        files = sorted(p for p in self.annotations.rglob("*.png"))
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
            for f in files:
                zf.write(f, f.relative_to(self.root).as_posix())
        return path


def _frame_path(folder: Path, name: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        p = folder / f"{name}{suffix}"
        if p.is_file():
            return p
    raise FrameError(f"frame {name} not found in {folder} ({', '.join(IMAGE_SUFFIXES)})")


def run_submission(*, data: str, out_dir: str, meta: str | None = None, frames_dir: str | None = None,
                   config: str = "cpu_small", overrides: Sequence[str] = (), checkpoint: str | None = None,
                   clip_len: int | None = None, videos: Sequence[str] | None = None, zip_path: str | None = None,
                   progress: bool = True) -> dict:
    """Segment every expression of every video (or ``videos``) offline and write the zip.
    A video whose frames cannot be read, and an expression that cannot be encoded, are
    skipped with a logged warning and listed in the returned summary under ``problems``
    (a skipped expression still gets empty masks, so the layout stays complete)."""
    t0 = time.perf_counter()
    data_dir = Path(data)
    split = read_meta_expressions(meta or data_dir / "meta_expressions.json")
    if videos:
        unknown = sorted(set(videos) - set(split))
        if unknown:
            raise ValueError(f"videos not in the meta file: {unknown}")
        split = {v: split[v] for v in videos}
    frames_root = Path(frames_dir) if frames_dir else data_dir / "JPEGImages"
    pipe = load_pipeline(config, overrides, checkpoint)
    runner = OfflineRunner(pipe.model, pipe.tokenizer, clip_len=clip_len)
    writer = SubmissionWriter(out_dir)
    problems: dict[str, list[str]] = {"skipped_videos": [], "skipped_expressions": []}
    n_masks = 0
    from tqdm import tqdm

    for vid, vm in tqdm(split.items(), desc="submit", unit="video", disable=not progress):
        try:
            frames = [read_frame(_frame_path(frames_root / vid, name)) for name in vm.frames]
            if not frames:
                raise FrameError("no frames listed")
            sizes = {f.shape[:2] for f in frames}
            if len(sizes) > 1:
                raise FrameError(f"frames of different sizes {sorted(sizes)}")
        except FrameError as exc:
            log.warning("skipping video %s: %s", vid, exc)
            problems["skipped_videos"].append(f"{vid}: {exc}")
            continue
        good = {}
        for exp_id, text in vm.expressions.items():
            try:
                pipe.tokenizer.encode(text)
                good[exp_id] = text
            except TextError as exc:
                log.warning("expression %s/%s gets empty masks: %s", vid, exp_id, exc)
                problems["skipped_expressions"].append(f"{vid}/{exp_id}: {exc}")
                writer.write(vid, exp_id, vm.frames, np.zeros((len(frames), *frames[0].shape[:2]), bool))
                n_masks += len(frames)
        if good:
            res = runner.run(frames, list(good.values()))
            for k, exp_id in enumerate(good):
                writer.write(vid, exp_id, vm.frames, res.masks[k])
                n_masks += len(frames)
    zipped = writer.zip(zip_path)
    return {
        "config": pipe.config.name, "weights": pipe.weights, "videos": len(split),
        "expressions": sum(len(v.expressions) for v in split.values()), "masks": n_masks,
        "clip": clip_len, "annotations": str(writer.annotations), "zip": str(zipped),
        "problems": {k: v for k, v in problems.items() if v},
        "seconds": round(time.perf_counter() - t0, 2),
    }
