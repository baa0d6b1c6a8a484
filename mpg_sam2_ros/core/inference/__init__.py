"""Stream state: bounded memory bank (and, next, the streaming engine)."""

from .memory import MemoryBank, MemoryEntry

__all__ = ["MemoryBank", "MemoryEntry"]
