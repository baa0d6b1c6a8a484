"""Clip augmentation: horizontal flip (with the text's left/right swapped), one photometric
jitter per clip, resize.

The official training flips only SAM 2's frames while BEiT-3 reads the unflipped ones and
the caption swaps left/right (DESIGN.md §7), so BEiT-3 sees a caption that contradicts its
image. Here a clip holds the one image stack both encoders read: flipping the clip flips what
both see, and the text swap then agrees with both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import cv2
import numpy as np

from .base import ReferringClip

# A whole word "left"/"right", optionally fused with one of these suffixes: leftmost,
# leftward(s), lefthand(ed). Hyphenated and spaced forms ("left-hand", "left side", "left-most")
# match through the word "left" itself. "leftover", "lefty", "bright", "righteous", "rightly"
# are other words and are kept. Like the official code we cannot tell the verb ("the man who
# left") from the direction: it is swapped too.
_LEFT_RIGHT = re.compile(r"\b(left|right)(most|wards?|handed|hand)?\b", re.IGNORECASE)


def _same_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word.capitalize()
    return word


def swap_left_right(text: str) -> str:
    """Swap left <-> right as whole words, keeping their case (``left`` -> ``right``, ``Left``
    -> ``Right``, ``LEFT`` -> ``RIGHT``) and their suffix: leftmost <-> rightmost,
    leftward(s) <-> rightward(s), lefthand(ed) <-> righthand(ed); "left-hand", "left side"
    swap through the word "left". Other words containing the letters are untouched."""

    def sub(m: re.Match) -> str:
        stem = m.group(1)
        other = "right" if stem.lower() == "left" else "left"
        return _same_case(other, stem) + (m.group(2) or "")

    return _LEFT_RIGHT.sub(sub, text)


@dataclass(frozen=True)
class Jitter:
    """Photometric ranges: brightness, contrast, saturation factors uniform in [1-x, 1+x];
    hue shifted by a uniform fraction of the colour circle in [-hue, hue]."""

    brightness: float = 0.15
    contrast: float = 0.15
    saturation: float = 0.15
    hue: float = 0.02

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise ValueError(f"{name} range must be in [0, 1), got {v}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue range must be in [0, 0.5], got {self.hue}")


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def photometric_jitter(frames: np.ndarray, rng: np.random.Generator, jitter: Jitter = Jitter()) -> np.ndarray:
    """uint8 [T, H, W, 3] -> uint8 [T, H, W, 3] with one brightness, contrast, saturation and
    hue change (in that order, clamped to [0, 255] after each) drawn once for the whole clip.
    Contrast blends towards each frame's mean grey, saturation towards each pixel's grey."""
    b, c, s = (float(rng.uniform(1 - r, 1 + r)) for r in (jitter.brightness, jitter.contrast, jitter.saturation))
    h = float(rng.uniform(-jitter.hue, jitter.hue))
    x = frames.astype(np.float32)
    x = np.clip(x * b, 0, 255)
    mean = (x @ _LUMA).reshape(len(x), -1).mean(axis=1)[:, None, None, None]
    x = np.clip((x - mean) * c + mean, 0, 255)
    grey = (x @ _LUMA)[..., None]
    x = np.clip((x - grey) * s + grey, 0, 255)
    if h:
        for t in range(len(x)):
            hsv = cv2.cvtColor(x[t] / 255.0, cv2.COLOR_RGB2HSV)  # float32: H in degrees
            hsv[..., 0] = (hsv[..., 0] + h * 360.0) % 360.0
            x[t] = np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0, 0, 255)
    return np.rint(x).astype(np.uint8)


def resize_clip(frames: np.ndarray, masks: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Frames [T, H, W, 3] bilinear and masks [T, H, W] nearest to ``size`` = (H', W')."""
    h, w = size
    out_f = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in frames])
    out_m = np.stack([cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) for m in masks]) > 0
    return out_f, out_m


class Augment:
    """Callable ``(clip, rng) -> clip``: optional resize to ``resize`` = (H, W) (frames
    bilinear, masks nearest), a horizontal flip with probability ``hflip`` (frames, masks and
    the text's left/right together), and, when ``photometric``, one ``Jitter`` for all frames
    of the clip. Draws from ``rng`` only, so a clip's augmentation is as deterministic as the
    generator it is given."""

    def __init__(self, *, hflip: float = 0.5, photometric: bool = True, resize: tuple[int, int] | None = None,
                 jitter: Jitter = Jitter()) -> None:
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"hflip must be a probability in [0, 1], got {hflip}")
        if resize is not None:
            if (len(resize) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in resize)):
                raise ValueError(f"resize must be (height, width) in positive ints, got {resize!r}")
            resize = (int(resize[0]), int(resize[1]))
        self.hflip, self.photometric, self.resize, self.jitter = float(hflip), bool(photometric), resize, jitter

    def __repr__(self) -> str:
        return f"Augment(hflip={self.hflip}, photometric={self.photometric}, resize={self.resize}, jitter={self.jitter})"

    def __call__(self, clip: ReferringClip, rng: np.random.Generator) -> ReferringClip:
        frames, masks, text = clip.frames, clip.masks, clip.text
        flip = bool(rng.random() < self.hflip)
        if self.resize is not None:
            frames, masks = resize_clip(frames, masks, self.resize)
        if flip:
            frames = np.ascontiguousarray(frames[:, :, ::-1])
            masks = np.ascontiguousarray(masks[:, :, ::-1])
            text = swap_left_right(text)
        if self.photometric:
            frames = photometric_jitter(frames, rng, self.jitter)
        return replace(clip, frames=frames, masks=masks, text=text)
