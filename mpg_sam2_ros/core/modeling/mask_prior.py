"""Mask Prior Generator (paper Sec. 3.3, Eqs. 2-3)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from sam2.modeling.sam2_utils import get_1d_sine_pe

from .attention import AttentionFFNBlock


@dataclass
class MaskPriorOutput:
    """prior: [B, T, 1, g, g] probabilities M_p (None when the MPG prior is switched off);
    global_feature: [B, T, N_v, C] global video feature V_g with a temporal sine encoding."""

    prior: torch.Tensor | None
    global_feature: torch.Tensor


def previous_frames(frames: torch.Tensor, dim: int = 1, gap: int = 1) -> torch.Tensor:
    """Each frame's frame ``gap`` frames back along ``dim``, or the first frame when the clip
    holds fewer (the first frame's own is itself: nothing is known before it), for
    ``frame_difference``, the motion stem and the block flow (``frame_gaps`` says how far back
    each one is)."""
    n = frames.shape[dim]
    index = torch.clamp(torch.arange(n, device=frames.device) - gap, min=0)
    return frames.index_select(dim, index)


def frame_gaps(frames: int, gap: int, device=None) -> torch.Tensor:
    """[frames] how many frames back ``previous_frames(..., gap=gap)`` reached: min(t, gap)."""
    return torch.clamp(torch.arange(frames, device=device), max=gap)


def flow_reference(gap: int, clips: torch.Tensor) -> dict:
    """``encode_multimodal``'s block-flow arguments (``reference``, ``gaps``) for the frames of
    clips [B, T, 3, m, m] or one clip [T, 3, m, m], rows object-major: each frame's frame
    ``gap`` back, or the clip's first. Empty when ``gap`` is 0 (no block flow)."""
    if not gap:
        return {}
    batched = clips.dim() == 5
    c = clips if batched else clips[None]
    b, t = c.shape[:2]
    return {"reference": previous_frames(c, gap=gap).flatten(0, 1), "gaps": frame_gaps(t, gap, device=c.device).repeat(b)}


def block_flow(images: torch.Tensor, reference: torch.Tensor, *, cell: int, radius: int,
               margin: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Block matching at half resolution: for each ``cell`` x ``cell`` cell of ``images``
    [B, 3, m, m] (pixels at full resolution), the shift (dy, dx) within ``radius`` half-res
    pixels that best maps ``reference`` onto it (sum of squared differences), minus the shift
    that best maps most cells (the median cell's cost: the camera's pan and shake). A cell whose camera shift
    matches within ``margin`` (relative) of its best keeps the camera's: a flat-coloured cell
    (no texture to match) reads as still, not as noise. Returns (displacement [B, 2, g, g] in
    full-resolution pixels, (dy, dx); evidence [B, 1, g, g] in [0, 1]: how much better the
    cell's own shift matches than the camera's). Not differentiable (argmin), and needs none."""
    a = F.avg_pool2d(images, 2)
    b = F.pad(F.avg_pool2d(reference, 2), (radius,) * 4, mode="replicate")
    n, c, h, w = a.shape
    k = 2 * radius + 1
    # every shift at once (a few large ops, not hundreds of small ones: the node's worker shares
    # the GIL with its executors): unfold position (ky, kx) at (y, x) holds reference(y + ky - r,
    # x + kx - r), i.e. content that moved by (dy, dx) = (r - ky, r - kx) to reach a(y, x)
    shifted = F.unfold(b, kernel_size=k).view(n, c, k * k, h, w)
    cost = F.avg_pool2d((a[:, :, None] - shifted).square().sum(1), cell // 2)  # [B, S, g, g]
    cost = cost.flip(1)  # shifts in (dy, dx) order, dy then dx from -r to r (ties go to the first)
    shifts = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    table = torch.tensor(shifts, dtype=images.dtype, device=images.device)  # [S, 2]
    camera = cost.flatten(2).median(2).values.argmin(1)  # [B]; the median cell: moving objects are a minority
    at_camera = cost.gather(1, camera[:, None, None, None].expand(-1, 1, *cost.shape[2:]))
    best = cost.amin(1, keepdim=True)
    own = torch.where(at_camera <= best * (1 + margin) + 1e-6, camera[:, None, None, None], cost.argmin(1, keepdim=True))[:, 0]
    moved = (table[own] - table[camera][:, None, None]).permute(0, 3, 1, 2) * 2
    evidence = (at_camera - best) / (at_camera + 1e-6)
    return moved, evidence


def scale_reference(gap: int, clips: torch.Tensor) -> dict:
    """``encode_multimodal``'s block-scale arguments (``scale_reference``, ``scale_gaps``) for
    clips [B, T, 3, m, m] or one clip [T, 3, m, m], as ``flow_reference`` gives the block
    flow's. Empty when ``gap`` is 0 (no block scale)."""
    flow = flow_reference(gap, clips)
    return {"scale_reference": flow["reference"], "scale_gaps": flow["gaps"]} if flow else {}


def _parabola(minus: torch.Tensor, centre: torch.Tensor, plus: torch.Tensor) -> torch.Tensor:
    """Sub-step offset in [-1, 1] of the minimum of a parabola through three equally spaced costs."""
    return ((minus - plus) / (2 * (minus - 2 * centre + plus).clamp(min=1e-6))).clamp(-1, 1)


def _shifted(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``images`` [B, C, H, W] moved by ``shift`` [B, 2] (dy, dx) pixels (bilinear, edges
    repeated): out(p) = images(p - shift), i.e. content at q appears at q + shift."""
    n, _, h, w = images.shape
    ys = torch.arange(h, dtype=images.dtype, device=images.device)
    xs = torch.arange(w, dtype=images.dtype, device=images.device)
    gy = ((ys[None] - shift[:, :1] + 0.5) / h * 2 - 1)[:, :, None].expand(n, h, w)
    gx = ((xs[None] - shift[:, 1:] + 0.5) / w * 2 - 1)[:, None, :].expand(n, h, w)
    return F.grid_sample(images, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="border", align_corners=False)


def camera_shift(images: torch.Tensor, reference: torch.Tensor, *, cell: int, radius: int) -> torch.Tensor:
    """[B, 2] the whole frame's shift (dy, dx) in pixels, to a fraction of one, that best maps
    ``reference`` onto ``images`` (both [B, 3, m, m]): the shift of the median ``cell`` x
    ``cell`` cell's cost (moving objects are a minority), searched at half resolution within
    ``radius`` half-res pixels, then within 2 pixels at full resolution, then a parabola per
    axis. Not differentiable, and needs none."""
    a = F.avg_pool2d(images, 2)
    b = F.pad(F.avg_pool2d(reference, 2), (radius,) * 4, mode="replicate")
    n, c, h, w = a.shape
    k = 2 * radius + 1
    shifted = F.unfold(b, kernel_size=k).view(n, c, k * k, h, w)  # as in block_flow: shift (r - ky, r - kx)
    cost = F.avg_pool2d((a[:, :, None] - shifted).square().sum(1), cell // 2).flatten(2).median(2).values
    best = cost.argmin(1)
    coarse = torch.stack([radius - best // k, radius - best % k], 1).to(images.dtype) * 2
    near = F.pad(_shifted(reference, coarse), (2,) * 4, mode="replicate")
    hh, ww = images.shape[-2:]
    fine = torch.stack([
        F.avg_pool2d((images - near[..., 2 - dy: 2 - dy + hh, 2 - dx: 2 - dx + ww]).square().sum(1, keepdim=True),
                     cell).flatten(1).median(1).values
        for dy in range(-2, 3) for dx in range(-2, 3)], 1).view(n, 5, 5)
    flat = fine.flatten(1).argmin(1)
    iy, ix = (flat // 5).clamp(1, 3), (flat % 5).clamp(1, 3)
    rows = torch.arange(n, device=images.device)
    dy = iy - 2 + _parabola(fine[rows, iy - 1, ix], fine[rows, iy, ix], fine[rows, iy + 1, ix])
    dx = ix - 2 + _parabola(fine[rows, iy, ix - 1], fine[rows, iy, ix], fine[rows, iy, ix + 1])
    return coarse + torch.stack([dy, dx], 1)


def block_scale(images: torch.Tensor, reference: torch.Tensor, *, cell: int, ratio: float = 1.15,
                radius: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale matching: for each ``cell`` x ``cell`` cell of ``images`` [B, 3, m, m], how much
    ``reference`` (camera-compensated: ``camera_shift`` within ``radius`` half-res pixels)
    must be magnified about the cell's centre to match it. Each of the scales ``ratio``^-1, 1
    and ``ratio`` is matched with shifts of up to 1 pixel (a scale about the object's own centre
    is a scale about the cell's plus a small shift), and a parabola through the three costs
    gives the log scale (within one step of ``ratio`` either way). Returns
    (log scale [B, 1, g, g]: > 0 where the content grew; evidence [B, 1, g, g] in [0, 1]: how
    much better the best scale matches than scale 1). Not differentiable, and needs none."""
    camera = camera_shift(images, reference, cell=cell, radius=radius)
    n, _, h, w = images.shape
    pos = torch.arange(h, dtype=images.dtype, device=images.device)
    centre = (torch.div(pos, cell, rounding_mode="floor") + 0.5) * cell - 0.5  # each pixel's cell centre
    costs = []
    for step in (-1, 0, 1):
        source = centre + (pos - centre) / ratio**step  # where each pixel's content was, before the scale
        gy = ((source[None] - camera[:, :1] + 0.5) / h * 2 - 1)[:, :, None].expand(n, h, w)
        gx = ((source[None] - camera[:, 1:] + 0.5) / w * 2 - 1)[:, None, :].expand(n, h, w)
        warped = F.pad(F.grid_sample(reference, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="border",
                                     align_corners=False), (1,) * 4, mode="replicate")
        best = None
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                cost = F.avg_pool2d((images - warped[..., 1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w]).square().sum(1, keepdim=True), cell)
                best = cost if best is None else torch.minimum(best, cost)
        costs.append(best)
    minus, at_one, plus = costs
    logscale = _parabola(minus, at_one, plus) * math.log(ratio)
    lowest = torch.minimum(torch.minimum(minus, at_one), plus)
    evidence = (at_one - lowest) / (at_one + 1e-6)
    return logscale, evidence


def causal_mask(frames: int, rows_per_frame: int, keys_per_frame: int, device=None) -> torch.Tensor:
    """bool [frames * rows_per_frame, frames * keys_per_frame], True where a query row of frame
    t would attend to a key of a frame after t (block-causal over frames)."""
    q = torch.arange(frames, device=device).repeat_interleave(rows_per_frame)
    k = torch.arange(frames, device=device).repeat_interleave(keys_per_frame)
    return k[None, :] > q[:, None]


class MaskPriorGenerator(nn.Module):
    """Pseudo-mask priors and the global video feature from BEiT-3 outputs of T frames.

    Eq. 2:  V'     = SA(R(V))                     spatiotemporal self-attention over T x N_v
            V'_cls = CA(R(V_cls) -> V')           [CLS] -> patch cross-attention
    Eq. 3:  V_g    = MLP(V' . V'_cls)             global video feature ("Masked")
            M_p    = sigmoid(MLP(V' . V'_cls))    mask prior at the BEiT-3 patch grid

    As in the released model (whose weights load into this module): the self-attention is a
    post-norm transformer layer with FFN; the [CLS] interaction is multiplicative,
    ``V'_cls = V_cls * Attn(V_cls, V', V')``; V'_cls goes through a Linear before the
    product; the mask producer is one Linear + sigmoid on the product (not on V_g). With
    ``global_feature="vanilla"`` (Tab. 4) V_g is projected from the raw encoder patches V.

    Arguments:
      embed_dim: D, BEiT-3 channels.  out_dim: C, SAM 2 channels of V_g.
      num_heads, ffn_dim, dropout: of the attention layers.
      self_attention: S_si on/off.  cross_attention: S_ci on/off.  (Tab. 4)
      produce_prior: emit M_p (MPG on/off, Tab. 3).
      global_feature: "masked" or "vanilla".
      relative_time: Eq. 2's queries and keys get a sine encoding of the key frame's offset
        from the query frame (``MPGConfig.relative_time``; not in the paper).
      coord_prior: M_p's logit gets a term linear in each cell's (x, y), with slopes read
        from V'_cls (``MPGConfig.coord_prior``; not in the paper).
      frame_difference: before Eq. 2 each frame's patches get a Linear of their change from the
        previous frame of the window, ``V_t + L(V_t - V_{t-1})`` (zero for the window's first
        frame; ``MPGConfig.frame_difference``; not in the paper).
      motion_stem, motion_patch: hidden channels (0: none) and patch size of a small conv
        stem that reads motion from the pixels of a frame and its previous one
        (``pixel_motion``, added to the frame's patches; ``MPGConfig.motion_stem``; not in
        the paper).
      block_flow: frames back (0: none) of the reference frame of ``flow_cues``: each
        patch's velocity against the camera by block matching, through a small MLP added to
        the frame's patches (``MPGConfig.block_flow``; not in the paper).
      block_flow_radius: its search radius in half-resolution pixels.
      sam_stem, sam_channels, sam_block: hidden channels (0: none) of a stem that reads SAM 2's
        stride-8 features (``sam_channels`` of them) in ``sam_block`` x ``sam_block`` blocks,
        one per BEiT-3 patch (``sam_patches``, added to the frame's patches;
        ``MPGConfig.sam_stem``; not in the paper).
      block_scale: frames back (0: none) of the reference frame of ``scale_cues``: each
        patch's growth against the camera by scale matching, through a small MLP added to the
        frame's patches (``MPGConfig.block_scale``; not in the paper).
      motion_readout: M_p's logit gets a term linear in each cell's raw motion cues
        (``readout_cues``), with slopes read from V'_cls, as ``coord_prior`` does for the
        cell's position (``MPGConfig.motion_readout``; not in the paper).
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        out_dim: int,
        num_heads: int = 8,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        self_attention: bool = True,
        cross_attention: bool = True,
        produce_prior: bool = True,
        global_feature: str = "masked",
        relative_time: bool = False,
        coord_prior: bool = False,
        frame_difference: bool = False,
        motion_stem: int = 0,
        motion_patch: int = 16,
        block_flow: int = 0,
        block_flow_radius: int = 6,
        sam_stem: int = 0,
        sam_channels: int = 0,
        sam_block: int = 1,
        block_scale: int = 0,
        motion_readout: bool = False,
    ) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.relative_time = relative_time
        self.global_feature_kind = global_feature
        self.spatiotemporal = (
            AttentionFFNBlock(dim=embed_dim, num_heads=num_heads, ffn_dim=ffn_dim or 4 * embed_dim, dropout=dropout)
            if self_attention
            else None
        )
        self.cls_attention = nn.MultiheadAttention(embed_dim, num_heads) if cross_attention else None
        self.cls_proj = nn.Linear(embed_dim, embed_dim)
        self.mask_head = nn.Linear(embed_dim, 1) if produce_prior else None
        self.coord_head = nn.Linear(embed_dim, 2) if produce_prior and coord_prior else None
        self.global_proj = nn.Linear(embed_dim, out_dim)
        self.motion_proj = None
        if frame_difference:  # starts at zero: a model trained without it is unchanged at first
            self.motion_proj = nn.Linear(embed_dim, embed_dim)
            nn.init.zeros_(self.motion_proj.weight)
            nn.init.zeros_(self.motion_proj.bias)
        self.motion_stem = None
        if motion_stem:  # pixels of (I_t, dI, dI * dI/dx, dI * dI/dy) per patch -> D; the last layer starts at zero
            self.motion_stem = nn.Sequential(nn.Conv2d(12, motion_stem, motion_patch, stride=motion_patch), nn.GELU(),
                                             nn.Conv2d(motion_stem, embed_dim, 1))
            nn.init.zeros_(self.motion_stem[2].weight)
            nn.init.zeros_(self.motion_stem[2].bias)
        self.motion_patch = motion_patch
        self.block_flow, self.block_flow_radius = block_flow, block_flow_radius
        self.flow_proj = None
        if block_flow:  # (vy, vx, evidence) per patch -> D; the last layer starts at zero
            self.flow_proj = nn.Sequential(nn.Linear(3, 64), nn.GELU(), nn.Linear(64, embed_dim))
            nn.init.zeros_(self.flow_proj[2].weight)
            nn.init.zeros_(self.flow_proj[2].bias)
        self.block_scale = block_scale
        self.scale_proj = None
        if block_scale:  # (log scale per frame, evidence) per patch -> D; the last layer starts at zero
            self.scale_proj = nn.Sequential(nn.Linear(2, 64), nn.GELU(), nn.Linear(64, embed_dim))
            nn.init.zeros_(self.scale_proj[2].weight)
            nn.init.zeros_(self.scale_proj[2].bias)
        self.motion_head = None
        if motion_readout:  # V'_cls -> one slope per raw motion cue (readout_cues); starts at zero
            if not (block_flow and produce_prior):
                raise ValueError("the motion readout needs the block flow and the prior")
            self.motion_head = nn.Linear(embed_dim, self.readout_size)
            nn.init.zeros_(self.motion_head.weight)
            nn.init.zeros_(self.motion_head.bias)
        self.sam_block = sam_block
        self.sam_stem = None
        if sam_stem:  # each patch's block of SAM 2 stride-8 features, position by position -> D; the last layer starts at zero
            if sam_channels <= 0 or sam_block <= 0:
                raise ValueError(f"the SAM 2 stem needs the level's channels and block size, got {sam_channels}, {sam_block}")
            self.sam_stem = nn.Sequential(nn.Conv2d(sam_channels, sam_stem, sam_block, stride=sam_block), nn.GELU(),
                                          nn.Conv2d(sam_stem, embed_dim, 1))
            nn.init.zeros_(self.sam_stem[2].weight)
            nn.init.zeros_(self.sam_stem[2].bias)

    def sam_patches(self, level: torch.Tensor, grid: int) -> torch.Tensor:
        """``sam_stem``: [B, N, D] features of SAM 2's stride-8 level [B, C, h, w] for the
        ``grid`` x ``grid`` BEiT-3 patches of the same frames: each patch reads the block of the
        level under it with a weight per position (a strided conv), so where inside the patch a
        value lies, which is what tells a triangle from a square, survives. A level that is not
        ``sam_block * grid`` wide is resampled to it first (bilinear)."""
        if self.sam_stem is None:
            raise ValueError("this MPG has no SAM 2 stem (mpg.sam_stem)")
        if level.dim() != 4 or level.shape[1] != self.sam_stem[0].in_channels:
            raise ValueError(f"the SAM 2 stem reads [B, {self.sam_stem[0].in_channels}, h, w] features, "
                             f"got {tuple(level.shape)}")
        side = self.sam_block * grid
        if level.shape[-2:] != (side, side):
            level = F.interpolate(level, size=(side, side), mode="bilinear", align_corners=False)
        return self.sam_stem(level.to(self.sam_stem[0].weight.dtype)).flatten(2).transpose(1, 2)

    def flow_cues(self, images: torch.Tensor, reference: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        """``block_flow``'s raw cues [B, N, 3] of frames ``images`` [B, 3, m, m] (BEiT-3 inputs)
        against ``reference`` frames ``gaps`` [B] frames back: per BEiT-3 patch the velocity
        (vy, vx) of its content against the camera's in pixels per frame, / 4 (matched over
        several frames, the displacement of a moving object outgrows the camera's per-frame
        shake, which one frame pair mostly measures), and the matching evidence. Rows with gap
        0 (nothing known before them) are zero. No gradient."""
        if not self.block_flow:
            raise ValueError("this MPG has no block flow (mpg.block_flow)")
        if images.shape != reference.shape:
            raise ValueError(f"frames {tuple(images.shape)} and reference frames {tuple(reference.shape)} differ in shape")
        if images.shape[-1] % self.motion_patch or self.motion_patch % 2:
            raise ValueError(f"block flow needs an even patch size dividing the image, got patch {self.motion_patch} "
                             f"on {images.shape[-1]} px")
        gaps = gaps.to(images.device)
        with torch.no_grad():
            moved, evidence = block_flow(images.float(), reference.float(), cell=self.motion_patch,
                                         radius=self.block_flow_radius)
            velocity = moved / gaps.clamp(min=1).to(moved.dtype)[:, None, None, None]
            feats = torch.cat([velocity / 4.0, evidence], dim=1).flatten(2).transpose(1, 2)  # [B, N, 3]
        return feats * (gaps > 0)[:, None, None].to(feats.dtype)

    def scale_cues(self, images: torch.Tensor, reference: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        """``block_scale``'s raw cues [B, N, 2] of frames ``images`` [B, 3, m, m] (BEiT-3 inputs)
        against ``reference`` frames ``gaps`` [B] frames back: per BEiT-3 patch the log of its
        content's magnification per frame (``block_scale``, x 40: an object that grows by 1.75
        over 24 frames reads about 1) and the matching evidence. Rows with gap 0 are zero. No
        gradient."""
        if not self.block_scale:
            raise ValueError("this MPG has no block scale (mpg.block_scale)")
        if images.shape != reference.shape:
            raise ValueError(f"frames {tuple(images.shape)} and reference frames {tuple(reference.shape)} differ in shape")
        if images.shape[-1] % self.motion_patch or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"block scale needs square frames that the patch size {self.motion_patch} divides, "
                             f"got {tuple(images.shape[-2:])}")
        gaps = gaps.to(images.device)
        with torch.no_grad():
            logscale, evidence = block_scale(images.float(), reference.float(), cell=self.motion_patch)
            rate = logscale / gaps.clamp(min=1).to(logscale.dtype)[:, None, None, None]
            feats = torch.cat([rate * 40.0, evidence], dim=1).flatten(2).transpose(1, 2)  # [B, N, 2]
        return feats * (gaps > 0)[:, None, None].to(feats.dtype)

    @staticmethod
    def cue_features(proj: nn.Module | None, cues: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        """[B, N, D] raw cues [B, N, k] through ``proj`` (``flow_proj`` or ``scale_proj``);
        rows with gap 0 get zeros (the MLP's biases would make them nonzero)."""
        if proj is None:
            raise ValueError("this MPG has no projection for these cues")
        out = proj(cues.to(proj[0].weight.dtype))
        return out * (gaps.to(out.device) > 0)[:, None, None].to(out.dtype)

    @property
    def readout_size(self) -> int:
        """K, the motion readout's cues per patch: 5 from the block flow, 3 more from the block scale."""
        return 5 + (3 if self.block_scale else 0)

    def readout_cues(self, flow: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """[B, N, K] the motion readout's cues from ``flow_cues`` (vy, vx, evidence) and
        ``scale_cues`` (rate, evidence): (vy, vx, |vy|, |vx|, evidence) and, with a block
        scale, (rate, |rate|, evidence), zeros where ``scale`` is None. The magnitudes let a
        slope per cue say "moving, either way" (bouncing) and "not moving" (standing still),
        which signed velocities summed with slopes cannot."""
        parts = [flow[..., :2], flow[..., :2].abs(), flow[..., 2:3]]
        if self.block_scale:
            if scale is None:
                scale = flow.new_zeros(*flow.shape[:-1], 2)
            parts += [scale[..., :1], scale[..., :1].abs(), scale[..., 1:2]]
        return torch.cat(parts, dim=-1)

    def pixel_motion(self, images: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """``motion_stem``: [B, N, D] motion features of frames ``images`` [B, 3, m, m] (BEiT-3
        inputs) against their previous frames ``previous`` (same shape), read from the pixels
        of each patch of ``(I_t, dI, dI * dI_t/dx, dI * dI_t/dy)`` with ``dI = I_t - I_{t-1}``:
        the last two are the brightness-constancy terms of optical flow, whose sums over a
        patch point against the motion whatever the contrast of object and background. The
        patch grid is BEiT-3's, so the result adds to its patches V. A row whose previous
        frame is the frame itself (a stream's or a clip's first frame: nothing is known of its
        motion) gets zeros."""
        if self.motion_stem is None:
            raise ValueError("this MPG has no motion stem (mpg.motion_stem)")
        if images.shape != previous.shape:
            raise ValueError(f"frames {tuple(images.shape)} and previous frames {tuple(previous.shape)} differ in shape")
        change = images - previous
        dx = torch.zeros_like(images)
        dy = torch.zeros_like(images)
        dx[..., 1:-1] = (images[..., 2:] - images[..., :-2]) / 2  # central differences, 0 at the border
        dy[..., 1:-1, :] = (images[..., 2:, :] - images[..., :-2, :]) / 2
        inputs = torch.cat([images, change, change * dx, change * dy], dim=1)
        out = self.motion_stem(inputs).flatten(2).transpose(1, 2)
        known = change.flatten(1).abs().amax(dim=1) > 0
        return out * known[:, None, None].to(out.dtype)

    def temporal_encoding(self, positions: torch.Tensor, dim: int | None = None) -> torch.Tensor:
        """[T] frame positions -> [T, dim] sine encoding: added to V_g (dim C, as the released
        model), and with ``relative_time`` to Eq. 2's queries and keys (dim D, frame offsets)."""
        return get_1d_sine_pe(positions.float(), dim=dim or self.out_dim)

    def contextualise(self, patches: torch.Tensor, context: torch.Tensor | None = None, *,
                      causal: bool = False) -> torch.Tensor:
        """V' rows for ``patches`` [B, Tq, N, D] attending to ``context`` [B, Tk, N, D]
        (default: themselves, i.e. the full Eq. 2 self-attention over all Tq x N tokens).
        ``causal`` (self-attention only): frame t's rows attend to frames 0..t, as the
        streaming engine computes them."""
        if self.spatiotemporal is None:
            return patches
        if causal and context is not None:
            raise ValueError("causal self-attention takes no separate context")
        if self.motion_proj is not None:
            patches, context = self._with_motion(patches, context)
        if self.relative_time:
            return self._contextualise_relative(patches, context, causal=causal)
        b, tq, n, d = patches.shape
        q = patches.reshape(b, tq * n, d).transpose(0, 1)
        kv = None if context is None else context.reshape(b, -1, d).transpose(0, 1)
        mask = causal_mask(tq, n, n, device=patches.device) if causal else None
        return self.spatiotemporal(q, kv, attn_mask=mask).transpose(0, 1).reshape(b, tq, n, d)

    def _with_motion(self, patches: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``frame_difference``: ``V_t + L(V_t - V_{t-1})`` over the frames of ``context``
        (default: ``patches``), the first frame's difference taken as zero; the queries are
        the last Tq of those frames, as the engine passes its newest frame and its window."""
        frames = patches if context is None else context
        moved = frames + self.motion_proj(frames - previous_frames(frames))
        if context is None:
            return moved, None
        tq = patches.shape[1]
        if tq > moved.shape[1]:
            raise ValueError(f"{tq} query frames do not fit in a context of {moved.shape[1]}")
        return moved[:, moved.shape[1] - tq :], moved

    def _contextualise_relative(self, patches: torch.Tensor, context: torch.Tensor | None, *, causal: bool) -> torch.Tensor:
        """Eq. 2 with ``relative_time``: one attention per query frame, whose keys carry their
        frame offset from it. The queries are the last Tq frames of ``context`` (default:
        ``patches`` themselves), so the engine's newest frame against its window gets the
        offsets -(W-1)..0 that the same frame gets inside a clip."""
        b, tq, n, d = patches.shape
        ctx = patches if context is None else context
        first = ctx.shape[1] - tq
        if first < 0:
            raise ValueError(f"{tq} query frames do not fit in a context of {ctx.shape[1]}")
        query_pos = self.temporal_encoding(torch.zeros(1, device=patches.device), d).to(patches.dtype)[:, None]
        rows = []
        for i in range(tq):
            t = first + i
            keys = ctx[:, : t + 1] if causal else ctx
            offsets = torch.arange(keys.shape[1], device=patches.device) - t
            key_pos = self.temporal_encoding(offsets, d).to(patches.dtype).repeat_interleave(n, 0)[:, None]
            kv = keys.reshape(b, -1, d).transpose(0, 1)
            out = self.spatiotemporal(patches[:, i].transpose(0, 1), kv, query_pos=query_pos, context_pos=key_pos)
            rows.append(out.transpose(0, 1))
        return torch.stack(rows, dim=1)

    def class_tokens(self, cls: torch.Tensor, contextual: torch.Tensor, *, causal: bool = False) -> torch.Tensor:
        """V'_cls: cls [B, Tq, D] attend to all V' tokens contextual [B, Tk, N, D] (Eq. 2);
        ``causal`` (Tq == Tk): frame t's [CLS] attends to the V' rows of frames 0..t."""
        if self.cls_attention is None:
            return cls
        b, tk, n, d = contextual.shape
        memory = contextual.reshape(b, tk * n, d).transpose(0, 1)
        mask = causal_mask(cls.shape[1], 1, n, device=cls.device) if causal else None
        attended = self.cls_attention(cls.transpose(0, 1), memory, memory, attn_mask=mask, need_weights=False)[0]
        return cls * attended.transpose(0, 1)

    @staticmethod
    def cell_coords(g: int, like: torch.Tensor) -> torch.Tensor:
        """[g * g, 2] (x, y) centres of the prior's cells in raster order, in [-1, 1]."""
        c = (torch.arange(g, device=like.device, dtype=like.dtype) + 0.5) / g * 2 - 1
        y, x = torch.meshgrid(c, c, indexing="ij")
        return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)

    def project(
        self, patches: torch.Tensor, contextual: torch.Tensor, cls_ctx: torch.Tensor, motion: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Eq. 3 for frames [B, T, N, D] -> (prior [B, T, 1, g, g] | None, V_g [B, T, N, C]
        without temporal encoding). ``motion`` [B, T, N, K]: the frames' ``readout_cues`` for
        the motion readout (None: no motion term, as for frames given without references)."""
        product = contextual * self.cls_proj(cls_ctx).unsqueeze(2)
        prior = None
        if self.mask_head is not None:
            b, t, n, _ = product.shape
            g = int(round(n**0.5))
            logits = self.mask_head(product)
            if self.coord_head is not None:
                logits = logits + (self.coord_head(cls_ctx) @ self.cell_coords(g, product).T).unsqueeze(-1)
            if self.motion_head is not None and motion is not None:
                if motion.shape != (b, t, n, self.readout_size):
                    raise ValueError(f"motion cues {tuple(motion.shape)} for {b} x {t} frames of {n} patches, "
                                     f"expected {self.readout_size} per patch")
                logits = logits + (motion.to(logits.dtype) * self.motion_head(cls_ctx).unsqueeze(2)).sum(-1, keepdim=True)
            prior = torch.sigmoid(logits).reshape(b, t, 1, g, g)
        source = product if self.global_feature_kind == "masked" else patches
        return prior, self.global_proj(source)

    def forward(
        self, patches: torch.Tensor, cls: torch.Tensor, positions: torch.Tensor | None = None, *, causal: bool = False,
        motion: torch.Tensor | None = None,
    ) -> MaskPriorOutput:
        """
        patches:   [B, T, N_v, D] BEiT-3 patch embeddings of T frames
        cls:       [B, T, D] multimodal [CLS] tokens
        positions: [T] frame positions for the temporal encoding (default 0..T-1)
        causal:    frame t sees frames 0..t only in both attentions of Eq. 2 (what the
                   streaming engine computes; the paper's offline model is bidirectional)
        motion:    [B, T, N_v, K] the frames' ``readout_cues`` for the motion readout, or None
        """
        if patches.dim() != 4 or cls.dim() != 3 or patches.shape[:2] != cls.shape[:2]:
            raise ValueError(f"expected patches [B,T,N,D] and cls [B,T,D], got {tuple(patches.shape)}, {tuple(cls.shape)}")
        contextual = self.contextualise(patches, causal=causal)
        cls_ctx = self.class_tokens(cls, contextual, causal=causal)
        prior, global_feature = self.project(patches, contextual, cls_ctx, motion)
        if positions is None:
            positions = torch.arange(patches.shape[1], device=patches.device)
        global_feature = global_feature + self.temporal_encoding(positions)[None, :, None, :].to(global_feature.dtype)
        return MaskPriorOutput(prior=prior, global_feature=global_feature)
