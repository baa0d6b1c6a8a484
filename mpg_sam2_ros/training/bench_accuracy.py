"""``mpg-sam2 bench-accuracy``: J&F of a model on held-out synthetic videos, per expression
type (appearance / spatial / motion / absent) and per inference mode (streaming / offline).

The videos are generated with a seed into a temporary folder (or read from ``data``, any split
in the Ref-YouTube-VOS layout), read back through the real loader, run through the streaming
engine and/or the offline runner, and scored with the functions ``mpg-sam2 eval`` uses
(``core.evaluation``: J and F per frame, averaged over frames, then over expressions).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..core.evaluation import EvalReport, score_sequence
from ..core.inference.engine import POLICY_FIELDS, EngineConfig, resolve_presence_threshold
from ..core.inference.offline import OfflineRunner
from ..core.pipeline import load_pipeline
from ..core.segment import run_streaming
from .datasets import RefYouTubeVOS
from .synthetic import EXPRESSION_TYPES, SyntheticConfig, write_split

MODES = ("streaming", "offline")


def _summary(report: EvalReport) -> dict:
    if not report.sequences:
        return {"J": None, "F": None, "J&F": None, "expressions": 0}
    return {"J": round(100 * report.J, 2), "F": round(100 * report.F, 2), "J&F": round(50 * (report.J + report.F), 2),
            "expressions": len(report.sequences)}


def run_bench_accuracy(*, seed: int, videos: int, checkpoint: str | None = None, config: str | None = None,
                       overrides: Sequence[str] = (), modes: Sequence[str] = ("streaming",), window: int = 8,
                       lookahead: int = 0, policy: Mapping[str, float] | None = None,
                       clip_len: int | None = None, synthetic: SyntheticConfig = SyntheticConfig(),
                       data: str | None = None, progress: bool = True,
                       log: Callable[[str], None] | None = None) -> dict:
    """Returns the JSON-ready result (see the module docstring)."""
    from tqdm import tqdm

    for m in modes:
        if m not in MODES:
            raise ValueError(f"unknown mode {m!r} (streaming, offline)")
    log = log or (lambda _: None)
    engine_cfg = EngineConfig(**(policy or {}))  # a bad policy fails here, before the model loads
    t0 = time.perf_counter()
    pipe = load_pipeline(config, overrides, checkpoint)
    model, tokenizer = pipe.model.eval(), pipe.tokenizer
    with tempfile.TemporaryDirectory(prefix="mpg_sam2_bench_") as tmp:
        root = Path(data) if data else Path(tmp)
        generator = None
        t_gen0 = time.perf_counter()
        if not data:
            log(f"generating {videos} videos (seed {seed}) in {root}")
            generator = write_split(root, seed=seed, videos=videos, cfg=synthetic)
        t_gen = time.perf_counter()
        split = RefYouTubeVOS(root)
        records = split.videos if data is None else split.videos[:videos]
        results: dict[str, dict] = {}
        for mode in modes:
            overall = EvalReport()
            by_type = {t: EvalReport() for t in EXPRESSION_TYPES}
            absent_frames = false_positives = 0
            present_frames = missed = 0
            model_seconds, frames_run = 0.0, 0
            bar = tqdm(total=sum(len(v.frame_names) for v in records), desc=mode, unit="frame", disable=not progress)
            for video in records:
                if not video.expressions:
                    continue
                indices = list(range(len(video.frame_names)))
                frames = list(split.read_frames(video, indices))
                texts = [e.text for e in video.expressions]
                t1 = time.perf_counter()
                if mode == "streaming":
                    res = run_streaming(model, tokenizer, frames, texts, window=window, lookahead=lookahead,
                                        policy=policy,
                                        progress=bar.update)
                else:
                    res = OfflineRunner(model, tokenizer, clip_len=clip_len,
                                        presence_threshold=engine_cfg.presence_threshold).run(
                                            frames, texts, progress=bar.update)
                model_seconds += time.perf_counter() - t1
                frames_run += len(frames)
                for k, expr in enumerate(video.expressions):
                    gt = split.expression_masks(expr, indices)
                    key = f"{video.video}/{expr.exp_id}"
                    score = score_sequence(res.masks[k], gt)
                    overall.sequences[key] = score
                    if expr.exp_type in by_type:
                        by_type[expr.exp_type].sequences[key] = score
                    empty = ~gt.reshape(len(indices), -1).any(1)
                    predicted = res.masks[k].reshape(len(indices), -1).any(1)
                    absent_frames += int(empty.sum())
                    false_positives += int((empty & predicted).sum())
                    present_frames += int((~empty).sum())
                    missed += int((~empty & ~predicted).sum())
            bar.close()
            results[mode] = {
                **_summary(overall),
                "by_type": {t: _summary(r) for t, r in by_type.items()},
                "absent_frames": {"frames": absent_frames, "false_positive_rate": round(false_positives / max(1, absent_frames), 4)},
                "present_frames": {"frames": present_frames, "missed_rate": round(missed / max(1, present_frames), 4)},
                "seconds_per_frame": round(model_seconds / max(1, frames_run), 4),
            }
            log(f"{mode}: J&F {results[mode]['J&F']}")
    primary = results[modes[0]]
    return {
        "J": primary["J"], "F": primary["F"], "J&F": primary["J&F"], "primary_mode": modes[0],
        "modes": results,
        "weights": pipe.weights, "config": pipe.config.name,
        "window": window, "lookahead": lookahead, "clip": clip_len,
        # the presence threshold in force: the one given, or the model's own
        "policy": {**{f: getattr(engine_cfg, f) for f in POLICY_FIELDS},
                   "presence_threshold": resolve_presence_threshold(engine_cfg.presence_threshold, model)},
        "data": data or f"synthetic seed {seed}", "seed": None if data else seed, "videos": len(records),
        "frames_per_video": synthetic.frames if not data else None,
        "frame_size": [synthetic.height, synthetic.width] if not data else None,
        "generator": generator,
        "seconds": {"load_model": round(t_gen0 - t0, 2), "generate": round(t_gen - t_gen0, 2),
                    "total": round(time.perf_counter() - t0, 2)},
    }
