"""MPG-SAM 2 (paper Fig. 2): BEiT-3 + Mask Prior Generator + Global-Historical Aggregator
on top of ``sam2``'s ``SAM2Base``.

The model holds no per-stream state. Callers (the streaming engine, the offline runner,
training) keep frames' features and a ``MemoryBank`` and call, per frame:

  1. ``encode_image``      SAM 2 image encoder (frozen), once per frame, shared by objects
  2. ``encode_multimodal`` BEiT-3 on (frame, command), once per frame and command
  3. ``global_context``    MPG over a window of T frames -> priors, V_g, V_u    (Eqs. 2-3)
  4. ``track_step``        memory attention, HGA, SAM 2 heads, memory encoder  (Eqs. 4-5)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sam2.modeling.sam2_utils import get_1d_sine_pe

from ..config import ModelConfig
from ..inference.memory import MemoryBank, MemoryEntry
from .aggregator import GlobalHistoricalAggregator
from .mask_prior import MaskPriorGenerator
from .multimodal_encoder import MultimodalEncoder, MultimodalFeatures
from .sam_heads import HeadOutput, run_sam_heads


@dataclass
class ImageFeatures:
    """SAM 2 image encoder output for B frames, in SAM 2's flattened layout.

    vision_feats: per level [H_l * W_l, B, C_l] (high-res levels already projected by the
      decoder's conv_s0/conv_s1, as ``SAM2Base.forward_image`` does)
    vision_pos:   per level [H_l * W_l, B, C]
    feat_sizes:   per level (H_l, W_l)
    """

    vision_feats: list[torch.Tensor]
    vision_pos: list[torch.Tensor]
    feat_sizes: list[tuple[int, int]]

    @property
    def batch_size(self) -> int:
        return self.vision_feats[-1].shape[1]

    def select(self, idx: slice | list[int] | torch.Tensor) -> "ImageFeatures":
        return ImageFeatures([f[:, idx] for f in self.vision_feats], [p[:, idx] for p in self.vision_pos], self.feat_sizes)

    def level_map(self, stride: int, image_size: int) -> torch.Tensor:
        """[B, C, h, w] the level at ``stride`` (of ``image_size`` px input) as feature maps."""
        for f, (h, w) in zip(self.vision_feats, self.feat_sizes):
            if image_size // h == stride:
                return f.permute(1, 2, 0).reshape(f.shape[1], f.shape[2], h, w)
        raise ValueError(f"SAM 2 features of sizes {self.feat_sizes} have no stride-{stride} level")

    def expand(self, n: int) -> "ImageFeatures":
        """One frame's features repeated for n objects (the encoding is shared)."""
        if self.batch_size != 1:
            raise ValueError("expand() needs the features of a single frame")
        return ImageFeatures(
            [f.expand(-1, n, -1) for f in self.vision_feats], [p.expand(-1, n, -1) for p in self.vision_pos], self.feat_sizes
        )


@dataclass
class GlobalContext:
    """MPG outputs for B objects over a window of T frames (Eqs. 2-3).

    prior:          [B, T, 1, g, g] mask prior M_p (probabilities) or None
    global_feature: [B, T, N_v, C] global video feature V_g (temporal encoding added)
    sparse:         [B, T, 1, C] projected [CLS] sparse prompts or None
    text:           [B, T, L, C] projected text tokens or None
    text_padding:   [B, T, L]
    """

    prior: torch.Tensor | None
    global_feature: torch.Tensor
    sparse: torch.Tensor | None
    text: torch.Tensor | None
    text_padding: torch.Tensor


@dataclass
class FramePrompt:
    """Everything the decoder of one frame takes from the global context.

    prior [B, 1, g, g]; sparse [B, 1, C]; global_tokens V_g [B, M, C];
    unified V_u [B, M', C] with unified_padding [B, M'].
    """

    prior: torch.Tensor | None = None
    sparse: torch.Tensor | None = None
    global_tokens: torch.Tensor | None = None
    unified: torch.Tensor | None = None
    unified_padding: torch.Tensor | None = None


@dataclass
class FrameOutput:
    """One decoded frame for B objects: ``heads`` (mask logits at 1/4 and full SAM 2
    resolution, IoU, object pointer, object score) and the ``memory`` entry it leaves."""

    frame_idx: int
    heads: HeadOutput
    memory: MemoryEntry

    @property
    def mask_logits(self) -> torch.Tensor:
        """[B, 1, S, S] at the SAM 2 input resolution."""
        return self.heads.high_res_masks

    @property
    def object_score_logits(self) -> torch.Tensor:
        return self.heads.object_score_logits


def _matched(match, name: str, images: torch.Tensor, reference: torch.Tensor, gaps) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, N, k] ``match(images, reference, gaps)`` (the MPG's block flow or block scale cues),
    [B] ``gaps`` broadcast to the rows); rows that are one frame repeated (``expand``: one
    frame, several commands) are matched once."""
    if gaps is None:
        raise ValueError(f"{name} needs the gap of each reference frame")
    gaps = torch.as_tensor(gaps).reshape(-1).expand(len(images))
    if len(images) > 1 and images.stride(0) == 0 and reference.stride(0) == 0:
        return match(images[:1], reference[:1], gaps[:1]).expand(len(images), -1, -1), gaps
    return match(images, reference, gaps), gaps


class MPGSAM2(nn.Module):
    """MPG-SAM 2 built from parts (see ``build.build_model``).

    Arguments:
      config: the model config (kept so checkpoints can rebuild the model).
      sam2: ``sam2.modeling.sam2_base.SAM2Base`` (its image encoder is frozen).
      multimodal_encoder: BEiT-3 wrapper.
      mask_prior: ``MaskPriorGenerator`` (always present: V_g is needed even with the prior off).
      sparse_prompt: [CLS] -> MLP (D -> D -> C) sparse prompt, or None (Sec. 3.5).
      aggregator: ``GlobalHistoricalAggregator`` or None (HGA off).
    """

    def __init__(
        self,
        *,
        config: ModelConfig,
        sam2: nn.Module,
        multimodal_encoder: MultimodalEncoder,
        mask_prior: MaskPriorGenerator,
        sparse_prompt: nn.Module | None,
        aggregator: GlobalHistoricalAggregator | None,
    ) -> None:
        super().__init__()
        self.config = config
        self.sam2 = sam2
        self.multimodal_encoder = multimodal_encoder
        self.mask_prior = mask_prior
        self.sparse_prompt = sparse_prompt
        self.aggregator = aggregator
        self.sam2.image_encoder.requires_grad_(False)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(1, 3, 1, 1), persistent=False)

    # ----- sizes ---------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        """SAM 2 input size H_s = W_s."""
        return self.sam2.image_size

    @property
    def mm_image_size(self) -> int:
        """BEiT-3 input size H_m = W_m."""
        return self.config.beit3.img_size

    @property
    def hidden_dim(self) -> int:
        return self.sam2.hidden_dim

    @property
    def device(self) -> torch.device:
        return self.sam2.no_mem_embed.device

    # ----- per-frame encoders --------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> ImageFeatures:
        """images [B, 3, S, S] normalised -> SAM 2 features (frozen encoder, Sec. 3.2)."""
        s = self.image_size
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[-2:] != (s, s):
            raise ValueError(f"SAM 2 expects images [B, 3, {s}, {s}], got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be a float tensor, got {images.dtype}")
        backbone_out = self.sam2.forward_image(images)
        _, feats, pos, sizes = self.sam2._prepare_backbone_features(backbone_out)
        return ImageFeatures(list(feats), list(pos), list(sizes))

    def encode_multimodal(self, images: torch.Tensor, text_ids: torch.Tensor, text_padding: torch.Tensor,
                          previous: torch.Tensor | None = None, *, reference: torch.Tensor | None = None,
                          gaps: torch.Tensor | None = None, image_features: ImageFeatures | None = None,
                          scale_reference: torch.Tensor | None = None,
                          scale_gaps: torch.Tensor | None = None) -> MultimodalFeatures:
        """images [B, 3, m, m], text_ids/text_padding [B, L] -> BEiT-3 [CLS], patches, text (Eq. 1).

        ``previous`` [B, 3, m, m]: each row's previous frame, for the MPG's motion stem
        (``mpg.motion_stem``), whose output is added to the patches; a row without a previous
        frame passes the frame itself. Ignored by a model without the stem.
        ``reference`` [B, 3, m, m] and ``gaps`` [B]: each row's frame ``gaps`` frames back (gap
        0: none, the frame itself), for the MPG's block flow (``mpg.block_flow``). Rows that
        are one frame repeated (``expand``: one frame, several commands) are matched once.
        ``image_features``: SAM 2's features of the same frames (B rows, or 1 for one frame
        under several commands), for the MPG's SAM 2 stem (``mpg.sam_stem``), whose output is
        added to the patches. Ignored by a model without the stem.
        ``scale_reference`` [B, 3, m, m] and ``scale_gaps`` [B]: as ``reference`` and ``gaps``,
        for the MPG's block scale (``mpg.block_scale``)."""
        if not images.is_floating_point():
            raise TypeError(f"images must be a float tensor, got {images.dtype}")
        mm = self.multimodal_encoder(images, text_ids, text_padding)
        if previous is not None and self.mask_prior.motion_stem is not None:
            mm.patches = mm.patches + self.mask_prior.pixel_motion(images, previous).to(mm.patches.dtype)
        mpg = self.mask_prior
        flow = scale = None
        if reference is not None and mpg.flow_proj is not None:
            flow, rows = _matched(mpg.flow_cues, "block flow", images, reference, gaps)
            mm.patches = mm.patches + mpg.cue_features(mpg.flow_proj, flow, rows).to(mm.patches.dtype)
        if scale_reference is not None and mpg.scale_proj is not None:
            scale, rows = _matched(mpg.scale_cues, "block scale", images, scale_reference, scale_gaps)
            mm.patches = mm.patches + mpg.cue_features(mpg.scale_proj, scale, rows).to(mm.patches.dtype)
        if flow is not None and mpg.motion_head is not None:
            mm.motion = mpg.readout_cues(flow, scale)
        if image_features is not None and self.mask_prior.sam_stem is not None:
            rows = image_features.batch_size
            if rows not in (1, len(images)):
                raise ValueError(f"{rows} rows of SAM 2 features for {len(images)} BEiT-3 rows")
            stem = self.sam_patch_features(image_features)
            mm.patches = mm.patches + stem.expand(len(images), -1, -1).to(mm.patches.dtype)
        return mm

    def sam_patch_features(self, features: ImageFeatures) -> torch.Tensor:
        """[B, N, D] the MPG's SAM 2 stem (``mpg.sam_stem``) over SAM 2's stride-8 level of
        ``features``, one vector per BEiT-3 patch."""
        return self.mask_prior.sam_patches(features.level_map(8, self.image_size), self.multimodal_encoder.cfg.grid_size)

    # ----- window-level context -------------------------------------------------------
    def global_context(self, mm: MultimodalFeatures, *, batch: int = 1, positions: torch.Tensor | None = None,
                       causal: bool = False) -> GlobalContext:
        """MPG over T frames. ``mm`` holds B*T rows ordered object-major ([b0t0, b0t1, ...]);
        ``positions`` [T] are the frames' positions for V_g's temporal encoding; ``causal``
        computes Eq. 2 with frame t seeing frames 0..t (streaming-consistent training)."""
        n = len(mm)
        if n % batch:
            raise ValueError(f"{n} multimodal rows do not split into {batch} objects")
        t = n // batch
        patches = mm.patches.reshape(batch, t, *mm.patches.shape[1:])
        cls = mm.cls.reshape(batch, t, -1)
        motion = None if mm.motion is None else mm.motion.reshape(batch, t, *mm.motion.shape[1:])
        mp = self.mask_prior(patches, cls, positions, causal=causal, motion=motion)
        sparse = None
        if self.sparse_prompt is not None:
            sparse = self.sparse_prompt(cls).unsqueeze(2)
        text = None
        if self.aggregator is not None and self.aggregator.pixel_global:
            text = self.aggregator.text_proj(mm.text).reshape(batch, t, mm.text.shape[1], -1)
        return GlobalContext(
            prior=mp.prior if self.config.mpg.enabled else None,
            global_feature=mp.global_feature,
            sparse=sparse,
            text=text,
            text_padding=mm.text_padding.reshape(batch, t, -1),
        )

    def frame_prompt(self, ctx: GlobalContext, t: int, *, causal: bool = False) -> FramePrompt:
        """The prompt of window frame ``t``: its prior, its [CLS], and V_g / V_u over the
        whole window (the global context, Eqs. 4-5); ``causal``: over frames 0..t only, as
        the streaming engine sees them."""
        if causal:
            ctx = GlobalContext(
                prior=ctx.prior, global_feature=ctx.global_feature[:, : t + 1], sparse=ctx.sparse,
                text=ctx.text, text_padding=ctx.text_padding,
            )
        b = ctx.global_feature.shape[0]
        prompt = FramePrompt(
            prior=None if ctx.prior is None else ctx.prior[:, t],
            sparse=None if ctx.sparse is None else ctx.sparse[:, t],
        )
        agg = self.aggregator
        if agg is not None and agg.object_global_layers is not None:
            prompt.global_tokens = ctx.global_feature.reshape(b, -1, ctx.global_feature.shape[-1])
        if agg is not None and agg.pixel_global:
            compressed = agg.compress_global(ctx.global_feature)
            prompt.unified = torch.cat([compressed, ctx.text[:, t]], dim=1)
            prompt.unified_padding = torch.cat(
                [torch.zeros(compressed.shape[:2], dtype=torch.bool, device=compressed.device), ctx.text_padding[:, t]], dim=1
            )
        return prompt

    # ----- per-frame decoding with memory --------------------------------------------
    def _history(self, memory: MemoryBank, frame_idx: int, batch: int, num_frames: int):
        """T_mh and its temporal encoding, Eq. 5: sine of the pointer's frame distance divided
        by ``min(num_frames, max_ptrs) - 1``, as the official code (and SAM 2's own pointer
        encoding) does. A stream has no length: the engine passes no ``num_frames`` and
        ``track_step`` defaults it past ``max_ptrs``, so streams divide by ``max_ptrs - 1`` (15),
        the value of any video of 16 frames or more."""
        max_ptrs = self.sam2.max_obj_ptrs_in_encoder
        ptrs, dists = memory.object_pointers(frame_idx, max_ptrs)
        if ptrs is None:
            return None, None
        d = torch.tensor(dists, device=ptrs.device, dtype=torch.float32) / max(1, min(num_frames, max_ptrs) - 1)
        pos = get_1d_sine_pe(d, dim=ptrs.shape[-1]).to(ptrs.dtype)
        return ptrs, pos.unsqueeze(0).expand(batch, -1, -1)

    def track_step(
        self,
        *,
        frame_idx: int,
        is_init_cond_frame: bool,
        features: ImageFeatures,
        prompt: FramePrompt,
        memory: MemoryBank,
        num_frames: int | None = None,
        mask_inputs: torch.Tensor | None = None,
        run_mem_encoder: bool = True,
    ) -> FrameOutput:
        """Decode one frame for B objects with SAM 2 memory and MPG-SAM 2 prompts.

        Mirrors ``SAM2Base.track_step``: F'_i = memory attention (SAM 2's own), then Eq. 4,
        then the heads with the [CLS] sparse prompt, the prior as dense prompt and Eq. 5 on
        the mask tokens, then SAM 2's memory encoder. ``mask_inputs`` [B, 1, S, S] is an
        optional ground-truth mask (it takes the place of the prior, as in SAM 2).
        The caller adds ``output.memory`` to ``memory`` (as a conditioning entry on init frames).
        """
        sam = self.sam2
        feats, pos, sizes = features.vision_feats, features.vision_pos, features.feat_sizes
        b = feats[-1].shape[1]
        if num_frames is None:
            num_frames = frame_idx + sam.max_obj_ptrs_in_encoder + 1
        high_res = None
        if len(feats) > 1:
            high_res = [x.permute(1, 2, 0).reshape(b, x.shape[2], *s) for x, s in zip(feats[:-1], sizes[:-1])]

        if mask_inputs is not None and sam.use_mask_input_as_output_without_sam:
            pix = feats[-1].permute(1, 2, 0).reshape(b, sam.hidden_dim, *sizes[-1])
            heads = HeadOutput(*sam._use_mask_as_output(pix, high_res, mask_inputs))
        else:
            pix = sam._prepare_memory_conditioned_features(
                frame_idx=frame_idx,
                is_init_cond_frame=is_init_cond_frame,
                current_vision_feats=feats[-1:],
                current_vision_pos_embeds=pos[-1:],
                feat_sizes=sizes[-1:],
                output_dict=memory.sam2_view(),
                num_frames=num_frames,
            )
            if prompt.unified is not None:
                pix = self.aggregator.fuse_pixels(pix, sam.sam_prompt_encoder.get_dense_pe(), prompt.unified, prompt.unified_padding)
            transform = None
            agg = self.aggregator
            if agg is not None and (agg.object_global_layers is not None or agg.object_local_layers is not None):
                history, history_pos = (None, None)
                if agg.object_local_layers is not None and not is_init_cond_frame:
                    history, history_pos = self._history(memory, frame_idx, b, num_frames)
                global_tokens = prompt.global_tokens

                def transform(tokens: torch.Tensor) -> torch.Tensor:
                    return agg.fuse_object_tokens(tokens, global_tokens, history, history_pos)

            heads = run_sam_heads(
                sam,
                pix,
                high_res_features=high_res,
                multimask_output=sam._use_multimask(is_init_cond_frame, None),
                mask_inputs=mask_inputs if mask_inputs is not None else prompt.prior,
                extra_sparse=prompt.sparse,
                transform_mask_tokens=transform,
            )

        entry = MemoryEntry(frame_idx=frame_idx, obj_ptr=heads.obj_ptr, object_score_logits=heads.object_score_logits)
        if run_mem_encoder and sam.num_maskmem > 0:
            entry.maskmem_features, entry.maskmem_pos_enc = sam._encode_new_memory(
                current_vision_feats=feats,
                feat_sizes=sizes,
                pred_masks_high_res=heads.high_res_masks,
                object_score_logits=heads.object_score_logits,
                is_mask_from_pts=False,
            )
        return FrameOutput(frame_idx=frame_idx, heads=heads, memory=entry)
