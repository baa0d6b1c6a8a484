"""Streaming-consistent training trains what the engine runs: over the first W frames of a
stream, the engine's masks and scores equal the causal training forward's."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mpg_sam2_ros.core.config import load_model_config
from mpg_sam2_ros.core.modeling import build_model

from mpg_sam2_ros.core.segment import run_streaming
from mpg_sam2_ros.training.datasets import ReferringClip
from mpg_sam2_ros.training.forward import forward_clips, make_batch


def _clip(t=5, h=72, w=96, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, size=(t, h, w, 3), dtype=np.uint8)
    masks = np.zeros((t, h, w), bool)
    return ReferringClip(video="v", exp_id="0", text="the red ball on the left", exp_type=None,
                         frame_names=[str(i) for i in range(t)], frames=frames, masks=masks)


@pytest.mark.parametrize("overrides", [[], ["mpg.relative_time=true"], ["mpg.relative_time=true", "mpg.frame_difference=true"],
                                       ["mpg.relative_time=true", "mpg.motion_stem=8"], ["mpg.relative_time=true", "mpg.block_flow=3"],
                                       ["mpg.relative_time=true", "mpg.block_flow=3", "mpg.sam_stem=16"],
                                       ["mpg.relative_time=true", "mpg.block_flow=3", "mpg.block_scale=4"],
                                       ["mpg.relative_time=true", "mpg.block_flow=3", "mpg.block_scale=4", "mpg.motion_readout=true"]],
                         ids=["paper", "relative_time", "frame_difference", "motion_stem", "block_flow", "sam_stem", "block_scale",
                              "motion_readout"])
def test_engine_equals_causal_training_forward(small_model, tokenizer, overrides):
    if overrides:  # Eq. 2 with frame offsets on its keys / with each frame's change (not in the paper)
        torch.manual_seed(0)
        model = build_model(load_model_config("cpu_small", overrides)).eval()
        with torch.no_grad():  # the motion layers start at zero: make them do something
            if model.mask_prior.motion_proj is not None:
                torch.nn.init.normal_(model.mask_prior.motion_proj.weight, std=0.05)
            if model.mask_prior.motion_stem is not None:
                torch.nn.init.normal_(model.mask_prior.motion_stem[2].weight, std=0.05)
            if model.mask_prior.flow_proj is not None:
                torch.nn.init.normal_(model.mask_prior.flow_proj[2].weight, std=0.05)
            if model.mask_prior.sam_stem is not None:
                torch.nn.init.normal_(model.mask_prior.sam_stem[2].weight, std=0.5)
            if model.mask_prior.scale_proj is not None:
                torch.nn.init.normal_(model.mask_prior.scale_proj[2].weight, std=0.5)
            if model.mask_prior.motion_head is not None:
                torch.nn.init.normal_(model.mask_prior.motion_head.weight, std=0.5)
    else:
        model = copy.deepcopy(small_model).eval()
    with torch.no_grad():  # random weights say "absent" (masks all -1024): make the object present
        head = model.sam2.sam_mask_decoder.pred_obj_score_head
        last = head.layers[-1] if hasattr(head, "layers") else head
        last.bias += 20.0
    clip = _clip()

    res = run_streaming(model, tokenizer, list(clip.frames), [clip.text], window=8)
    with torch.no_grad():
        out = forward_clips(model, make_batch([clip], model, tokenizer), causal=True)
        bidir = forward_clips(model, make_batch([clip], model, tokenizer), causal=False)
    logits = torch.nn.functional.interpolate(out.single[0], size=clip.frames.shape[1:3], mode="bilinear", align_corners=False)
    masks = (logits[:, 0] > model.config.mask_threshold).numpy()
    scores = torch.sigmoid(out.object_score_logits[0, :, 0]).numpy()
    assert res.masks[0].any() and not res.masks[0].all()
    assert np.array_equal(masks, res.masks[0])
    np.testing.assert_allclose(scores, res.scores[0], atol=1e-5)
    # the bidirectional (paper) forward sees the future: frame 0 differs
    assert not torch.allclose(bidir.single[0, 0], out.single[0, 0], atol=1e-5)
