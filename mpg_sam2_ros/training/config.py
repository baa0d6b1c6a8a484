"""Training recipes: one YAML per recipe (``config/training/``), loaded into typed dataclasses.
Every key must be known: a typo is an error that names it, never silently ignored."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from ..core.config import ConfigError, load_yaml, repo_root
from .losses import LossConfig

DATA_FORMATS = ("synthetic", "ytvos", "davis", "mevis", "refcoco")
PRECISIONS = ("fp32", "bf16")
STAGES = ("full", "prior")


@dataclass(frozen=True)
class GenerateConfig:
    """Synthetic split generated into ``data.root`` when it holds none yet."""

    seed: int = 1000
    videos: int = 1000
    frames: int = 24
    width: int = 160
    height: int = 120


@dataclass(frozen=True)
class AugmentConfig:
    hflip: float = 0.5
    photometric: bool = True


@dataclass(frozen=True)
class DataConfig:
    """format: synthetic | ytvos | davis | mevis | refcoco; root: the split folder (relative
    paths from the repo root or the working directory); meta / frames_dir: Ref-YouTube-VOS
    files kept elsewhere; dataset / split / split_by: RefCOCO; num_frames: frames per clip;
    sampler: official | stream (contiguous clips of num_frames, what the engine sees);
    expressions_per_video: K > 1 fills each batch with K expressions of each of batch / K
    videos (clips of the same scene that name different objects: the loss can only fall by
    reading the text); 1 draws (video, expression) items uniformly, as the official code;
    expression_types: train only on expressions of these types (``meta.json``'s ``type``: the
    synthetic split's appearance / spatial / motion / absent); empty: all of them; workers:
    threads that read and augment the next step's clips while this step trains (0: read in the
    training loop). Each clip's randomness depends on (seed, epoch, item) alone, so any number
    gives the same batches."""

    format: str = "synthetic"
    root: str = "data/synthetic_train"
    meta: str | None = None
    frames_dir: str | None = None
    dataset: str = "refcoco"
    split: str = "train"
    split_by: str | None = None
    num_frames: int = 5
    sampler: str = "official"
    expressions_per_video: int = 1
    expression_types: tuple[str, ...] = ()
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    generate: GenerateConfig | None = None
    workers: int = 0


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with the official parameter groups: ``lr_fusion`` for the new fusion modules
    (the official 5e-5 group), ``lr`` for everything else. ``schedule``: ``constant`` after the
    linear warm-up (the official code: its scheduler step is commented out), or ``cosine``:
    decay from the rate to ``min_lr_ratio`` x the rate at the last step."""

    lr: float = 2e-6
    lr_fusion: float = 5e-5
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    warmup_steps: int = 0
    schedule: str = "constant"
    min_lr_ratio: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """model: model config name or YAML; model_overrides: ``key=value`` list; init: weights to
    start from (our safetensors, a release folder or a .pt with "model"); sam2_checkpoint /
    beit3_checkpoint: official encoder weights; tokenizer: overrides the model config's;
    init_modules: parameter-name prefixes to take from ``init`` (empty: the whole model); the
      rest keeps its fresh initialisation, e.g. an ablation row that takes only BEiT-3 and the
      MPG from the prior stage;
    init_heads: also start the loss's training-only heads (``loss.words``, ``loss.motion_words``,
      L_sim's text2one) from the run that made ``init`` (its ``.heads.pt`` or ``.train.pt``),
      where there is one; false starts them from scratch (every run before this key did);
    freeze: parameter-name prefixes kept frozen (default SAM 2's image encoder; [] unfreezes);
    causal: streaming-consistent training (causal Eq. 2, window-relative positions);
    stage: ``full`` trains the whole model on the masks SAM 2 decodes; ``prior`` trains only
    BEiT-3 and the MPG, on the mask prior M_p of Eq. 3 (``loss.prior`` / ``loss.prior_dice``),
    without running SAM 2: a grounding warm-up for a model trained from scratch, whose ``full``
    stage then starts from it (``init``)."""

    name: str = "train"
    model: str = "cpu_small"
    model_overrides: tuple[str, ...] = ()
    init: str | None = None
    init_modules: tuple[str, ...] = ()
    init_heads: bool = True
    sam2_checkpoint: str | None = None
    beit3_checkpoint: str | None = None
    tokenizer: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    freeze: tuple[str, ...] = ("sam2.image_encoder",)
    causal: bool = False
    stage: str = "full"
    steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    precision: str = "fp32"
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    keep_checkpoints: int = 3
    threads: int | None = None
    source: str | None = None

    def validate(self) -> "TrainConfig":
        d = self.data
        if d.format not in DATA_FORMATS:
            raise ConfigError(f"data.format must be one of {', '.join(DATA_FORMATS)}, got {d.format!r}")
        if d.sampler not in ("official", "stream"):
            raise ConfigError(f"data.sampler must be official or stream, got {d.sampler!r}")
        if self.stage not in STAGES:
            raise ConfigError(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if self.stage == "prior" and not (self.loss.prior > 0 or self.loss.prior_dice > 0):
            raise ConfigError("stage: prior trains on the mask prior only: set loss.prior and/or loss.prior_dice > 0")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        # a mistyped value (--set steps=ten) must be an error naming the key, not a TypeError traceback
        ints = {k: getattr(self, k) for k in ("steps", "batch_size", "grad_accum", "checkpoint_every", "log_every",
                                              "keep_checkpoints", "seed")}
        ints["data.num_frames"] = d.num_frames
        for key, value in ints.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{key} must be an integer, got {value!r}")
        for key in ("causal", "init_heads"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{key} must be true or false, got {getattr(self, key)!r}")
        o = self.optim
        if o.schedule not in ("constant", "cosine"):
            raise ConfigError(f"optim.schedule must be constant or cosine, got {o.schedule!r}")
        if not 0.0 <= float(o.min_lr_ratio) <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio must be in 0..1, got {o.min_lr_ratio!r}")
        for key in ("lr", "lr_fusion", "weight_decay", "grad_clip", "warmup_steps"):
            value = getattr(o, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"optim.{key} must be a number, got {value!r}")
        for key in ("steps", "batch_size", "grad_accum", "checkpoint_every", "log_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if d.num_frames < 1:
            raise ConfigError(f"data.num_frames must be >= 1, got {d.num_frames}")
        if not all(isinstance(t, str) and t for t in d.expression_types):
            raise ConfigError(f"data.expression_types must be a list of type names, got {list(d.expression_types)!r}")
        if isinstance(d.workers, bool) or not isinstance(d.workers, int) or d.workers < 0:
            raise ConfigError(f"data.workers must be an int >= 0, got {d.workers!r}")
        if isinstance(d.expressions_per_video, bool) or not isinstance(d.expressions_per_video, int) or d.expressions_per_video < 1:
            raise ConfigError(f"data.expressions_per_video must be an int >= 1, got {d.expressions_per_video!r}")
        if (self.batch_size * self.grad_accum) % d.expressions_per_video:
            raise ConfigError(f"batch_size x grad_accum ({self.batch_size * self.grad_accum}) must be a multiple of "
                              f"data.expressions_per_video ({d.expressions_per_video})")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls, data: Any, where: str):
    """A dataclass from a mapping; unknown keys are an error naming ``where.key``."""
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'training config'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"unknown training config key {name!r} (known: {', '.join(sorted(fields))})")
        sub = {"data": DataConfig, "optim": OptimConfig, "augment": AugmentConfig}.get(key)
        if key == "generate" and cls is DataConfig:
            value = None if value is None else _build(GenerateConfig, value, name)
        elif key == "loss" and cls is TrainConfig:
            try:
                value = LossConfig.from_dict(value or {})
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from exc
        elif sub is not None and isinstance(value, Mapping):
            value = _build(sub, value, name)
        elif key in ("model_overrides", "freeze", "betas", "init_modules", "expression_types"):
            value = tuple(value or ())
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or 'training config'}: {exc}") from exc


def training_config_from_dict(data: Mapping[str, Any], source: str | None = None) -> TrainConfig:
    cfg = _build(TrainConfig, data, "")
    return dataclasses.replace(cfg, source=source).validate()


def load_training_config(name_or_path: str, overrides: Sequence[str] = ()) -> TrainConfig:
    """``config/training/NAME.yaml`` or a YAML path, then ``a.b=value`` overrides."""
    p = Path(name_or_path)
    if not p.suffix:
        p = repo_root() / "config" / "training" / f"{name_or_path}.yaml"
    if not p.is_file():
        known = sorted(q.stem for q in (repo_root() / "config" / "training").glob("*.yaml"))
        raise ConfigError(f"training config not found: {name_or_path} (known: {', '.join(known)})")
    try:
        data = load_yaml(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {part} is not a mapping")
        node[parts[-1]] = load_yaml(raw)
    return training_config_from_dict(data, source=str(p))
