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


def test_demo_writes_masks_and_summary(tmp_path):
    res = run("demo", "--out", str(tmp_path), "--text", "the red ball", "--window", "4")
    summary = json.loads(res.stdout)
    assert summary["frames"] == 12 and summary["objects"][0]["text"] == "the red ball"
    masks = sorted((tmp_path / "object_0").glob("*.png"))
    assert len(masks) == 12
    import cv2

    m = cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED)
    assert m.shape == (120, 160) and set(map(int, set(m.ravel()))) <= {0, 255}
    assert json.loads((tmp_path / "summary.json").read_text())["frames"] == 12


def test_demo_bad_input_is_a_clear_error(tmp_path):
    res = run("demo", "--out", str(tmp_path), "--text", "   ", check=False)
    assert res.returncode == 2 and "command is empty" in res.stderr
    res = run("demo", "--out", str(tmp_path), "--input", str(tmp_path / "none"), check=False)
    assert res.returncode == 2 and "input not found" in res.stderr


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
