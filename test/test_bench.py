"""``mpg-sam2 bench`` runs end to end and reports what the issue asks for (no timing asserts:
the figures are for the benchmark run, not for the test)."""

from __future__ import annotations

import json

import pytest

from test_cli import run


def test_bench_reports_speed_breakdown_ratios_and_memory(tmp_path):
    res = run("bench", "--config", "cpu_small", "--measure", "2", "--memory-frames", "60", "--memory-warmup", "20",
              "--predictor-frames", "30", "--quiet", "--out", str(tmp_path / "b.json"))
    out = json.loads(res.stdout)
    assert json.loads((tmp_path / "b.json").read_text()) == out
    speed = out["speed"]
    assert set(speed["per_frame_s"]) == {"4", "8", "16"} and all(v > 0 for v in speed["per_frame_s"].values())
    b = speed["breakdown_s"]
    parts = ("sam2_image_encoder", "beit3", "mpg", "sam2_memory_attention", "hga_and_decoder", "sam2_memory_encoder")
    assert all(b[k] > 0 for k in parts), b  # every component ran inside the timed steps
    assert abs(sum(b[k] for k in parts) + b["other"] - b["total"]) < 1e-3
    # ratios are of the unrounded times; the printed times are rounded to 0.1 ms
    assert speed["overhead_ratio"] == pytest.approx(speed["per_frame_s"]["8"] / speed["encoders_alone_s"]["sum"], rel=0.03)
    assert speed["window_ratio"] == pytest.approx(speed["per_frame_s"]["16"] / speed["per_frame_s"]["4"], rel=0.03)
    assert speed["sam2_predictor"]["per_frame_s"] > 0 and speed["overhead_vs_sam2_ratio"] > 0
    mem = out["memory"]
    assert mem["frames"] == 60 and mem["engine_state_bytes"]["start"] == mem["engine_state_bytes"]["end"] > 0
    assert mem["rss_mb_end"] > 0 and "rss_growth_pct" in mem
    pred = mem["sam2_predictor"]
    assert pred["frames"] == 30 and pred["preloaded_frames_mb"] > 0
    assert pred["state_bytes"]["end"] > pred["state_bytes"]["start"]  # it keeps every tracked frame


def test_bench_bad_arguments_are_clear_errors():
    res = run("bench", "--windows", "8", "4", "16", "--quiet", check=False)
    assert res.returncode == 2 and "three increasing sizes" in res.stderr
    res = run("bench", "--memory-frames", "10", "--memory-warmup", "20", "--quiet", check=False)
    assert res.returncode == 2 and "must exceed" in res.stderr
