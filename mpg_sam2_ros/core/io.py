"""Reading frames and writing masks (lossless PNG, 0/255)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .preprocess import FrameError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def read_frame(path: str | Path) -> np.ndarray:
    """One image file as RGB uint8 [H, W, 3]; ``FrameError`` when it cannot be decoded."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FrameError(f"cannot decode image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def list_frames(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FrameError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """bool/0-1 mask -> PNG with 0/255."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), (np.asarray(mask) > 0).astype(np.uint8) * 255):
        raise OSError(f"cannot write {path}")
