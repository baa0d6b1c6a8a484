"""SAM 2 prompt encoder + mask decoder with MPG-SAM 2's prompts (paper Sec. 3.5).

These functions drive ``sam2``'s own ``PromptEncoder`` and ``MaskDecoder`` submodules (no
copies of their weights or layers) and add three hooks the stock ``SAM2Base._forward_sam_heads``
lacks: extra sparse tokens (the projected [CLS]), a dense mask prompt given as probabilities
(the mask prior), and a transform of the decoder's mask tokens before its two-way transformer
(the object-level aggregation of Eq. 5). With no hooks they compute exactly what
``SAM2Base._forward_sam_heads`` computes (tested against it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from sam2.modeling.sam2_base import NO_OBJ_SCORE


@dataclass
class HeadOutput:
    """Shapes for B objects, M candidate masks, image size S and feature size H = S/16:
    low_res_multimasks [B, M, 4H, 4H], high_res_multimasks [B, M, S, S], ious [B, M],
    low_res_masks [B, 1, 4H, 4H], high_res_masks [B, 1, S, S], obj_ptr [B, C],
    object_score_logits [B, 1]."""

    low_res_multimasks: torch.Tensor
    high_res_multimasks: torch.Tensor
    ious: torch.Tensor
    low_res_masks: torch.Tensor
    high_res_masks: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor


TokenTransform = Callable[[torch.Tensor], torch.Tensor]


def predict_masks(
    decoder,
    *,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
    high_res_features: list[torch.Tensor] | None,
    transform_mask_tokens: TokenTransform | None = None,
):
    """``MaskDecoder.predict_masks`` with an optional transform of the mask tokens
    ([B, K, C] -> [B, K, C]) before the two-way transformer. Returns
    (masks [B, K, 4H, 4H], iou_pred [B, K], mask_tokens_out [B, K, C], object_score_logits [B, 1])."""
    b = sparse_prompt_embeddings.shape[0]
    head = [decoder.iou_token.weight]
    if decoder.pred_obj_scores:
        head.insert(0, decoder.obj_score_token.weight)
    head_tokens = torch.cat(head).unsqueeze(0).expand(b, -1, -1)
    mask_tokens = decoder.mask_tokens.weight.unsqueeze(0).expand(b, -1, -1)
    if transform_mask_tokens is not None:
        mask_tokens = transform_mask_tokens(mask_tokens)
    tokens = torch.cat([head_tokens, mask_tokens, sparse_prompt_embeddings], dim=1)

    src = image_embeddings + dense_prompt_embeddings
    pos_src = image_pe.expand(b, -1, -1, -1) if image_pe.shape[0] == 1 else image_pe
    _, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos_src, tokens)
    s = len(head) - 1  # index of the IoU token
    iou_token_out = hs[:, s]
    mask_tokens_out = hs[:, s + 1 : s + 1 + decoder.num_mask_tokens]

    src = src.transpose(1, 2).reshape(b, c, h, w)
    if decoder.use_high_res_features:
        dc1, ln1, act1, dc2, act2 = decoder.output_upscaling
        feat_s0, feat_s1 = high_res_features
        upscaled = act2(dc2(act1(ln1(dc1(src) + feat_s1))) + feat_s0)
    else:
        upscaled = decoder.output_upscaling(src)
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    _, cu, hu, wu = upscaled.shape
    masks = (hyper_in @ upscaled.reshape(b, cu, hu * wu)).reshape(b, -1, hu, wu)
    iou_pred = decoder.iou_prediction_head(iou_token_out)
    if decoder.pred_obj_scores:
        object_score_logits = decoder.pred_obj_score_head(hs[:, 0])
    else:
        object_score_logits = 10.0 * iou_pred.new_ones(b, 1)
    return masks, iou_pred, mask_tokens_out, object_score_logits


def run_sam_heads(
    sam,
    backbone_features: torch.Tensor,
    *,
    high_res_features: list[torch.Tensor] | None,
    multimask_output: bool,
    mask_inputs: torch.Tensor | None = None,
    extra_sparse: torch.Tensor | None = None,
    transform_mask_tokens: TokenTransform | None = None,
) -> HeadOutput:
    """Prompt encoder + mask decoder of ``sam`` (a ``SAM2Base``) on one frame's features.

    backbone_features: [B, C, H, W] (memory-conditioned, optionally HGA-fused)
    mask_inputs: [B, 1, h, w] dense mask prompt (probabilities or a mask), resized to the
        prompt encoder's mask input size (bilinear, antialiased) as SAM 2 does
    extra_sparse: [B, k, C] tokens appended to the (padded, empty) point prompts
    """
    b = backbone_features.shape[0]
    device = backbone_features.device
    enc = sam.sam_prompt_encoder
    coords = torch.zeros(b, 1, 2, device=device)
    labels = -torch.ones(b, 1, dtype=torch.int32, device=device)
    if mask_inputs is not None and mask_inputs.shape[-2:] != enc.mask_input_size:
        mask_inputs = F.interpolate(
            mask_inputs.float(), size=enc.mask_input_size, mode="bilinear", align_corners=False, antialias=True
        )
    sparse, dense = enc(points=(coords, labels), boxes=None, masks=mask_inputs)
    if extra_sparse is not None:
        sparse = torch.cat([sparse, extra_sparse.to(sparse.dtype)], dim=1)

    decoder = sam.sam_mask_decoder
    masks, ious, tokens_out, object_score_logits = predict_masks(
        decoder,
        image_embeddings=backbone_features,
        image_pe=enc.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        high_res_features=high_res_features,
        transform_mask_tokens=transform_mask_tokens,
    )
    # candidate selection as MaskDecoder.forward
    if multimask_output:
        masks, ious = masks[:, 1:], ious[:, 1:]
    elif decoder.dynamic_multimask_via_stability and not decoder.training:
        masks, ious = decoder._dynamic_multimask_via_stability(masks, ious)
    else:
        masks, ious = masks[:, :1], ious[:, :1]
    if multimask_output and decoder.use_multimask_token_for_obj_ptr:
        tokens_out = tokens_out[:, 1:]
    else:
        tokens_out = tokens_out[:, :1]

    if sam.pred_obj_scores:
        is_obj_appearing = object_score_logits > 0
        masks = torch.where(is_obj_appearing[:, None, None], masks, NO_OBJ_SCORE)
    low_res_multimasks = masks.float()
    high_res_multimasks = F.interpolate(
        low_res_multimasks, size=(sam.image_size, sam.image_size), mode="bilinear", align_corners=False
    )
    token = tokens_out[:, 0]
    if multimask_output:
        best = torch.argmax(ious, dim=-1)
        rows = torch.arange(b, device=device)
        low_res_masks = low_res_multimasks[rows, best].unsqueeze(1)
        high_res_masks = high_res_multimasks[rows, best].unsqueeze(1)
        if tokens_out.shape[1] > 1:
            token = tokens_out[rows, best]
    else:
        low_res_masks, high_res_masks = low_res_multimasks, high_res_multimasks

    obj_ptr = sam.obj_ptr_proj(token)
    if sam.pred_obj_scores:
        appearing = object_score_logits.sigmoid() if sam.soft_no_obj_ptr else is_obj_appearing.float()
        if sam.fixed_no_obj_ptr:
            obj_ptr = appearing * obj_ptr
        obj_ptr = obj_ptr + (1 - appearing) * sam.no_obj_ptr
    return HeadOutput(
        low_res_multimasks, high_res_multimasks, ious, low_res_masks, high_res_masks, obj_ptr, object_score_logits
    )
