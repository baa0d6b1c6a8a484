"""The node's parameters: one typed settings object and the specification (default,
description, range, read-only) the node declares its ROS parameters from.

ROS-free: ``node.py`` turns each ``ParamSpec`` into a ``ParameterDescriptor``. The defaults here
are the values of ``config/mpg_sam2.yaml`` (a test keeps the two equal). Model
hyperparameters live in the model configs, not here: these are runtime and I/O settings.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter. ``choices``: allowed strings; ``low``/``high``: inclusive range;
    ``read_only``: fixed after start-up (a change needs a restart)."""

    name: str
    default: Any
    description: str
    read_only: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()


SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("model_config", "", "Model config name (config/models/) or YAML path; empty: the package's default model.", read_only=True),
    ParamSpec("checkpoint", "", "Weights (ours, a release folder or a .pt with a 'model' entry); empty: the default model's.", read_only=True),
    ParamSpec("device", "cpu", "cpu, cuda or cuda:N; falls back to cpu with a warning when CUDA is absent.", read_only=True),
    ParamSpec("dtype", "float32", "Compute dtype: float32, or bfloat16 (autocast; meant for CUDA).", read_only=True,
              choices=("float32", "bfloat16")),
    ParamSpec("compile", False, "torch.compile SAM 2's image encoder and memory attention (as sam2's vos_optimized; "
              "for CUDA). The first frames then take long while it compiles.", read_only=True),
    ParamSpec("cpu_threads", 0, "Intra-op threads of the model on the CPU (torch.set_num_threads); 0: torch's default, "
              "one per core. Fewer leave cores to the processes beside the node: with all cores busy elsewhere too, "
              "every parallel op can wait a scheduler slice.", read_only=True, low=0, high=1024),
    ParamSpec("window", 8, "Frames of global context (sliding window W). Changing it restarts the stream.", low=1, high=64),
    ParamSpec("lookahead", 0, "Frames of output delay used as future context (k). Changing it restarts the stream.", low=0, high=16),
    ParamSpec("max_objects", 8, "Most expressions segmented at once.", read_only=True, low=1, high=64),
    ParamSpec("reanchor_after_absent", 0, "Restart an object's SAM 2 memory (the next frame becomes its conditioning "
              "frame) N frames after it was last present; 0: never. Changing it restarts the stream.", low=0, high=100000),
    ParamSpec("reanchor_every", 0, "Restart each object's SAM 2 memory every N frames; 0: never. Changing it restarts "
              "the stream.", low=0, high=100000),
    ParamSpec("presence_threshold", 0.0, "An object is present, and its mask published, where its presence probability "
              "is above this (0.5 .. 0.999); 0.0: the model's own (stored in its file, as in the bundled model; 0.5 "
              "for a model without one). 0.5 is SAM 2's own rule, higher gives fewer masks where the object is absent and more "
              "missed frames. Changing it restarts the stream.", low=0.0, high=0.999),
    ParamSpec("mask_threshold", 0.0, "Mask logit threshold (0.0 = probability 0.5).", low=-20.0, high=20.0),
    ParamSpec("max_image_side", 1280, "Frames with a longer side are downscaled for the model; masks are scaled back.",
              low=32, high=16384),
    ParamSpec("use_compressed", False, "Subscribe to image/compressed (JPEG/PNG) instead of image.", read_only=True),
    ParamSpec("image_reliability", "best_effort", "Image subscription reliability: best_effort (sensor data; accepts "
              "reliable publishers too) or reliable (rejects best_effort publishers).", read_only=True,
              choices=("best_effort", "reliable")),
    ParamSpec("image_depth", 1, "Image subscription queue depth.", read_only=True, low=1, high=100),
    ParamSpec("publish_mask", True, "Publish the mask topic (mono8 0/255)."),
    ParamSpec("publish_segmentation", True, "Publish the segmentation topic (per-object results)."),
    ParamSpec("publish_overlay", True, "Publish the overlay topic (bgr8) while it has a subscriber."),
    ParamSpec("mask_output", "union", "mask topic content: union (all present objects) or first (lowest object id).",
              choices=("union", "first")),
    ParamSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.", read_only=True, low=0.1, high=60.0),
    ParamSpec("log_throttle_s", 10.0, "Repeated warnings of one kind are summarised at most this often (seconds).",
              low=0.0, high=3600.0),
    ParamSpec("autostart", True, "Configure and activate the lifecycle node by itself at start-up.", read_only=True),
    ParamSpec("fault_injection_frame_id", "", "Testing aid: a frame whose header.frame_id equals this raises inside the "
              "model step (with suffix ':oom', a CUDA out-of-memory error). Empty: off.", read_only=True),
)


@dataclass(frozen=True)
class NodeSettings:
    """Typed values of ``SPECS`` (same names and defaults)."""

    model_config: str = ""
    checkpoint: str = ""
    device: str = "cpu"
    dtype: str = "float32"
    compile: bool = False
    cpu_threads: int = 0
    window: int = 8
    lookahead: int = 0
    max_objects: int = 8
    reanchor_after_absent: int = 0
    reanchor_every: int = 0
    presence_threshold: float = 0.0
    mask_threshold: float = 0.0
    max_image_side: int = 1280
    use_compressed: bool = False
    image_reliability: str = "best_effort"
    image_depth: int = 1
    publish_mask: bool = True
    publish_segmentation: bool = True
    publish_overlay: bool = True
    mask_output: str = "union"
    diagnostics_period: float = 1.0
    log_throttle_s: float = 10.0
    autostart: bool = True
    fault_injection_frame_id: str = ""

    def updated(self, values: dict[str, Any]) -> "NodeSettings":
        return dataclasses.replace(self, **values)


SPEC_BY_NAME = {s.name: s for s in SPECS}


def validate(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name`` (None: it is)."""
    spec = SPEC_BY_NAME.get(name)
    if spec is None:
        return None
    if type(value) is not type(spec.default) and not (isinstance(spec.default, float) and type(value) is int):
        return f"{name} must be a {type(spec.default).__name__}, got {type(value).__name__}"
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}, got {value!r}"
    if spec.low is not None and value < spec.low or spec.high is not None and value > spec.high:
        return f"{name} must be in [{spec.low}, {spec.high}], got {value}"
    if name == "presence_threshold" and 0.0 < value < 0.5:
        return f"presence_threshold must be 0.0 (the model's own) or in [0.5, 0.999], got {value}"
    if name == "device" and not DEVICE_PATTERN.match(value):
        return f"device must be cpu, cuda or cuda:N, got {value!r}"
    return None
