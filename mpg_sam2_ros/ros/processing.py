"""What the node's worker thread does with one frame, without ROS: keep the engine's commands
in sync with the command table, detect stream restarts (reset requests, timestamps going
backwards, resolution changes), downscale large frames, run the engine, survive its failures,
and map the result back to the frame's header, size and the user's object ids.

``FrameProcessor`` is used by one thread only (the worker); the command table and the reset
request are its thread-safe inputs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import cv2
import numpy as np

from ..core.inference.engine import POLICY_FIELDS, EngineConfig, StepResult, StreamingEngine
from .commands import CommandTable, EngineCommandSync
from .health import Counters, LatencyWindow
from .params import NodeSettings
from .scheduling import FrameJob


class InjectedFault(RuntimeError):
    """Raised inside the model step by the ``fault_injection_frame_id`` testing aid."""


@dataclass
class ObjectOutput:
    """mask: bool [H, W] at the input frame's size (all False when not present)."""

    object_id: int
    text: str
    mask: np.ndarray
    score: float
    present: bool


@dataclass
class FrameOutput:
    """The result for one input frame, with that frame's own header and pixels (rgb [H, W, 3])."""

    header: Any
    rgb: np.ndarray
    received: float
    frame_index: int
    stream_reset: bool
    engine_s: float
    objects: list[ObjectOutput]


@dataclass
class _Pending:
    index: int
    job: FrameJob


class FrameProcessor:
    """Arguments:
      build_engine: ``EngineConfig -> StreamingEngine`` (the loaded model and tokenizer);
      table: the command table; counters / engine_times: diagnostics;
      warn: ``(key, message)`` rate-limited warning log; info: plain info log;
      compute_context: a context manager around each model call (bf16 autocast or nothing);
      model_lock: held while the engine touches the tokenizer (shared with the command fit).
    """

    def __init__(self, *, build_engine: Callable[[EngineConfig], StreamingEngine], table: CommandTable,
                 counters: Counters, engine_times: LatencyWindow, warn: Callable[[str, str], Any],
                 info: Callable[[str], Any] = lambda m: None,
                 compute_context: Callable[[], ContextManager] = contextlib.nullcontext,
                 model_lock: threading.Lock | None = None, empty_cache: Callable[[], Any] = lambda: None) -> None:
        self._build_engine, self._table = build_engine, table
        self._counters, self._engine_times = counters, engine_times
        self._warn, self._info, self._context = warn, info, compute_context
        self._model_lock = model_lock or threading.Lock()
        self._empty_cache = empty_cache
        self._reset_requested = threading.Event()
        self.engine: StreamingEngine | None = None
        self._sync = EngineCommandSync()
        self._pending: deque[_Pending] = deque()
        self._index = 0
        self._last_size: tuple[int, int] | None = None
        self._last_stamp: float | None = None

    def request_reset(self) -> None:
        """Thread-safe: the stream restarts before the next frame (expressions are kept)."""
        self._reset_requested.set()

    def close(self) -> None:
        self.engine = None
        self._pending.clear()

    # ----- per frame ---------------------------------------------------------------------
    def process(self, job: FrameJob, stamp: float, settings: NodeSettings) -> FrameOutput | None:
        """Run one frame; None when there is no output for it (no expression, look-ahead
        filling, a failure that skipped it)."""
        self._ensure_engine(settings)
        version, desired = self._table.snapshot()
        with self._model_lock:
            self._sync.sync(self.engine, version, desired)
        if self._reset_requested.is_set():
            self._reset_requested.clear()
            self._restart("reset requested")
        if not desired:
            self._counters.inc("events.no_expression")
            self._warn("no_expression", "images arrive but no expression is set: no output until a text command comes")
            return None
        size = job.rgb.shape[:2]
        if self._last_size is not None and size != self._last_size:
            self._counters.inc("events.resolution_change")
            self._warn("resolution_change", f"resolution changed from {self._last_size[1]}x{self._last_size[0]} to "
                                            f"{size[1]}x{size[0]}: stream restarted")
            self._restart(None)
        elif self._last_stamp is not None and stamp < self._last_stamp:
            self._counters.inc("events.stamp_backwards")
            self._warn("stamp_backwards", f"timestamp went backwards ({self._last_stamp:.3f} -> {stamp:.3f} s, a bag "
                                          "loop?): stream restarted (stream_reset is set on the next result)")
            self._restart(None)
        self._last_size, self._last_stamp = size, stamp
        frame = self._downscaled(job.rgb, settings.max_image_side)
        started = time.perf_counter()
        try:
            with self._context():
                if settings.fault_injection_frame_id and job.header.frame_id.startswith(settings.fault_injection_frame_id):
                    self._inject(job.header.frame_id[len(settings.fault_injection_frame_id):])
                self._set_threshold(settings.mask_threshold)
                result = self.engine.step(frame, stamp)
        except Exception as exc:  # noqa: BLE001 - the node must survive anything the model raises
            oom = _is_oom(exc)
            self._counters.inc("skipped.cuda_oom" if oom else "skipped.model_error")
            self._warn("cuda_oom" if oom else "model_error",
                       f"{'CUDA out of memory' if oom else 'model failed'} on a frame ({type(exc).__name__}: {exc}); "
                       "frame skipped, stream restarted")
            if oom:
                self._empty_cache()
            self._restart(None)
            return None
        self._engine_times.add(time.perf_counter() - started)
        self._pending.append(_Pending(self._index, job))
        self._index += 1
        if result is None:
            return None
        return self._output(result)

    def flush(self) -> list[FrameOutput]:
        """End of the input (bag replay): the frames still held back by the look-ahead."""
        if self.engine is None:
            return []
        try:
            with self._context():
                results = self.engine.flush()
        except Exception as exc:  # noqa: BLE001 - as in process(): report, do not crash
            self._counters.inc("skipped.model_error")
            self._warn("model_error", f"model failed while flushing the look-ahead ({type(exc).__name__}: {exc})")
            return []
        outs = [self._output(r) for r in results]
        return [o for o in outs if o is not None]

    # ----- helpers -----------------------------------------------------------------------
    def _ensure_engine(self, s: NodeSettings) -> None:
        policy = {f: getattr(s, f) for f in POLICY_FIELDS}
        policy["presence_threshold"] = policy["presence_threshold"] or None  # 0.0: the model's own
        cfg = EngineConfig(window=s.window, lookahead=s.lookahead, max_objects=s.max_objects, **policy)
        if self.engine is not None and self.engine.config == cfg:
            return
        if self.engine is not None:
            policy = " ".join(f"{f}={getattr(s, f)}" for f in POLICY_FIELDS)
            self._info(f"engine rebuilt for window={s.window} lookahead={s.lookahead} {policy}: stream restarted")
        with self._model_lock:
            self.engine = self._build_engine(cfg)
        self._sync = EngineCommandSync()
        self._pending.clear()
        self._index = 0
        self._last_size = self._last_stamp = None

    def _restart(self, message: str | None) -> None:
        if message:
            self._info(f"stream restarted: {message}")
        self.engine.reset()
        self._pending.clear()
        self._index = 0
        self._last_size = self._last_stamp = None

    def _set_threshold(self, threshold: float) -> None:
        import dataclasses

        model = self.engine.model
        if model.config.mask_threshold != threshold:
            model.config = dataclasses.replace(model.config, mask_threshold=float(threshold))

    def _downscaled(self, rgb: np.ndarray, max_side: int) -> np.ndarray:
        h, w = rgb.shape[:2]
        if max(h, w) <= max_side:
            return rgb
        scale = max_side / max(h, w)
        self._counters.inc("events.downscaled")
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)

    @staticmethod
    def _inject(kind: str) -> None:
        if kind == ":oom":
            import torch

            raise torch.cuda.OutOfMemoryError("injected CUDA out of memory (fault_injection_frame_id)")
        raise InjectedFault("injected model failure (fault_injection_frame_id)")

    def _output(self, result: StepResult) -> FrameOutput | None:
        while self._pending and self._pending[0].index < result.frame_index:
            self._pending.popleft()
        if not self._pending or self._pending[0].index != result.frame_index:
            return None  # cannot happen while the engine and this class agree on resets
        job = self._pending.popleft().job
        h, w = job.rgb.shape[:2]
        objects = []
        for o in result.objects:
            oid = self._sync.object_id(o.object_id)
            if oid is None:
                continue
            mask = o.mask
            if mask.shape != (h, w):
                mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
            present = o.score > 0.5 and bool(mask.any())
            objects.append(ObjectOutput(oid, o.text, mask if present else np.zeros((h, w), bool), o.score, present))
        objects.sort(key=lambda o: o.object_id)
        return FrameOutput(header=job.header, rgb=job.rgb, received=job.received, frame_index=result.frame_index,
                           stream_reset=result.stream_reset, engine_s=result.latency_s, objects=objects)


def _is_oom(exc: BaseException) -> bool:
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except Exception:  # noqa: BLE001
        pass
    return "out of memory" in str(exc).lower() and "cuda" in str(exc).lower()


def union_mask(objects: list[ObjectOutput], size: tuple[int, int], mode: str = "union") -> np.ndarray:
    """The ``mask`` topic's content, bool [H, W]: all present objects, or only the first
    object (lowest id) when ``mode == "first"``; all False when nothing is present."""
    out = np.zeros(size, bool)
    for o in objects[:1] if mode == "first" else objects:
        if o.present:
            out |= o.mask
    return out
