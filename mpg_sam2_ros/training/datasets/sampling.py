"""Which frames of a video make a training clip, and the dataset that serves clips.

Official rule (DESIGN.md §7, the official MPG-SAM2 training, whose dataset code follows
ReferFormer's): the dataset enumerates, for every expression, anchor frames 0, T, 2T, ...
(T = frames per clip); a clip is the anchor, one frame 1-3 before it and one 1-3 after it
(each offset uniform in {1, 2, 3}, clamped to the video, so at the video's ends the neighbour
may be the anchor itself), and T - 3 random "global" frames, all sorted; frame 0 of the sorted
clip is SAM 2's conditioning frame. 5 frames for Ref-YouTube-VOS, 8 for MeViS, 1 for RefCOCO.

How we read it (``official_clip_plan``):

- The anchor grid 0, T, 2T, ... is how the official dataset *enumerates items*; within an item
  the anchor is fixed. Our ``ClipDataset`` serves one item per expression by default
  (``anchors="random"``: the anchor is uniform over the video, which covers the video the same
  way in expectation), or the official enumeration with ``anchors="grid"`` (one item per
  expression and anchor 0, T, 2T, ...).
- The global frames are drawn without replacement from the frames outside the span
  [before, after] of the local triple (as the official code does); when there are too few,
  from all frames not yet in the clip; only when the video has fewer distinct frames than the
  clip needs are frames repeated (a video shorter than the clip then has every frame in it).
  The official code may repeat the "after" neighbour and, for T = 2, returns 3 frames; we do
  neither: T = 2 keeps the anchor and one neighbour (before or after, equally likely).
- When the referred object is absent from every sampled frame, the official code jumps to a
  random other item; we resample the same expression (a new anchor) up to ``max_resample``
  times, then anchor the clip on a frame where the object is visible (it then is in the clip).

``stream_clip_indices`` is the alternative for models trained the way the streaming engine
runs them (DESIGN.md §8): a contiguous run of frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
from torch.utils.data import Dataset

from .base import DatasetError, ExpressionRecord, ReferringClip, ReferringSplit, make_clip

if TYPE_CHECKING:
    from .augment import Augment

SAMPLERS = ("official", "stream")
ANCHORS = ("random", "grid")


@dataclass(frozen=True)
class ClipPlan:
    """The parts of an official clip: the anchor, its neighbours (None when the clip is too
    short to hold them) and the global frames; ``indices`` is the sorted clip."""

    anchor: int
    before: int | None
    after: int | None
    others: tuple[int, ...]

    @property
    def indices(self) -> list[int]:
        local = [i for i in (self.anchor, self.before, self.after) if i is not None]
        return sorted(local + list(self.others))


def _check_counts(num_video_frames: int, num_frames: int, what: str = "num_frames") -> None:
    if isinstance(num_video_frames, bool) or not isinstance(num_video_frames, (int, np.integer)) or num_video_frames < 1:
        raise ValueError(f"num_video_frames must be a positive int, got {num_video_frames!r}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"{what} must be a positive int, got {num_frames!r}")


def _check_anchor(anchor: int | None, n: int) -> None:
    if anchor is not None and not 0 <= anchor < n:
        raise ValueError(f"anchor {anchor} outside the video's {n} frames")


def official_clip_plan(num_video_frames: int, num_frames: int, rng: np.random.Generator, *,
                       anchor: int | None = None) -> ClipPlan:
    """The official clip (module docstring) with its parts named. ``anchor`` fixes the
    anchor frame (default: uniform over the video)."""
    _check_counts(num_video_frames, num_frames)
    n = int(num_video_frames)
    _check_anchor(anchor, n)
    a = int(rng.integers(n)) if anchor is None else int(anchor)
    if num_frames == 1:
        return ClipPlan(a, None, None, ())
    before = max(0, a - int(rng.integers(1, 4)))
    after = min(n - 1, a + int(rng.integers(1, 4)))
    if num_frames == 2:
        if rng.random() < 0.5:
            return ClipPlan(a, before, None, ())
        return ClipPlan(a, None, after, ())
    k = num_frames - 3
    outside = np.array([i for i in range(n) if i < before or i > after], dtype=np.int64)
    if len(outside) >= k:
        others = rng.choice(outside, size=k, replace=False) if k else outside[:0]
    else:
        used = {a, before, after}
        unused = np.array([i for i in range(n) if i not in used], dtype=np.int64)
        if len(unused) >= k:
            others = rng.choice(unused, size=k, replace=False)
        else:
            others = np.concatenate([unused, rng.integers(0, n, size=k - len(unused))])
    return ClipPlan(a, before, after, tuple(sorted(int(i) for i in others)))


def official_clip_indices(num_video_frames: int, num_frames: int, rng: np.random.Generator, *,
                          anchor: int | None = None) -> list[int]:
    """Sorted frame indices of one official training clip, exactly ``num_frames`` long
    (frames repeat when the video is shorter). See the module docstring for the rule."""
    return official_clip_plan(num_video_frames, num_frames, rng, anchor=anchor).indices


def stream_clip_indices(num_video_frames: int, window: int, rng: np.random.Generator, *,
                        anchor: int | None = None) -> list[int]:
    """A contiguous run of ``window`` frames starting at a uniform position (what the
    streaming engine sees). ``anchor``: the run must contain that frame. A video shorter than
    the window gives all its frames with the last one repeated, so the length is always
    ``window``: ``[0, 1, ..., n-1, n-1, ...]``."""
    _check_counts(num_video_frames, window, "window")
    n, window = int(num_video_frames), int(window)
    _check_anchor(anchor, n)
    if n < window:
        return list(range(n)) + [n - 1] * (window - n)
    lo, hi = 0, n - window
    if anchor is not None:
        lo, hi = max(0, anchor - window + 1), min(anchor, n - window)
    start = int(rng.integers(lo, hi + 1))
    return list(range(start, start + window))


class ClipDataset(Dataset):
    """Training clips of a referring split: item ``i`` is a ``ReferringClip`` of
    ``num_frames`` frames (uint8 [T, H, W, 3], bool masks [T, H, W]), augmented when
    ``augment`` is given.

    - ``sampler``: ``"official"`` (``official_clip_indices``) or ``"stream"``
      (``stream_clip_indices``, contiguous).
    - ``anchors``: ``"random"`` (default, one item per expression, the anchor uniform) or
      ``"grid"`` (the official enumeration: one item per expression and anchor 0, T, 2T, ...;
      resamples after the first use random anchors).
    - Items are deterministic in (``seed``, epoch, index): each draws from its own
      ``np.random.default_rng([seed, epoch, index])``, so they do not depend on the worker
      or the order they are read in. ``set_epoch`` changes the clips; with persistent
      DataLoader workers call it before the workers start each epoch (they hold copies).
    - An item whose object is absent from every sampled frame is resampled up to
      ``max_resample`` times, then anchored on a frame where the object is visible
      (``DatasetError`` when it is visible nowhere).
    - ``expression_types``: only expressions of these types (``ExpressionRecord.exp_type``);
      empty: all. ``DatasetError`` when none matches.
    """

    def __init__(self, split: ReferringSplit, *, num_frames: int, sampler: str = "official",
                 augment: "Augment | None" = None, seed: int = 0, max_resample: int = 10,
                 anchors: str = "random", expression_types: Sequence[str] = ()) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if anchors not in ANCHORS:
            raise ValueError(f"anchors must be one of {ANCHORS}, got {anchors!r}")
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if isinstance(max_resample, bool) or not isinstance(max_resample, int) or max_resample < 0:
            raise ValueError(f"max_resample must be a non-negative int, got {max_resample!r}")
        self.split, self.num_frames, self.sampler = split, num_frames, sampler
        self.augment, self.seed, self.max_resample, self.anchors = augment, seed, max_resample, anchors
        self.epoch = 0
        self._items: list[tuple[ExpressionRecord, int | None]] = []
        types = set(expression_types)
        for expr in split.expressions():
            if types and expr.exp_type not in types:
                continue
            if anchors == "grid":
                n = len(split.video(expr.video))
                self._items.extend((expr, a) for a in range(0, n, num_frames))
            else:
                self._items.append((expr, None))
        if types and not self._items:
            present = sorted({str(e.exp_type) for e in split.expressions()})
            raise DatasetError(f"no expression of the types {sorted(types)} in the split (its types: {present})")

    def __len__(self) -> int:
        return len(self._items)

    def set_epoch(self, epoch: int) -> None:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = epoch

    def item(self, i: int) -> tuple[ExpressionRecord, int | None]:
        """The expression of item i and its fixed anchor (None with ``anchors="random"``)."""
        return self._items[i]

    def sample_indices(self, num_video_frames: int, rng: np.random.Generator, anchor: int | None = None) -> list[int]:
        """One clip's frame indices with this dataset's sampler."""
        if self.sampler == "stream":
            return stream_clip_indices(num_video_frames, self.num_frames, rng, anchor=anchor)
        return official_clip_indices(num_video_frames, self.num_frames, rng, anchor=anchor)

    def __getitem__(self, i: int) -> ReferringClip:
        return self.clip(i, self.epoch)

    def clip(self, i: int, epoch: int) -> ReferringClip:
        """Item i as drawn in ``epoch`` (``dataset[i]`` is ``clip(i, dataset.epoch)``): the same
        clip whoever asks and in whatever order, so threads can read ahead of the training loop."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(i).__name__}")
        i = int(i) + len(self) if i < 0 else int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range ({len(self)} items)")
        expr, first_anchor = self._items[i]
        video = self.split.video(expr.video)
        n = len(video)
        rng = np.random.default_rng([self.seed, epoch, i])
        for attempt in range(1 + self.max_resample):
            idx = self.sample_indices(n, rng, first_anchor if attempt == 0 else None)
            masks = self.split.expression_masks(expr, idx)
            if masks.any():
                break
        else:
            visible = np.flatnonzero(self.split.frame_presence(expr))
            if not visible.size:
                raise DatasetError(f"{video.frame_paths[0].parent}: the object(s) of expression {expr.video}/"
                                   f"{expr.exp_id} are visible in no frame of the video")
            idx = self.sample_indices(n, rng, int(rng.choice(visible)))
            masks = self.split.expression_masks(expr, idx)
        clip = make_clip(self.split, expr, video, idx, self.split.read_frames(video, idx), masks)
        if self.augment is not None:
            clip = self.augment(clip, rng)
        return clip
