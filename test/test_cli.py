"""The console entry point, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent / "mpg-sam2"


def run(*args, check=True):
    cmd = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "mpg_sam2_ros.cli"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, check=check, timeout=300)


@pytest.mark.parametrize("name, target", [("mpg_sam2_l", 0.92e9), ("mpg_sam2_tiny", 0.46e9)])
def test_info_paper_configs_match_paper_parameter_counts(name, target):
    out = json.loads(run("info", "--config", name).stdout)
    total = out["parameters"]["total"]
    assert abs(total - target) / target < 0.03, total
    p = out["parameters"]
    assert p["sam2.image_encoder"] > 200e6  # Hiera-L
    parts = sum(v for k, v in p.items() if k not in ("total", "trainable"))
    assert parts == total


def test_info_sam2_versions_differ():
    v21 = json.loads(run("info", "--config", "cpu_small").stdout)
    v20 = json.loads(run("info", "--config", "cpu_small", "--set", "sam2.base=sam2/sam2_hiera_t").stdout)
    assert v21["sam2_base"] == "sam2.1/sam2.1_hiera_t" and v20["sam2_base"] == "sam2/sam2_hiera_t"
    assert v21["parameters"]["total"] > v20["parameters"]["total"]  # SAM 2.1 adds obj_ptr_tpos_proj etc.


def test_info_unknown_config_is_a_clear_error():
    res = run("info", "--config", "nope", check=False)
    assert res.returncode == 2 and "not found; available" in res.stderr and "Traceback" not in res.stderr


def _check_demo_outputs(out, summary):
    import cv2

    assert summary["frames"]["read"] == 120 and summary["frames"]["outputs"] >= 60
    assert summary["frames"]["outputs"] + summary["frames"]["dropped"] + summary["frames"]["skipped"] == 120
    assert len(summary["texts"]) == 2 and summary["demo"]["expression_types"][0] == "motion"
    assert summary["J&F"] is not None and set(summary["per_object"]) == {"0", "1"}
    assert json.loads((out / "summary.json").read_text())["outputs"]["report"] == str(out / "report.png")
    report = cv2.imread(str(out / "report.png"))
    assert report is not None and report.shape[0] > 500 and report.shape[1] > 800
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == summary["frames"]["outputs"]
    for k in (0, 1):
        assert len(list((out / "masks" / f"object_{k}").glob("*.png"))) == summary["frames"]["outputs"]
    assert summary["outputs"]["result_bag_messages"]["segmentation"] == summary["frames"]["outputs"]


def test_demo_no_ros_runs_the_bundled_bag(tmp_path):
    res = run("demo", "--no-ros", "--out", str(tmp_path), "--quiet")
    summary = json.loads(res.stdout)  # stdout is the JSON alone; the human summary is on stderr
    assert summary["mode"] == "in_process" and summary["pacing"]["realtime"] is True
    _check_demo_outputs(tmp_path, summary)
    assert "MPG-SAM 2 demo" in res.stderr and "J&F" in res.stderr and str(tmp_path) in res.stderr


def test_demo_runs_the_real_node_over_ros(tmp_path):
    """README command 1 without the set-up: the node is started, fed over DDS, stopped cleanly."""
    pytest.importorskip("rclpy")
    import os

    env = dict(os.environ, ROS_DOMAIN_ID=str(20 + os.getpid() % 40), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    cmd = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "mpg_sam2_ros.cli"]
    res = subprocess.run(cmd + ["demo", "--out", str(tmp_path), "--quiet"], capture_output=True, text=True, timeout=400, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)
    assert summary["mode"] == "live" and summary["node"]["started_here"] and summary["node"]["exit_code"] == 0
    assert summary["transport_latency_ms"]["p50"] is not None
    _check_demo_outputs(tmp_path, summary)
    assert "the real mpg_sam2_node over ROS 2" in res.stderr


def test_demo_refuses_a_missing_checkpoint(tmp_path):
    res = run("demo", "--no-ros", "--out", str(tmp_path), "--checkpoint", str(tmp_path / "none.safetensors"), check=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    # an empty path (an unset shell variable) is an error, not random weights
    for args in (("bench-accuracy", "--seed", "1", "--videos", "1"), ("demo", "--out", str(tmp_path / "d")),
                 ("bench-node", "--frames", "1")):  # the last two start a node, which would take "" as its default
        res = run(*args, "--checkpoint", "", check=False)
        assert res.returncode == 2 and "checkpoint path is empty" in res.stderr and "Traceback" not in res.stderr, args


def test_segment_streaming_two_objects_then_offline_from_video(tmp_path):
    import cv2

    out = tmp_path / "stream"
    summary = json.loads(run("segment", "--input", str(REPO / "assets/demo_clip"), "--text", "the red ball",
                             "--text", "the blue square", "--out", str(out), "--window", "4", "--quiet").stdout)
    assert summary["mode"] == "streaming" and summary["frames"] == 12 and len(summary["objects"]) == 2
    for k in (0, 1):
        pngs = sorted((out / f"object_{k}").glob("*.png"))
        assert [p.stem for p in pngs] == [f"frame_{i:04d}" for i in range(12)]
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    cap.release()
    # the overlay video is itself a valid input; offline mode over fixed clips
    off = json.loads(run("segment", "--input", str(out / "overlay.mp4"), "--text", "the ball", "--out",
                         str(tmp_path / "off"), "--offline", "--clip", "5", "--quiet").stdout)
    assert off["mode"] == "offline" and off["frames"] == 12
    assert len(list((tmp_path / "off" / "object_0").glob("*.png"))) == 12


def test_segment_unreadable_input(tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"not a video")
    res = run("segment", "--input", str(bad), "--text", "x", "--out", str(tmp_path / "o"), "--quiet", check=False)
    assert res.returncode == 2 and ("cannot open video" in res.stderr or "no decodable frames" in res.stderr)
    res = run("segment", "--input", str(tmp_path / "missing"), "--text", "x", "--out", str(tmp_path / "o"), check=False)
    assert res.returncode == 2 and "input not found" in res.stderr
