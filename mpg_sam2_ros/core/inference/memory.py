"""Bounded SAM 2 memory bank: conditioning frame + 6 previous mask memories (7 in all) and
object pointers of the conditioning frame + up to 15 previous frames (paper Sec. 4.2).

Unlike ``SAM2VideoPredictor``, which keeps every frame's outputs for the whole video, this
bank holds at most ``max(num_maskmem - 1, max_obj_ptrs - 1)`` non-conditioning entries and
drops a frame's spatial memory once it is older than SAM 2 will ever read it, so a
10,000-frame stream uses the same memory as a 100-frame one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch


@dataclass
class MemoryEntry:
    """What one decoded frame leaves for later frames.

    maskmem_features: [B, mem_dim, H, W] (None once too old to be read)
    maskmem_pos_enc:  list of [B, mem_dim, H, W]
    obj_ptr:          [B, C] object pointer
    object_score_logits: [B, 1]
    """

    frame_idx: int
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    maskmem_features: torch.Tensor | None = None
    maskmem_pos_enc: list[torch.Tensor] | None = None

    def select(self, i: int) -> "MemoryEntry":
        """Object i of a batched entry (batch 1, views)."""
        return MemoryEntry(
            frame_idx=self.frame_idx, obj_ptr=self.obj_ptr[i : i + 1],
            object_score_logits=self.object_score_logits[i : i + 1],
            maskmem_features=None if self.maskmem_features is None else self.maskmem_features[i : i + 1],
            maskmem_pos_enc=None if self.maskmem_pos_enc is None else [p[i : i + 1] for p in self.maskmem_pos_enc],
        )

    @staticmethod
    def cat(entries: list["MemoryEntry"]) -> "MemoryEntry":
        """Entries of the same frame (and layout) stacked along the batch."""
        first = entries[0]
        mem = None if first.maskmem_features is None else torch.cat([e.maskmem_features for e in entries])
        pos = None if first.maskmem_pos_enc is None else [
            torch.cat(level) for level in zip(*[e.maskmem_pos_enc for e in entries])]
        return MemoryEntry(first.frame_idx, torch.cat([e.obj_ptr for e in entries]),
                           torch.cat([e.object_score_logits for e in entries]), mem, pos)

    def as_sam2_output(self) -> dict:
        return {
            "maskmem_features": self.maskmem_features,
            "maskmem_pos_enc": self.maskmem_pos_enc,
            "obj_ptr": self.obj_ptr,
        }


class MemoryBank:
    """Per-object memory for one stream, capped by config.

    Arguments:
      num_maskmem: SAM 2's number of mask memories including the conditioning frame (7).
      max_obj_ptrs: object pointers read per frame including the conditioning frame (16).
      temporal_stride: SAM 2's ``memory_temporal_stride_for_eval`` (1).
    """

    def __init__(self, *, num_maskmem: int = 7, max_obj_ptrs: int = 16, temporal_stride: int = 1) -> None:
        self.num_maskmem = num_maskmem
        self.max_obj_ptrs = max_obj_ptrs
        # how far back SAM 2 reads a spatial memory (see _prepare_memory_conditioned_features)
        self.maskmem_horizon = 1 + max(0, num_maskmem - 2) * temporal_stride + temporal_stride
        self.capacity = max(self.maskmem_horizon, max_obj_ptrs - 1, 1)
        self.cond: dict[int, MemoryEntry] = {}
        self.recent: deque[MemoryEntry] = deque(maxlen=self.capacity)

    def __len__(self) -> int:
        return len(self.cond) + len(self.recent)

    @property
    def empty(self) -> bool:
        return not self.cond

    def clear(self) -> None:
        self.cond.clear()
        self.recent.clear()

    def add(self, entry: MemoryEntry, *, is_cond: bool) -> None:
        if is_cond:
            self.cond[entry.frame_idx] = entry
            return
        self.recent.append(entry)
        for old in self.recent:
            if entry.frame_idx - old.frame_idx > self.maskmem_horizon:
                old.maskmem_features = None
                old.maskmem_pos_enc = None

    def signature(self) -> tuple:
        """What must match for banks to be decoded as one batch: the same frames, kept the same way."""
        return (tuple(sorted(self.cond)), tuple((e.frame_idx, e.maskmem_features is not None) for e in self.recent))

    @classmethod
    def stacked(cls, banks: list["MemoryBank"]) -> "MemoryBank":
        """One bank whose entries hold the objects of ``banks`` (equal ``signature()``) along
        the batch, for one batched decode; read-only use."""
        first = banks[0]
        out = cls(num_maskmem=first.num_maskmem, max_obj_ptrs=first.max_obj_ptrs)
        out.maskmem_horizon, out.capacity = first.maskmem_horizon, first.capacity
        out.cond = {t: MemoryEntry.cat([b.cond[t] for b in banks]) for t in first.cond}
        out.recent = deque((MemoryEntry.cat(list(es)) for es in zip(*[b.recent for b in banks])), maxlen=first.capacity)
        return out

    def sam2_view(self) -> dict:
        """The ``output_dict`` layout ``SAM2Base._prepare_memory_conditioned_features`` reads."""
        return {
            "cond_frame_outputs": {t: e.as_sam2_output() for t, e in self.cond.items()},
            "non_cond_frame_outputs": {e.frame_idx: e.as_sam2_output() for e in self.recent},
        }

    def object_pointers(self, frame_idx: int, max_ptrs: int) -> tuple[torch.Tensor | None, list[int]]:
        """Historical object pointers T_mh for Eq. 5: the conditioning frame(s) + up to
        ``max_ptrs - 1`` previous frames. Returns ([B, P, C] or None, temporal distances)."""
        items = [(frame_idx - t, e.obj_ptr) for t, e in self.cond.items() if t <= frame_idx]
        for e in reversed(self.recent):
            d = frame_idx - e.frame_idx
            if 0 < d < max_ptrs:
                items.append((d, e.obj_ptr))
        if not items:
            return None, []
        dists, ptrs = zip(*items)
        return torch.stack(ptrs, dim=1), list(dists)

    def nbytes(self) -> int:
        total = 0
        for e in list(self.cond.values()) + list(self.recent):
            for t in [e.obj_ptr, e.object_score_logits, e.maskmem_features, *(e.maskmem_pos_enc or [])]:
                if t is not None:
                    total += t.numel() * t.element_size()
        return total
