"""With every MPG-SAM 2 addition off, our per-frame decode with the bounded memory bank equals
``sam2``'s own ``SAM2Base.track_step`` (same weights, config and frames), mask given on frame 0."""

from __future__ import annotations

import pytest
import torch

from mpg_sam2_ros.core.inference.memory import MemoryBank
from mpg_sam2_ros.core.modeling import FramePrompt, build_model

from conftest import random_frames

ADDITIONS_OFF = [
    "mpg.enabled=false",
    "sparse_prompt=false",
    "hga.pixel_global=false",
    "hga.object_global=false",
    "hga.object_local=false",
]


@pytest.mark.parametrize("mask_as_output", [False, True])
@pytest.mark.parametrize("base", ["sam2.1/sam2.1_hiera_t", "sam2/sam2_hiera_t"])
def test_decode_matches_sam2_track_step(small_cfg, mask_as_output, base):
    cfg = small_cfg.with_overrides(
        ADDITIONS_OFF
        + [f"sam2.base={base}", f"sam2.overrides.use_mask_input_as_output_without_sam={str(mask_as_output).lower()}"]
    )
    torch.manual_seed(1)
    model = build_model(cfg).eval()
    assert model.aggregator is None and model.sparse_prompt is None
    sam = model.sam2
    # a random object-score head often says "absent", which replaces every mask by the same
    # constant (-1024): bias it to "present" so real mask logits are compared
    head = sam.sam_mask_decoder.pred_obj_score_head
    (head.layers[-1] if hasattr(head, "layers") else head).bias.data.fill_(5.0)
    n = 22  # longer than the 16 object pointers and 7 mask memories: the bank evicts
    images, _ = random_frames(model, n, seed=3)
    s = model.image_size
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    gt = (((yy - 100) ** 2 + (xx - 120) ** 2) < 40**2).float()[None, None]

    bank = MemoryBank(num_maskmem=sam.num_maskmem, max_obj_ptrs=sam.max_obj_ptrs_in_encoder)
    output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    worst = 0.0
    with torch.inference_mode():
        for t in range(n):
            feats = model.encode_image(images[t : t + 1])
            mask = gt if t == 0 else None
            ours = model.track_step(
                frame_idx=t, is_init_cond_frame=(t == 0), features=feats, prompt=FramePrompt(),
                memory=bank, num_frames=n, mask_inputs=mask,
            )
            bank.add(ours.memory, is_cond=(t == 0))
            theirs = sam.track_step(
                frame_idx=t, is_init_cond_frame=(t == 0), current_vision_feats=feats.vision_feats,
                current_vision_pos_embeds=feats.vision_pos, feat_sizes=feats.feat_sizes, point_inputs=None,
                mask_inputs=mask, output_dict=output_dict, num_frames=n,
            )
            key = "cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"
            output_dict[key][t] = theirs
            for a, b in [
                (ours.heads.low_res_masks, theirs["pred_masks"]),
                (ours.heads.high_res_masks, theirs["pred_masks_high_res"]),
                (ours.heads.obj_ptr, theirs["obj_ptr"]),
                (ours.memory.maskmem_features, theirs["maskmem_features"]),
            ]:
                assert a.shape == b.shape
                worst = max(worst, (a - b).abs().max().item())
    assert len(bank) <= 1 + bank.capacity < n
    assert worst < 1e-4, worst
    # the decode is not trivially constant: frames differ
    later = output_dict["non_cond_frame_outputs"]
    assert later[6]["pred_masks"].max() > -1000 and later[6]["pred_masks"].std() > 1e-3
    assert not torch.equal(later[5]["pred_masks"], later[6]["pred_masks"])
