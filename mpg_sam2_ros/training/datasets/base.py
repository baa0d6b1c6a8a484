"""What every referring dataset gives: records of videos and expressions, and clips read
from them (frames + the union mask of the referred objects).

A split is loaded in two stages. Construction reads the meta files and checks the cheap
things (frame files exist, annotation folders exist, referred ids are known); a video or an
expression that fails is skipped and described in ``problems`` (one line each, naming the
file), so one bad video does not cost the whole split. Expensive checks (mask sizes, ids
that never occur in a palette annotation) happen when the data is read, as ``DatasetError``
naming the file. A corrupt or missing top-level meta file is a ``DatasetError`` at
construction.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from mpg_sam2_ros.core.io import IMAGE_SUFFIXES, read_frame
from mpg_sam2_ros.core.preprocess import FrameError

# core.io's image suffixes, JPEG first: when one frame exists with several suffixes, the
# first one here wins (the datasets ship .jpg).
FRAME_SUFFIXES = (".jpg", ".jpeg") + tuple(s for s in IMAGE_SUFFIXES if s not in (".jpg", ".jpeg"))


class DatasetError(ValueError):
    """Bad data in a dataset; the message always names the offending file."""


@dataclass(frozen=True)
class ExpressionRecord:
    """One referring expression. ``obj_ids``: the objects it refers to (Ref-YouTube-VOS /
    Ref-DAVIS: palette indices; MeViS: ``anno_id``s; RefCOCO: the COCO annotation id); its
    masks are their union. ``exp_type`` comes from ``meta.json`` when the split has one."""

    video: str
    exp_id: str
    text: str
    obj_ids: tuple[int, ...]
    exp_type: str | None = None


@dataclass
class VideoRecord:
    """One video (a RefCOCO image is a one-frame video). ``frame_names`` are sorted and have
    no suffix; ``frame_paths[i]`` is the file of ``frame_names[i]``."""

    video: str
    frame_names: list[str]
    frame_paths: list[Path]
    expressions: list[ExpressionRecord]

    def __len__(self) -> int:
        return len(self.frame_names)


@dataclass
class ReferringClip:
    """Frames of one video with the masks of one expression.

    frames: uint8 [T, H, W, 3] RGB; masks: bool [T, H, W], the union of the referred objects;
    frame_names: the T frame names (a name repeats when a short video's frames repeat).
    """

    video: str
    exp_id: str
    text: str
    exp_type: str | None
    frame_names: list[str]
    frames: np.ndarray
    masks: np.ndarray

    def __post_init__(self) -> None:
        f, m = self.frames, self.masks
        if not (isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.ndim == 4 and f.shape[3] == 3):
            raise ValueError(f"clip {self.video}/{self.exp_id}: frames must be uint8 [T, H, W, 3], got "
                             f"{getattr(f, 'dtype', type(f).__name__)} {getattr(f, 'shape', '')}")
        if not (isinstance(m, np.ndarray) and m.dtype == bool and m.shape == f.shape[:3]):
            raise ValueError(f"clip {self.video}/{self.exp_id}: masks must be bool {f.shape[:3]}, got "
                             f"{getattr(m, 'dtype', type(m).__name__)} {getattr(m, 'shape', '')}")
        if len(self.frame_names) != f.shape[0]:
            raise ValueError(f"clip {self.video}/{self.exp_id}: {len(self.frame_names)} frame names for {f.shape[0]} frames")

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def present(self) -> np.ndarray:
        """bool [T]: whether the referred object is visible in each frame."""
        return self.masks.reshape(self.masks.shape[0], -1).any(axis=1)


class ReferringSplit:
    """Base class: one subclass per dataset format. Subclasses fill ``videos`` and
    ``problems`` in their constructor, call ``_index()``, and implement ``expression_masks``."""

    videos: list[VideoRecord]
    problems: list[str]

    def __init__(self) -> None:
        self.videos = []
        self.problems = []
        self._by_name: dict[str, VideoRecord] = {}

    def _index(self) -> None:
        self._by_name = {v.video: v for v in self.videos}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self.videos)} videos, {sum(len(v.expressions) for v in self.videos)} "
                f"expressions, {len(self.problems)} problems)")

    # ----- records ---------------------------------------------------------------------
    def expressions(self) -> list[ExpressionRecord]:
        """All expressions, video by video in the split's (sorted) video order."""
        return [e for v in self.videos for e in v.expressions]

    def video(self, name: str) -> VideoRecord:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no video {name!r} in this split ({len(self.videos)} videos)") from None

    # ----- data ------------------------------------------------------------------------
    def read_frames(self, video: VideoRecord, indices: Sequence[int]) -> np.ndarray:
        """uint8 [T, H, W, 3] RGB, frame ``indices[t]`` of the video at t."""
        idx = check_indices(video, indices)
        cache: dict[int, np.ndarray] = {}
        out = []
        for i in idx:
            if i not in cache:
                try:
                    cache[i] = read_frame(video.frame_paths[i])
                except FrameError as exc:
                    raise DatasetError(f"{video.frame_paths[i]}: {exc}") from exc
            img = cache[i]
            if out and img.shape != out[0].shape:
                raise DatasetError(f"{video.frame_paths[i]}: frame is {img.shape[1]}x{img.shape[0]}, other frames of "
                                   f"video {video.video} are {out[0].shape[1]}x{out[0].shape[0]}")
            out.append(img)
        return np.stack(out)

    def expression_masks(self, expr: ExpressionRecord, indices: Sequence[int]) -> np.ndarray:
        """bool [T, H, W]: the union of the expression's objects in frame ``indices[t]``."""
        raise NotImplementedError

    def frame_presence(self, expr: ExpressionRecord) -> np.ndarray:
        """bool [N] over all N frames of the video: where the referred objects are visible.
        This default reads every mask of the video; formats override it when cheaper."""
        video = self.video(expr.video)
        masks = self.expression_masks(expr, range(len(video)))
        return masks.reshape(len(video), -1).any(axis=1)

    def read_clip(self, expr: ExpressionRecord, indices: Sequence[int] | None = None) -> ReferringClip:
        """Frames and masks of ``expr`` at ``indices`` (None: every frame of the video)."""
        video = self.video(expr.video)
        idx = list(range(len(video))) if indices is None else check_indices(video, indices)
        masks = self.expression_masks(expr, idx)
        frames = self.read_frames(video, idx)
        return make_clip(self, expr, video, idx, frames, masks)


def make_clip(split: ReferringSplit, expr: ExpressionRecord, video: VideoRecord, idx: list[int],
              frames: np.ndarray, masks: np.ndarray) -> ReferringClip:
    """Assemble a clip, checking that the masks have the frames' size."""
    if masks.shape != frames.shape[:3]:
        raise DatasetError(f"{video.frame_paths[idx[0]]}: masks of {expr.video}/{expr.exp_id} are "
                           f"{masks.shape[2]}x{masks.shape[1]}, the frames {frames.shape[2]}x{frames.shape[1]}")
    return ReferringClip(video=expr.video, exp_id=expr.exp_id, text=expr.text, exp_type=expr.exp_type,
                         frame_names=[video.frame_names[i] for i in idx], frames=frames, masks=masks)


# ----- helpers shared by the formats ---------------------------------------------------
def check_indices(video: VideoRecord, indices: Iterable[int]) -> list[int]:
    """Frame indices as a list of ints; ``IndexError`` for one outside ``[0, len(video))``."""
    out = []
    n = len(video)
    for i in indices:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"frame indices must be ints, got {type(i).__name__}")
        if not 0 <= int(i) < n:
            raise IndexError(f"frame index {int(i)} out of range for video {video.video} ({n} frames)")
        out.append(int(i))
    if not out:
        raise IndexError(f"no frame indices given for video {video.video}")
    return out


def read_json(path: Path, what: str = "file") -> object:
    """A JSON file; ``DatasetError`` naming it when it is missing, unreadable or not JSON."""
    if not path.is_file():
        raise DatasetError(f"{path}: {what} not found")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: {what} is not valid JSON: {exc}") from exc


def natural_key(name: str) -> tuple:
    """Sort key comparing digit runs as numbers ("2" < "10"); zero-padded names sort as usual."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if k % 2 else p for k, p in enumerate(parts)) + (name,)


def image_files(folder: Path) -> dict[str, Path]:
    """stem -> file for the images in ``folder`` (``FRAME_SUFFIXES``, any case); a stem with
    several files maps to the suffix listed first in ``FRAME_SUFFIXES``."""
    rank = {s: k for k, s in enumerate(FRAME_SUFFIXES)}
    out: dict[str, Path] = {}
    for p in folder.iterdir():
        r = rank.get(p.suffix.lower())
        if r is None or not p.is_file():
            continue
        old = out.get(p.stem)
        if old is None or r < rank[old.suffix.lower()]:
            out[p.stem] = p
    return out


def resolve_frames(folder: Path, names: object, *, video: str, listed_in: Path) -> tuple[list[str], list[Path]]:
    """The frames of one video: ``names`` (the meta file's list) resolved to files in
    ``folder``, or, when ``names`` is None, every image in ``folder``; natural-sorted.
    ``DatasetError`` naming the missing folder or frame file."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: frame folder of video {video} not found")
    files = image_files(folder)
    if names is None:
        if not files:
            raise DatasetError(f"{folder}: no frames ({', '.join(FRAME_SUFFIXES)}) for video {video}")
        chosen = sorted(files, key=natural_key)
    else:
        if not isinstance(names, list) or not all(isinstance(n, (str, int)) and not isinstance(n, bool) for n in names):
            raise DatasetError(f"{listed_in}: video {video}: 'frames' must be a list of frame names")
        chosen = [str(n) for n in names]
        if not chosen:
            raise DatasetError(f"{listed_in}: video {video}: the 'frames' list is empty")
        if len(set(chosen)) != len(chosen):
            dup = sorted({n for n in chosen if chosen.count(n) > 1})
            raise DatasetError(f"{listed_in}: video {video}: frames listed twice: {dup[:5]}")
        for n in chosen:
            if n not in files:
                raise DatasetError(f"{folder / (n + FRAME_SUFFIXES[0])}: frame of video {video} not found "
                                   f"(also tried {', '.join(FRAME_SUFFIXES[1:])}; listed in {listed_in})")
        chosen.sort(key=natural_key)
    return chosen, [files[n] for n in chosen]


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file from its header (cheap); ``DatasetError`` naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read image: {exc}") from exc
    return h, w


def parse_ids(value: object, *, where: str) -> tuple[int, ...]:
    """Object ids written as ``"1"``, ``1``, ``["1", 2]``... -> a tuple of ints (order kept,
    duplicates dropped); ``DatasetError`` (``where`` names the file) otherwise."""
    items = value if isinstance(value, (list, tuple)) else [value]
    out: list[int] = []
    for v in items:
        if isinstance(v, bool):
            raise DatasetError(f"{where}: object id {v!r} is not an integer")
        try:
            i = int(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: object id {v!r} is not an integer") from None
        if isinstance(v, float) and v != i:
            raise DatasetError(f"{where}: object id {v!r} is not an integer")
        if i not in out:
            out.append(i)
    return tuple(out)


def expression_entry(exp: object, id_key: str, *, where: str) -> tuple[str, tuple[int, ...]]:
    """(text, object ids) of one ``meta_expressions.json`` entry: a non-empty ``exp`` string
    and the ids under ``id_key`` (``obj_id`` or ``anno_id``; () when absent). ``DatasetError``
    naming ``where`` otherwise."""
    if not isinstance(exp, dict) or not isinstance(exp.get("exp"), str) or not exp["exp"].strip():
        raise DatasetError(f"{where}: needs a non-empty 'exp' string")
    ids = parse_ids(exp[id_key], where=where) if exp.get(id_key) is not None else ()
    return exp["exp"], ids
