"""The first-run job: segment the bundled clip with a command and write masks + a summary.

Until a trained default model ships (training issue), ``cpu_small`` runs with random
weights (seed 0): the pipeline is real, the masks are not meaningful.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import torch

from .checkpoint import load_weights
from .config import load_model_config, resolve_data_path
from .inference.offline import OfflineRunner
from .io import list_frames, read_frame, write_mask
from .modeling import build_model, parameter_counts
from .text import TextTokenizer


def load_tokenizer(cfg) -> TextTokenizer:
    if not cfg.tokenizer:
        raise FileNotFoundError(f"config {cfg.name} names no tokenizer")
    return TextTokenizer(resolve_data_path(cfg.tokenizer), max_len=cfg.beit3.max_text_len, vocab_size=cfg.beit3.vocab_size)


def run_demo(
    *,
    config: str,
    overrides: Sequence[str],
    checkpoint: str | None,
    input_dir: str,
    text: str | Sequence[str],
    out_dir: str,
    window: int,
) -> dict:
    t0 = time.perf_counter()
    torch.manual_seed(0)
    cfg = load_model_config(config, overrides)
    model = build_model(cfg)
    weights = "random (seed 0)"
    if checkpoint:
        weights = load_weights(model, checkpoint).source
    tokenizer = load_tokenizer(cfg)
    texts = [text] if isinstance(text, str) else list(text)
    files = list_frames(resolve_data_path(input_dir))
    frames = [read_frame(f) for f in files]
    t1 = time.perf_counter()
    result = OfflineRunner(model, tokenizer, clip_len=window).run(frames, texts)
    t2 = time.perf_counter()
    out = Path(out_dir)
    for k in range(len(texts)):
        for i, f in enumerate(files):
            write_mask(out / f"object_{k}" / (f.stem + ".png"), result.masks[k, i])
    summary = {
        "config": cfg.name,
        "weights": weights,
        "parameters": parameter_counts(model)["total"],
        "input": str(resolve_data_path(input_dir)),
        "frames": len(files),
        "frame_size": list(frames[0].shape[:2]),
        "objects": [
            {
                "object_id": k,
                "text": result.texts[k],
                "mean_score": round(float(result.scores[k].mean()), 4),
                "mean_mask_area": round(float(result.masks[k].mean()), 4),
            }
            for k in range(len(texts))
        ],
        "window": window,
        "seconds": {"setup": round(t1 - t0, 2), "segment": round(t2 - t1, 2)},
        "seconds_per_frame": round((t2 - t1) / len(files), 3),
        "out": str(out),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
