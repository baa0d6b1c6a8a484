"""Frames -> model inputs: SAM 2 at S x S and BEiT-3 at m x m, ImageNet-normalised
(non-aspect-preserving resize, as the official inference), plus input validation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


class FrameError(ValueError):
    """A frame cannot be used (wrong shape, dtype, size)."""


MAX_SIDE = 16384


def validate_frame(frame: object) -> np.ndarray:
    """An RGB frame as ``uint8 [H, W, 3]`` (a grey ``[H, W]`` frame is expanded). Raises
    ``FrameError`` for anything else: other dtypes, channel counts, empty or huge images."""
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu().numpy()
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise FrameError(f"frame must be uint8 RGB, got dtype {frame.dtype}")
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise FrameError(f"frame must be [H, W, 3] RGB, got shape {frame.shape}")
    h, w = frame.shape[:2]
    if h < 1 or w < 1:
        raise FrameError(f"frame is empty ({h}x{w})")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise FrameError(f"frame {w}x{h} is larger than {MAX_SIDE} pixels on a side")
    return frame


@dataclass
class FrameInputs:
    """sam: [1, 3, S, S]; mm: [1, 3, m, m]; size: the original (H, W)."""

    sam: torch.Tensor
    mm: torch.Tensor
    size: tuple[int, int]


class FramePreprocessor:
    """Arguments: sam_size S, mm_size m, pixel mean/std (0-1 scale), device and dtype."""

    def __init__(self, *, sam_size: int, mm_size: int, mean, std, device="cpu", dtype=torch.float32) -> None:
        self.sam_size, self.mm_size = sam_size, mm_size
        self.mean = torch.tensor(mean, dtype=dtype, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=dtype, device=device).view(1, 3, 1, 1)
        self.device, self.dtype = torch.device(device), dtype

    @classmethod
    def for_model(cls, model) -> "FramePreprocessor":
        p = next(model.parameters())
        return cls(
            sam_size=model.image_size,
            mm_size=model.mm_image_size,
            mean=model.config.pixel_mean,
            std=model.config.pixel_std,
            device=p.device,
            dtype=p.dtype,
        )

    def __call__(self, frame: object) -> FrameInputs:
        frame = validate_frame(frame)
        x = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device).permute(2, 0, 1)[None]
        x = x.to(self.dtype) / 255.0

        def resized(size: int) -> torch.Tensor:
            y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            return (y - self.mean) / self.std

        return FrameInputs(sam=resized(self.sam_size), mm=resized(self.mm_size), size=frame.shape[:2])
