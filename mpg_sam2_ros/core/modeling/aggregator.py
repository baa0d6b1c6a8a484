"""Hierarchical Global-Historical Aggregator (paper Sec. 3.4, Eqs. 4-5, Fig. 3)."""

from __future__ import annotations

import torch
from torch import nn

from .attention import AttentionFFNBlock


def space_to_depth(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)(W/p), C*p*p]; channel index c*p*p + dy*p + dx (the released
    model's order, so its compression weights apply)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


class GlobalHistoricalAggregator(nn.Module):
    """Injects global context and history into SAM 2 at pixel and object level.

    Pixel level (Eq. 4), after SAM 2 memory attention F'_i = Mematten(F_i, F_mh, T_mh):
        V_u  = [MLP(space_to_depth(V_g, p_g)) ; text tokens]
        F_gl = F'_i + softmax(F'_i V_u^T / sqrt(C)) V_u        (+ LN, FFN)   x N_p
    Object level (Eq. 5), on the decoder's mask tokens T_m:
        T_mg  = T_m  + softmax(T_m  V_g^T  / sqrt(C)) V_g      (+ LN, FFN)   x N_o  (OGF)
        T_mgl = T_mg + softmax(T_mg T_mh^T / sqrt(C)) T_mh     (+ LN, FFN)   x N_o  (OLF)
    T_mh are the historical object pointers (conditioning frame + up to 15 previous frames)
    with a sine encoding of their temporal distance on the keys.

    Arguments:
      dim: C, SAM 2 channels.  text_dim: D, BEiT-3 channels.
      pixel_global / object_global / object_local: PGF / OGF / OLF on-off (supp. Tab. 3).
      num_pixel_layers: N_p.  num_object_layers: N_o.  patch_size: p_g.
      num_heads, ffn_dim, dropout: of each fusion block.
    """

    def __init__(
        self,
        *,
        dim: int,
        text_dim: int,
        pixel_global: bool = True,
        object_global: bool = True,
        object_local: bool = True,
        num_pixel_layers: int = 1,
        num_object_layers: int = 1,
        patch_size: int = 2,
        num_heads: int = 8,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size

        def blocks(on: bool, n: int) -> nn.ModuleList | None:
            if not on:
                return None
            return nn.ModuleList(
                AttentionFFNBlock(dim=dim, num_heads=num_heads, ffn_dim=ffn_dim, dropout=dropout) for _ in range(n)
            )

        self.pixel_layers = blocks(pixel_global, num_pixel_layers)
        self.patch_proj = nn.Linear(dim * patch_size * patch_size, dim) if pixel_global else None
        self.text_proj = nn.Linear(text_dim, dim) if pixel_global else None
        self.object_global_layers = blocks(object_global, num_object_layers)
        self.object_local_layers = blocks(object_local, num_object_layers)

    @property
    def pixel_global(self) -> bool:
        return self.pixel_layers is not None

    def compress_global(self, global_feature: torch.Tensor) -> torch.Tensor:
        """V_g [B, T, N, C] -> compressed patches [B, T * ceil(g / p_g)^2, C] (the V_g half of V_u).
        A grid that p_g does not divide (14 x 14 with p_g = 4, paper Tab. 4) is zero-padded at
        its bottom and right to the next multiple (16 x 16) first."""
        b, t, n, c = global_feature.shape
        g = int(round(n**0.5))
        grid = global_feature.reshape(b * t, g, g, c).permute(0, 3, 1, 2)
        pad = -g % self.patch_size
        if pad:
            grid = torch.nn.functional.pad(grid, (0, pad, 0, pad))
        tokens = space_to_depth(grid, self.patch_size)
        return self.patch_proj(tokens).reshape(b, -1, c)

    def fuse_pixels(
        self,
        features: torch.Tensor,
        pos: torch.Tensor,
        unified: torch.Tensor,
        unified_padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Eq. 4. features [B, C, H, W] (memory-conditioned), pos [1 or B, C, H, W] SAM 2 dense
        positional encoding, unified V_u [B, M, C], padding [B, M] -> F_gl [B, C, H, W]."""
        b, c, h, w = features.shape
        x = features.flatten(2).permute(2, 0, 1)
        query_pos = pos.flatten(2).permute(2, 0, 1).expand(-1, b, -1)
        memory = unified.transpose(0, 1)
        for layer in self.pixel_layers:
            x = layer(x, memory, query_pos=query_pos, context_padding=unified_padding)
        return x.permute(1, 2, 0).reshape(b, c, h, w)

    def fuse_object_tokens(
        self,
        mask_tokens: torch.Tensor,
        global_tokens: torch.Tensor | None,
        history: torch.Tensor | None,
        history_pos: torch.Tensor | None,
    ) -> torch.Tensor:
        """Eq. 5. mask_tokens [B, K, C]; global_tokens V_g [B, M, C]; history T_mh [B, P, C]
        with history_pos [B, P, C] -> T_mgl [B, K, C]. Missing inputs skip their stage."""
        x = mask_tokens.transpose(0, 1)
        if self.object_global_layers is not None and global_tokens is not None:
            memory = global_tokens.transpose(0, 1)
            for layer in self.object_global_layers:
                x = layer(x, memory)
        if self.object_local_layers is not None and history is not None and history.shape[1] > 0:
            memory, memory_pos = history.transpose(0, 1), history_pos.transpose(0, 1)
            for layer in self.object_local_layers:
                x = layer(x, memory, context_pos=memory_pos)
        return x.transpose(0, 1)
