"""``mpg-sam2 bench``: speed and memory of the streaming engine, measured in one run (JSON).

Speed, on the real-size benchmark model (``bench_hiera_t``: SAM 2.1 Hiera-T at 1024 px +
BEiT-3-base at 224 px, random weights) and synthetic 640x480 frames with one command:

- ``encoders_alone_s``: SAM 2 image encoder and BEiT-3 on one frame, called directly;
- ``per_frame_s``: engine ``step`` time at W = 4, 8, 16 once the window and SAM 2's memory
  bank are full (first window/memory fill not counted);
- ``breakdown_s``: where the W=8 step time goes (forward hooks and method timers): SAM 2
  image encoder, BEiT-3, MPG (Eqs. 2-3, incremental), SAM 2 memory attention (SAM 2's own
  memory read), HGA + decoder (Eqs. 4-5 and the heads), SAM 2 memory encoder, other;
- ``overhead_ratio`` = per-frame W=8 / (image encoder + BEiT-3); ``window_ratio`` = W=16 / W=4;
- ``sam2_predictor``: sam2's own ``SAM2VideoPredictor`` with the same SAM 2 weights on the same
  frames (mask prompt on frame 0). The engine (W=8, one command) and the predictor are timed
  alternately, frame by frame (engine on frame i, then the predictor on frame i), for
  ``--compare-frames`` frames once both memories are full, and compared by medians:
  ``overhead_vs_sam2_ratio`` = engine median / (predictor median + BEiT-3 alone), so that a
  machine's slow phase hits both alike.
- ``expressions``: per-frame time at 1, 2 and 4 expressions, decoded as one batch and one at a
  time (on the CPU with the small model, on a GPU with the speed model).
- ``bf16_agreement`` (bf16 runs): masks of the bf16 engine against the float32 engine on the
  same frames (mean IoU, largest presence-score difference).

Timing: ``torch.cuda.Event`` pairs on a GPU (``elapsed_time`` once the frame is done), the
process clock on the CPU. ``--compile`` compiles SAM 2's image encoder and memory attention
(``torch.compile``, as sam2's ``vos_optimized``); compilation happens in the warm-up frames,
which are never timed.

Memory, on a small model (``cpu_small`` by default): process RSS over a long stream (1000
frames), from frame ``warmup`` on, and the engine's own state bytes (on a GPU also
``torch.cuda`` allocated memory at frame ``warmup`` and at the end, and its peak); then, in
the same process, ``SAM2VideoPredictor`` on the same SAM 2 weights and the first few hundred
of those frames.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterator, Sequence
from unittest import mock

import cv2
import numpy as np
import torch

from .inference.engine import EngineConfig, StreamingEngine
from .config import load_model_config, resolve_data_path
from .pipeline import Pipeline, compile_hot_path, load_pipeline  # noqa: F401 (compile_hot_path: bench API)

STAND_IN_TOKENIZER = "assets/tokenizer/cpu_small_words.spm"
COMMAND = "the red ball moving to the right"
OVERHEAD_TARGET = 1.10   # engine step / (image encoder + BEiT-3)
WINDOW_TARGET = 1.10     # step at the large window / at the small one
RSS_TARGET_PCT = 5.0     # RSS growth over the long stream


def _speed_overrides(config: str, overrides: Sequence[str]) -> list[str]:
    """Random weights make the token ids irrelevant to the cost: when the config's tokenizer
    (``weights/beit3.spm`` for the paper configs) is not there, the bundled one stands in."""
    overrides = list(overrides)
    cfg = load_model_config(config, overrides)
    if not cfg.tokenizer or not resolve_data_path(cfg.tokenizer).exists():
        overrides.append(f"tokenizer={STAND_IN_TOKENIZER}")
    return overrides


def synthetic_frames(n: int, height: int = 480, width: int = 640, seed: int = 0) -> Iterator[np.ndarray]:
    """``n`` RGB frames of a textured background with three moving shapes (deterministic)."""
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (0, 0), 3)
    for i in range(n):
        f = background.copy()
        t = i / 25.0
        cx = int(width * (0.5 + 0.35 * np.sin(t)))
        cv2.circle(f, (cx, height // 2), height // 8, (220, 30, 30), -1)
        cv2.rectangle(f, (width // 5, int(height * (0.5 + 0.3 * np.cos(t)))),
                      (width // 5 + width // 8, int(height * (0.5 + 0.3 * np.cos(t))) + height // 6), (30, 30, 220), -1)
        cv2.ellipse(f, (int(width * 0.75), int(height * 0.3)), (width // 12, height // 14), 30 * t, 0, 360, (30, 200, 30), -1)
        yield f


def rss_bytes() -> int:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss


class Timers:
    """Accumulated seconds per name, from module forward hooks and wrapped callables."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._handles: list = []
        self._restore: list[Callable[[], None]] = []

    def module(self, name: str, mod: torch.nn.Module) -> None:
        start: list[float] = []
        self._handles.append(mod.register_forward_pre_hook(lambda *_: start.append(time.perf_counter())))
        self._handles.append(mod.register_forward_hook(lambda *_: self._add(name, start.pop())))

    def method(self, name: str, obj: object, attr: str) -> None:
        original = getattr(obj, attr)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self._add(name, t)

        setattr(obj, attr, timed)
        self._restore.append(lambda: delattr(obj, attr))

    def _add(self, name: str, started: float) -> None:
        self.seconds[name] += time.perf_counter() - started

    def clear(self) -> None:
        self.seconds.clear()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        for r in self._restore:
            r()
        self._handles, self._restore = [], []


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Clock:
    """Seconds of one call: CUDA events on a GPU (recorded around the call, read once it is
    done), ``time.perf_counter`` on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], object]) -> float:
        if not self.cuda:
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3


def _stream_times(pipe: Pipeline, frames: list[np.ndarray], window: int, warmup: int, device: torch.device,
                  bf16: bool, timers: Timers | None = None) -> tuple[list[float], dict[str, float]]:
    """Seconds per ``step`` after ``warmup`` frames, and the timer totals over those frames."""
    engine = StreamingEngine(pipe.model, pipe.tokenizer, EngineConfig(window=window))
    engine.add_command(COMMAND)
    if timers is not None:
        timers.method("mpg", engine, "_incremental_mpg")
    times, totals = [], defaultdict(float)
    clock = Clock(device)
    for i, frame in enumerate(frames):
        if timers is not None:
            timers.clear()
        with _autocast(device, bf16):
            _sync(device)
            dt = clock(lambda: engine.step(frame, stamp=float(i)))
        if i >= warmup:
            times.append(dt)
            if timers is not None:
                for k, v in timers.seconds.items():
                    totals[k] += v
    n = max(len(times), 1)
    return times, {k: v / n for k, v in totals.items()}


def _encoders_alone(pipe: Pipeline, frame: np.ndarray, device: torch.device, bf16: bool, repeats: int) -> dict[str, float]:
    from .preprocess import FramePreprocessor

    model = pipe.model
    inputs = FramePreprocessor.for_model(model)(frame)
    ids, padding = pipe.tokenizer.pad([pipe.tokenizer.encode(COMMAND)])
    ids, padding = ids.to(device), padding.to(device)
    best = {"sam2_image_encoder": float("inf"), "beit3": float("inf")}
    with torch.inference_mode(), _autocast(device, bf16):
        for _ in range(repeats + 1):  # the first call of each warms up
            for name, fn in (("sam2_image_encoder", lambda: model.encode_image(inputs.sam)),
                             ("beit3", lambda: model.encode_multimodal(inputs.mm, ids, padding))):
                _sync(device)
                t = time.perf_counter()
                fn()
                _sync(device)
                best[name] = min(best[name], time.perf_counter() - t)
    return best


def _build_predictor(pipe: Pipeline, device: torch.device):
    """sam2's SAM2VideoPredictor with the pipeline's SAM 2 weights."""
    from .modeling.sam2_backbone import build_sam2

    predictor = build_sam2(pipe.config.sam2, {"_target_": "sam2.sam2_video_predictor.SAM2VideoPredictor"})
    predictor.fill_hole_area = 0  # hole filling needs sam2's CUDA extension
    sd = {k.replace("_orig_mod.", ""): v for k, v in pipe.model.sam2.state_dict().items()}  # compiled parts
    predictor.load_state_dict(sd)
    return predictor.to(device).eval()


def _sam2_predictor(pipe: Pipeline, frames: list[np.ndarray], warmup: int, device: torch.device,
                    bf16: bool, sample_rss: bool) -> dict:
    """sam2's SAM2VideoPredictor on the same SAM 2 weights and frames (JPEG folder, as it reads)."""
    predictor = _build_predictor(pipe, device)
    with mock.patch.dict(os.environ, {"TQDM_DISABLE": "1"}):  # sam2's own progress bars
        return _run_predictor(predictor, frames, warmup, device, bf16, sample_rss)


def _center_mask(shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    h, w = shape
    mask[h // 2 - h // 8 : h // 2 + h // 8, w // 2 - h // 8 : w // 2 + h // 8] = True
    return mask


def alternating_comparison(pipe: Pipeline, frames: list[np.ndarray], warmup: int, device: torch.device, bf16: bool,
                           window: int = 8, predictor=None) -> dict:
    """The engine (one command) and SAM2VideoPredictor (mask prompt on frame 0) advanced in
    lockstep on the same frames, each timed on every frame; medians of the frames from
    ``warmup`` on (both memories full)."""
    predictor = predictor if predictor is not None else _build_predictor(pipe, device)
    engine = StreamingEngine(pipe.model, pipe.tokenizer, EngineConfig(window=window))
    engine.add_command(COMMAND)
    clock = Clock(device)
    eng_t, pred_t = [], []
    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, {"TQDM_DISABLE": "1"}):
        for i, f in enumerate(frames):
            cv2.imwrite(str(Path(tmp) / f"{i:05d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        with torch.inference_mode(), _autocast(device, bf16):
            state = predictor.init_state(video_path=tmp)
            predictor.add_new_mask(state, frame_idx=0, obj_id=1, mask=_center_mask(frames[0].shape[:2]))
            it = predictor.propagate_in_video(state)
            for i, f in enumerate(frames):
                _sync(device)
                te = clock(lambda: engine.step(f, stamp=float(i)))
                tp = clock(lambda: next(it))
                if i >= warmup:
                    eng_t.append(te)
                    pred_t.append(tp)
    med = lambda xs: round(float(np.median(xs)), 4)  # noqa: E731
    return {"frames": len(eng_t), "order": "engine then predictor, frame by frame",
            "engine_median_s": med(eng_t), "predictor_median_s": med(pred_t),
            "engine_s": [round(x, 4) for x in eng_t], "predictor_s": [round(x, 4) for x in pred_t]}


def expression_scaling(pipe: Pipeline, frames: list[np.ndarray], warmup: int, device: torch.device, bf16: bool,
                       counts: Sequence[int] = (1, 2, 4), window: int = 8) -> dict:
    """Median per-frame step time with 1, 2, 4 expressions, batched and one at a time."""
    texts = [COMMAND, "the blue square on the left", "the small green triangle", "the dog running towards the camera"]
    clock = Clock(device)
    out: dict = {"config": pipe.config.name, "window": window, "measured_frames": len(frames) - warmup}
    for batched in (True, False):
        row = {}
        for n in counts:
            engine = StreamingEngine(pipe.model, pipe.tokenizer, EngineConfig(window=window, batch_objects=batched))
            for t in texts[:n]:
                engine.add_command(t)
            times = []
            with _autocast(device, bf16):
                for i, f in enumerate(frames):
                    _sync(device)
                    dt = clock(lambda: engine.step(f, stamp=float(i)))
                    if i >= warmup:
                        times.append(dt)
            row[str(n)] = round(float(np.median(times)), 4)
        out["batched_s" if batched else "one_at_a_time_s"] = row
    out["fps_batched"] = {k: round(1.0 / v, 2) for k, v in out["batched_s"].items()}
    return out


def bf16_agreement(pipe: Pipeline, frames: list[np.ndarray], device: torch.device, window: int = 8) -> dict:
    """The same frames through the float32 engine and the bf16-autocast engine."""
    runs = []
    for bf16 in (False, True):
        engine = StreamingEngine(pipe.model, pipe.tokenizer, EngineConfig(window=window))
        engine.add_command(COMMAND)
        res = []
        with _autocast(device, bf16):
            for i, f in enumerate(frames):
                r = engine.step(f, stamp=float(i))
                res.append((r.objects[0].mask, r.objects[0].score))
        runs.append(res)
    ious, dscore = [], 0.0
    for (ma, sa), (mb, sb) in zip(*runs):
        union = (ma | mb).sum()
        ious.append(1.0 if union == 0 else float((ma & mb).sum() / union))
        dscore = max(dscore, abs(sa - sb))
    return {"frames": len(frames), "mask_iou_mean": round(float(np.mean(ious)), 4),
            "mask_iou_min": round(float(np.min(ious)), 4), "score_max_abs_diff": round(dscore, 4)}


def _run_predictor(predictor, frames, warmup, device, bf16, sample_rss) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        for i, f in enumerate(frames):
            cv2.imwrite(str(Path(tmp) / f"{i:05d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        with torch.inference_mode(), _autocast(device, bf16):
            state = predictor.init_state(video_path=tmp)
            images = state["images"]
            preloaded = images.numel() * images.element_size() if torch.is_tensor(images) else None
            predictor.add_new_mask(state, frame_idx=0, obj_id=1, mask=_center_mask(frames[0].shape[:2]))
            times = []
            it = predictor.propagate_in_video(state)
            i = 0
            while True:
                _sync(device)
                t = time.perf_counter()
                try:
                    next(it)
                except StopIteration:
                    break
                _sync(device)
                if i >= warmup:
                    times.append(time.perf_counter() - t)
                if sample_rss and i == warmup:
                    rss_start, kept_start = rss_bytes(), _state_bytes(state)
                i += 1
            if sample_rss:
                rss_end, kept_end = rss_bytes(), _state_bytes(state)
    out = {"frames": len(frames), "per_frame_s": round(float(np.mean(times)), 4) if times else None}
    if sample_rss:
        out.update(_growth(rss_start, rss_end))
        out["rss_from_frame"] = warmup
        out["growth_bytes_per_frame"] = int((rss_end - rss_start) / max(len(frames) - warmup, 1))
        # tensors its inference state keeps (all but the preloaded video): one entry per tracked frame
        out["state_bytes"] = {"start": kept_start, "end": kept_end}
        # init_state decodes and keeps the whole video before tracking starts
        out["preloaded_frames_mb"] = None if preloaded is None else round(preloaded / 2**20, 1)
    return out


def tensor_bytes(obj: object, _seen: set | None = None) -> int:
    """Bytes of the distinct tensor storages reachable through dicts, lists and tuples."""
    seen = set() if _seen is None else _seen
    if torch.is_tensor(obj):
        key = (obj.device, obj.untyped_storage().data_ptr())
        if key in seen:
            return 0
        seen.add(key)
        return obj.untyped_storage().nbytes()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v, seen) for v in obj)
    return 0


def _state_bytes(state: dict) -> int:
    """Without the preloaded video (its cached current frame is a view of it)."""
    images = state.get("images")
    seen = {(images.device, images.untyped_storage().data_ptr())} if torch.is_tensor(images) else set()
    return tensor_bytes({k: v for k, v in state.items() if k != "images"}, seen)


def _growth(start: int, end: int) -> dict:
    return {"rss_mb_start": round(start / 2**20, 1), "rss_mb_end": round(end / 2**20, 1),
            "rss_growth_mb": round((end - start) / 2**20, 2), "rss_growth_pct": round(100 * (end - start) / start, 3)}


def run_bench(*, config: str = "bench_hiera_t", overrides: Sequence[str] = (), windows: tuple[int, int, int] = (4, 8, 16), measure: int = 3,
              memory_config: str = "cpu_small", memory_frames: int = 1000, memory_warmup: int = 100,
              predictor_frames: int = 300, device: str = "cpu", bf16: bool = False, threads: int | None = None,
              skip_memory: bool = False, compare_frames: int = 10, expression_frames: int = 10, compile: bool = False,
              log: Callable[[str], None] = lambda s: None) -> dict:
    t_start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    out: dict = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(dev),
                    "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None},
        "dtype": "bfloat16 autocast" if bf16 else "float32",
    }

    # ----- speed, real-size model ------------------------------------------------------
    log(f"building {config}")
    pipe = load_pipeline(config, _speed_overrides(config, overrides))
    pipe.model.to(dev).eval()
    out["compiled"] = compile_hot_path(pipe.model) if compile else []
    small, mid, large = windows
    frames = list(synthetic_frames(max(windows) + 1 + measure))
    out["speed"] = {"config": pipe.config.name, "sam2": pipe.config.sam2.base, "sam2_image_size": pipe.model.image_size,
                    "beit3": f"{pipe.config.beit3.embed_dim}x{pipe.config.beit3.num_layers} at {pipe.config.beit3.img_size}px",
                    "tokenizer": pipe.config.tokenizer, "frame_size": list(frames[0].shape[:2]), "commands": 1,
                    "measured_frames": measure}
    log("encoders alone")
    enc = _encoders_alone(pipe, frames[0], dev, bf16, repeats=2)
    timers = Timers()
    model, sam = pipe.model, pipe.model.sam2
    timers.module("sam2_image_encoder", sam.image_encoder)
    timers.module("beit3", model.multimodal_encoder)
    timers.module("sam2_memory_encoder", sam.memory_encoder)
    timers.method("sam2_memory_attention", sam, "_prepare_memory_conditioned_features")
    timers.method("track_step", model, "track_step")
    per_frame, breakdown = {}, {}
    memory_full = sam.num_maskmem  # the bank is full after this many frames
    try:
        for w in (mid, small, large):
            log(f"engine W={w}")
            warm = max(w, memory_full) + 1
            times, avg = _stream_times(pipe, frames[: warm + measure], w, warm, dev, bf16, timers if w == mid else None)
            per_frame[str(w)] = round(float(np.mean(times)), 4)
            if w == mid:
                step = float(np.mean(times))
                b = {k: avg.get(k, 0.0) for k in ("sam2_image_encoder", "beit3", "sam2_memory_attention", "sam2_memory_encoder", "mpg")}
                b["hga_and_decoder"] = avg.get("track_step", 0.0) - b["sam2_memory_attention"] - b["sam2_memory_encoder"]
                b["other"] = step - sum(b.values())
                breakdown = {k: round(v, 4) for k, v in b.items()}
                breakdown["total"] = round(step, 4)
    finally:
        timers.remove()
    denom = enc["sam2_image_encoder"] + enc["beit3"]
    out["speed"].update({
        "encoders_alone_s": {k: round(v, 4) for k, v in enc.items()} | {"sum": round(denom, 4)},
        "per_frame_s": per_frame,
        "breakdown_s": breakdown,
        "overhead_ratio": round(per_frame[str(mid)] / denom, 4),
        "overhead_target": OVERHEAD_TARGET,
        "window_ratio": round(per_frame[str(large)] / per_frame[str(small)], 4),
        "window_target": WINDOW_TARGET,
    })
    log(f"engine and sam2 SAM2VideoPredictor alternately, {compare_frames} frames once memories are full")
    cmp_frames = list(synthetic_frames(memory_full + 1 + compare_frames, seed=1))
    cmp = alternating_comparison(pipe, cmp_frames, memory_full + 1, dev, bf16, window=mid)
    out["speed"]["sam2_predictor"] = {"per_frame_s": cmp["predictor_median_s"], "statistic": "median"}
    out["speed"]["alternating"] = cmp
    out["speed"]["overhead_vs_sam2_ratio"] = round(cmp["engine_median_s"] / (cmp["predictor_median_s"] + enc["beit3"]), 4)
    if bf16:
        log("bf16 vs float32 engine on the same frames")
        out["bf16_agreement"] = bf16_agreement(pipe, list(synthetic_frames(20, seed=2)), dev, window=mid)
    if dev.type == "cuda":
        log("expressions 1/2/4 on the speed model")
        out["expressions"] = expression_scaling(pipe, list(synthetic_frames(memory_full + 1 + expression_frames, seed=3)),
                                                memory_full + 1, dev, bf16, window=mid)
    del pipe, model, sam, frames
    if dev.type != "cuda":
        log(f"expressions 1/2/4 on {memory_config}")
        small_pipe = load_pipeline(memory_config)
        small_pipe.model.to(dev).eval()
        full = small_pipe.model.sam2.num_maskmem
        out["expressions"] = expression_scaling(small_pipe, list(synthetic_frames(full + 1 + expression_frames, 240, 320, seed=3)),
                                                full + 1, dev, bf16, window=mid)
        del small_pipe

    # ----- memory, long stream -----------------------------------------------------------
    if not skip_memory:
        log(f"memory: {memory_frames} frames on {memory_config}")
        pipe = load_pipeline(memory_config)
        pipe.model.to(dev).eval()
        engine = StreamingEngine(pipe.model, pipe.tokenizer, EngineConfig(window=mid))
        engine.add_command(COMMAND)
        rss, state, gpu = {}, {}, {}
        cuda = dev.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        with _autocast(dev, bf16):
            for i, f in enumerate(synthetic_frames(memory_frames, 240, 320)):
                engine.step(f, stamp=float(i))
                if i + 1 == memory_warmup:
                    rss["start"], state["start"] = rss_bytes(), engine.state_nbytes()
                    gpu["start"] = torch.cuda.memory_allocated(dev) if cuda else None
                    t0 = time.perf_counter()
        rss["end"], state["end"] = rss_bytes(), engine.state_nbytes()
        gpu["end"] = torch.cuda.memory_allocated(dev) if cuda else None
        mem = {"config": pipe.config.name, "frames": memory_frames, "window": mid, "rss_from_frame": memory_warmup,
               **_growth(rss["start"], rss["end"]), "target_pct": RSS_TARGET_PCT,
               "growth_bytes_per_frame": int((rss["end"] - rss["start"]) / (memory_frames - memory_warmup)),
               "per_frame_s": round((time.perf_counter() - t0) / (memory_frames - memory_warmup), 4),
               "engine_state_bytes": {"start": state["start"], "end": state["end"]}}
        if cuda:
            mem["gpu_allocated_mb"] = {"start": round(gpu["start"] / 2**20, 1), "end": round(gpu["end"] / 2**20, 1),
                                       "peak": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)}
        del engine
        log(f"memory: SAM2VideoPredictor on {predictor_frames} frames")
        pframes = list(synthetic_frames(predictor_frames, 240, 320))
        mem["sam2_predictor"] = _sam2_predictor(pipe, pframes, min(memory_warmup, predictor_frames // 3), dev, bf16,
                                                sample_rss=True)
        out["memory"] = mem
    met = {"overhead_ratio": out["speed"]["overhead_ratio"] <= OVERHEAD_TARGET,
           "window_ratio": out["speed"]["window_ratio"] <= WINDOW_TARGET}
    if "memory" in out:
        met["rss_growth"] = out["memory"]["rss_growth_pct"] < RSS_TARGET_PCT
    out["targets_met"] = met
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    return out
