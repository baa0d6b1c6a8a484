"""``mpg-sam2 segment``: a video file or a folder of frames -> PNG masks per object and
frame (0/255), an overlay video and a JSON summary. Streaming engine by default; ``offline``
uses the whole video (or fixed clips) as global context, as the paper."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import cv2
import numpy as np

from .config import resolve_data_path
from .inference.engine import EngineConfig, StreamingEngine, resolve_presence_threshold
from .inference.offline import OfflineRunner, VideoResult
from .io import list_frames, read_frame, write_mask
from .modeling import parameter_counts
from .pipeline import load_pipeline
from .preprocess import FrameError

COLORS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60)]


def iter_frames(source: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """(name, RGB frame) from a folder of images or a video file; ``FrameError`` if unreadable."""
    source = Path(source)
    if source.is_dir():
        for f in list_frames(source):
            yield f.stem, read_frame(f)
        return
    if not source.is_file():
        raise FileNotFoundError(f"input not found: {source}")
    cap = cv2.VideoCapture(str(source))
    if not cap.isOpened():
        raise FrameError(f"cannot open video {source}")
    try:
        i = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            yield f"{i:05d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            i += 1
        if i == 0:
            raise FrameError(f"no decodable frames in {source}")
    finally:
        cap.release()


def overlay(frame: np.ndarray, masks: Sequence[np.ndarray]) -> np.ndarray:
    """RGB frame with each mask tinted in its object colour (50 %)."""
    out = frame.astype(np.float32)
    for k, m in enumerate(masks):
        color = np.array(COLORS[k % len(COLORS)], np.float32)
        out[m] = 0.5 * out[m] + 0.5 * color
    return out.astype(np.uint8)


def run_streaming(model, tokenizer, frames: Sequence[np.ndarray], texts: Sequence[str], *, window: int = 8,
                  lookahead: int = 0, policy: Mapping[str, float] | None = None,
                  progress=None) -> VideoResult:
    """A whole video through the streaming engine (all commands at once, stamps = frame
    index): masks [K, T, H, W] and presence scores [K, T], as ``OfflineRunner.run`` returns.
    ``policy``: the ``EngineConfig`` stream policies (``POLICY_FIELDS``: re-anchoring, presence threshold)."""
    engine = StreamingEngine(model, tokenizer, EngineConfig(
        window=window, lookahead=lookahead, max_objects=max(len(texts), EngineConfig.max_objects),
        **(policy or {})))
    ids = [engine.add_command(t) for t in texts]
    masks = np.zeros((len(texts), len(frames), *frames[0].shape[:2]), bool)
    scores = np.zeros((len(texts), len(frames)), np.float32)
    results = []
    for i, f in enumerate(frames):
        r = engine.step(f, stamp=float(i))
        if r is not None:
            results.append(r)
        if progress is not None:
            progress(1)
    results += engine.flush()
    for r in results:
        for o in r.objects:
            k = ids.index(o.object_id)
            masks[k, r.frame_index], scores[k, r.frame_index] = o.mask, o.score
    return VideoResult(texts=[engine.commands[i] for i in ids], masks=masks, scores=scores)


def run_segment(*, input_path: str, texts: Sequence[str], out_dir: str, config: str | None = None,
                overrides: Sequence[str] = (), checkpoint: str | None = None, window: int = 8,
                lookahead: int = 0, offline: bool = False, clip_len: int | None = None,
                policy: Mapping[str, float] | None = None,
                fps: float = 10.0, progress: bool = True) -> dict:
    if not texts:
        raise ValueError("give at least one --text")
    t0 = time.perf_counter()
    pipe = load_pipeline(config, overrides, checkpoint)
    cfg, model, tokenizer = pipe.config, pipe.model, pipe.tokenizer
    out = Path(out_dir)
    input_path = resolve_data_path(input_path)
    names, frames = [], []
    for name, frame in iter_frames(input_path):
        names.append(name)
        frames.append(frame)
    from tqdm import tqdm

    bar = tqdm(total=len(frames), desc="segment", unit="frame", disable=not progress)
    t1 = time.perf_counter()
    presence = (policy or {}).get("presence_threshold")  # None: the model's own
    if offline:
        res = OfflineRunner(model, tokenizer, clip_len=clip_len, presence_threshold=presence).run(
            frames, list(texts), progress=bar.update)
    else:
        for i, f in enumerate(frames):
            if f.shape[:2] != frames[0].shape[:2]:
                raise FrameError(f"frame {names[i]} is {f.shape[1]}x{f.shape[0]}, the video is {frames[0].shape[1]}x{frames[0].shape[0]}")
        res = run_streaming(model, tokenizer, frames, texts, window=window, lookahead=lookahead,
                            policy=policy,
                            progress=bar.update)
    masks, scores, clean = res.masks, res.scores, res.texts
    bar.close()
    t2 = time.perf_counter()
    for k in range(len(texts)):
        for i, name in enumerate(names):
            write_mask(out / f"object_{k}" / f"{name}.png", masks[k, i])
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(out / "overlay.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i, f in enumerate(frames):
        writer.write(cv2.cvtColor(overlay(f, masks[:, i]), cv2.COLOR_RGB2BGR))
    writer.release()
    summary = {
        "config": cfg.name, "weights": pipe.weights, "parameters": parameter_counts(model)["total"], "input": str(input_path), "frames": len(frames),
        "frame_size": [h, w], "mode": "offline" if offline else "streaming",
        "window": None if offline else window, "lookahead": None if offline else lookahead,
        "presence_threshold": resolve_presence_threshold(presence, model),
        "objects": [{"object_id": k, "text": clean[k], "mask_dir": str(out / f"object_{k}"),
                     "frames_present": int((masks[k].reshape(len(frames), -1).any(1)).sum()),
                     "mean_score": round(float(scores[k].mean()), 4)} for k in range(len(texts))],
        "overlay": str(out / "overlay.mp4"),
        "seconds": {"setup": round(t1 - t0, 2), "segment": round(t2 - t1, 2)},
        "seconds_per_frame": round((t2 - t1) / len(frames), 4),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
