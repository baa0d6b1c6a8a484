"""The node's public interface as data: topics, services, parameters and messages, and the
Markdown tables the README shows (``scripts/ros_tables.py`` writes them into README.md).

Tests keep this true: the README section must equal ``markdown()`` (test_node_logic), and the
running node's topics and services over DDS must equal ``TOPICS`` / ``SERVICES`` (test_node).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .params import SPECS


@dataclass(frozen=True)
class Endpoint:
    kind: str        # sub | pub | srv
    name: str        # as the node resolves it without remapping ("~/x" = node-private)
    type: str        # ROS interface type, e.g. sensor_msgs/msg/Image
    qos: str
    notes: str


TOPICS: tuple[Endpoint, ...] = (
    Endpoint("sub", "image", "sensor_msgs/msg/Image", "best effort, depth 1 (`image_reliability`, `image_depth`)",
             "camera frames: rgb8, bgr8, rgba8, bgra8, mono8, mono16, 16UC1; a RELIABLE publisher connects too"),
    Endpoint("sub", "image/compressed", "sensor_msgs/msg/CompressedImage", "as `image`",
             "instead of `image` when `use_compressed: true`; JPEG or PNG"),
    Endpoint("sub", "text_command", "std_msgs/msg/String", "reliable, transient local, depth 1",
             "one expression, replaces all; `\"\"` clears all; a node started later gets the last one"),
    Endpoint("sub", "text_commands", "mpg_sam2_ros/msg/TextCommands", "reliable, transient local, depth 10",
             "several expressions with object ids: MERGE / REPLACE / REMOVE"),
    Endpoint("pub", "mask", "sensor_msgs/msg/Image", "reliable, depth 5",
             "mono8 0/255, the input's header and size: union of present objects (or the first: `mask_output`)"),
    Endpoint("pub", "segmentation", "mpg_sam2_ros/msg/Segmentation", "reliable, depth 5",
             "per object: id, text, mono8 mask, score, present, bbox, area; frame index, latency, stream_reset"),
    Endpoint("pub", "overlay", "sensor_msgs/msg/Image", "reliable, depth 5",
             "bgr8 picture for RViz: coloured masks and the expressions; computed only while subscribed"),
    Endpoint("pub", "/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", "reliable, depth 10",
             "1 Hz: input/output rate, drops, latency p50/p95, skips by reason, expressions, device"),
)

SERVICES: tuple[Endpoint, ...] = (
    Endpoint("srv", "~/reset", "std_srvs/srv/Trigger", "", "clears the stream state (memory, window); keeps the expressions"),
    Endpoint("srv", "~/set_commands", "mpg_sam2_ros/srv/SetCommands", "",
             "set expressions as on `text_commands`; replies with the object ids and the active set"),
)


def _type_link(t: str) -> str:
    return f"`{t.replace('/msg/', '/').replace('/srv/', '/')}`"


def topics_table() -> str:
    rows = ["| | topic | type | QoS | what |", "|---|---|---|---|---|"]
    for e in TOPICS:
        rows.append(f"| {e.kind} | `{e.name}` | {_type_link(e.type)} | {e.qos} | {e.notes} |")
    return "\n".join(rows)


def services_table() -> str:
    rows = ["| service | type | what |", "|---|---|---|"]
    for e in SERVICES:
        rows.append(f"| `{e.name}` | {_type_link(e.type)} | {e.notes} |")
    rows.append("| `~/change_state`, `~/get_state`, ... | `lifecycle_msgs` | the lifecycle services (`rclpy.lifecycle`) |")
    return "\n".join(rows)


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


def parameters_table() -> str:
    rows = ["| parameter | default | at run time | range / choices | what |", "|---|---|---|---|---|"]
    for s in SPECS:
        rng = ", ".join(s.choices) if s.choices else (f"{_fmt(s.low)} .. {_fmt(s.high)}" if s.low is not None else "")
        rows.append(f"| `{s.name}` | `{_fmt(s.default)}` | {'no' if s.read_only else 'yes'} | {rng} | {s.description} |")
    return "\n".join(rows)


def _msg_fields(path: Path) -> list[str]:
    fields = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            fields.append(re.sub(r"\s+", " ", line))
    return fields


def messages_table(msg_root: Path) -> str:
    rows = ["| interface | fields |", "|---|---|"]
    for folder in ("msg", "srv"):
        for path in sorted((msg_root / folder).glob(f"*.{folder}")):
            fields = _msg_fields(path)
            if folder == "srv":
                text = "; ".join(fields).replace("; ---; ", " → ").replace("---", "→")
            else:
                text = "; ".join(fields)
            rows.append(f"| `mpg_sam2_ros/{folder}/{path.stem}` | `{text}` |")
    return "\n".join(rows)


def markdown(msg_root: Path) -> str:
    """The README's interface section (between the ros-interface markers)."""
    return "\n\n".join([
        "**Topics** (relative names: remap them, or push the node into a namespace)\n\n" + topics_table(),
        "**Services**\n\n" + services_table(),
        "**Messages** (`msg/`, `srv/`; full comments in the files)\n\n" + messages_table(msg_root),
        "**Parameters** (`config/mpg_sam2.yaml`; \"at run time: yes\" = `ros2 param set` works while running)\n\n"
        + parameters_table(),
    ])
