"""``mpg-sam2 bench`` runs end to end and reports what the issue asks for (no timing asserts:
the figures are for the benchmark run, not for the test)."""

from __future__ import annotations

import json

import pytest

from test_cli import run


def test_bench_reports_speed_breakdown_ratios_and_memory(tmp_path):
    res = run("bench", "--config", "cpu_small", "--measure", "2", "--memory-frames", "60", "--memory-warmup", "20",
              "--predictor-frames", "30", "--compare-frames", "3", "--expression-frames", "2", "--quiet",
              "--out", str(tmp_path / "b.json"))
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
    alt = speed["alternating"]  # engine and predictor timed frame by frame on the same frames, medians
    assert alt["frames"] == 3 and len(alt["engine_s"]) == len(alt["predictor_s"]) == 3
    assert alt["engine_median_s"] == pytest.approx(sorted(alt["engine_s"])[1], abs=1e-4)
    assert speed["overhead_vs_sam2_ratio"] == pytest.approx(
        alt["engine_median_s"] / (alt["predictor_median_s"] + speed["encoders_alone_s"]["beit3"]), rel=0.03)
    ex = out["expressions"]  # on the CPU: the small model, batched and one at a time
    assert ex["config"] == "cpu_small" and set(ex["batched_s"]) == set(ex["one_at_a_time_s"]) == {"1", "2", "4"}
    assert all(v > 0 for v in ex["batched_s"].values()) and out["compiled"] == [] and "bf16_agreement" not in out
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


def test_bench_cuda_path_is_guarded_and_clock_falls_back_to_the_cpu():
    import torch

    from mpg_sam2_ros.core.bench import Clock

    if not torch.cuda.is_available():
        res = run("bench", "--device", "cuda", "--quiet", check=False)
        assert res.returncode == 2 and "CUDA is not available" in res.stderr and "Traceback" not in res.stderr
    clock = Clock(torch.device("cpu"))
    assert not clock.cuda and 0.0 <= clock(lambda: sum(range(1000))) < 1.0


def test_bf16_agreement_runs_on_the_cpu(small_model, tokenizer):
    """The comparison the GPU run reports, exercised on the CPU (bf16 autocast exists there too)."""
    import numpy as np
    import torch

    from mpg_sam2_ros.core.bench import bf16_agreement
    from mpg_sam2_ros.core.pipeline import Pipeline

    pipe = Pipeline(small_model.config, small_model, tokenizer, "random")
    frames = [np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8) for i in range(3)]
    out = bf16_agreement(pipe, frames, torch.device("cpu"), window=2)
    assert out["frames"] == 3 and 0.0 <= out["mask_iou_min"] <= out["mask_iou_mean"] <= 1.0
    assert out["score_max_abs_diff"] < 0.1


def test_compile_hot_path_compiles_the_image_encoder_and_memory_attention(small_cfg, monkeypatch):
    """Which parts --compile hands to torch.compile (compiling itself is the GPU run's business:
    inductor takes minutes on 2 CPU cores), and that the compiled model still loads into sam2's
    predictor (its state-dict keys gain '_orig_mod.')."""
    import torch

    from mpg_sam2_ros.core import bench
    from mpg_sam2_ros.core.modeling import build_model

    model = build_model(small_cfg)
    seen = []

    def fake_compile(mod, **kw):
        seen.append((mod, kw))
        wrapper = torch.nn.Module()
        wrapper._orig_mod = mod
        wrapper.forward = mod.forward
        return wrapper

    encoder, attention = model.sam2.image_encoder, model.sam2.memory_attention
    monkeypatch.setattr(torch, "compile", fake_compile)
    assert bench.compile_hot_path(model) == ["sam2.image_encoder", "sam2.memory_attention"]
    assert [m for m, _ in seen] == [encoder, attention] and all(kw == {"dynamic": False} for _, kw in seen)
    assert any("_orig_mod." in k for k in model.sam2.state_dict())
    from mpg_sam2_ros.core.pipeline import Pipeline

    predictor = bench._build_predictor(Pipeline(small_cfg, model, None, "random"), torch.device("cpu"))
    assert predictor.image_encoder is not None


def test_bench_node_drives_the_live_node_and_reports_json(tmp_path):
    """``mpg-sam2 bench-node`` end to end on a few frames: it starts the real node (bundled
    model) in its own process on its own domain, and reports the closed-loop ratio with its
    parts, the open-loop rates and counts, and the RSS samples; no timing asserts."""
    pytest.importorskip("rclpy")
    res = run("bench-node", "--frames", "45", "--closed-loop", "4", "--width", "160", "--height", "120",
              "--out", str(tmp_path / "n.json"))
    out = json.loads(res.stdout)
    assert json.loads((tmp_path / "n.json").read_text()) == out
    assert out["frame_size"] == [120, 160] and out["node"]["model"] == "cpu_small"
    c = out["closed_loop"]
    assert c["frames"] == 4 and c["engine_step_ms_p50"] > 0
    assert c["transport_overhead_ratio"] == pytest.approx(c["e2e_latency_ms"]["p50"] / c["engine_step_ms_p50"], rel=0.01)
    assert set(c["overhead_ms_p50"]) == {"dds_and_executors", "node_around_engine"}
    o = out["open_loop"]
    n = o["counted_by_node"]
    assert o["frames_sent"] == 45 and 0 < o["results"] <= 45
    assert n["frames_received"] + n["frames_missed"] <= 45 and n["outputs_published"] >= o["results"] > 0
    assert 0 <= n["frames_received"] - o["frames_processed"] - n["frames_dropped"] <= 1  # each frame run or dropped
    assert out["memory"]["rss_mb_end"] > 0 and set(out["targets"]) == {"transport_overhead_ratio<=1.05", "rss_growth<5%"}
