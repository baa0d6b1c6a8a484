"""Bad input gets a clear error: images, commands, configs, tokenizer files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpg_sam2_ros.core.config import ConfigError, load_model_config
from mpg_sam2_ros.core.inference.offline import OfflineRunner
from mpg_sam2_ros.core.io import list_frames, read_frame
from mpg_sam2_ros.core.preprocess import FrameError, FramePreprocessor, validate_frame
from mpg_sam2_ros.core.text import TextError, TextTokenizer


def test_model_rejects_wrong_image_shape_and_dtype(small_model, tokenizer):
    m = small_model
    with pytest.raises(ValueError, match=r"SAM 2 expects images \[B, 3, 256, 256\]"):
        m.encode_image(torch.zeros(1, 3, 128, 128))
    with pytest.raises(ValueError, match="SAM 2 expects"):
        m.encode_image(torch.zeros(3, 256, 256))
    with pytest.raises(TypeError, match="float"):
        m.encode_image(torch.zeros(1, 3, 256, 256, dtype=torch.uint8))
    ids, pad = tokenizer.encode_batch(["the cup"])
    with pytest.raises(ValueError, match=r"BEiT-3 expects images \[B, 3, 128, 128\]"):
        m.encode_multimodal(torch.zeros(1, 3, 224, 224), ids, pad)
    with pytest.raises(ValueError, match="text_ids must be"):
        m.encode_multimodal(torch.zeros(2, 3, 128, 128), ids, pad)


@pytest.mark.parametrize(
    "frame, message",
    [
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((10, 10, 4), np.uint8), r"\[H, W, 3\]"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((10, 20000, 3), np.uint8), "larger than"),
        ([[1, 2, 3]], "numpy array"),
        (np.zeros((2, 10, 10, 3), np.uint8), r"\[H, W, 3\]"),
    ],
)
def test_frame_validation(frame, message):
    with pytest.raises(FrameError, match=message):
        validate_frame(frame)


def test_grey_frames_are_accepted(small_model):
    pre = FramePreprocessor.for_model(small_model)
    out = pre(np.full((30, 40), 128, np.uint8))
    assert out.sam.shape == (1, 3, 256, 256) and out.mm.shape == (1, 3, 128, 128) and out.size == (30, 40)


def test_unreadable_image_files(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not a png")
    with pytest.raises(FrameError, match="cannot decode"):
        read_frame(tmp_path / "a.png")
    with pytest.raises(FileNotFoundError):
        list_frames(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FrameError, match="no images"):
        list_frames(tmp_path / "empty")


@pytest.mark.parametrize("text, message", [("", "empty"), ("   \n\t ", "empty"), (None, "string"), (b"\xff\xfe", "UTF-8")])
def test_bad_commands(tokenizer, text, message):
    with pytest.raises(TextError, match=message):
        tokenizer.encode(text)


def test_command_longer_than_the_limit(tokenizer):
    with pytest.raises(TextError, match=r"tokens long, the limit is 32"):
        tokenizer.encode("the red mug on the left " * 20)


def test_non_ascii_command_is_encoded(tokenizer):
    tok = tokenizer.encode("  the  café mug 日本  ")
    assert tok.text == "the café mug 日本"
    assert tok.ids[0, 0].item() == 0 and tok.ids[0, -1].item() == 2  # <s> ... </s>
    assert (tok.ids < 512).all()


def test_tokenizer_files(tmp_path, small_cfg):
    with pytest.raises(FileNotFoundError, match="tokenizer not found"):
        TextTokenizer(tmp_path / "missing.spm", max_len=16)
    bad = tmp_path / "bad.spm"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot load tokenizer|no vocabulary"):
        TextTokenizer(bad, max_len=16)


def test_tokenizer_vocab_larger_than_model(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="model's vocabulary is 10"):
        TextTokenizer(tokenizer.path, max_len=16, vocab_size=10)


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found; available: .*cpu_small"):
        load_model_config("no_such_model")
    with pytest.raises(ConfigError, match="unknown config key"):
        load_model_config("cpu_small", ["mpg.no_such_switch=true"])
    with pytest.raises(ConfigError, match="global_feature"):
        load_model_config("cpu_small", ["mpg.global_feature=fancy"])
    with pytest.raises(ConfigError, match="must be in 1..8"):
        load_model_config("cpu_small", ["hga.patch_size=0"])
    with pytest.raises(ConfigError, match="must be in 1..8"):
        load_model_config("cpu_small", ["hga.patch_size=9"])
    with pytest.raises(ConfigError, match="SAM 2 config"):
        from mpg_sam2_ros.core.modeling import build_model

        build_model(load_model_config("cpu_small", ["sam2.base=sam2/sam2_hiera_huge"]))
    bad = tmp_path / "bad.yaml"
    bad.write_text("beit3: {embed_dim: 64, bogus: 1}\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_model_config(str(bad))


def test_runner_rejects_mixed_frame_sizes(small_model, tokenizer):
    frames = [np.zeros((20, 30, 3), np.uint8), np.zeros((21, 30, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame 1 is 30x21"):
        OfflineRunner(small_model, tokenizer).run(frames, ["the cup"])
    with pytest.raises(TextError):
        OfflineRunner(small_model, tokenizer).run(frames[:1], [""])
