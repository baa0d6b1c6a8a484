"""The node's ROS-free parts (no DDS): command table semantics, expression truncation, the
latest-wins slot, rate-limited logs, the worker's frame processing (resets, downscaling,
failures) and the parameter file matching the declared defaults."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from mpg_sam2_ros.core.inference.engine import StreamingEngine
from mpg_sam2_ros.core.text import TextError
from mpg_sam2_ros.ros.commands import (AUTO_ID, MERGE, REMOVE, REPLACE, CommandError, CommandTable,
                                       EngineCommandSync, fit_expression)
from mpg_sam2_ros.ros.health import Counters, LatencyWindow, ThrottledLog
from mpg_sam2_ros.ros.params import SPECS, NodeSettings, validate
from mpg_sam2_ros.ros.processing import FrameProcessor, union_mask
from mpg_sam2_ros.ros.scheduling import FrameJob, LatestSlot

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def table(tokenizer):
    return CommandTable(fit=lambda t: fit_expression(tokenizer, t), max_objects=3)


def test_table_merge_replace_remove_keep_ids(table):
    r = table.apply(REPLACE, [(AUTO_ID, "the red ball"), (AUTO_ID, "the  blue   cube ")])
    assert r.object_ids == [0, 1] and r.texts == ["the red ball", "the blue cube"] and r.changed
    v1, _ = table.snapshot()
    # same text again: same id, no change (no restart)
    r = table.apply(REPLACE, [(AUTO_ID, "the red ball"), (1, "the blue cube")])
    assert r.object_ids == [0, 1] and not r.changed and table.snapshot()[0] == v1
    with pytest.raises(CommandError):  # 4 objects, max 3: rejected atomically
        table.apply(MERGE, [(5, "the dog"), (AUTO_ID, "the cat")])
    assert table.snapshot()[1] == {0: "the red ball", 1: "the blue cube"}
    r = table.apply(MERGE, [(5, "the dog")])
    assert r.active == {0: "the red ball", 1: "the blue cube", 5: "the dog"}
    r = table.apply(MERGE, [(1, "")])  # empty text with an id removes it
    assert r.active == {0: "the red ball", 5: "the dog"}
    r = table.apply(REMOVE, [(0, "ignored")])
    assert r.active == {5: "the dog"} and r.object_ids == [0]
    assert table.apply(MERGE, [(AUTO_ID, "the cat")]).object_ids == [6]  # ids never reused
    assert table.set_single("").active == {}


@pytest.mark.parametrize("commands, reason", [
    ([(AUTO_ID, "")], "bad_command"),
    ([(AUTO_ID, "   \t ")], "bad_command"),
    ([(-7, "the dog")], "bad_command"),
    ([(AUTO_ID, "a"), (AUTO_ID, "b"), (AUTO_ID, "c"), (AUTO_ID, "d")], "too_many_commands"),
])
def test_table_rejects_atomically(table, commands, reason):
    table.apply(REPLACE, [(AUTO_ID, "the red ball")])
    before = table.snapshot()
    with pytest.raises(CommandError) as info:
        table.apply(MERGE, commands)
    assert info.value.reason == reason and table.snapshot() == before


def test_table_not_configured_and_bad_mode():
    t = CommandTable()
    with pytest.raises(CommandError) as info:
        t.apply(MERGE, [(AUTO_ID, "x")])
    assert info.value.reason == "not_configured"
    with pytest.raises(CommandError):
        t.apply(9, [])


def test_fit_expression_truncates_long_and_keeps_unicode(tokenizer):
    long = " ".join(["the red ball on the left"] * 20)
    with pytest.raises(TextError):
        tokenizer.encode(long)
    fitted = fit_expression(tokenizer, long)
    assert fitted.truncated and long.startswith(fitted.text) and tokenizer.encode(fitted.text)
    one_word = "x" * 500
    fitted = fit_expression(tokenizer, one_word)
    assert fitted.truncated and 0 < len(fitted.text) < 500
    emoji = fit_expression(tokenizer, "the café cup 🍵")
    assert emoji.non_ascii and not emoji.truncated and emoji.text == "the café cup 🍵"
    with pytest.raises(TextError):
        fit_expression(tokenizer, " \n ")


class _FakeEngine:
    def __init__(self):
        self.ids, self.calls, self.next = {}, [], 100

    def add_command(self, text):
        self.next += 1
        self.ids[self.next] = text
        self.calls.append("add")
        return self.next

    def set_command(self, eid, text):
        self.ids[eid] = text
        self.calls.append("set")

    def remove_command(self, eid):
        self.ids.pop(eid)
        self.calls.append("remove")


def test_engine_sync_minimal_changes_and_id_mapping():
    eng, sync = _FakeEngine(), EngineCommandSync()
    sync.sync(eng, 1, {3: "a", 7: "b"})
    sync.sync(eng, 1, {3: "zzz"})  # same version: nothing
    assert eng.calls == ["add", "add"]
    sync.sync(eng, 2, {3: "a", 7: "c"})
    assert eng.calls[2:] == ["set"] and sync.object_id(102) == 7 and sync.object_id(101) == 3
    sync.sync(eng, 3, {7: "c"})
    assert eng.calls[3:] == ["remove"] and list(eng.ids.values()) == ["c"]


def test_latest_slot_drops_older_frames():
    slot = LatestSlot()
    assert slot.put(1) is None and slot.put(2) == 1 and slot.take(0.01) == 2 and slot.take(0.01) is None
    got = []
    t = threading.Thread(target=lambda: got.append(slot.take(2.0)))
    t.start()
    slot.put(3)
    t.join(3.0)
    assert got == [3]


def test_throttled_log_once_then_counts():
    now, lines = [0.0], []
    log = ThrottledLog(lines.append, period_s=10.0, clock=lambda: now[0])
    assert log("a", "bad a") and not log("a", "bad a") and not log("a", "bad a") and log("b", "bad b")
    now[0] = 11.0
    assert log("a", "bad a")
    assert lines == ["bad a", "bad b", "bad a (2 more since the last report)"]


def test_params_yaml_equals_declared_defaults():
    data = yaml.safe_load((REPO / "config" / "mpg_sam2.yaml").read_text())["/**"]["ros__parameters"]
    assert data == {s.name: s.default for s in SPECS}
    assert NodeSettings() == NodeSettings(**data)
    assert validate("dtype", "float16") and validate("device", "gpu") and validate("window", 0)
    assert validate("device", "cuda:1") is None and validate("mask_threshold", 1) is None
    assert validate("presence_threshold", 0.0) is None and validate("presence_threshold", 0.9) is None
    assert "model's own" in validate("presence_threshold", 0.3) and validate("presence_threshold", 1.0)


# ----- the worker's frame processing, with the small model ------------------------------------

class _Header:
    def __init__(self, frame_id="cam"):
        self.frame_id = frame_id


def _processor(small_model, tokenizer, table):
    counters, warnings = Counters(), []
    proc = FrameProcessor(build_engine=lambda cfg: StreamingEngine(small_model, tokenizer, cfg), table=table,
                          counters=counters, engine_times=LatencyWindow(), warn=lambda k, m: warnings.append(k))
    return proc, counters, warnings


def _job(h=48, w=64, frame_id="cam", seed=0):
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return FrameJob(rgb=rgb, header=_Header(frame_id), received=0.0)


def test_processor_resets_failures_and_sizes(small_model, tokenizer, table):
    proc, counters, warnings = _processor(small_model, tokenizer, table)
    s = NodeSettings(window=2, max_image_side=32, fault_injection_frame_id="boom")
    assert proc.process(_job(), 0.0, s) is None and counters.get("events.no_expression") == 1
    table.apply(REPLACE, [(4, "the red ball")])
    out = proc.process(_job(), 1.0, s)
    assert out.stream_reset and [o.object_id for o in out.objects] == [4]
    assert out.objects[0].mask.shape == (48, 64) and counters.get("events.downscaled") == 1  # scaled back
    assert not proc.process(_job(seed=1), 2.0, s).stream_reset
    assert proc.process(_job(seed=2), 1.5, s).stream_reset and counters.get("events.stamp_backwards") == 1
    assert proc.process(_job(40, 40), 3.0, s).stream_reset and counters.get("events.resolution_change") == 1
    assert proc.process(_job(40, 40, frame_id="boom"), 4.0, s) is None and counters.get("skipped.model_error") == 1
    assert proc.process(_job(40, 40, frame_id="boom:oom"), 5.0, s) is None and counters.get("skipped.cuda_oom") == 1
    out = proc.process(_job(40, 40), 6.0, s)
    assert out is not None and out.stream_reset  # the node lives on after failures, stream restarted
    proc.request_reset()
    assert proc.process(_job(40, 40), 7.0, s).stream_reset
    # window change at run time: the engine is rebuilt, ids are kept
    out = proc.process(_job(40, 40), 8.0, NodeSettings(window=3))
    assert proc.engine.config.window == 3 and out.stream_reset and out.objects[0].object_id == 4
    # and so does a change of the conditioning or presence policy
    assert not proc.process(_job(40, 40), 9.0, NodeSettings(window=3)).stream_reset
    out = proc.process(_job(40, 40), 10.0, NodeSettings(window=3, reanchor_after_absent=2, reanchor_every=30))
    assert out.stream_reset and (proc.engine.config.reanchor_after_absent, proc.engine.config.reanchor_every) == (2, 30)
    out = proc.process(_job(40, 40), 11.0, NodeSettings(window=3, reanchor_after_absent=2, reanchor_every=30,
                                                        presence_threshold=0.9))
    assert out.stream_reset and proc.engine.config.presence_threshold == 0.9
    # 0.0, the parameter's default, is the model's own threshold
    assert proc.engine.presence_threshold == 0.9
    out = proc.process(_job(40, 40), 12.0, NodeSettings(window=3, reanchor_after_absent=2, reanchor_every=30))
    assert out.stream_reset and proc.engine.config.presence_threshold is None
    assert proc.engine.presence_threshold == small_model.config.presence_threshold
    assert {"no_expression", "stamp_backwards", "resolution_change", "model_error", "cuda_oom"} <= set(warnings)


def test_processor_lookahead_keeps_each_frames_header(small_model, tokenizer, table):
    proc, _, _ = _processor(small_model, tokenizer, table)
    table.apply(REPLACE, [(AUTO_ID, "the red ball")])
    s = NodeSettings(window=2, lookahead=1)
    assert proc.process(_job(frame_id="f0"), 0.0, s) is None
    out = proc.process(_job(frame_id="f1"), 1.0, s)
    assert out.header.frame_id == "f0" and out.frame_index == 0


def test_union_mask_modes():
    from mpg_sam2_ros.ros.processing import ObjectOutput

    a = np.zeros((2, 3), bool)
    a[0, 0] = True
    b = np.zeros((2, 3), bool)
    b[1, 2] = True
    objs = [ObjectOutput(0, "a", a, 0.9, True), ObjectOutput(1, "b", b, 0.9, True), ObjectOutput(2, "c", ~a, 0.1, False)]
    assert union_mask(objs, (2, 3)).sum() == 2 and union_mask(objs, (2, 3), "first").sum() == 1
    assert not union_mask([], (2, 3)).any()


def test_readme_interface_tables_are_generated_from_the_code():
    """README's topic/service/message/parameter tables equal what scripts/ros_tables.py makes."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, str(repo / "scripts/ros_tables.py"), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    readme = (repo / "README.md").read_text()
    from mpg_sam2_ros.ros.params import SPECS

    for spec in SPECS:
        assert f"| `{spec.name}` |" in readme
