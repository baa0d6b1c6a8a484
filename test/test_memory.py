"""The memory bank stays bounded on endless streams."""

from __future__ import annotations

import torch

from mpg_sam2_ros.core.inference.memory import MemoryBank, MemoryEntry


def _entry(t):
    return MemoryEntry(frame_idx=t, obj_ptr=torch.full((1, 8), float(t)), object_score_logits=torch.ones(1, 1),
                       maskmem_features=torch.zeros(1, 4, 16, 16), maskmem_pos_enc=[torch.zeros(1, 4, 16, 16)])


def test_bank_is_bounded_and_serves_sam2_and_pointers():
    bank = MemoryBank(num_maskmem=7, max_obj_ptrs=16)
    bank.add(_entry(0), is_cond=True)
    sizes = []
    for t in range(1, 2000):
        bank.add(_entry(t), is_cond=False)
        sizes.append(bank.nbytes())
    assert len(bank) == 1 + 15
    assert max(sizes[100:]) == sizes[100] == sizes[-1]  # constant once full
    view = bank.sam2_view()
    assert list(view["cond_frame_outputs"]) == [0]
    assert sorted(view["non_cond_frame_outputs"]) == list(range(1985, 2000))
    # spatial memories are kept only as far back as SAM 2 reads them
    with_mask = [t for t, o in view["non_cond_frame_outputs"].items() if o["maskmem_features"] is not None]
    assert min(with_mask) >= 2000 - 1 - bank.maskmem_horizon and max(with_mask) == 1999
    ptrs, dists = bank.object_pointers(2000, 16)
    assert ptrs.shape == (1, 16, 8) and dists[0] == 2000 and dists[1:] == list(range(1, 16))
    bank.clear()
    assert bank.empty and len(bank) == 0
