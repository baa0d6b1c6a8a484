"""One builder for every model size: ``build_model(load_model_config("mpg_sam2_l"))``."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..config import ModelConfig
from .aggregator import GlobalHistoricalAggregator
from .mask_prior import MaskPriorGenerator
from .mpg_sam2 import MPGSAM2
from .multimodal_encoder import MultimodalEncoder
from .sam2_backbone import build_sam2


_INIT_FUNCTIONS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "xavier_uniform_",
    "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
)


@contextlib.contextmanager
def skip_weight_init() -> Iterator[None]:
    """Make ``torch.nn.init`` fills no-ops: parameters are allocated but left uninitialised.
    For counting parameters or for weights that a checkpoint overwrites right after."""
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
    try:
        for name in _INIT_FUNCTIONS:
            setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def _sam_stem_sizes(sam: nn.Module, cfg: ModelConfig) -> dict:
    """``MaskPriorGenerator``'s SAM 2 stem arguments: the channels of SAM 2's stride-8 level
    (the decoder's ``conv_s1`` output) and the block of it under one BEiT-3 patch."""
    if not cfg.mpg.sam_stem:
        return {}
    if not sam.use_high_res_features_in_sam:
        raise ValueError("mpg.sam_stem reads SAM 2's stride-8 features, and this SAM 2 has no high-resolution levels")
    side = sam.image_size // 8
    return {"sam_stem": cfg.mpg.sam_stem, "sam_channels": sam.sam_mask_decoder.conv_s1.out_channels,
            "sam_block": max(1, round(side / cfg.beit3.grid_size))}


def build_model(cfg: ModelConfig, *, device: str | torch.device = "cpu", init_weights: bool = True) -> MPGSAM2:
    """Build MPG-SAM 2 with random weights on ``device``. ``init_weights=False`` leaves the
    weights uninitialised (structure only: parameter counts, or a checkpoint loads next)."""
    cfg.validate()
    init = contextlib.nullcontext() if init_weights else skip_weight_init()
    with torch.device(device), init:
        sam = build_sam2(cfg.sam2)
        c = sam.hidden_dim
        d = cfg.beit3.embed_dim
        encoder = MultimodalEncoder(cfg=cfg.beit3)
        m = cfg.mpg
        mask_prior = MaskPriorGenerator(
            embed_dim=d,
            out_dim=c,
            num_heads=m.num_heads,
            ffn_dim=m.ffn_dim,
            dropout=m.dropout,
            self_attention=m.spatiotemporal_self_attention,
            cross_attention=m.cross_modal_interaction,
            produce_prior=m.enabled,
            global_feature=m.global_feature,
            relative_time=m.relative_time,
            coord_prior=m.coord_prior,
            frame_difference=m.frame_difference,
            motion_stem=m.motion_stem,
            motion_patch=cfg.beit3.patch_size,
            block_flow=m.block_flow,
            block_flow_radius=m.block_flow_radius,
            block_scale=m.block_scale,
            motion_readout=m.motion_readout,
            **_sam_stem_sizes(sam, cfg),
        )
        # [CLS] -> MLP (D -> D -> C) sparse prompt, Sec. 3.5
        sparse = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, c)) if cfg.sparse_prompt else None
        h = cfg.hga
        aggregator = None
        if h.enabled:
            aggregator = GlobalHistoricalAggregator(
                dim=c,
                text_dim=d,
                pixel_global=h.pixel_global,
                object_global=h.object_global,
                object_local=h.object_local,
                num_pixel_layers=h.num_pixel_layers,
                num_object_layers=h.num_object_layers,
                patch_size=h.patch_size,
                num_heads=h.num_heads,
                ffn_dim=h.ffn_dim,
                dropout=h.dropout,
            )
        model = MPGSAM2(
            config=cfg,
            sam2=sam,
            multimodal_encoder=encoder,
            mask_prior=mask_prior,
            sparse_prompt=sparse,
            aggregator=aggregator,
        )
    return model.eval()


def _count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def parameter_counts(model: MPGSAM2) -> dict[str, int]:
    """Parameters per component (SAM 2 split into its parts) and the total."""
    sam = model.sam2
    sam_parts = {
        "sam2.image_encoder": _count(sam.image_encoder),
        "sam2.memory_attention": _count(sam.memory_attention),
        "sam2.memory_encoder": _count(sam.memory_encoder),
        "sam2.prompt_encoder": _count(sam.sam_prompt_encoder),
        "sam2.mask_decoder": _count(sam.sam_mask_decoder),
    }
    sam_parts["sam2.other"] = _count(sam) - sum(sam_parts.values())
    counts = {
        **sam_parts,
        "beit3": _count(model.multimodal_encoder),
        "mask_prior_generator": _count(model.mask_prior),
        "sparse_prompt": _count(model.sparse_prompt),
        "aggregator": _count(model.aggregator),
    }
    counts["total"] = _count(model)
    counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts
