"""MPG-SAM 2 modules: BEiT-3 encoder, Mask Prior Generator, aggregator, SAM 2 heads, builder."""

from .build import build_model, parameter_counts
from .mpg_sam2 import MPGSAM2, FrameOutput, FramePrompt, GlobalContext, ImageFeatures

__all__ = ["MPGSAM2", "FrameOutput", "FramePrompt", "GlobalContext", "ImageFeatures", "build_model", "parameter_counts"]
