"""Ground truth for bag replay: a folder of PNG masks, or a mask topic inside the bag.

Folder layouts (``--gt GT_DIR``):
  - ``GT_DIR/object_K/<name>.png``: object K (the K-th ``--text``, from 0);
  - ``GT_DIR/<name>.png`` with one ``--text``: nonzero pixels are the object;
  - ``GT_DIR/<name>.png`` with several: label images, pixel value K+1 is object K (palette
    PNGs are read as their indices, as DAVIS annotations).
``<name>`` is either the frame's header stamp ``<sec>_<nanosec>`` (nanoseconds as 9 digits) or
the frame's index among the image topic's messages in bag order (``0``, ``000017``, ...); one
folder uses one style. A topic (``--gt-topic``) is matched to frames by header stamp and read
the same way as a flat folder (nonzero, or value K+1 with several expressions).

Whatever the source, the masks actually used are written to ``OUT_DIR/gt/object_K/`` under the
same names as the predictions in ``OUT_DIR/masks/object_K/``, so ``mpg-sam2 eval`` can re-score.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .bags import BagError, DecodeError, InputBag, decode_mask, deserialize, stamp_name

STAMP_RE = re.compile(r"^(\d+)_(\d{9})$")
INDEX_RE = re.compile(r"^\d+$")


def index_name(index: int) -> str:
    return f"{index:06d}"


def _label_image(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            arr = np.array(img)
    except OSError as exc:
        raise BagError(f"cannot read ground-truth mask {path}: {exc}") from None
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=-1)
    return arr


def _split(label: np.ndarray, n: int) -> list[np.ndarray]:
    """label image -> one bool mask per object (nonzero for one object, value K+1 for several)."""
    if n == 1:
        return [label != 0]
    return [label == k + 1 for k in range(n)]


class GroundTruth:
    """Masks by frame name, written under ``gt_out``; ``naming`` is ``stamp`` or ``index``."""

    def __init__(self, n_objects: int, gt_out: Path) -> None:
        self.n = n_objects
        self.gt_out = gt_out
        self.naming = "stamp"
        self.names: list[set[str]] = [set() for _ in range(n_objects)]
        self.problems: list[str] = []

    def frame_name(self, index: int, stamp: tuple[int, int]) -> str:
        return index_name(index) if self.naming == "index" else stamp_name(stamp)

    def path(self, k: int, name: str) -> Path:
        return self.gt_out / f"object_{k}" / f"{name}.png"

    def has(self, k: int, name: str) -> bool:
        return name in self.names[k]

    def load(self, k: int, name: str) -> np.ndarray:
        from ..core.evaluation import read_mask

        return read_mask(self.path(k, name))

    def _store(self, k: int, name: str, mask: np.ndarray) -> None:
        from ..core.io import write_mask

        write_mask(self.path(k, name), mask)
        self.names[k].add(name)

    # ----- sources -----------------------------------------------------------------------
    def from_folder(self, root: str | Path) -> "GroundTruth":
        root = Path(root)
        if not root.is_dir():
            raise BagError(f"ground-truth folder not found: {root}")
        per_object = sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"object_\d+", p.name))
        files: list[tuple[int | None, Path]] = []
        if per_object:
            for d in per_object:
                k = int(d.name.split("_")[1])
                if k >= self.n:
                    raise BagError(f"ground truth {d} is for object {k}, but only {self.n} --text given (objects 0..{self.n - 1})")
                files += [(k, p) for p in sorted(d.glob("*.png"))]
        else:
            files = [(None, p) for p in sorted(root.glob("*.png"))]
        if not files:
            raise BagError(f"no ground-truth PNGs in {root} (expected object_K/<name>.png or <name>.png)")
        stems = [p.stem for _, p in files]
        if all(STAMP_RE.match(s) for s in stems):
            self.naming = "stamp"
        elif all(INDEX_RE.match(s) for s in stems):
            self.naming = "index"
        else:
            bad = next(s for s in stems if not STAMP_RE.match(s) and not INDEX_RE.match(s))
            raise BagError(f"ground-truth file names must all be stamps <sec>_<nanosec 9 digits> or all frame "
                           f"indices; found {bad!r} in {root}")
        for k, path in files:
            name = index_name(int(path.stem)) if self.naming == "index" else path.stem
            label = _label_image(path)
            if k is not None:
                self._store(k, name, label != 0)
            else:
                for j, m in enumerate(_split(label, self.n)):
                    self._store(j, name, m)
        return self

    def from_topic(self, bag: InputBag, topic: str) -> "GroundTruth":
        if topic not in bag.topics:
            raise BagError(f"ground-truth topic {topic} is not in {bag.path} (topics: {', '.join(sorted(bag.topics))})")
        msgtype = bag.msgtype(topic)
        if msgtype not in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"):
            raise BagError(f"ground-truth topic {topic} carries {msgtype}, not an image")
        self.naming = "stamp"
        for m in bag.messages(topic):
            try:
                msg = deserialize(m.raw, msgtype)
                label = decode_mask(msg, msgtype)
            except DecodeError as exc:
                self.problems.append(f"{topic} message {m.index}: {exc}")
                continue
            name = stamp_name((int(msg.header.stamp.sec), int(msg.header.stamp.nanosec)))
            for j, mask in enumerate(_split(label, self.n)):
                self._store(j, name, mask)
        if not any(self.names):
            raise BagError(f"ground-truth topic {topic} holds no readable mask")
        return self
