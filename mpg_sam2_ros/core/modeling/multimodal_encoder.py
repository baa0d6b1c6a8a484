"""Unified multimodal encoder: BEiT-3 from ``torchscale`` (paper Sec. 3.2, Eq. 1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import Beit3Config


@dataclass
class MultimodalFeatures:
    """Per-frame BEiT-3 outputs (Eq. 1 decomposed).

    cls:     [B, D]       multimodal [CLS] token V_cls
    patches: [B, N_v, D]  video patch embeddings V (N_v = grid x grid)
    text:    [B, L, D]    text embeddings T
    text_padding: [B, L]  True where the token is padding
    motion:  [B, N_v, K]  raw motion cues per patch for the MPG's motion readout
             (``MaskPriorGenerator.readout_cues``), or None
    """

    cls: torch.Tensor
    patches: torch.Tensor
    text: torch.Tensor
    text_padding: torch.Tensor
    motion: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.cls.shape[0]

    def index(self, idx) -> "MultimodalFeatures":
        return MultimodalFeatures(self.cls[idx], self.patches[idx], self.text[idx], self.text_padding[idx],
                                  None if self.motion is None else self.motion[idx])

    @staticmethod
    def cat(items: list["MultimodalFeatures"]) -> "MultimodalFeatures":
        motion = [i.motion for i in items]
        if any(m is None for m in motion) and not all(m is None for m in motion):
            raise ValueError("some rows carry motion cues and some do not")
        return MultimodalFeatures(
            torch.cat([i.cls for i in items]),
            torch.cat([i.patches for i in items]),
            torch.cat([i.text for i in items]),
            torch.cat([i.text_padding for i in items]),
            None if motion[0] is None else torch.cat(motion),
        )


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """[grid * grid, dim] 2-D sine-cosine positions in raster order: the first half of the
    channels encode the column, the second half the row, each as sin / cos pairs at
    frequencies 1 / 10000^(k / (dim / 4)) (the fixed table of MAE and the ViT baselines)."""
    if dim % 4:
        raise ValueError(f"a 2-D sine-cosine table needs a channel count divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(grid, dtype=torch.float64)
    row, col = torch.meshgrid(coords, coords, indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(col), encode(row)], dim=1).float()


def beit3_encoder_config(cfg: Beit3Config):
    """The torchscale ``EncoderConfig`` of the official BEiT-3 models (unilm ``beit3``)."""
    from torchscale.architecture.config import EncoderConfig

    return EncoderConfig(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        vocab_size=cfg.vocab_size,
        multiway=True,
        layernorm_embedding=False,
        normalize_output=True,
        no_output_layer=True,
        drop_path_rate=cfg.drop_path_rate,
        encoder_embed_dim=cfg.embed_dim,
        encoder_attention_heads=cfg.num_heads,
        encoder_ffn_embed_dim=cfg.ffn_dim,
        encoder_layers=cfg.num_layers,
        checkpoint_activations=False,
    )


class ConvStem(nn.Module):
    """``Beit3Config.conv_stem``: log2(patch) stride-2 3x3 convolutions with GELU (``width``
    channels first, doubling, at most ``dim``), then a 1x1 projection to ``dim`` that starts at
    zero: [B, 3, m, m] -> [B, dim, m / patch, m / patch], one vector per BEiT-3 patch, seen
    through overlapping receptive fields (a shape across patch borders) rather than one patch's
    linear projection. Not in the paper."""

    def __init__(self, patch: int, width: int, dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, c = 3, width
        for _ in range(patch.bit_length() - 1):
            layers += [nn.Conv2d(c_in, c, kernel_size=3, stride=2, padding=1), nn.GELU()]
            c_in, c = c, min(2 * c, dim)
        self.body = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c_in, dim, kernel_size=1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.body(images))


class MultimodalEncoder(nn.Module):
    """Jointly encodes a frame and the command: G = BEiT3([V_0; T_0]) (Eq. 1).

    Arguments:
      cfg: BEiT-3 size. The wrapped ``self.beit3`` has the official checkpoint's key layout
        (``beit3.*``), so ``beit3_{base,large}_patch16_224.pth`` loads unchanged.
    """

    def __init__(self, *, cfg: Beit3Config) -> None:
        super().__init__()
        import warnings

        with warnings.catch_warnings():  # torchscale -> timm decorates with torch.jit.script: a FutureWarning per run
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
            from torchscale.model.BEiT3 import BEiT3

        self.cfg = cfg
        self.beit3 = BEiT3(beit3_encoder_config(cfg))
        self.num_patches = cfg.grid_size**2
        self.apply(self._init_weights)
        if cfg.pos_init == "sincos":
            self._init_patch_positions()
        self.conv_stem = ConvStem(cfg.patch_size, cfg.conv_stem, cfg.embed_dim) if cfg.conv_stem else None
        if self.conv_stem is not None:  # added to the patch embedding inside BEiT-3, before its positions
            self.beit3.vision_embed.register_forward_hook(self._add_conv_stem)

    def _add_conv_stem(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        """Forward hook of BEiT-3's patch embedding (args[0]: the images): its patch rows (after
        the [CLS] row it prepends) get ``conv_stem(images)``."""
        stem = self.conv_stem(args[0]).flatten(2).transpose(1, 2)  # [B, N, D], raster order as proj's
        return torch.cat([out[:, : out.shape[1] - stem.shape[1]], out[:, -stem.shape[1] :] + stem], dim=1)

    @torch.no_grad()
    def _init_patch_positions(self) -> None:
        """Rows of the image patches in torchscale's vision position table (after the two
        fairseq padding rows and the [CLS] row) start as ``sincos_2d``, scaled to the table's
        own RMS so the balance with the patch embedding is the one torchscale builds."""
        table = self.beit3.encoder.embed_positions.A.weight
        if table.is_meta:
            return
        rows = table[3 : 3 + self.num_patches]
        pe = sincos_2d(self.cfg.grid_size, table.shape[1]).to(table.device, table.dtype)
        rows.copy_(pe * (rows.pow(2).mean().sqrt() / pe.pow(2).mean().sqrt()))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    def forward(self, images: torch.Tensor, text_ids: torch.Tensor, text_padding: torch.Tensor) -> MultimodalFeatures:
        """
        images:       [B, 3, img_size, img_size] normalised frames
        text_ids:     [B, L] token ids (XLM-R convention, <s> ... </s>)
        text_padding: [B, L] True at padding positions
        """
        s = self.cfg.img_size
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[-2:] != (s, s):
            raise ValueError(f"BEiT-3 expects images [B, 3, {s}, {s}], got {tuple(images.shape)}")
        if text_ids.dim() != 2 or text_ids.shape[0] != images.shape[0]:
            raise ValueError(f"text_ids must be [B, L] with B={images.shape[0]}, got {tuple(text_ids.shape)}")
        out = self.beit3(
            textual_tokens=text_ids,
            visual_tokens=images,
            text_padding_position=text_padding,
        )["encoder_out"]
        n = self.num_patches
        return MultimodalFeatures(
            cls=out[:, 0],
            patches=out[:, 1 : 1 + n],
            text=out[:, 1 + n :],
            text_padding=text_padding,
        )
