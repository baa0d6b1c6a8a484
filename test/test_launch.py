"""Launch files. With ``launch``/``launch_ros`` importable (a full ROS 2 install) each file's
``generate_launch_description()`` is built for real; without them (ROS 2 from PyPI, as here)
each file is parsed, must define ``generate_launch_description``, and everything it names
(package, executable, parameter file, included launch file, node parameters) must exist in
the installed package.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import yaml

from mpg_sam2_ros.ros.params import SPECS

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
HAVE_LAUNCH = importlib.util.find_spec("launch") is not None and importlib.util.find_spec("launch_ros") is not None


def installed_share() -> Path:
    """share/mpg_sam2_ros of the installed package (ament index; the venv on the pip path)."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        if (Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / "mpg_sam2_ros").exists():
            return Path(prefix) / "share" / "mpg_sam2_ros"
    pytest.fail("mpg_sam2_ros is not in the ament index (run scripts/build_msgs.sh)")


def constants(tree: ast.Module) -> dict:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def test_launch_files_exist():
    assert {p.name for p in LAUNCH_FILES} == {"mpg_sam2.launch.py", "bag_replay.launch.py"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_references_exist(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in funcs
    c = constants(tree)
    assert c["PACKAGE"] == "mpg_sam2_ros"
    share = installed_share()
    assert (share / "launch" / path.name).is_file(), f"{path.name} not installed under {share}"
    if "EXECUTABLE" in c:
        scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
        assert scripts.get(c["EXECUTABLE"]) == "mpg_sam2_ros.ros.node:main"
        assert (Path(sys.prefix) / "bin" / c["EXECUTABLE"]).is_file()
    if "CONFIG" in c:
        cfg = share / c["CONFIG"]
        assert cfg.is_file(), f"{cfg} not installed"
        params = yaml.safe_load(cfg.read_text())["/**"]["ros__parameters"]
        assert set(params) == {s.name for s in SPECS}
    if "INCLUDED" in c:
        assert (share / c["INCLUDED"]).is_file()
    # every launch argument that sets a node parameter names a real parameter
    node_params = {s.name for s in SPECS}
    args = {a[0] for a in c["ARGUMENTS"]}
    shared = {"use_compressed", "model_config", "checkpoint", "device", "dtype", "autostart"} & args
    assert shared <= node_params
    assert {"image", "config", "namespace"} <= args


@pytest.mark.skipif(not HAVE_LAUNCH, reason="launch/launch_ros not importable (not on PyPI); parsed above instead")
@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_description_builds(path):  # pragma: no cover - needs a full ROS 2 install
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument

    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    assert isinstance(ld, LaunchDescription)
    declared = {e.name for e in ld.entities if isinstance(e, DeclareLaunchArgument)}
    assert declared == {a[0] for a in module.ARGUMENTS}
