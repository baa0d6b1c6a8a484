"""DDS settings our own ROS processes use (bag-replay --live, bench-node, the node)."""

from __future__ import annotations

import os
from pathlib import Path

PROFILE = "config/fastdds_large_images.xml"
_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS")


def large_image_profile() -> Path | None:
    from ..core.config import resolve_data_path

    p = resolve_data_path(PROFILE)
    return p if p.is_file() else None


def use_large_image_transport(env: dict | None = None) -> str | None:
    """Point Fast DDS at our profile (16 MB shared-memory segments, see the XML) unless the user
    chose a profile or builtin transports, or another RMW. Must run before ``rclpy.init``.
    Returns the profile path set, or None when nothing was changed."""
    env = os.environ if env is None else env
    if any(env.get(v) for v in _VARS):
        return None
    if env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") not in ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp"):
        return None
    profile = large_image_profile()
    if profile is None:
        return None
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    return str(profile)
