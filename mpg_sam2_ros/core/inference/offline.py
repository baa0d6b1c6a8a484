"""Offline runner (evaluation): the whole video, or fixed clips as the paper does for MeViS,
is the global context of the MPG and the aggregator; SAM 2 then decodes frame by frame with
its (bounded) memory, the first frame of each clip being the conditioning frame.

Pass 1 runs BEiT-3 on every (frame, command) of a clip and the MPG over the clip; pass 2
encodes each frame once with SAM 2 and decodes all commands on it as one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..modeling.mask_prior import flow_reference, previous_frames, scale_reference
from ..modeling.mpg_sam2 import MPGSAM2
from ..modeling.multimodal_encoder import MultimodalFeatures
from ..preprocess import FramePreprocessor, validate_frame
from ..text import TextTokenizer
from .engine import check_presence_threshold, presence_logit, resolve_presence_threshold
from .memory import MemoryBank


@dataclass
class VideoResult:
    """masks: [K, T, H, W] bool at the input size for K commands and T frames;
    scores: [K, T] object presence probabilities."""

    texts: list[str]
    masks: np.ndarray
    scores: np.ndarray


class OfflineRunner:
    """Arguments: a built model (eval mode), its tokenizer, ``clip_len`` (None: the whole
    video is one clip) and ``presence_threshold`` (as ``EngineConfig``'s: a mask is kept where
    the presence probability is above it; None: the model's own)."""

    def __init__(self, model: MPGSAM2, tokenizer: TextTokenizer, *, clip_len: int | None = None,
                 presence_threshold: float | None = None) -> None:
        if clip_len is not None and clip_len < 1:
            raise ValueError("clip_len must be >= 1")
        check_presence_threshold(presence_threshold)
        self.model = model
        self.tokenizer = tokenizer
        self.clip_len = clip_len
        self.presence_threshold = resolve_presence_threshold(presence_threshold, model)
        self._presence_logit = presence_logit(self.presence_threshold)
        self.preprocess = FramePreprocessor.for_model(model)

    @torch.inference_mode()
    def run(self, frames: Sequence[np.ndarray], texts: Sequence[str], progress=None) -> VideoResult:
        if not frames:
            raise ValueError("no frames")
        if not texts:
            raise ValueError("no commands")
        frames = [validate_frame(f) for f in frames]
        size = frames[0].shape[:2]
        for i, f in enumerate(frames):
            if f.shape[:2] != size:
                raise ValueError(f"frame {i} is {f.shape[1]}x{f.shape[0]}, the video is {size[1]}x{size[0]}")
        tokens = [self.tokenizer.encode(t) for t in texts]
        ids, padding = self.tokenizer.pad(tokens)
        k, n = len(texts), len(frames)
        masks = np.zeros((k, n, *size), dtype=bool)
        scores = np.zeros((k, n), dtype=np.float32)
        clip = self.clip_len or n
        for start in range(0, n, clip):
            self._run_clip(frames[start : start + clip], start, ids, padding, masks, scores, progress)
        return VideoResult(texts=[t.text for t in tokens], masks=masks, scores=scores)

    def _run_clip(self, frames, start, ids, padding, masks, scores, progress) -> None:
        model = self.model
        device = model.device
        k, t = ids.shape[0], len(frames)
        ids, padding = ids.to(device), padding.to(device)
        mm_images = torch.cat([self.preprocess(f).mm for f in frames])
        # object-major rows: all frames of command 0, then command 1, ...
        previous = previous_frames(mm_images, dim=0)  # the clip's first frame has none (itself)
        flow = flow_reference(model.mask_prior.block_flow, mm_images) | scale_reference(model.mask_prior.block_scale, mm_images)
        sam_patches = None
        if model.mask_prior.sam_stem is not None:  # the MPG's SAM 2 stem: one pass over the clip's frames first
            # (the decode below encodes each frame again rather than holding a whole clip's features)
            sam_patches = torch.cat([model.sam_patch_features(model.encode_image(self.preprocess(f).sam)) for f in frames])
        per_text = [model.encode_multimodal(mm_images, ids[j : j + 1].expand(t, -1), padding[j : j + 1].expand(t, -1),
                                            previous=previous, **flow) for j in range(k)]
        if sam_patches is not None:
            for mm in per_text:
                mm.patches = mm.patches + sam_patches.to(mm.patches.dtype)
        ctx = model.global_context(MultimodalFeatures.cat(per_text), batch=k)
        memory = MemoryBank(num_maskmem=model.sam2.num_maskmem, max_obj_ptrs=model.sam2.max_obj_ptrs_in_encoder)
        for i, frame in enumerate(frames):
            feats = model.encode_image(self.preprocess(frame).sam).expand(k)
            out = model.track_step(
                frame_idx=i,
                is_init_cond_frame=(i == 0),
                features=feats,
                prompt=model.frame_prompt(ctx, i),
                memory=memory,
                num_frames=t,
            )
            memory.add(out.memory, is_cond=(i == 0))
            logits = F.interpolate(out.mask_logits, size=frame.shape[:2], mode="bilinear", align_corners=False)
            present = (out.object_score_logits[:, 0] > self._presence_logit)[:, None, None]
            masks[:, start + i] = ((logits[:, 0] > model.config.mask_threshold) & present).cpu().numpy()
            scores[:, start + i] = torch.sigmoid(out.object_score_logits[:, 0]).float().cpu().numpy()
            if progress is not None:
                progress(1)
