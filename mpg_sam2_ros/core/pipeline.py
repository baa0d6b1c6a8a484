"""Loading what every command needs: config, model (+ weights), tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .checkpoint import load_weights
from .config import ModelConfig, load_model_config, resolve_data_path
from .modeling import MPGSAM2, build_model
from .text import TextTokenizer


@dataclass
class Pipeline:
    config: ModelConfig
    model: MPGSAM2
    tokenizer: TextTokenizer
    weights: str


def load_tokenizer(cfg: ModelConfig) -> TextTokenizer:
    if not cfg.tokenizer:
        raise FileNotFoundError(f"config {cfg.name} names no tokenizer")
    return TextTokenizer(resolve_data_path(cfg.tokenizer), max_len=cfg.beit3.max_text_len, vocab_size=cfg.beit3.vocab_size)


def load_pipeline(config: str, overrides: Sequence[str] = (), checkpoint: str | None = None, seed: int = 0) -> Pipeline:
    """Build the model of ``config`` (random weights from ``seed`` unless ``checkpoint``)."""
    torch.manual_seed(seed)
    cfg = load_model_config(config, overrides)
    model = build_model(cfg)
    weights = load_weights(model, checkpoint).source if checkpoint else f"random (seed {seed})"
    return Pipeline(cfg, model, load_tokenizer(cfg), weights)
