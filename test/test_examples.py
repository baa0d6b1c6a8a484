"""examples/ run as a user runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def test_segment_stream_on_a_folder_and_a_video_file(tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))
    for i in range(5):
        img = np.full((64, 96, 3), 40, np.uint8)
        cv2.circle(img, (20 + 10 * i, 30), 8, (0, 0, 220), -1)
        writer.write(img)
    writer.release()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for source, n in [(str(REPO / "assets/demo_clip"), 3), (str(video), 5)]:
        res = subprocess.run([sys.executable, str(REPO / "examples/segment_stream.py"), source, "the red ball",
                              "the blue square", "--max-frames", str(n), "--window", "4"],
                             capture_output=True, text=True, timeout=300, env=env)
        assert res.returncode == 0, res.stderr
        lines = res.stdout.strip().splitlines()
        assert lines[0].startswith("model ") and "0: 'the red ball'" in lines[0] and "1: 'the blue square'" in lines[0]
        frames = [ln for ln in lines if ln.startswith("frame")]
        assert len(frames) == n
        for i, ln in enumerate(frames):
            assert re.match(rf"frame +{i} +[\d.]+ ms +\[0\] [\d.]+ +\d+ px .*\[1\] [\d.]+ +\d+ px", ln), ln
        assert "Warning" not in res.stderr
