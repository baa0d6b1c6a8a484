"""Loading what every command needs: config, model (+ weights), tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .checkpoint import CheckpointError, load_weights, read_checkpoint_config
from .config import ConfigError, ModelConfig, load_model_config, resolve_data_path
from .modeling import MPGSAM2, build_model
from .text import TextTokenizer

# The package's default model: trained on the synthetic benchmark (``mpg-sam2 train``), shipped
# in the repo. Until it exists, commands fall back to ``FALLBACK_CONFIG`` with random weights.
DEFAULT_CHECKPOINT = "assets/models/default.safetensors"
FALLBACK_CONFIG = "cpu_small"


@dataclass
class Pipeline:
    config: ModelConfig
    model: MPGSAM2
    tokenizer: TextTokenizer
    weights: str


def default_checkpoint() -> Path | None:
    """The bundled trained model (in the repo, or in an installed package's share/), or None."""
    p = resolve_data_path(DEFAULT_CHECKPOINT)
    return p if p.is_file() else None


def load_tokenizer(cfg: ModelConfig) -> TextTokenizer:
    if not cfg.tokenizer:
        raise FileNotFoundError(f"config {cfg.name} names no tokenizer")
    return TextTokenizer(resolve_data_path(cfg.tokenizer), max_len=cfg.beit3.max_text_len, vocab_size=cfg.beit3.vocab_size)


def check_model_paths(config: str | None, checkpoint: str | None) -> None:
    """An empty ``config`` or ``checkpoint`` (e.g. ``--checkpoint "$CKPT"`` with CKPT unset) is
    an error, never a silent fall-back to random weights or to the bundled model; None means
    "not given". For every path that loads a model, here or in a node started for it."""
    if checkpoint is not None and not str(checkpoint).strip():
        raise CheckpointError("the checkpoint path is empty (leave it out for the bundled model)")
    if config is not None and not str(config).strip():
        raise ConfigError("the model config is empty (leave it out for the bundled model)")


def load_pipeline(config: str | None = None, overrides: Sequence[str] = (), checkpoint: str | None = None,
                  seed: int = 0) -> Pipeline:
    """Build a model and load its weights.

    - neither ``config`` nor ``checkpoint``: the bundled default model (random ``FALLBACK_CONFIG``
      weights from ``seed`` while the repo ships none);
    - ``checkpoint`` only: our safetensors rebuild their own config (other formats need ``config``);
    - ``config`` only: that config with random weights from ``seed``.
    """
    check_model_paths(config, checkpoint)
    bundled = False
    if config is None and checkpoint is None:
        default = default_checkpoint()
        checkpoint = str(default) if default is not None else None
        bundled = default is not None
    torch.manual_seed(seed)
    if config is None and checkpoint is not None and Path(checkpoint).suffix == ".safetensors":
        cfg = read_checkpoint_config(checkpoint).with_overrides(list(overrides))
    else:
        cfg = load_model_config(config or FALLBACK_CONFIG, overrides)
    model = build_model(cfg)
    weights = load_weights(model, checkpoint).source if checkpoint else f"random (seed {seed})"
    if bundled:
        weights = f"bundled {DEFAULT_CHECKPOINT}"
    return Pipeline(cfg, model, load_tokenizer(cfg), weights)


def compile_hot_path(model) -> list[str]:
    """``torch.compile`` SAM 2's image encoder and memory attention in place (as sam2's
    ``vos_optimized``); returns the compiled parts."""
    sam = model.sam2
    sam.image_encoder = torch.compile(sam.image_encoder, dynamic=False)
    sam.memory_attention = torch.compile(sam.memory_attention, dynamic=False)
    return ["sam2.image_encoder", "sam2.memory_attention"]
