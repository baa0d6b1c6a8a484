"""Streaming engine: per-frame work done once, bounded state, resets, several commands."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpg_sam2_ros.core.inference.engine import EngineConfig, StreamingEngine
from mpg_sam2_ros.core.inference.offline import OfflineRunner
from mpg_sam2_ros.core.modeling import build_model


def frames(n, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


class Counter:
    def __init__(self, fn):
        self.fn, self.calls, self.rows = fn, 0, 0

    def __call__(self, x, *args, **kwargs):
        self.calls += 1
        self.rows += x.shape[0]
        return self.fn(x, *args, **kwargs)


def test_each_frame_encoded_once_and_shared_by_commands(small_cfg, tokenizer, monkeypatch):
    torch.manual_seed(0)
    model = build_model(small_cfg)
    sam_count, mm_count = Counter(model.encode_image), Counter(model.encode_multimodal)
    monkeypatch.setattr(model, "encode_image", sam_count)
    monkeypatch.setattr(model, "encode_multimodal", mm_count)
    engine = StreamingEngine(model, tokenizer, EngineConfig(window=4))
    a, b = engine.add_command("the cup"), engine.add_command("the spoon")
    for i, f in enumerate(frames(6)):
        res = engine.step(f, stamp=float(i))
        assert [o.object_id for o in res.objects] == [a, b] and res.frame_index == i
        assert res.objects[0].mask.shape == (48, 64)
    assert sam_count.calls == 6 and sam_count.rows == 6  # SAM 2 once per frame, shared
    assert mm_count.calls == 6 and mm_count.rows == 12   # BEiT-3 once per (frame, command)


def test_incremental_mpg_row_equals_full_window(small_model, tokenizer):
    engine = StreamingEngine(small_model, tokenizer, EngineConfig(window=4))
    oid = engine.add_command("the red ball")
    for f in frames(6):
        engine.step(f)
    state = engine._objects[oid]
    window = torch.stack([c.patches for c in state.window])[None]
    full = small_model.mask_prior.contextualise(window)
    torch.testing.assert_close(state.window[-1].contextual, full[0, -1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("flow,stem,scale,readout", [(False, False, False, False), (True, False, False, False),
                                                     (False, True, False, False), (False, False, True, False),
                                                     (True, False, True, True)],
                         ids=["paper", "block_flow", "sam_stem", "block_scale", "motion_readout"])
def test_engine_matches_offline_when_context_is_per_frame(small_cfg, tokenizer, flow, stem, scale, readout):
    """With the window-level parts off (no S_si, S_ci, PGF, OGF) the global context does not
    matter, so streaming must reproduce the offline runner exactly (memory, prompts, decode);
    with ``mpg.block_flow`` too, when the window holds the frames it reaches back to; with
    ``mpg.sam_stem``, whose SAM 2 features the engine shares with the decoder and the offline
    runner computes in a pass of its own; with ``mpg.block_scale``, like the flow; with
    ``mpg.motion_readout``, whose cues the engine caches per frame."""
    cfg = small_cfg.with_overrides([
        "mpg.spatiotemporal_self_attention=false", "mpg.cross_modal_interaction=false",
        "hga.pixel_global=false", "hga.object_global=false",
    ] + (["mpg.block_flow=3"] if flow else []) + (["mpg.sam_stem=16"] if stem else []) + (["mpg.block_scale=3"] if scale else [])
       + (["mpg.motion_readout=true"] if readout else []))
    torch.manual_seed(0)
    model = build_model(cfg)
    head = model.sam2.sam_mask_decoder.pred_obj_score_head
    (head.layers[-1] if hasattr(head, "layers") else head).bias.data.fill_(5.0)
    if flow:  # the last layer starts at zero: make it matter
        torch.nn.init.normal_(model.mask_prior.flow_proj[2].weight, std=0.5)
    if stem:
        torch.nn.init.normal_(model.mask_prior.sam_stem[2].weight, std=0.5)
    if scale:
        torch.nn.init.normal_(model.mask_prior.scale_proj[2].weight, std=0.5)
    if readout:
        torch.nn.init.normal_(model.mask_prior.motion_head.weight, std=2.0)
    clip = frames(10)
    offline = OfflineRunner(model, tokenizer).run(clip, ["the cup"])
    engine = StreamingEngine(model, tokenizer, EngineConfig(window=4 if flow or scale else 3))
    engine.add_command("the cup")
    streamed = np.stack([engine.step(f).objects[0].mask for f in clip])
    assert offline.masks[0].any()
    np.testing.assert_array_equal(streamed, offline.masks[0])
    if flow:  # and the flow did change the masks
        torch.nn.init.zeros_(model.mask_prior.flow_proj[2].weight)
        assert not np.array_equal(OfflineRunner(model, tokenizer).run(clip, ["the cup"]).masks[0], offline.masks[0])
    if stem:  # and the stem did change the masks
        torch.nn.init.zeros_(model.mask_prior.sam_stem[2].weight)
        torch.nn.init.zeros_(model.mask_prior.sam_stem[2].bias)
        assert not np.array_equal(OfflineRunner(model, tokenizer).run(clip, ["the cup"]).masks[0], offline.masks[0])
    if readout:  # and the readout did change the masks
        torch.nn.init.zeros_(model.mask_prior.motion_head.weight)
        assert not np.array_equal(OfflineRunner(model, tokenizer).run(clip, ["the cup"]).masks[0], offline.masks[0])
    if scale:  # and the scale did change the masks
        torch.nn.init.zeros_(model.mask_prior.scale_proj[2].weight)
        assert not np.array_equal(OfflineRunner(model, tokenizer).run(clip, ["the cup"]).masks[0], offline.masks[0])


def test_state_is_bounded_on_long_streams(small_model, tokenizer):
    engine = StreamingEngine(small_model, tokenizer, EngineConfig(window=4))
    engine.add_command("the dog")
    sizes = []
    f = frames(1)[0]
    for i in range(60):
        engine.step(f, stamp=float(i))
        sizes.append(engine.state_nbytes())
    assert sizes[30] == sizes[-1] and max(sizes[30:]) == sizes[-1]


def test_resets(small_model, tokenizer):
    engine = StreamingEngine(small_model, tokenizer, EngineConfig(window=4))
    a = engine.add_command("the cup")
    b = engine.add_command("the spoon")
    clip = frames(4)
    assert engine.step(clip[0], 0.0).stream_reset
    assert not engine.step(clip[1], 1.0).stream_reset
    # timestamps going backwards (a bag looping) reset the stream
    res = engine.step(clip[2], 0.5)
    assert res.stream_reset and res.frame_index == 0
    engine.step(clip[3], 0.6)
    # a resolution change resets the stream
    res = engine.step(frames(1, h=30, w=40)[0], 0.7)
    assert res.stream_reset and res.frame_index == 0 and res.objects[0].mask.shape == (30, 40)
    engine.step(frames(1, h=30, w=40, seed=2)[0], 0.8)
    # a new command restarts only that object's window and memory
    assert len(engine._objects[a].memory) == 2
    engine.set_command(a, "the blue cup")
    assert len(engine._objects[a].memory) == 0 and len(engine._objects[b].memory) == 2
    res = engine.step(frames(1, h=30, w=40, seed=3)[0], 0.9)
    assert {o.object_id: o.text for o in res.objects} == {a: "the blue cup", b: "the spoon"}
    engine.remove_command(b)
    assert list(engine.commands) == [a]


def test_lookahead_delays_output(small_model, tokenizer):
    engine = StreamingEngine(small_model, tokenizer, EngineConfig(window=3, lookahead=2))
    engine.add_command("the cup")
    clip = frames(5)
    outs = [engine.step(f, float(i)) for i, f in enumerate(clip)]
    assert outs[0] is None and outs[1] is None
    assert [o.frame_index for o in outs[2:]] == [0, 1, 2]
    rest = engine.flush()
    assert [o.frame_index for o in rest] == [3, 4] and all(len(o.objects) == 1 for o in rest)


def test_engine_bad_input(small_model, tokenizer):
    from mpg_sam2_ros.core.preprocess import FrameError
    from mpg_sam2_ros.core.text import TextError

    engine = StreamingEngine(small_model, tokenizer, EngineConfig(window=2, max_objects=1))
    with pytest.raises(TextError):
        engine.add_command("")
    engine.add_command("the cup")
    with pytest.raises(ValueError, match="at most 1"):
        engine.add_command("the spoon")
    with pytest.raises(FrameError):
        engine.step(np.zeros((10, 10), np.float32))
    assert engine.step(frames(1)[0]).frame_index == 0  # still usable after a rejected frame
    with pytest.raises(ValueError):
        EngineConfig(window=0)


def test_conditioning_policy_reanchors(small_model, tokenizer):
    """reanchor_every restarts SAM 2's memory (a new conditioning frame); reanchor_after_absent
    does it once the object has been absent long enough (random weights: always absent)."""
    frames = [np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8) for i in range(7)]
    for cfg, expected_first in ((EngineConfig(window=4, reanchor_every=3), [0, 0, 0, 3, 3, 3, 6]),
                                (EngineConfig(window=4, reanchor_after_absent=2), [0, 0, 2, 2, 4, 4, 6]),
                                (EngineConfig(window=4), [0] * 7)):
        engine = StreamingEngine(small_model, tokenizer, cfg)
        oid = engine.add_command("the red ball")
        firsts = []
        for f in frames:
            engine.step(f)
            state = engine._objects[oid]
            firsts.append(state.first_frame)
            assert list(state.memory.cond) == [0]  # one conditioning entry: local frame 0 of the anchor
        assert firsts == expected_first, cfg
    with pytest.raises(ValueError):
        EngineConfig(reanchor_every=-1)


def test_presence_threshold_gates_the_masks_not_the_memory(small_model, tokenizer, monkeypatch):
    """presence_threshold: a mask is returned only where sigmoid(object score) is above it, and
    the frame counts as absent otherwise (reanchor_after_absent); SAM 2's memory and the
    returned scores stay what they are without it. 0.5 is the engine's default rule."""
    import copy
    import dataclasses
    import math

    small_model = copy.deepcopy(small_model)
    with torch.no_grad():  # random weights say "absent" (masks -1024): decode present masks
        small_model.sam2.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += 20.0
    real = small_model.track_step
    logits = [3.0, -1.0, 0.4, 2.0, 0.1, 1.0]  # the object score each frame reports (the masks stay present)

    def scored(**kw):
        out = real(**kw)
        score = torch.full_like(out.heads.object_score_logits, logits[kw["frame_idx"] % len(logits)])
        return dataclasses.replace(out, heads=dataclasses.replace(out.heads, object_score_logits=score))

    monkeypatch.setattr(small_model, "track_step", scored)
    runs = {}
    for t in (0.5, 0.7):
        engine = StreamingEngine(small_model, tokenizer, EngineConfig(window=4, presence_threshold=t))
        oid = engine.add_command("the red ball")
        results, absent = [], []
        for f in frames(6, seed=5):
            results.append(engine.step(f).objects[0])
            absent.append(engine._objects[oid].absent_run)
        bank = engine._objects[oid].memory
        memory = [t for e in (*bank.cond.values(), *bank.recent) for t in (e.obj_ptr, e.object_score_logits)]
        runs[t] = (results, absent, memory)
        shown = [bool(r.mask.any()) for r in results]
        assert shown == [x > math.log(t / (1 - t)) for x in logits], (t, shown)
    assert runs[0.5][1] == [0, 1, 0, 0, 0, 0] and runs[0.7][1] == [0, 1, 2, 0, 1, 0]
    for a, b in zip(runs[0.5][0], runs[0.7][0]):
        assert a.score == b.score
        assert not b.mask.any() or np.array_equal(a.mask, b.mask)
    for a, b in zip(runs[0.5][2], runs[0.7][2], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for bad in (0.4, 1.0):
        with pytest.raises(ValueError, match="presence_threshold"):
            EngineConfig(presence_threshold=bad)
    # None (the default) is the model's own threshold, which its config (checkpoint) carries;
    # a given one wins; the offline runner gates its masks by the same rule
    small_model.config = dataclasses.replace(small_model.config, presence_threshold=0.7)
    for given, t in ((None, 0.7), (0.5, 0.5)):
        engine = StreamingEngine(small_model, tokenizer, EngineConfig(window=4, presence_threshold=given))
        engine.add_command("the red ball")
        assert engine.presence_threshold == t
        assert [bool(engine.step(f).objects[0].mask.any()) for f in frames(6, seed=5)] == \
            [x > math.log(t / (1 - t)) for x in logits]
        offline = OfflineRunner(small_model, tokenizer, presence_threshold=given).run(frames(6, seed=5), ["the red ball"])
        assert offline.masks[0].reshape(6, -1).any(1).tolist() == [x > math.log(t / (1 - t)) for x in logits]
    with pytest.raises(ValueError, match="presence_threshold"):
        OfflineRunner(small_model, tokenizer, presence_threshold=0.3)


@pytest.mark.parametrize("lookahead", [0, 2])
def test_batched_decoding_equals_one_object_at_a_time(small_model, tokenizer, monkeypatch, lookahead):
    """Expressions of different lengths decoded as one batch give what decoding each alone gives
    (masks, scores, and every memory entry they leave); a command added mid-stream has another
    history and is decoded in its own batch; each frame still costs one batched decode per group."""
    import copy

    small_model = copy.deepcopy(small_model)
    with torch.no_grad():  # random weights say "absent" (masks -1024): make the objects present
        small_model.sam2.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += 20.0
    calls = {"n": 0, "rows": 0}
    real = small_model.track_step

    def counting(**kw):
        calls["n"] += 1
        calls["rows"] += kw["features"].batch_size
        return real(**kw)

    texts = ["the red ball", "the big blue square on the left side", "a cat"]
    runs = {}
    for batched in (True, False):
        monkeypatch.setattr(small_model, "track_step", counting)
        calls.update(n=0, rows=0)
        engine = StreamingEngine(small_model, tokenizer, EngineConfig(window=4, lookahead=lookahead, batch_objects=batched))
        ids = [engine.add_command(t) for t in texts]
        out = []
        for i, f in enumerate(frames(7, seed=3)):
            if i == 3:
                ids.append(engine.add_command("the green thing moving up"))
            r = engine.step(f, stamp=float(i))
            out += [r] if r is not None else []
        out += engine.flush()
        runs[batched] = (out, engine, dict(calls))
        monkeypatch.undo()
    (a, ea, ca), (b, eb, cb) = runs[True], runs[False]
    assert [r.frame_index for r in a] == [r.frame_index for r in b] == list(range(7))
    assert ca["rows"] == cb["rows"] and ca["n"] < cb["n"]  # same work, fewer (batched) calls
    assert ca["n"] == 3 * 1 + 4 * 2  # frames 0-2: one batch of 3; 3-6: the old three + the new one
    mism = 0
    for ra, rb in zip(a, b):
        assert [o.object_id for o in ra.objects] == [o.object_id for o in rb.objects]
        for oa, ob in zip(ra.objects, rb.objects):
            assert oa.score == pytest.approx(ob.score, abs=1e-5)
            mism += int((oa.mask != ob.mask).sum())
    total = sum(o.mask.size for r in a for o in r.objects)
    assert 0.05 < sum(int(o.mask.sum()) for r in a for o in r.objects) / total < 0.95  # masks are not trivial
    assert mism <= 1e-4 * total
    for oid in ea._objects:
        ma, mb = ea._objects[oid].memory, eb._objects[oid].memory
        assert ma.signature() == mb.signature()
        for xa, xb in zip(list(ma.cond.values()) + list(ma.recent), list(mb.cond.values()) + list(mb.recent)):
            torch.testing.assert_close(xa.obj_ptr, xb.obj_ptr, atol=1e-4, rtol=1e-4)
            if xa.maskmem_features is not None:
                torch.testing.assert_close(xa.maskmem_features, xb.maskmem_features, atol=1e-4, rtol=1e-4)
