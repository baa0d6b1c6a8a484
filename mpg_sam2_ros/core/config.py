"""Typed model configuration, loaded from one YAML file per model size (``config/models``).

Model hyperparameters live here, never in ROS parameters. A config names a SAM 2 base
config shipped with the ``sam2`` package (SAM 2.0 ``sam2/sam2_hiera_l`` or SAM 2.1
``sam2.1/sam2.1_hiera_l``, ...) plus dotted overrides, a BEiT-3 size, and the switches for
every ablation in the paper (Tab. 3/4, supplement Tab. 3/4).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``5e-4`` (no dot) as a string; read it as the float it means, so that
    ``--set optim.lr=5e-4`` and ``lr: 5e-4`` in a recipe work like ``5.0e-4``."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str):
    """``yaml.safe_load`` that also reads ``5e-4`` as a float."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 -- a SafeLoader subclass


PACKAGE_NAME = "mpg_sam2_ros"


class ConfigError(ValueError):
    """A model config is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Beit3Config:
    """BEiT-3 multimodal encoder (torchscale ``BEiT3``), paper Sec. 3.2 / Eq. 1.

    Arguments:
      embed_dim: channel size D (base 768, large 1024).
      num_heads: attention heads (base 12, large 16).
      ffn_dim: feed-forward size (4 x D in the official configs).
      num_layers: transformer blocks (base 12, large 24).
      img_size: square input size H_m = W_m (224 in the paper).
      patch_size: patch size p (16), so N_v = (img_size / p)^2 patches.
      vocab_size: text vocabulary (64010 for the official XLM-R sentencepiece model).
      max_text_len: longest tokenised command accepted, including <s> and </s>.
      drop_path_rate: stochastic depth during training.
      pos_init: how a model built from scratch starts its image patches' position table:
        "normal" (torchscale's N(0, 1) rows: unrelated codes per patch, what every model
        trained here so far started from) or "sincos" (a 2-D sine-cosine table at the same
        RMS, as MAE trains ViTs from scratch, so that "further left" is a smooth direction
        from step 0; docs/training_experiments.md). A loaded checkpoint replaces either.
      conv_stem: channels of the first of log2(patch_size) stride-2 3x3 convolutions (doubling,
        at most ``embed_dim``) whose output, through a zero-initialised 1x1 projection, is added
        to BEiT-3's linear patch embedding; 0 (default): none, the official BEiT-3. Not in the
        paper: early convolutions (Xiao et al., 2021), tried so that a small BEiT-3 trained from
        scratch reads shapes, which the bundled model does not; in the runs so far they did not
        (ahead on size at 1,500 steps, level at 3,000; docs/training_experiments.md, session 11).
        Zero-initialised, so a model trained without it starts from the same function.
    """

    embed_dim: int = 1024
    num_heads: int = 16
    ffn_dim: int = 4096
    num_layers: int = 24
    img_size: int = 224
    patch_size: int = 16
    vocab_size: int = 64010
    max_text_len: int = 64
    drop_path_rate: float = 0.0
    pos_init: str = "normal"
    conv_stem: int = 0

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size


@dataclass(frozen=True)
class Sam2Config:
    """SAM 2 backbone: a YAML shipped with ``sam2`` (or a path to one) plus dotted overrides.

    ``overrides`` keys are paths inside the YAML's ``model`` node, e.g.
    ``image_encoder.trunk.embed_dim: 24``. The dense mask prior needs
    ``use_mask_input_as_output_without_sam: false`` (the shipped configs set it true, which
    bypasses the decoder whenever a mask is given).
    """

    base: str = "sam2.1/sam2.1_hiera_l"
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MPGConfig:
    """Mask Prior Generator switches (paper Sec. 3.3, Eqs. 2-3, Tab. 3 and Tab. 4).

    Arguments:
      enabled: produce the mask prior M_p as SAM 2's dense prompt. When off, the global
        video feature V_g is still produced for the aggregator (paper Sec. 4.4).
      spatiotemporal_self_attention: S_si, self-attention over all T x N_v patch tokens.
      cross_modal_interaction: S_ci, [CLS] -> patch cross-attention.
      global_feature: "masked" (V_g from the prior-weighted product, the paper's default)
        or "vanilla" (V_g projected from the raw encoder patches).
      num_heads, dropout: of both attention layers; ffn_dim of the self-attention block
        (None = 4 x D).
      relative_time: add a sine encoding of each key frame's offset from the query's frame
        (0 for the query's own frame, -1 for the frame before, ...) to the queries and keys
        of Eq. 2's self-attention. Not in the paper, whose Eq. 2 sees the T frames as a set
        (only V_g gets a temporal encoding, after Eq. 3): without it "moving left" and
        "moving right" are the same set of patches. Relative offsets keep the streaming
        cache exact (a cached row never changes when the window slides). Adds no weights.
      coord_prior: add ``a_x * x + a_y * y`` to M_p's logit (Eq. 3) at each cell (x, y in
        [-1, 1]), with (a_x, a_y) a Linear of V'_cls: a direct path for "on the left" / "at
        the top", which otherwise must come from the product of [CLS] and patch features.
        Not in the paper. Adds 2 x (D + 1) weights.
      frame_difference: before Eq. 2, add ``L(V_t - V_{t-1})`` to each frame's patches, a
        Linear of their change since the window's previous frame (zero for its first frame):
        a direct cue for "moving up" / "moving left", which Eq. 2's softmax attention can only
        build by matching a patch with itself across frames. Not in the paper. Computed
        inside the window, so the streaming cache stays exact. Adds D x (D + 1) weights,
        zero at start.
      motion_stem: hidden channels of a small conv stem (0: none) that reads motion from the
        pixels: per BEiT-3 patch, ``(I_t, dI, dI * dI_t/dx, dI * dI_t/dy)`` (``dI = I_t -
        I_{t-1}``; the last two are optical flow's brightness-constancy terms) -> conv (patch
        size) -> GELU -> 1x1 conv -> D, added to the frame's BEiT-3 patches before Eq. 2 (zero for a frame
        whose previous frame is unknown). BEiT-3's patches, after their transformer, hardly
        tell which way an object moved within a patch (a linear read-out of their change
        names the direction for about half of the objects); the pixels do. Not in the paper.
        The last layer starts at zero.
      block_flow: frames back (0: none) for a camera-compensated block-matching flow: per
        BEiT-3 patch, the shift (within ``block_flow_radius`` half-resolution pixels) that best
        maps the frame ``block_flow`` frames back (fewer at a stream's start, never beyond the
        window) onto the patch, minus the whole frame's best shift (pan and shake), divided by
        the gap, with its matching evidence -> MLP -> D, added to the patches before Eq. 2.
        Learned features of one frame pair did not name directions (docs/training_experiments.md):
        the per-frame camera shake is as large as an object's step; over 3 frames it is not.
        Not in the paper; no gradient flows into the matching. The last layer starts at zero.
      block_flow_radius: the search radius of ``block_flow`` in half-resolution pixels.
      sam_stem: hidden channels of a stem (0: none) that reads SAM 2's stride-8 features under
        each BEiT-3 patch, laid out position by position (a k x k strided conv, k = the level's
        side / the BEiT-3 grid, resampled first when that is not whole) -> GELU -> 1x1 conv -> D,
        added to the frame's BEiT-3 patches before Eq. 2. BEiT-3's patches do not hold an
        object's shape and SAM 2's finer levels do (a linear probe reads 6 shapes at 0.25 against
        0.77: docs/training_experiments.md, "Where shape is"), so this is the prior's way to
        "the triangle". Not in the paper. The last layer starts at zero.
      block_scale: frames back (0: none) for a camera-compensated scale match: per BEiT-3
        patch, how much the frame ``block_scale`` frames back (fewer at a stream's start, never
        beyond the window) must be magnified about the patch's centre to match it (log scale per
        frame, from 3 scales and a parabola), with its matching evidence -> MLP -> D, added to
        the patches before Eq. 2. A growing, a shrinking and a still object do not move, so
        ``block_flow`` cannot tell them apart; their outlines change by about 2 px over 6
        frames, which this reads (docs/training_experiments.md, "Scale"). Not in the paper; no
        gradient flows into the matching. The last layer starts at zero.
      motion_readout: add ``sum_k a_k * c_k`` to M_p's logit (Eq. 3) at each cell, with the
        cell's raw motion cues c (from ``block_flow``: velocity (vy, vx), its magnitudes |vy|,
        |vx| and the matching evidence; from ``block_scale`` when on: growth rate, its
        magnitude and evidence) and the slopes a a Linear of V'_cls, as ``coord_prior`` does
        for positions: a direct path from "growing" / "moving left" / "bouncing" to the
        cells that do it. Through Eq. 2 alone, a cue added to the patches reached the prior
        only as a product with [CLS] features, and motion twins stayed near chance
        (docs/training_experiments.md, "Motion readout"). Needs ``block_flow``. Not in the
        paper. Starts at zero.
    """

    enabled: bool = True
    spatiotemporal_self_attention: bool = True
    cross_modal_interaction: bool = True
    global_feature: str = "masked"
    num_heads: int = 8
    ffn_dim: int | None = None
    dropout: float = 0.1
    relative_time: bool = False
    coord_prior: bool = False
    frame_difference: bool = False
    motion_stem: int = 0
    block_flow: int = 0
    block_flow_radius: int = 6
    sam_stem: int = 0
    block_scale: int = 0
    motion_readout: bool = False


@dataclass(frozen=True)
class HGAConfig:
    """Hierarchical Global-Historical Aggregator (paper Sec. 3.4, Eqs. 4-5, supp. Tab. 3/4).

    Arguments:
      pixel_global: PGF, image feature -> unified global feature V_u cross-attention (Eq. 4).
      object_global: OGF, mask tokens -> global video feature V_g (Eq. 5, first line).
      object_local: OLF, mask tokens -> historical object pointers T_mh (Eq. 5, second line).
      num_pixel_layers: N_p. num_object_layers: N_o.
      patch_size: p_g, space-to-depth patch of V_g before compression (Tab. 4).
      num_heads, ffn_dim, dropout: of every fusion block (C = SAM 2 hidden size).
    """

    pixel_global: bool = True
    object_global: bool = True
    object_local: bool = True
    num_pixel_layers: int = 1
    num_object_layers: int = 1
    patch_size: int = 2
    num_heads: int = 8
    ffn_dim: int = 1024
    dropout: float = 0.1

    @property
    def enabled(self) -> bool:
        return self.pixel_global or self.object_global or self.object_local


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild an MPG-SAM 2 model (checkpoints carry it).

    ``mask_threshold`` (a mask logit) and ``presence_threshold`` (a presence probability,
    sigmoid of the object-score logit) are the model's own output thresholds: the engine, the
    offline runner and the node use them unless told otherwise. 0.5 is SAM 2's rule; a trained
    checkpoint may carry a calibrated value (``scripts/probe_presence.py --write``)."""

    name: str = "unnamed"
    sam2: Sam2Config = field(default_factory=Sam2Config)
    beit3: Beit3Config = field(default_factory=Beit3Config)
    mpg: MPGConfig = field(default_factory=MPGConfig)
    hga: HGAConfig = field(default_factory=HGAConfig)
    sparse_prompt: bool = True
    tokenizer: str | None = None
    mask_threshold: float = 0.0
    presence_threshold: float = 0.5
    pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    source: str | None = None

    def validate(self) -> "ModelConfig":
        b = self.beit3
        if b.pos_init not in ("sincos", "normal"):
            raise ConfigError(f"beit3.pos_init must be 'sincos' or 'normal', got {b.pos_init!r}")
        if b.img_size % b.patch_size:
            raise ConfigError(f"beit3.img_size {b.img_size} not divisible by patch_size {b.patch_size}")
        if b.conv_stem < 0 or (b.conv_stem and (b.patch_size < 2 or b.patch_size & (b.patch_size - 1))):
            raise ConfigError(f"beit3.conv_stem ({b.conv_stem}) must be >= 0, and needs a power-of-two "
                              f"patch_size >= 2 (got {b.patch_size})")
        if b.embed_dim % b.num_heads:
            raise ConfigError("beit3.embed_dim must be divisible by beit3.num_heads")
        if b.max_text_len < 3:
            raise ConfigError("beit3.max_text_len must be >= 3 (<s>, a token, </s>)")
        if self.mpg.global_feature not in ("masked", "vanilla"):
            raise ConfigError(f"mpg.global_feature must be 'masked' or 'vanilla', got {self.mpg.global_feature!r}")
        if b.embed_dim % self.mpg.num_heads:
            raise ConfigError("beit3.embed_dim must be divisible by mpg.num_heads")
        for key in ("motion_stem", "block_flow", "sam_stem", "block_scale"):
            if getattr(self.mpg, key) < 0:
                raise ConfigError(f"mpg.{key} must be 0 (off) or positive, got {getattr(self.mpg, key)}")
        if self.mpg.motion_readout and not (self.mpg.block_flow and self.mpg.enabled):
            raise ConfigError("mpg.motion_readout reads the block flow's cues into the prior: it needs mpg.block_flow > 0 "
                              "and mpg.enabled")
        if not 0.5 <= self.presence_threshold < 1.0:
            raise ConfigError(f"presence_threshold must be in [0.5, 1), got {self.presence_threshold}")
        h = self.hga
        if not 1 <= h.patch_size <= b.grid_size:
            raise ConfigError(f"hga.patch_size {h.patch_size} must be in 1..{b.grid_size} (the BEiT-3 grid)")
        if h.num_pixel_layers < 1 or h.num_object_layers < 1:
            raise ConfigError("hga.num_pixel_layers and hga.num_object_layers must be >= 1")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["sam2"]["overrides"] = dict(self.sam2.overrides)
        d["pixel_mean"], d["pixel_std"] = list(self.pixel_mean), list(self.pixel_std)
        d.pop("source", None)
        return d

    def with_overrides(self, assignments: Sequence[str]) -> "ModelConfig":
        """Apply ``a.b.c=value`` assignments (value parsed as YAML)."""
        data = self.to_dict()
        for item in assignments:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not of the form key=value")
            key, raw = item.split("=", 1)
            value = load_yaml(raw)
            parts = key.strip().split(".")
            if parts[0] == "sam2" and len(parts) > 2 and parts[1] == "overrides":
                data["sam2"]["overrides"][".".join(parts[2:])] = value
                continue
            node = data
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    raise ConfigError(f"unknown config key {key!r}")
                node = node[p]
            if parts[-1] not in node:
                raise ConfigError(f"unknown config key {key!r}")
            node[parts[-1]] = value
        return config_from_dict(data, source=self.source)


def _build(cls, data: Mapping[str, Any] | None, where: str):
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; allowed: {sorted(names)}")
    return cls(**data)


def config_from_dict(data: Mapping[str, Any], source: str | None = None) -> ModelConfig:
    if not isinstance(data, Mapping):
        raise ConfigError("model config must be a mapping")
    data = dict(data)
    allowed = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"model config: unknown keys {unknown}")
    sam2 = data.pop("sam2", None) or {}
    sam2 = Sam2Config(base=sam2.get("base", Sam2Config.base), overrides=dict(sam2.get("overrides") or {}))
    cfg = ModelConfig(
        sam2=sam2,
        beit3=_build(Beit3Config, data.pop("beit3", None), "beit3"),
        mpg=_build(MPGConfig, data.pop("mpg", None), "mpg"),
        hga=_build(HGAConfig, data.pop("hga", None), "hga"),
        **{k: (tuple(v) if k in ("pixel_mean", "pixel_std") else v) for k, v in data.items() if k != "source"},
        source=source,
    )
    return cfg.validate()


def repo_root() -> Path:
    """The source checkout (editable install) this package runs from."""
    return Path(__file__).resolve().parents[2]


def data_dirs() -> list[Path]:
    """Where ``config/`` and ``assets/`` are found: the checkout, then the install prefix
    (``share/mpg_sam2_ros`` as installed by colcon or pip's data_files)."""
    dirs = [repo_root()]
    for prefix in (sys.prefix, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)[0]):
        if prefix:
            dirs.append(Path(prefix) / "share" / PACKAGE_NAME)
    return [d for d in dirs if d.is_dir()]


def resolve_data_path(path: str | os.PathLike) -> Path:
    """Absolute paths as given; relative ones against the data dirs (then the cwd)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve()
    for d in data_dirs():
        if (d / p).exists():
            return d / p
    return p


def available_configs() -> list[str]:
    names: set[str] = set()
    for d in data_dirs():
        names.update(f.stem for f in (d / "config" / "models").glob("*.yaml"))
    return sorted(names)


def load_model_config(name_or_path: str, overrides: Sequence[str] = ()) -> ModelConfig:
    """Load ``config/models/<name>.yaml`` (or a YAML path) and apply ``key=value`` overrides."""
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = Path("config") / "models" / f"{name_or_path}.yaml"
    path = resolve_data_path(p)
    if not path.is_file():
        raise ConfigError(f"model config {name_or_path!r} not found; available: {available_configs()}")
    try:
        data = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    cfg = config_from_dict(data or {}, source=str(path))
    return cfg.with_overrides(overrides) if overrides else cfg
