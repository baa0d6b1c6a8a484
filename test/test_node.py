"""The mpg_sam2 node over real DDS: the node runs as its own process (the installed module,
default model), and this test is a separate ROS client that publishes real messages.

Each run uses its own ROS_DOMAIN_ID and every wait is bounded. The tests share one node process
(module fixture) and run in file order; the overload test runs OVERLOAD_S seconds
(env MPG_SAM2_OVERLOAD_S, default 20 s as the issue asks; shorter for a quick local run).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

DOMAIN_ID = 101 + os.getpid() % 100  # 101..200, disjoint from test_msgs.py
os.environ["ROS_DOMAIN_ID"] = str(DOMAIN_ID)
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

rclpy = pytest.importorskip("rclpy")
try:
    from mpg_sam2_ros.msg import Segmentation, TextCommand, TextCommands
    from mpg_sam2_ros.srv import SetCommands
except ImportError as exc:  # pragma: no cover
    pytest.fail(f"generated messages not installed (run scripts/build_msgs.sh): {exc}", pytrace=False)

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from mpg_sam2_ros.ros.conversions import array_to_image, rgb_to_compressed  # noqa: E402

OVERLOAD_S = float(os.environ.get("MPG_SAM2_OVERLOAD_S", "20"))  # the issue: at least 20 s
START_S = 90.0   # node start-up (model build) on a loaded machine
WAIT_S = 30.0    # any single expected output
RELIABLE = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
LATCHED10 = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
BEST_EFFORT = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.BEST_EFFORT)
FIRST_COMMAND = "the red ball"


def wait_until(predicate, timeout=WAIT_S, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


class Collector:
    """Thread-safe list of received messages (with their arrival time)."""

    def __init__(self):
        self.lock, self.items = threading.Lock(), []

    def __call__(self, msg):
        with self.lock:
            self.items.append((time.time(), msg))

    def msgs(self):
        with self.lock:
            return [m for _, m in self.items]

    def timed(self):
        with self.lock:
            return list(self.items)

    def clear(self):
        with self.lock:
            self.items.clear()


def stamp_of(header):
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class Client:
    """The test's own ROS participant: publishers, subscribers and service clients for one
    node (``ns`` namespace), spun by a background thread."""

    def __init__(self, ctx, name, ns=""):
        self.ns = ns
        self.node = rclpy.create_node(name, context=ctx)
        n = self.node
        self.image = n.create_publisher(Image, f"{ns}/image", RELIABLE)  # a RELIABLE camera must connect
        self.compressed = n.create_publisher(CompressedImage, f"{ns}/image/compressed", RELIABLE)
        self.command = n.create_publisher(String, f"{ns}/text_command", LATCHED)
        self.commands = n.create_publisher(TextCommands, f"{ns}/text_commands", LATCHED10)
        self.masks, self.segs, self.diags = Collector(), Collector(), Collector()
        n.create_subscription(Image, f"{ns}/mask", self.masks, RELIABLE)
        n.create_subscription(Segmentation, f"{ns}/segmentation", self.segs, RELIABLE)
        n.create_subscription(DiagnosticArray, "/diagnostics", self.diags, RELIABLE)
        self.reset = n.create_client(Trigger, f"{ns}/mpg_sam2/reset")
        self.set_commands = n.create_client(SetCommands, f"{ns}/mpg_sam2/set_commands")
        self.change_state = n.create_client(ChangeState, f"{ns}/mpg_sam2/change_state")
        self.get_state = n.create_client(GetState, f"{ns}/mpg_sam2/get_state")
        self.executor = SingleThreadedExecutor(context=ctx)
        self.executor.add_node(n)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.running = True
        self.thread.start()
        self.sent = 0

    def _spin(self):
        while self.running:
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - context shut down at the end
                return

    def call(self, client, request, timeout=WAIT_S):
        assert client.wait_for_service(timeout_sec=timeout), f"service {client.srv_name} not available"
        future = client.call_async(request)
        assert wait_until(future.done, timeout), f"no reply from {client.srv_name}"
        return future.result()

    @property
    def status_name(self):
        return f"{self.ns}/mpg_sam2: segmentation"

    def diag(self):
        """Values of the node's latest diagnostics status (dict), or {}."""
        for msg in reversed(self.diags.msgs()):
            for status in msg.status:
                if status.name == self.status_name:
                    return {kv.key: kv.value for kv in status.values}
        return {}

    def fresh_diag(self, predicate=lambda d: True, timeout=WAIT_S):
        """Wait for a diagnostics message received from now on that satisfies ``predicate``."""
        start = len(self.diags.msgs())

        def check():
            msgs = self.diags.msgs()[start:]
            for msg in reversed(msgs):
                for status in msg.status:
                    values = {kv.key: kv.value for kv in status.values}
                    if status.name == self.status_name and predicate(values):
                        return values
            return None

        return wait_until(check, timeout)

    def frame(self, stamp, h=96, w=128, frame_id="camera", seed=0, encoding="rgb8", padding=0):
        rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
        header = Header(frame_id=frame_id)
        header.stamp.sec, header.stamp.nanosec = int(stamp), int(round((stamp % 1) * 1e9)) % 1_000_000_000
        if encoding == "rgb8":
            return array_to_image(rgb, "rgb8", header=header, row_padding=padding)
        grey = rgb[:, :, 0] if encoding == "mono8" else rgb[:, :, 0].astype(np.uint16) * 257
        return array_to_image(grey, encoding, header=header, row_padding=padding)

    def send(self, msg):
        self.image.publish(msg)
        self.sent += 1

    def send_until_output(self, make, collector=None, timeout=WAIT_S, period=0.25):
        """Publish frames from ``make(i)`` every ``period`` s until ``collector`` gets a message
        stamped like one of them; returns (that message, the sent stamps)."""
        collector = collector or self.segs
        stamps, deadline, i = set(), time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            msg = make(i)
            stamps.add(stamp_of(msg.header))
            self.send(msg)
            i += 1
            got = wait_until(lambda: [m for m in collector.msgs() if stamp_of(m.header) in stamps], period, 0.02)
            if got:
                return got[0], stamps
        return None, stamps

    def close(self):
        self.running = False
        self.thread.join(5)


_stamp = [1000.0]


def next_stamp():
    _stamp[0] += 0.1
    return round(_stamp[0], 3)


def start_node(args, log):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", ROS_DOMAIN_ID=str(DOMAIN_ID), **DDS_ENV)
    return subprocess.Popen([sys.executable, "-m", "mpg_sam2_ros.ros.node", "--ros-args", *args],
                            stdout=log, stderr=subprocess.STDOUT, env=env)


def stop_node(proc, log):
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("node did not exit within 20 s of SIGINT:\n" + tail(log))
    return proc.returncode


def tail(log, n=4000):
    log.flush()
    with open(log.name, errors="replace") as fh:
        return fh.read()[-n:]


# Fast DDS's default transports lose most large (~1 MB) best-effort samples between processes
# (the node counts them as events.messages_lost and says so); the LARGE_DATA builtin transports
# (shared memory + TCP) deliver them. Camera set-ups need the same (docs/ros_node.md).
# 640x480 frames exceed Fast DDS's 512 kB shared-memory segment: the publisher (this test) needs
# the package's profile, or best-effort frames are lost in transport (docs/ros_node.md)
DDS_ENV = {"FASTDDS_DEFAULT_PROFILES_FILE": str(Path(__file__).resolve().parents[1] / "config" / "fastdds_large_images.xml")}


@pytest.fixture(scope="module")
def ctx():
    saved = {k: os.environ.get(k) for k in DDS_ENV}
    os.environ.update(DDS_ENV)
    context = rclpy.Context()
    try:
        rclpy.init(context=context, domain_id=DOMAIN_ID)
        rclpy.create_node("mpg_sam2_test_participant", context=context)  # participant created now
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    yield context
    rclpy.shutdown(context=context)


@pytest.fixture(scope="module")
def node(ctx):
    """The node process, started AFTER a latched text_command was published (transient-local)."""
    client = Client(ctx, "mpg_sam2_test_client")
    client.command.publish(String(data=FIRST_COMMAND))
    log = tempfile.NamedTemporaryFile("w+", prefix="mpg_sam2_node_", suffix=".log", delete=False)
    proc = start_node(["-p", "fault_injection_frame_id:=boom", "-p", "window:=4", "-p", "cpu_threads:=1"], log)
    client.proc, client.log = proc, log
    ready = client.fresh_diag(lambda d: d.get("state") == "active", START_S)
    if not ready:
        stop_node(proc, log)
        pytest.fail("node not active within the start-up time:\n" + tail(log))
    yield client
    code = stop_node(proc, log)
    client.close()
    text = tail(log, 100000)
    assert code == 0, f"node exited with {code}:\n{text[-4000:]}"
    assert "Traceback" not in text, text[-4000:]


def test_transient_local_command_then_frames_give_mask_and_segmentation(node):
    """No command was published after the node started: the latched one applies."""
    seg, stamps = node.send_until_output(lambda i: node.frame(next_stamp(), seed=i, padding=(i % 2) * 8))
    assert seg is not None, "no segmentation output:\n" + tail(node.log)
    assert stamp_of(seg.header) in stamps and seg.header.frame_id == "camera"
    assert [o.text for o in seg.objects] == [FIRST_COMMAND] and seg.latency_ms > 0
    obj = seg.objects[0]
    assert (obj.mask.height, obj.mask.width, obj.mask.encoding) == (96, 128, "mono8")
    assert set(np.unique(np.frombuffer(bytes(obj.mask.data), np.uint8))) <= {0, 255}
    assert obj.area == int((np.frombuffer(bytes(obj.mask.data), np.uint8) == 255).sum())
    mask = wait_until(lambda: [m for m in node.masks.msgs() if stamp_of(m.header) == stamp_of(seg.header)], 5)
    assert mask, "mask missing for a frame that has a segmentation"
    m = mask[0]
    assert (m.height, m.width, m.encoding, m.step, m.header.frame_id) == (96, 128, "mono8", 128, "camera")
    assert set(np.unique(np.frombuffer(bytes(m.data), np.uint8))) <= {0, 255}
    # every output carries one of the sent stamps (never a newer or invented one)
    assert {stamp_of(s.header) for s in node.segs.msgs()} <= stamps


def test_graph_matches_the_documented_interface(node):
    """The README's tables come from ros/interface.py; here the running node must have exactly
    those topics and services (standard ROS ones aside), with those types."""
    from mpg_sam2_ros.ros.interface import SERVICES, TOPICS

    n = node.node
    pubs = dict(wait_until(lambda: n.get_publisher_names_and_types_by_node("mpg_sam2", "/"), 10))
    subs = dict(n.get_subscriber_names_and_types_by_node("mpg_sam2", "/"))
    srvs = dict(n.get_service_names_and_types_by_node("mpg_sam2", "/"))
    standard = {"/rosout", "/parameter_events", "/mpg_sam2/transition_event"}
    resolve = lambda name: name.replace("~", "/mpg_sam2") if name.startswith("~") else "/" + name.lstrip("/")  # noqa: E731
    documented_pubs = {resolve(e.name): e.type for e in TOPICS if e.kind == "pub"}
    documented_subs = {resolve(e.name): e.type for e in TOPICS if e.kind == "sub" and e.name != "image/compressed"}
    assert {k: v[0] for k, v in pubs.items() if k not in standard} == documented_pubs
    assert {k: v[0] for k, v in subs.items() if k not in standard} == documented_subs
    ours = {k: v[0] for k, v in srvs.items() if not any(k.endswith(x) for x in (
        "_parameters", "_parameter_types", "_parameters_atomically", "/get_type_description",
        "/change_state", "/get_state", "/get_available_states", "/get_available_transitions", "/get_transition_graph"))}
    assert ours == {resolve(e.name): e.type for e in SERVICES}


def test_overlay_only_while_subscribed(node):
    assert node.fresh_diag()["overlays_published"] == "0"
    overlays = Collector()
    sub = node.node.create_subscription(Image, "/overlay", overlays, RELIABLE)
    got, _ = node.send_until_output(lambda i: node.frame(next_stamp(), seed=i), overlays)
    assert got is not None and (got.encoding, got.height, got.width) == ("bgr8", 96, 128)
    node.node.destroy_subscription(sub)
    time.sleep(1.5)  # let discovery see the subscriber go
    before = int(node.fresh_diag()["overlays_published"])
    seg, _ = node.send_until_output(lambda i: node.frame(next_stamp(), seed=i))
    assert seg is not None
    assert int(node.fresh_diag()["overlays_published"]) == before


def test_several_expressions_service_and_topic_keep_ids(node):
    req = SetCommands.Request()
    req.commands.mode = TextCommands.REPLACE
    req.commands.commands = [TextCommand(object_id=TextCommand.AUTO_ID, text=FIRST_COMMAND),
                             TextCommand(object_id=TextCommand.AUTO_ID, text="the blue cube")]
    res = node.call(node.set_commands, req)
    assert res.success, res.message
    red, blue = res.object_ids
    assert red != blue and list(res.texts) == [FIRST_COMMAND, "the blue cube"]
    assert list(res.active_ids) == sorted([red, blue])
    node.segs.clear()

    def two_objects():
        node.send(node.frame(next_stamp()))
        return ([s for s in node.segs.msgs() if len(s.objects) == 2] or [None])[-1]

    seg = wait_until(two_objects, WAIT_S, 0.3)
    assert seg, "no two-object segmentation"
    assert [(o.object_id, o.text) for o in seg.objects] == sorted([(red, FIRST_COMMAND), (blue, "the blue cube")])
    # drop one object on the topic: the other keeps its id (and its stream: no reset)
    node.commands.publish(TextCommands(mode=TextCommands.MERGE, commands=[TextCommand(object_id=blue, text="")]))
    node.segs.clear()

    def one_object():
        node.send(node.frame(next_stamp()))
        return [s for s in node.segs.msgs() if [o.object_id for o in s.objects] == [red]]

    got = wait_until(one_object, WAIT_S, 0.3)
    assert got and not got[-1].stream_reset
    # a bad request changes nothing and says why
    bad = SetCommands.Request()
    bad.commands.mode = TextCommands.MERGE
    bad.commands.commands = [TextCommand(object_id=TextCommand.AUTO_ID, text="   ")]
    res = node.call(node.set_commands, bad)
    assert not res.success and "empty" in res.message


def test_reset_service_restarts_stream(node):
    res = node.call(node.reset, Trigger.Request())
    assert res.success, res.message
    node.segs.clear()
    got = wait_until(lambda: node.send(node.frame(next_stamp())) or [s for s in node.segs.msgs() if s.stream_reset],
                     WAIT_S, 0.3)
    assert got and got[0].frame_index == 0


def _wait_count(node, key, at_least):
    d = node.fresh_diag(lambda v: int(v.get(key, "0")) >= at_least)
    assert d, f"{key} did not reach {at_least}; last diagnostics: {node.diag()}\n{tail(node.log)}"
    return d


def _send_until_count(node, msg, key, at_least):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        node.send(msg)
        if node.fresh_diag(lambda v: int(v.get(key, "0")) >= at_least, 1.2):
            return
    _wait_count(node, key, at_least)


def _raw(encoding="rgb8", h=8, w=8, step=None, nbytes=None, stamp=None):
    m = Image(encoding=encoding, height=h, width=w, step=w * 3 if step is None else step)
    m.header.stamp.sec = int(stamp or next_stamp())
    m.data = bytes((m.step * h) if nbytes is None else nbytes)
    return m


def test_bad_inputs_are_counted_and_node_keeps_serving(node):
    bad_images = {
        "skipped.unsupported_encoding": _raw("yuv422", step=16),
        "skipped.bad_data_length": _raw(nbytes=100),
        "skipped.bad_step": _raw(step=10),
        "skipped.bad_size": _raw(h=0, nbytes=0),
    }
    # the image subscription keeps only the newest message (depth 1): send each until counted
    for key, msg in bad_images.items():
        _send_until_count(node, msg, key, 1)
    _send_until_count(node, _raw(h=20000, w=1, step=3), "skipped.bad_size", 2)  # oversize
    # bad expressions: whitespace-only (rejected, kept), over-long (truncated), emoji (accepted)
    node.command.publish(String(data="  \t "))
    _wait_count(node, "skipped.bad_command", 1)
    long = " ".join(["the small red ball on the left"] * 30)
    node.commands.publish(TextCommands(mode=TextCommands.MERGE, commands=[
        TextCommand(object_id=7, text=long), TextCommand(object_id=8, text="the cup ☕ 🍵 café")]))
    _wait_count(node, "events.truncated_command", 1)
    _wait_count(node, "events.non_ascii_command", 1)
    node.commands.publish(TextCommands(mode=TextCommands.REMOVE, commands=[
        TextCommand(object_id=7), TextCommand(object_id=8)]))
    # an exception inside the model, and a CUDA out-of-memory error (fault injection)
    for frame_id, key in (("boom", "skipped.model_error"), ("boom:oom", "skipped.cuda_oom")):
        _send_until_count(node, node.frame(next_stamp(), frame_id=frame_id), key, 1)
    # timestamps going backwards (bag loop) and a resolution change restart the stream
    seg, _ = node.send_until_output(lambda i: node.frame(next_stamp()))
    assert seg is not None
    node.segs.clear()
    back = stamp_of(seg.header) - 50.0
    looped, _ = node.send_until_output(lambda i: node.frame(back + 0.01 * i))
    assert looped is not None and looped.stream_reset
    _wait_count(node, "events.stamp_backwards", 1)
    _stamp[0] = back + 10
    node.segs.clear()
    bigger, _ = node.send_until_output(lambda i: node.frame(next_stamp(), h=120, w=160))
    assert bigger is not None and bigger.stream_reset and bigger.objects[0].mask.width == 160
    _wait_count(node, "events.resolution_change", 1)
    # mono8 / mono16 / 16UC1 inputs work
    for enc in ("mono8", "mono16", "16UC1"):
        got, _ = node.send_until_output(lambda i: node.frame(next_stamp(), h=120, w=160, encoding=enc, padding=4))
        assert got is not None, enc
    d = node.fresh_diag()
    assert d["state"] == "active" and node.proc.poll() is None
    assert int(d["outputs_published"]) > 0


def test_images_before_any_expression_give_no_output(node):
    node.command.publish(String(data=""))  # clears all expressions
    assert node.fresh_diag(lambda v: v.get("expressions") == "")
    node.segs.clear()
    node.masks.clear()
    start = int(node.fresh_diag()["events.no_expression"])
    for _ in range(6):
        node.send(node.frame(next_stamp()))
        time.sleep(0.2)
    _wait_count(node, "events.no_expression", start + 1)
    assert node.segs.msgs() == [] and node.masks.msgs() == []
    node.command.publish(String(data=FIRST_COMMAND))
    seg, _ = node.send_until_output(lambda i: node.frame(next_stamp()))
    assert seg is not None and [o.text for o in seg.objects] == [FIRST_COMMAND]


def test_overload_latency_bounded_and_drops_counted(node):
    """Frames at 30 Hz (640x480): latest wins, so latency stays bounded and drops are counted."""
    node.segs.clear()
    before = node.fresh_diag()
    period, n = 1 / 30, int(OVERLOAD_S * 30)
    rgb = np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    t0 = time.monotonic()
    for i in range(n):
        header = Header(frame_id="camera")
        now = time.time()
        header.stamp.sec, header.stamp.nanosec = int(now), int((now % 1) * 1e9)
        node.send(array_to_image(rgb, "rgb8", header=header))
        time.sleep(max(0.0, t0 + (i + 1) * period - time.monotonic()))
    send_s = time.monotonic() - t0
    time.sleep(2.0)
    lat = np.array([(t - stamp_of(m.header)) * 1e3 for t, m in node.segs.timed()])
    after = node.fresh_diag()
    engine_p95 = float(after["engine_ms_p95"])
    dropped = int(after["frames_dropped"]) - int(before["frames_dropped"])
    received = int(after["frames_received"]) - int(before["frames_received"])
    # what the node saw, should it have published nothing (seen once in CI, not reproduced)
    assert lat.size >= 3, (f"only {lat.size} outputs for {n} frames sent in {send_s:.1f}s; node: received {received}, "
                           f"dropped {dropped}, diagnostics {after}\n{tail(node.log)}")
    p95 = float(np.percentile(lat, 95))
    third = max(1, lat.size // 3)
    report = (f"sent {n} in {send_s:.1f}s, node received {received}, outputs {lat.size}, dropped {dropped}, "
              f"latency p50 {np.median(lat):.0f} p95 {p95:.0f} ms, engine p95 {engine_p95:.0f} ms")
    missed = int(after["frames_missed"]) - int(before["frames_missed"])
    report += f", missed before the callback {missed}"
    print(report)
    assert lat.size < n, report
    # frames the node took are processed or counted dropped (slack: frames in flight at the edges);
    # frames it never took show up as missed (publisher sequence gaps), never double-counted
    slack = max(3, int(0.05 * n))
    assert abs(received - (dropped + lat.size)) <= slack, report
    assert missed + received <= n + slack and missed + dropped > 0, report
    assert p95 <= 2 * engine_p95 + 250, report          # ~two engine steps + transport (loaded 2-core machine)
    assert np.median(lat[-third:]) <= np.median(lat[:third]) * 1.5 + 150, report  # no queue building up


def _transition(node, tid):
    res = node.call(node.change_state, ChangeState.Request(transition=Transition(id=tid)))
    assert res.success, f"transition {tid} failed:\n{tail(node.log)}"


def _state(node):
    return node.call(node.get_state, GetState.Request()).current_state.id


def test_lifecycle_deactivate_cleanup_configure_activate(node):
    assert _state(node) == State.PRIMARY_STATE_ACTIVE
    _transition(node, Transition.TRANSITION_DEACTIVATE)
    assert _state(node) == State.PRIMARY_STATE_INACTIVE
    node.segs.clear()
    for _ in range(5):
        node.send(node.frame(next_stamp()))
        time.sleep(0.1)
    time.sleep(1.0)
    assert node.segs.msgs() == []
    _transition(node, Transition.TRANSITION_CLEANUP)
    assert _state(node) == State.PRIMARY_STATE_UNCONFIGURED
    d = node.fresh_diag(lambda v: v.get("state") == "unconfigured")
    assert d and d["model_loaded"] == "false" and d["device"] == "none"
    res = node.call(node.reset, Trigger.Request())
    assert not res.success  # nothing to reset without a model
    _transition(node, Transition.TRANSITION_CONFIGURE)
    d = node.fresh_diag(lambda v: v.get("model_loaded") == "true")
    assert d and d["cpu_threads"] == "1"  # the cpu_threads parameter set the model's threads
    _transition(node, Transition.TRANSITION_ACTIVATE)
    seg, _ = node.send_until_output(lambda i: node.frame(next_stamp()))
    assert seg is not None and seg.stream_reset  # the latched command came back with the new subscriptions
    # both latched topics re-deliver on the new subscriptions (text_command and an earlier test's
    # text_commands, in either order), so the set may hold more than the String command
    assert FIRST_COMMAND in [o.text for o in seg.objects]


def test_compressed_input_and_incompatible_qos_warning(ctx):
    """A second node (namespace /cmp): compressed JPEG input, a reliable image subscription
    that warns about (and counts) a best-effort publisher, and corrupt JPEG counted."""
    client = Client(ctx, "mpg_sam2_test_client_cmp", ns="/cmp")
    client.command.publish(String(data=FIRST_COMMAND))
    log = tempfile.NamedTemporaryFile("w+", prefix="mpg_sam2_node_cmp_", suffix=".log", delete=False)
    proc = start_node(["-r", "__ns:=/cmp", "-p", "use_compressed:=true", "-p", "image_reliability:=reliable",
                       "-p", "window:=2"], log)
    client.proc, client.log = proc, log
    try:
        assert client.fresh_diag(lambda d: d.get("state") == "active", START_S), tail(log)
        weak = client.node.create_publisher(CompressedImage, "/cmp/image/compressed", BEST_EFFORT)
        d = client.fresh_diag(lambda v: int(v.get("events.incompatible_qos", "0")) >= 1)
        assert d, tail(log)
        assert "incompatible" in tail(log, 100000)
        client.node.destroy_publisher(weak)
        rgb = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)

        def jpeg(i):
            header = Header(frame_id="cam")
            header.stamp.sec = int(next_stamp())
            header.stamp.nanosec = i
            return rgb_to_compressed(rgb, "jpeg", header=header)

        client.send = client.compressed.publish
        seg, _ = client.send_until_output(jpeg)
        assert seg is not None and seg.objects[0].mask.width == 80, tail(log)
        client.compressed.publish(CompressedImage(format="jpeg", data=b"\xff\xd8\xff\xe0garbage"))
        assert client.fresh_diag(lambda v: int(v.get("skipped.corrupt_compressed", "0")) >= 1), tail(log)
        seg, _ = client.send_until_output(jpeg)
        assert seg is not None
    finally:
        code = stop_node(proc, log)
        client.close()
    assert code == 0, tail(log)
