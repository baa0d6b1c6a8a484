"""Overlay pictures for people: masks tinted in their object's colour, a legend with each
expression (coloured like its mask, with its presence score), and the frame's latency. Used by
the node's ``overlay`` topic, bag replay's ``overlay.mp4`` and the demo."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from .segment import COLORS


@dataclass
class Drawn:
    """One object to draw: mask bool [H, W]."""

    object_id: int
    text: str
    mask: np.ndarray
    score: float
    present: bool


def color_of(object_id: int) -> tuple[int, int, int]:
    """RGB colour of an object id (stable while other objects come and go)."""
    return COLORS[int(object_id) % len(COLORS)]


def draw_overlay(rgb: np.ndarray, objects: Sequence[Drawn], *, latency_ms: float | None = None,
                 caption: str | None = None, min_width: int = 480) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> RGB picture with masks, contours and a legend.

    Small frames are enlarged (nearest neighbour) to ``min_width`` so the text stays readable;
    the legend sits in a dark band under the frame, one line per expression, then a line with
    the latency and ``caption``."""
    img = rgb.astype(np.float32)
    for o in objects:
        if o.present and o.mask.any():
            img[o.mask] = 0.45 * img[o.mask] + 0.55 * np.array(color_of(o.object_id), np.float32)
    img = img.astype(np.uint8)
    h, w = img.shape[:2]
    scale = max(1, int(np.ceil(min_width / w))) if w < min_width else 1
    if scale > 1:
        img = cv2.resize(img, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
    for o in objects:  # contours at display size, so thin objects stay visible
        if o.present and o.mask.any():
            m = o.mask.astype(np.uint8)
            if scale > 1:
                m = cv2.resize(m, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(img, contours, -1, color_of(o.object_id), 2, cv2.LINE_AA)
    dw = img.shape[1]
    font, fs = cv2.FONT_HERSHEY_SIMPLEX, max(0.45, min(0.8, dw / 1100))
    line = int(28 * fs / 0.6)
    lines = len(objects) + (1 if latency_ms is not None or caption else 0)
    band = np.full((line * lines + 10, dw, 3), 24, np.uint8)
    y = line - 6
    for o in objects:
        c = color_of(o.object_id)
        cv2.rectangle(band, (8, y - line // 2 - 2), (8 + line // 2, y + 2), c, -1)
        state = f"{o.score:.2f}" if o.present else f"{o.score:.2f}, absent"
        cv2.putText(band, f"{o.object_id}: {o.text}  ({state})", (16 + line // 2, y), font, fs, c, 1, cv2.LINE_AA)
        y += line
    if latency_ms is not None or caption:
        parts = ([f"latency {latency_ms:.0f} ms"] if latency_ms is not None else []) + ([caption] if caption else [])
        cv2.putText(band, "   ".join(parts), (8, y), font, fs, (235, 235, 235), 1, cv2.LINE_AA)
    return np.concatenate([img, band], axis=0)
