"""The node's referring expressions: a thread-safe table of ``object id -> text`` that the
command topics and the ``set_commands`` service edit, and its synchronisation into a
``StreamingEngine`` (done by the worker thread only).

ROS-free. Semantics (``msg/TextCommands.msg``): MERGE adds or changes the listed ids and keeps
the others, REPLACE makes the listed commands the whole set, REMOVE drops the listed ids.
Unchanged (id, text) pairs keep their stream state; an id whose text changes restarts.
Object ids are the user's: the engine's own ids are mapped, so an engine rebuilt (a new
window) or restarted keeps the ids the robot knows.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from ..core.text import TextError, normalize_command

MERGE, REPLACE, REMOVE = 0, 1, 2
AUTO_ID = -1
MODES = {MERGE: "MERGE", REPLACE: "REPLACE", REMOVE: "REMOVE"}


class CommandError(ValueError):
    """A command request that cannot be applied (nothing was changed). ``reason``: the
    diagnostics counter key."""

    def __init__(self, message: str, reason: str = "bad_command") -> None:
        super().__init__(message)
        self.reason = reason


class Encoder(Protocol):
    def encode(self, text: object): ...


@dataclass(frozen=True)
class FittedText:
    """A normalised expression that the tokenizer accepts; ``truncated``: words were cut."""

    text: str
    truncated: bool
    non_ascii: bool


def fit_expression(encoder: Encoder, text: object) -> FittedText:
    """Normalise ``text`` and cut it (whole words, then characters) until ``encoder.encode``
    accepts it. ``TextError`` for empty / whitespace-only / non-text input."""
    clean = normalize_command(text)
    try:
        encoder.encode(clean)
        return FittedText(clean, False, not clean.isascii())
    except TextError:
        pass  # too long: normalize_command accepted it, so only the length can be wrong

    def fits(candidate: str) -> bool:
        try:
            encoder.encode(candidate)
            return True
        except TextError:
            return False

    words = clean.split()
    lo, hi = 0, len(words)  # largest k with words[:k] fitting, by bisection (k = 0 always "fits")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(" ".join(words[:mid])) else (lo, mid - 1)
    if lo > 0:
        out = " ".join(words[:lo])
    else:  # a single over-long word: cut characters
        word, lo, hi = words[0], 1, len(words[0])
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(word[:mid]) else (lo, mid - 1)
        out = word[:lo]
        if not fits(out):
            raise TextError(f"expression cannot be tokenised even when truncated: {clean[:60]!r}")
    return FittedText(out, True, not out.isascii())


@dataclass
class ApplyResult:
    """Per request command: the object id and the text used; the active set afterwards."""

    object_ids: list[int]
    texts: list[str]
    active: dict[int, str]
    changed: bool
    warnings: list[str] = field(default_factory=list)
    truncated: int = 0
    non_ascii: int = 0


class CommandTable:
    """Thread-safe desired expressions ``{object_id: text}``.

    Arguments:
      fit: text -> ``FittedText`` (raises ``TextError``); None until a tokenizer exists, and
        then every request fails with reason ``not_configured``.
      max_objects: most expressions at once.
    """

    def __init__(self, *, fit: Callable[[object], FittedText] | None = None, max_objects: int = 8) -> None:
        self._lock = threading.Lock()
        self._fit = fit
        self.max_objects = max_objects
        self._active: dict[int, str] = {}
        self._next_id = 0
        self._version = 0

    def set_fit(self, fit: Callable[[object], FittedText] | None) -> None:
        with self._lock:
            self._fit = fit

    def snapshot(self) -> tuple[int, dict[int, str]]:
        """(version, active expressions); the version changes with every change."""
        with self._lock:
            return self._version, dict(self._active)

    def apply(self, mode: int, commands: Sequence[tuple[int, str]]) -> ApplyResult:
        """Apply a request atomically; ``CommandError`` (nothing changed) if any part is bad."""
        if mode not in MODES:
            raise CommandError(f"unknown mode {mode} (MERGE=0, REPLACE=1, REMOVE=2)")
        with self._lock:
            if self._fit is None and mode != REMOVE:
                raise CommandError("the node is not configured yet (no tokenizer)", "not_configured")
            old = self._active
            new = {} if mode == REPLACE else dict(old)
            next_id = self._next_id
            out_ids, out_texts, warnings = [], [], []
            truncated = non_ascii = 0
            for k, (oid, text) in enumerate(commands):
                oid = int(oid)
                if oid < AUTO_ID:
                    raise CommandError(f"command {k}: object_id {oid} is invalid (>= 0, or AUTO_ID = -1)")
                if mode == REMOVE or (oid >= 0 and text == ""):
                    if oid < 0:
                        raise CommandError(f"command {k}: removing needs an explicit object_id")
                    new.pop(oid, None)
                    out_ids.append(oid)
                    out_texts.append("")
                    continue
                try:
                    fitted = self._fit(text)
                except TextError as exc:
                    raise CommandError(f"command {k}: {exc}") from exc
                if fitted.truncated:
                    truncated += 1
                    warnings.append(f"command {k} truncated to the tokenizer limit: {fitted.text!r}")
                non_ascii += fitted.non_ascii
                if oid == AUTO_ID:  # reuse an active object with the same text, else a new id
                    same = [i for i, t in new.items() if t == fitted.text]
                    same += [i for i, t in old.items() if t == fitted.text and mode == REPLACE and i not in new]
                    if same:
                        oid = same[0]
                    else:
                        oid = next_id
                        next_id += 1
                new[oid] = fitted.text
                next_id = max(next_id, oid + 1)
                out_ids.append(oid)
                out_texts.append(fitted.text)
            if len(new) > self.max_objects:
                raise CommandError(f"{len(new)} expressions requested, at most {self.max_objects} at once", "too_many_commands")
            changed = new != old
            self._active = dict(sorted(new.items()))
            self._next_id = next_id
            if changed:
                self._version += 1
            return ApplyResult(out_ids, out_texts, dict(self._active), changed, warnings, truncated, non_ascii)

    def set_single(self, text: str) -> ApplyResult:
        """The ``text_command`` topic: ``""`` clears all; else this becomes the only expression
        (kept unchanged, without a restart, if it already is active)."""
        return self.apply(REPLACE, [] if text == "" else [(AUTO_ID, text)])


class EngineLike(Protocol):
    def add_command(self, text: str) -> int: ...
    def set_command(self, object_id: int, text: str) -> None: ...
    def remove_command(self, object_id: int) -> None: ...


class EngineCommandSync:
    """Brings an engine's commands to a desired ``{object_id: text}`` with the fewest changes;
    maps engine ids back to object ids. One per engine instance (worker thread only)."""

    def __init__(self) -> None:
        self.version = -1
        self._applied: dict[int, tuple[int, str]] = {}  # object id -> (engine id, text)

    def sync(self, engine: EngineLike, version: int, desired: dict[int, str]) -> None:
        if version == self.version:
            return
        for oid in [o for o in self._applied if o not in desired]:
            engine.remove_command(self._applied.pop(oid)[0])
        for oid, text in desired.items():
            if oid not in self._applied:
                self._applied[oid] = (engine.add_command(text), text)
            elif self._applied[oid][1] != text:
                engine.set_command(self._applied[oid][0], text)
                self._applied[oid] = (self._applied[oid][0], text)
        self.version = version

    def object_id(self, engine_id: int) -> int | None:
        for oid, (eid, _) in self._applied.items():
            if eid == engine_id:
                return oid
        return None
