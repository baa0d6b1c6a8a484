"""Loaders for official SAM 2 / 2.1, BEiT-3 and MPG-SAM2 release checkpoints, tested on
checkpoints of the same structure made here with random weights, and our own format."""

from __future__ import annotations

import json

import pytest
import torch

from mpg_sam2_ros.core.checkpoint import (
    CheckpointError,
    load_beit3_checkpoint,
    load_release_folder,
    load_sam2_checkpoint,
    load_weights,
    read_checkpoint_config,
    save_checkpoint,
    set_checkpoint_config,
)
from mpg_sam2_ros.core.modeling import build_model


class ArbitraryObject:
    """Pickled into a checkpoint: weights_only loading must refuse to construct it."""


def _fresh(cfg, seed):
    torch.manual_seed(seed)
    return build_model(cfg)


def _assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_sam2_checkpoint_roundtrip_and_version_mismatch(small_cfg, tmp_path):
    src, dst = _fresh(small_cfg, 1), _fresh(small_cfg, 2)
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": src.sam2.state_dict()}, path)  # the official layout
    report = load_sam2_checkpoint(dst, path)
    assert report.loaded == len(src.sam2.state_dict())
    _assert_same(src.sam2, dst.sam2)
    # a SAM 2.1 checkpoint into a SAM 2.0 backbone: clear error naming the keys and the fix
    v20 = _fresh(small_cfg.with_overrides(["sam2.base=sam2/sam2_hiera_t"]), 3)
    with pytest.raises(CheckpointError) as err:
        load_sam2_checkpoint(v20, path)
    msg = str(err.value)
    assert "unexpected keys" in msg and "no_obj_embed_spatial" in msg and "sam2.base=sam2/sam2_hiera_l" in msg


def test_beit3_checkpoint(small_cfg, tmp_path):
    src, dst = _fresh(small_cfg, 1), _fresh(small_cfg, 2)
    state = dict(src.multimodal_encoder.state_dict())
    assert any(k.startswith("beit3.encoder.layers.0.") for k in state)
    state["head.weight"] = torch.zeros(3, 3)  # a task head the official files may carry
    path = tmp_path / "beit3_base_patch16_224.pth"
    torch.save({"model": state}, path)
    report = load_beit3_checkpoint(dst, path)
    assert report.ignored == ["head.weight"]
    _assert_same(src.multimodal_encoder, dst.multimodal_encoder)
    state.pop("beit3.vision_embed.mask_token")
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match="missing keys .*beit3.vision_embed.mask_token"):
        load_beit3_checkpoint(dst, path)


# How the official release names each of our parts (EvfSamModel, rongfu-dsb/MPG-SAM2).
OFFICIAL_NAMES = {
    "sam2": "visual_model",
    "multimodal_encoder.beit3": "mm_extractor.beit3",
    "sparse_prompt": "text_hidden_fcs.0",
    "mask_prior.spatiotemporal": "visual_ifi",
    "mask_prior.cls_attention": "vmtoken.multihead_attn",
    "mask_prior.cls_proj": "mask_linear",
    "mask_prior.mask_head": "mask_product",
    "mask_prior.global_proj": "meo_linear",
    "aggregator.text_proj": "text_feat_linear",
    "aggregator.patch_proj": "visual_model.sam_mask_decoder.patch_linear",
    "aggregator.pixel_layers.0": "visual_model.sam_mask_decoder.vtlfusion_module",
    "aggregator.object_global_layers.0": "visual_model.sam_mask_decoder.mmfusion_module",
    "aggregator.object_local_layers.0": "visual_model.sam_mask_decoder.objfusion_module",
}


def _official_state(model):
    out = {}
    for ours, theirs in OFFICIAL_NAMES.items():
        module = model.get_submodule(ours)
        for k, v in module.state_dict().items():
            if ours == "mask_prior.spatiotemporal":
                k = k.replace("attn.", "self_attn.", 1) if k.startswith("attn.") else k
            elif ours.startswith("aggregator.") and ours.endswith(".0"):
                k = k.replace("attn.", "multihead_attn.", 1) if k.startswith("attn.") else k
            out[f"{theirs}.{k}"] = v.clone()
    out["text2one_linear.weight"] = torch.zeros(1, 64)
    out["text2one_linear.bias"] = torch.zeros(1)
    return out


@pytest.mark.parametrize("layout", ["safetensors", "sharded", "bin"])
def test_release_folder(small_cfg, tmp_path, layout):
    from safetensors.torch import save_file

    src, dst = _fresh(small_cfg, 1), _fresh(small_cfg, 2)
    state = _official_state(src)
    assert "visual_ifi.self_attn.in_proj_weight" in state and "text_hidden_fcs.0.2.weight" in state
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "evf", "hidden_size": 1024, "out_dim": 256}))
    if layout == "safetensors":
        save_file(state, str(tmp_path / "model.safetensors"))
    elif layout == "bin":
        torch.save(state, tmp_path / "pytorch_model.bin")
    else:
        keys = sorted(state)
        half = len(keys) // 2
        shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
        for name, ks in shards.items():
            save_file({k: state[k] for k in ks}, str(tmp_path / name))
        weight_map = {k: n for n, ks in shards.items() for k in ks}
        (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    report = load_release_folder(dst, tmp_path)
    assert report.ignored == ["text2one_linear.bias", "text2one_linear.weight"]
    _assert_same(src, dst)
    assert load_weights(dst, tmp_path).loaded == report.loaded


def test_release_folder_reports_bad_keys(small_cfg, tmp_path):
    from safetensors.torch import save_file

    model = _fresh(small_cfg, 1)
    state = _official_state(model)
    state.pop("mask_product.weight")
    state["some_new_head.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="some_new_head.weight"):
        load_release_folder(model, tmp_path)
    state.pop("some_new_head.weight")
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): mask_prior.mask_head.weight"):
        load_release_folder(model, tmp_path)


def test_own_checkpoint_roundtrip(small_cfg, tmp_path):
    src, dst = _fresh(small_cfg, 1), _fresh(small_cfg, 2)
    path = save_checkpoint(src, tmp_path / "m.safetensors")
    assert read_checkpoint_config(path) == small_cfg.__class__(**{**small_cfg.__dict__, "source": str(path)})
    load_weights(dst, path)
    _assert_same(src, dst)
    other = _fresh(small_cfg.with_overrides(["hga.num_pixel_layers=2"]), 3)
    with pytest.raises(CheckpointError, match="missing keys .*aggregator.pixel_layers.1"):
        load_weights(other, path)


def test_set_checkpoint_config_changes_only_the_output_thresholds(small_cfg, tmp_path):
    """A calibrated presence threshold is written into the file's config; tensors and other
    metadata stay; a config of another architecture is refused and the file left as it was."""
    import dataclasses

    from safetensors import safe_open

    src = _fresh(small_cfg, 1)
    path = save_checkpoint(src, tmp_path / "m.safetensors", extra={"step": "7"})
    path.chmod(0o644)
    set_checkpoint_config(path, dataclasses.replace(small_cfg, presence_threshold=0.85), extra={"note": "x"})
    assert path.stat().st_mode & 0o777 == 0o644
    assert read_checkpoint_config(path).presence_threshold == 0.85
    with safe_open(str(path), framework="pt") as f:
        assert {k: f.metadata()[k] for k in ("step", "note")} == {"step": "7", "note": "x"}
    dst = _fresh(small_cfg, 2)
    load_weights(dst, path)
    _assert_same(src, dst)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="only the output thresholds"):
        set_checkpoint_config(path, small_cfg.with_overrides(["hga.num_pixel_layers=2"]))
    assert path.read_bytes() == before and not list(tmp_path.glob("*.tmp"))
    with pytest.raises(Exception, match="presence_threshold"):
        small_cfg.with_overrides(["presence_threshold=0.3"])
    with pytest.raises(Exception, match="presence_threshold"):
        set_checkpoint_config(path, dataclasses.replace(small_cfg, presence_threshold=1.0))
    assert path.read_bytes() == before


def test_missing_and_corrupt_checkpoints(small_cfg, tmp_path):
    model = _fresh(small_cfg, 1)
    with pytest.raises(CheckpointError, match="not found"):
        load_sam2_checkpoint(model, tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00 definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_sam2_checkpoint(model, bad)
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(CheckpointError, match="expected a 'model' entry"):
        load_sam2_checkpoint(model, bad)
    torch.save({"model": {"x": torch.zeros(1)}, "cfg": ArbitraryObject()}, tmp_path / "pickle.pt")
    with pytest.raises(CheckpointError, match="cannot read"):  # weights_only refuses arbitrary objects
        load_sam2_checkpoint(model, tmp_path / "pickle.pt")
    with pytest.raises(CheckpointError, match="no 'beit3"):
        torch.save({"model": {"x": torch.zeros(1)}}, bad)
        load_beit3_checkpoint(model, bad)
    with pytest.raises(CheckpointError, match="release folder not found"):
        load_release_folder(model, tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_release_folder(model, tmp_path / "empty")
