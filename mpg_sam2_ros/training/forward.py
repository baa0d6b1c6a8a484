"""Training forward pass: a batch of referring clips through MPG-SAM 2 with SAM 2's memory,
as the official training runs the video path (every frame decoded with the memory of the
previous ones, back-propagating through it; frame 0 is the conditioning frame).

``causal=True`` is the streaming-consistent mode (DESIGN.md §8): Eq. 2 with frame t seeing
frames 0..t only, V_g / V_u of frame t built from frames 0..t, positions 0..t, and object
pointer distances scaled as for an endless stream (SAM 2's and Eq. 5's): what the streaming
engine computes for a stream that starts at the clip's first frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core.inference.memory import MemoryBank
from ..core.modeling.mask_prior import flow_reference, previous_frames, scale_reference
from ..core.modeling.mpg_sam2 import ImageFeatures, MPGSAM2
from ..core.text import TextTokenizer
from .datasets import ReferringClip


@dataclass
class ClipBatch:
    """B clips of T frames at the model's input sizes.

    sam [B, T, 3, S, S] and mm [B, T, 3, m, m] normalised images; ids / padding [B, L];
    target [B, T, S, S] float 0/1 masks; texts the B (augmented) expressions."""

    sam: torch.Tensor
    mm: torch.Tensor
    ids: torch.Tensor
    padding: torch.Tensor
    target: torch.Tensor
    texts: list[str]

    def to(self, device) -> "ClipBatch":
        return ClipBatch(self.sam.to(device), self.mm.to(device), self.ids.to(device), self.padding.to(device),
                         self.target.to(device), self.texts)


@dataclass
class ClipOutput:
    """multimask [B, T, M, S, S], single [B, T, 1, S, S] logits; ious [B, T, M];
    object_score_logits [B, T, 1]; text_tokens [B, T, L, D] raw BEiT-3 text tokens;
    prior [B, T, 1, g, g] the MPG's mask prior (probabilities), None when the MPG is off;
    cls [B, T, D] BEiT-3's multimodal [CLS] tokens V_cls (for the ``words`` loss)."""

    multimask: torch.Tensor
    single: torch.Tensor
    ious: torch.Tensor
    object_score_logits: torch.Tensor
    text_tokens: torch.Tensor
    prior: torch.Tensor | None = None
    cls: torch.Tensor | None = None


def make_batch(clips: Sequence[ReferringClip], model: MPGSAM2, tokenizer: TextTokenizer) -> ClipBatch:
    """Resize and normalise clips for both encoders (bilinear with antialiasing, as the
    inference preprocessing), targets to S x S; all clips must have the same T."""
    t = {len(c.frames) for c in clips}
    if len(t) != 1:
        raise ValueError(f"clips of different lengths in one batch: {sorted(t)}")
    s, m = model.image_size, model.mm_image_size
    mean = torch.tensor(model.config.pixel_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.config.pixel_std).view(1, 3, 1, 1)
    sam, mm, target = [], [], []
    for c in clips:
        x = torch.from_numpy(np.ascontiguousarray(c.frames)).permute(0, 3, 1, 2).float() / 255.0
        sam.append((F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True) - mean) / std)
        mm.append((F.interpolate(x, size=(m, m), mode="bilinear", align_corners=False, antialias=True) - mean) / std)
        y = torch.from_numpy(np.ascontiguousarray(c.masks)).float()[:, None]
        target.append((F.interpolate(y, size=(s, s), mode="bilinear", align_corners=False) > 0.5).float()[:, 0])
    ids, padding = tokenizer.encode_batch([c.text for c in clips])
    return ClipBatch(torch.stack(sam), torch.stack(mm), ids, padding, torch.stack(target), [c.text for c in clips])


def _global_context(model: MPGSAM2, batch: ClipBatch, causal: bool, feats: ImageFeatures | None = None):
    """BEiT-3 on every frame of B clips and the MPG over each clip (Eqs. 1-3): (mm, context).
    ``feats``: SAM 2's features of the frames (rows b * T + t), for the MPG's SAM 2 stem
    (``mpg.sam_stem``); computed here when the model has the stem and none are given."""
    b, t = batch.mm.shape[:2]
    if feats is None and model.mask_prior.sam_stem is not None:
        feats = _encode_frames(model, batch)
    mm = model.encode_multimodal(batch.mm.flatten(0, 1), batch.ids.repeat_interleave(t, 0),
                                 batch.padding.repeat_interleave(t, 0),  # object-major rows, as global_context wants
                                 previous=previous_frames(batch.mm).flatten(0, 1), **flow_reference(model.mask_prior.block_flow, batch.mm),
                                 image_features=feats, **scale_reference(model.mask_prior.block_scale, batch.mm))
    return mm, model.global_context(mm, batch=b, causal=causal)


def _encode_frames(model: MPGSAM2, batch: ClipBatch) -> ImageFeatures:
    """SAM 2's image encoder on every frame of B clips (rows b * T + t), with gradients only
    when some of its weights train."""
    frozen = not any(p.requires_grad for p in model.sam2.image_encoder.parameters())
    with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
        return model.encode_image(batch.sam.flatten(0, 1))


def forward_prior(model: MPGSAM2, batch: ClipBatch, *, causal: bool = False, with_cls: bool = False):
    """The MPG's mask prior M_p [B, T, 1, g, g] of B clips (BEiT-3 and Eqs. 2-3 only; SAM 2's
    decoder is not run, its image encoder only for the MPG's SAM 2 stem): the ``prior``
    training stage. ``with_cls``: (prior, V_cls [B, T, D])."""
    mm, ctx = _global_context(model, batch, causal)
    if ctx.prior is None:
        raise ValueError("the prior stage needs the MPG's mask prior, and this model has the MPG switched off (mpg.enabled)")
    if with_cls:
        return ctx.prior, mm.cls.reshape(*batch.mm.shape[:2], -1)
    return ctx.prior


def forward_clips(model: MPGSAM2, batch: ClipBatch, *, causal: bool = False) -> ClipOutput:
    """Decode every frame of B clips (all objects batched, one memory bank per batch)."""
    b, t = batch.sam.shape[:2]
    feats = _encode_frames(model, batch)  # rows b * T + t
    mm, ctx = _global_context(model, batch, causal, feats)
    memory = MemoryBank(num_maskmem=model.sam2.num_maskmem, max_obj_ptrs=model.sam2.max_obj_ptrs_in_encoder)
    multi, single, ious, scores = [], [], [], []
    for i in range(t):
        out = model.track_step(
            frame_idx=i, is_init_cond_frame=(i == 0), features=feats.select(list(range(i, b * t, t))),
            prompt=model.frame_prompt(ctx, i, causal=causal), memory=memory,
            num_frames=None if causal else t,  # causal: pointer distances scaled as in a stream
        )
        memory.add(out.memory, is_cond=(i == 0))
        h = out.heads
        multi.append(h.high_res_multimasks)
        single.append(h.high_res_masks)
        ious.append(h.ious)
        scores.append(h.object_score_logits)
    k = max(x.shape[1] for x in multi)  # single-mask frames among multimask ones: repeat the one candidate
    multi = [x.expand(-1, k, -1, -1) for x in multi]
    ious = [x.expand(-1, k) for x in ious]
    text = mm.text.reshape(b, t, *mm.text.shape[1:])
    return ClipOutput(torch.stack(multi, 1), torch.stack(single, 1), torch.stack(ious, 1), torch.stack(scores, 1), text, ctx.prior,
                      mm.cls.reshape(b, t, -1))
