"""Build ``sam2``'s own ``SAM2Base`` (image encoder, memory attention, memory encoder, prompt
encoder, mask decoder) from a YAML shipped with the ``sam2`` package plus overrides.

We instantiate the YAML's ``model`` node ourselves (no global Hydra state), so any SAM 2.0 or
SAM 2.1 size, or a user's YAML path, can be selected, and the tiny CPU configs are the same
architecture with smaller widths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from omegaconf import OmegaConf

from ..config import ConfigError, Sam2Config


def sam2_config_path(base: str) -> Path:
    """``sam2.1/sam2.1_hiera_l`` -> the YAML inside the installed ``sam2`` package."""
    p = Path(base)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    import sam2

    root = Path(sam2.__file__).parent / "configs"
    candidate = root / (base if base.endswith(".yaml") else base + ".yaml")
    if not candidate.is_file():
        shipped = sorted(str(f.relative_to(root).with_suffix("")) for f in root.glob("sam2*/*.yaml"))
        raise ConfigError(f"SAM 2 config {base!r} not found; shipped: {shipped}")
    return candidate


def sam2_model_node(cfg: Sam2Config) -> Any:
    """The resolved OmegaConf ``model`` node with overrides applied."""
    path = sam2_config_path(cfg.base)
    node = OmegaConf.load(path)
    if "model" not in node:
        raise ConfigError(f"{path}: no 'model' node")
    model = node.model
    for key, value in (cfg.overrides or {}).items():
        head = key.split(".")[0]
        if head not in model:
            raise ConfigError(f"sam2 override {key!r}: no key {head!r} in {path.name}")
        OmegaConf.update(model, key, value, merge=False, force_add=True)
    OmegaConf.resolve(node)
    return model


def build_sam2(cfg: Sam2Config, extra_overrides: Mapping[str, Any] | None = None):
    """Instantiate ``sam2.modeling.sam2_base.SAM2Base`` (random weights)."""
    from hydra.utils import instantiate

    if extra_overrides:
        cfg = Sam2Config(base=cfg.base, overrides={**dict(cfg.overrides), **dict(extra_overrides)})
    model = instantiate(sam2_model_node(cfg), _recursive_=True)
    return model
