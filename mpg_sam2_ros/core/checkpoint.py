"""Checkpoint loading: official SAM 2 / 2.1, official BEiT-3, the official MPG-SAM2 release
folder, and our own format. A checkpoint is data, not code: ``torch.load(weights_only=True)``
or safetensors only. Every loader is strict and names missing and unexpected keys.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .config import ModelConfig, config_from_dict


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not match the model."""


@dataclass
class LoadReport:
    """What a loader did: how many tensors it loaded and which keys it ignored on purpose."""

    source: str
    loaded: int
    ignored: list[str] = field(default_factory=list)


def _list(keys, n: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def read_state_dict(path: str | os.PathLike, *, key: str | None = None) -> dict[str, torch.Tensor]:
    """Read tensors from a ``.safetensors`` file or a ``torch.save`` file (weights only).
    ``key``: the entry holding the state dict (``"model"`` in SAM 2 and BEiT-3 releases)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Mapping = load_file(str(p), device="cpu")
        else:
            data = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {p}: {type(exc).__name__}: {exc}") from exc
    if key is not None:
        if not isinstance(data, Mapping) or key not in data:
            found = list(data)[:8] if isinstance(data, Mapping) else type(data).__name__
            raise CheckpointError(f"{p}: expected a {key!r} entry, found {found}")
        data = data[key]
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{p}: not a state dict of tensors")
    return dict(data)


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], *, source: str, hint: str = "") -> int:
    """``load_state_dict(strict=True)`` with an error that lists missing/unexpected keys and
    shape mismatches. Returns the number of tensors loaded."""
    own = module.state_dict()
    missing = set(own) - set(state)
    unexpected = set(state) - set(own)
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        parts = [f"{source} does not match the model ({type(module).__name__})"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_list(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {_list(mismatched, 6)}")
        if hint:
            parts.append(hint)
        raise CheckpointError("\n  ".join(parts))
    module.load_state_dict(state, strict=True)
    return len(state)


_SAM21_ONLY = ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias")


def _sam_version_hint(missing_or_unexpected: set[str]) -> str:
    keys = {k.split("sam2.", 1)[-1] for k in missing_or_unexpected}
    if keys & set(_SAM21_ONLY):
        return ("hint: SAM 2.0 and SAM 2.1 checkpoints differ in these keys; select the matching backbone, "
                "e.g. --set sam2.base=sam2/sam2_hiera_l for SAM 2.0 weights")
    return ""


def load_sam2_checkpoint(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Official ``sam2_hiera_*.pt`` / ``sam2.1_hiera_*.pt`` (state dict under ``"model"``)
    into ``model.sam2``."""
    state = read_state_dict(path, key="model")
    own = set(model.sam2.state_dict())
    hint = _sam_version_hint(own ^ set(state))
    n = load_strict(model.sam2, state, source=str(path), hint=hint)
    return LoadReport(str(path), n)


def load_beit3_checkpoint(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Official ``beit3_{base,large}_patch16_224.pth`` (``"model"``; keys ``beit3.*``) into the
    multimodal encoder. Task heads outside ``beit3.*`` are reported as ignored."""
    state = read_state_dict(path, key="model")
    encoder_state = {k: v for k, v in state.items() if k.startswith("beit3.")}
    if not encoder_state:
        raise CheckpointError(f"{path}: no 'beit3.*' keys; found {_list(state)}")
    n = load_strict(model.multimodal_encoder, encoder_state, source=str(path))
    return LoadReport(str(path), n, ignored=sorted(set(state) - set(encoder_state)))


# Official MPG-SAM2 release (EvfSamModel state dict) -> our module names. First match wins.
RELEASE_KEY_MAP: tuple[tuple[str, str], ...] = (
    ("visual_model.sam_mask_decoder.vtlfusion_module.multihead_attn.", "aggregator.pixel_layers.0.attn."),
    ("visual_model.sam_mask_decoder.vtlfusion_module.", "aggregator.pixel_layers.0."),
    ("visual_model.sam_mask_decoder.mmfusion_module.multihead_attn.", "aggregator.object_global_layers.0.attn."),
    ("visual_model.sam_mask_decoder.mmfusion_module.", "aggregator.object_global_layers.0."),
    ("visual_model.sam_mask_decoder.objfusion_module.multihead_attn.", "aggregator.object_local_layers.0.attn."),
    ("visual_model.sam_mask_decoder.objfusion_module.", "aggregator.object_local_layers.0."),
    ("visual_model.sam_mask_decoder.patch_linear.", "aggregator.patch_proj."),
    ("visual_model.", "sam2."),
    ("mm_extractor.beit3.", "multimodal_encoder.beit3."),
    ("text_hidden_fcs.0.", "sparse_prompt."),
    ("text_feat_linear.", "aggregator.text_proj."),
    ("mask_linear.", "mask_prior.cls_proj."),
    ("mask_product.", "mask_prior.mask_head."),
    ("vmtoken.multihead_attn.", "mask_prior.cls_attention."),
    ("visual_ifi.self_attn.", "mask_prior.spatiotemporal.attn."),
    ("visual_ifi.", "mask_prior.spatiotemporal."),
    ("meo_linear.", "mask_prior.global_proj."),
)
# used only by the mask-text similarity loss during training (Eq. 6)
RELEASE_TRAINING_ONLY = ("text2one_linear.",)


def map_release_key(key: str) -> str | None:
    for old, new in RELEASE_KEY_MAP:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def _release_files(folder: Path) -> list[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"{index}: malformed shard index: {exc}") from exc
            return [folder / s for s in shards]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (folder / single).is_file():
            return [folder / single]
    raise CheckpointError(f"{folder}: no model.safetensors, pytorch_model.bin or shard index")


def load_release_folder(model: nn.Module, folder: str | os.PathLike) -> LoadReport:
    """The official MPG-SAM2 release (a Hugging Face style folder: ``config.json``, tokenizer
    files and ``model.safetensors`` / ``pytorch_model.bin``, possibly sharded) mapped onto our
    modules. The release is built on SAM 2.0 Hiera-L: use ``sam2.base=sam2/sam2_hiera_l``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"release folder not found: {folder}")
    state: dict[str, torch.Tensor] = {}
    for f in _release_files(folder):
        state.update(read_state_dict(f))
    mapped, ignored, unknown = {}, [], []
    for k, v in state.items():
        k = k.removeprefix("module.evf_model.")
        new = map_release_key(k)
        if new is not None:
            mapped[new] = v
        elif k.startswith(RELEASE_TRAINING_ONLY):
            ignored.append(k)
        else:
            unknown.append(k)
    if unknown:
        raise CheckpointError(f"{folder}: keys with no counterpart in MPG-SAM 2 ({len(unknown)}): {_list(unknown)}")
    own = set(model.state_dict())
    n = load_strict(model, mapped, source=str(folder), hint=_sam_version_hint(own ^ set(mapped)))
    return LoadReport(str(folder), n, ignored=sorted(ignored))


# ----- our own format ---------------------------------------------------------------------
def save_checkpoint(model: nn.Module, path: str | os.PathLike, *, extra: Mapping[str, str] | None = None) -> Path:
    """safetensors with the model config in its metadata, so ``load_model`` can rebuild it."""
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "mpg_sam2_ros/1", "config": json.dumps(model.config.to_dict()), **(extra or {})}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(p), metadata=meta)
    return p


def read_checkpoint_config(path: str | os.PathLike) -> ModelConfig:
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {p}: {exc}") from exc
    if "config" not in meta:
        raise CheckpointError(f"{p}: no model config in its metadata (not saved by mpg_sam2_ros)")
    return config_from_dict(json.loads(meta["config"]), source=str(p))


def set_checkpoint_config(path: str | os.PathLike, config: ModelConfig, *,
                          extra: Mapping[str, str] | None = None) -> Path:
    """Rewrite the model config in the metadata of our checkpoint at ``path`` (e.g. a calibrated
    ``presence_threshold``), keeping its tensors and other metadata; ``extra`` adds entries.
    The file is replaced atomically. Everything but the output thresholds must stay equal: a
    config of another architecture would no longer describe the tensors."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    p = Path(path)
    old = read_checkpoint_config(p)
    config.validate()
    keep = {"mask_threshold": None, "presence_threshold": None}
    if {**old.to_dict(), **keep} != {**config.to_dict(), **keep}:
        raise CheckpointError(f"{p}: only the output thresholds of a checkpoint's config may change")
    with safe_open(str(p), framework="pt") as f:
        meta = dict(f.metadata() or {})
    meta.update({"config": json.dumps(config.to_dict()), **(extra or {})})
    state = read_state_dict(p)
    tmp = p.with_name(p.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    shutil.copymode(p, tmp)
    os.replace(tmp, p)
    return p


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Our safetensors checkpoint (``save_checkpoint``) into ``model``."""
    n = load_strict(model, read_state_dict(path), source=str(path))
    return LoadReport(str(path), n)


def load_weights(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Dispatch on what ``path`` is: a release folder, our safetensors, or a ``.pt`` holding a
    full MPG-SAM 2 state dict under ``"model"``."""
    p = Path(path)
    if p.is_dir():
        return load_release_folder(model, p)
    if p.suffix == ".safetensors":
        return load_checkpoint(model, p)
    n = load_strict(model, read_state_dict(p, key="model"), source=str(p))
    return LoadReport(str(p), n)
