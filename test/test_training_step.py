"""A training step's gradients reach MPG, HGA, the prompt MLP and BEiT-3, but not the frozen
SAM 2 image encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mpg_sam2_ros.core.inference.memory import MemoryBank
from mpg_sam2_ros.core.modeling import build_model

from conftest import random_frames


def _grad_norm(module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_training_step_gradients(small_cfg, tokenizer):
    torch.manual_seed(0)
    model = build_model(small_cfg).train()
    t = 3
    sam_images, mm_images = random_frames(model, t, seed=5)
    ids, pad = tokenizer.encode_batch(["the red ball on the left"])
    mm = model.encode_multimodal(mm_images, ids.expand(t, -1), pad.expand(t, -1))
    ctx = model.global_context(mm, batch=1)
    memory = MemoryBank()
    s = model.image_size
    target = torch.zeros(1, 1, s, s)
    target[..., 64:160, 80:200] = 1.0
    loss = 0.0
    for i in range(t):
        out = model.track_step(
            frame_idx=i, is_init_cond_frame=(i == 0), features=model.encode_image(sam_images[i : i + 1]),
            prompt=model.frame_prompt(ctx, i), memory=memory, num_frames=t,
        )
        memory.add(out.memory, is_cond=(i == 0))
        # masks are hard-replaced where the object score says "absent": supervise the score too
        loss = loss + F.binary_cross_entropy_with_logits(out.mask_logits, target)
        loss = loss + F.binary_cross_entropy_with_logits(out.object_score_logits, torch.ones_like(out.object_score_logits))
    loss.backward()

    m = model
    trained = {
        "beit3": m.multimodal_encoder,
        "mpg.self_attention": m.mask_prior.spatiotemporal,
        "mpg.cls_attention": m.mask_prior.cls_attention,
        "mpg.mask_head": m.mask_prior.mask_head,
        "mpg.global_proj": m.mask_prior.global_proj,
        "sparse_prompt": m.sparse_prompt,
        "hga.pixel": m.aggregator.pixel_layers,
        "hga.patch_proj": m.aggregator.patch_proj,
        "hga.text_proj": m.aggregator.text_proj,
        "hga.object_global": m.aggregator.object_global_layers,
        "hga.object_local": m.aggregator.object_local_layers,
        "sam2.mask_decoder": m.sam2.sam_mask_decoder,
        "sam2.memory_attention": m.sam2.memory_attention,
    }
    for name, module in trained.items():
        assert _grad_norm(module) > 0, f"no gradient reaches {name}"
    assert all(p.grad is None and not p.requires_grad for p in m.sam2.image_encoder.parameters())


def test_prior_stage_trains_the_sam_stem_on_frozen_sam2_features(tokenizer):
    """``mpg.sam_stem`` in the ``prior`` stage: ``forward_prior`` runs SAM 2's image encoder
    (without gradients when it is frozen, as that stage freezes it) and the prior's loss reaches
    the stem, whose zero last layer gets a gradient at the first step."""
    from mpg_sam2_ros.core.config import load_model_config
    from mpg_sam2_ros.training.datasets import ReferringClip
    from mpg_sam2_ros.training.forward import forward_prior, make_batch
    import numpy as np

    torch.manual_seed(0)
    model = build_model(load_model_config("cpu_small", ["mpg.sam_stem=8"])).train()
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(("multimodal_encoder.", "mask_prior.")))
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 48, 64), bool)
    masks[:, 10:30, 20:40] = True
    clip = ReferringClip(video="v", exp_id="0", text="the red ball", exp_type=None, frame_names=["0", "1", "2"],
                         frames=rng.integers(0, 255, size=(3, 48, 64, 3), dtype=np.uint8), masks=masks)
    prior = forward_prior(model, make_batch([clip], model, tokenizer), causal=True)
    target = F.interpolate(torch.from_numpy(masks).float()[None], size=prior.shape[-2:], mode="area")[:, :, None]
    F.binary_cross_entropy(prior, target).backward()
    assert _grad_norm(model.mask_prior.sam_stem[2]) > 0
    assert all(p.grad is None for p in model.sam2.image_encoder.parameters())
