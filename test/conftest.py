"""Shared fixtures: the small CPU model (random weights) and a tokenizer trained on the spot."""

from __future__ import annotations

import pytest
import torch

from mpg_sam2_ros.core.config import load_model_config
from mpg_sam2_ros.core.modeling import build_model
from mpg_sam2_ros.core.text import TextTokenizer, referring_expression_corpus, train_sentencepiece


@pytest.fixture(scope="session")
def small_cfg():
    return load_model_config("cpu_small")


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory, small_cfg):
    path = train_sentencepiece(referring_expression_corpus(800, seed=1), tmp_path_factory.mktemp("tok") / "t.spm", vocab_size=120)
    return TextTokenizer(path, max_len=small_cfg.beit3.max_text_len, vocab_size=small_cfg.beit3.vocab_size)


@pytest.fixture(scope="session")
def small_model(small_cfg):
    torch.manual_seed(0)
    return build_model(small_cfg).eval()


def random_frames(model, t: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sam = torch.randn(t, 3, model.image_size, model.image_size, generator=g)
    mm = torch.randn(t, 3, model.mm_image_size, model.mm_image_size, generator=g)
    return sam, mm
