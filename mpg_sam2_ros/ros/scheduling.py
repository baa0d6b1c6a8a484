"""Latest-wins hand-over from the subscription callbacks to the worker thread. ROS-free.

A camera faster than the model must not build a queue: the slot holds one frame, a new frame
replaces the waiting one (which is counted as dropped), and the worker always takes the newest.
So latency is bounded by about one engine step of waiting plus one of processing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass
class FrameJob:
    """One converted input frame. rgb: uint8 [H, W, 3]; header: the message's header (kept for
    the outputs); received: ``time.monotonic()`` when its callback ran."""

    rgb: np.ndarray
    header: Any
    received: float


class LatestSlot(Generic[T]):
    """A one-item queue where ``put`` replaces the waiting item."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None

    def put(self, item: T) -> T | None:
        """Store ``item``; return the item it replaced (dropped unprocessed), if any."""
        with self._cond:
            old, self._item = self._item, item
            self._cond.notify()
            return old

    def take(self, timeout: float | None = None) -> T | None:
        """Wait up to ``timeout`` seconds for an item and remove it (None on timeout)."""
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def clear(self) -> T | None:
        with self._cond:
            item, self._item = self._item, None
            return item
