"""Bookkeeping for the node's diagnostics and logs: counters, latency percentiles, rates and
rate-limited warnings (once, then a count). ROS-free and thread-safe."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

import numpy as np

# Reasons an input is skipped (counted in /diagnostics as skipped.<reason>, always listed).
SKIP_REASONS = (
    "unsupported_encoding", "bad_step", "bad_data_length", "bad_size", "corrupt_compressed", "bad_image",
    "bad_command", "too_many_commands", "not_configured", "model_error", "cuda_oom",
)
# Events that are not skips but are counted (events.<name>).
EVENTS = (
    "stamp_backwards", "resolution_change", "truncated_command", "non_ascii_command", "no_expression",
    "incompatible_qos", "messages_lost", "downscaled",
)


class Counters:
    """Named integer counters."""

    def __init__(self, names: tuple[str, ...] = ()) -> None:
        self._lock = threading.Lock()
        self._counts = {n: 0 for n in names}

    def inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n

    def get(self, name: str) -> int:
        with self._lock:
            return self._counts.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class LatencyWindow:
    """The last ``size`` values (seconds): last, p50, p95."""

    def __init__(self, size: int = 200) -> None:
        self._lock = threading.Lock()
        self._values: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        with self._lock:
            self._values.append(seconds)

    def summary_ms(self) -> dict[str, float]:
        with self._lock:
            v = np.array(self._values, np.float64) * 1e3
        if v.size == 0:
            return {"last": 0.0, "p50": 0.0, "p95": 0.0}
        return {"last": float(v[-1]), "p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95))}


class RateMeter:
    """Events per second over the last ``horizon_s`` seconds."""

    def __init__(self, horizon_s: float = 3.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._times: deque[float] = deque()
        self.horizon_s, self._clock = horizon_s, clock

    def tick(self) -> None:
        with self._lock:
            self._times.append(self._clock())
            self._trim()

    def rate(self) -> float:
        with self._lock:
            self._trim()
            return len(self._times) / self.horizon_s

    def _trim(self) -> None:
        cutoff = self._clock() - self.horizon_s
        while self._times and self._times[0] < cutoff:
            self._times.popleft()


class ThrottledLog:
    """The first message of each key is logged at once; later ones only as a summary
    ("N more since") at most every ``period_s`` seconds per key.

    Arguments: ``log(message)``, the period, and a clock (for tests)."""

    def __init__(self, log: Callable[[str], None], period_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log, self.period_s, self._clock = log, period_s, clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, key: str, message: str) -> bool:
        """Log or count one occurrence; True when it was logged."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            more = self._suppressed.pop(key, 0)
            self._last[key] = now
        self._log(message if not more else f"{message} ({more} more since the last report)")
        return True


class SequenceGaps:
    """Messages a subscription never saw: gaps in each publisher's sequence numbers
    (``MessageInfo.publication_sequence_number``; DDS overwrote them in the subscription's
    KEEP_LAST history while the callbacks were busy, or lost them in transport)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[bytes, int] = {}

    def observe(self, publisher: bytes, sequence: int | None) -> int:
        """Record one received message; return how many of that publisher's were missed."""
        if sequence is None:
            return 0
        with self._lock:
            last = self._last.get(publisher)
            self._last[publisher] = max(sequence, last or 0)
        return max(0, sequence - last - 1) if last is not None else 0
