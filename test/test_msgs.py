"""Round-trip the generated mpg_sam2_ros messages through real DDS (rmw_fastrtps_cpp).

Needs the messages built into the venv first: ``scripts/build_msgs.sh``.
Each test run uses its own ROS_DOMAIN_ID (derived from the pid) and every wait is
bounded, so the tests cannot hang or pick up traffic from other runs.
"""

import os
import subprocess
import sys
import textwrap
import time

import pytest

DOMAIN_ID = 1 + os.getpid() % 100  # 1..100
os.environ["ROS_DOMAIN_ID"] = str(DOMAIN_ID)
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

rclpy = pytest.importorskip("rclpy")
try:
    from mpg_sam2_ros.msg import ObjectSegmentation, Segmentation
except ImportError as exc:  # pragma: no cover - depends on the build step
    # Fail (not skip) so a missing build step cannot pass CI unnoticed.
    pytest.fail(
        f"generated messages not installed (run scripts/build_msgs.sh): {exc}",
        pytrace=False,
    )

from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

TOPIC = "/mpg_sam2_test/segmentation"
WAIT_S = 10.0
QOS = QoSProfile(
    depth=10,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
)

H, W = 4, 6
MASK_A = bytes([0, 255, 255, 0, 0, 0] + [0, 255, 255, 0, 0, 0] + [0] * 12)  # bbox x=1 y=0 w=2 h=2
MASK_B = bytes([0] * 24)  # absent object


def _make_object(object_id, text, mask, score, present, bbox, area):
    obj = ObjectSegmentation()
    obj.object_id = object_id
    obj.text = text
    obj.mask.height, obj.mask.width = H, W
    obj.mask.encoding = "mono8"
    obj.mask.is_bigendian = 0
    obj.mask.step = W
    obj.mask.data = mask
    obj.score = score
    obj.present = present
    obj.bbox.x_offset, obj.bbox.y_offset, obj.bbox.width, obj.bbox.height = bbox
    obj.area = area
    return obj


def make_message():
    msg = Segmentation()
    msg.header.frame_id = "camera_optical"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1700000000, 123456789
    msg.frame_index = 2**40 + 7  # exercises the full uint64 range
    msg.stream_reset = True
    msg.latency_ms = 12.5
    msg.objects = [
        _make_object(0, "the café mug", MASK_A, 0.875, True, (1, 0, 2, 2), 4),
        _make_object(1, "person in red 👕", MASK_B, 0.125, False, (0, 0, 0, 0), 0),
    ]
    return msg


def check_message(msg):
    assert msg.header.frame_id == "camera_optical"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1700000000, 123456789)
    assert msg.frame_index == 2**40 + 7
    assert msg.stream_reset is True
    assert msg.latency_ms == pytest.approx(12.5)
    assert len(msg.objects) == 2
    a, b = msg.objects
    assert (a.object_id, a.text, a.present, a.area) == (0, "the café mug", True, 4)
    assert a.score == pytest.approx(0.875)
    assert (a.mask.height, a.mask.width, a.mask.step, a.mask.encoding) == (H, W, W, "mono8")
    assert bytes(a.mask.data) == MASK_A
    assert (a.bbox.x_offset, a.bbox.y_offset, a.bbox.width, a.bbox.height) == (1, 0, 2, 2)
    assert (b.object_id, b.text, b.present, b.area) == (1, "person in red 👕", False, 0)
    assert b.score == pytest.approx(0.125)
    assert bytes(b.mask.data) == MASK_B
    assert (b.bbox.x_offset, b.bbox.y_offset, b.bbox.width, b.bbox.height) == (0, 0, 0, 0)


def _new_context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID)
    return ctx


def _spin_until(executor, predicate, timeout_s=WAIT_S, on_tick=None):
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        if on_tick is not None:
            on_tick()
        executor.spin_once(timeout_sec=0.05)
    return predicate()


def test_local_construction():
    """The generated type itself works (no DDS)."""
    msg = make_message()
    check_message(msg)
    # kilted only range/type-checks fields with check_fields=True
    # (or ROS_PYTHON_CHECK_FIELDS=1); off by default.
    checked = ObjectSegmentation(check_fields=True)
    with pytest.raises(AssertionError):
        checked.object_id = -1
    with pytest.raises(AssertionError):
        checked.score = "high"


def test_roundtrip_two_participants_in_process():
    """Publisher and subscriber in separate contexts = separate DDS participants."""
    pub_ctx, sub_ctx = _new_context(), _new_context()
    received = []
    try:
        assert rclpy.get_rmw_implementation_identifier() == os.environ["RMW_IMPLEMENTATION"]
        pub_node = rclpy.create_node("mpg_sam2_test_pub", context=pub_ctx)
        sub_node = rclpy.create_node("mpg_sam2_test_sub", context=sub_ctx)
        pub = pub_node.create_publisher(Segmentation, TOPIC, QOS)
        sub_node.create_subscription(Segmentation, TOPIC, received.append, QOS)
        pub_exec = SingleThreadedExecutor(context=pub_ctx)
        sub_exec = SingleThreadedExecutor(context=sub_ctx)
        pub_exec.add_node(pub_node)
        sub_exec.add_node(sub_node)

        msg = make_message()
        last = [0.0]

        def republish():  # bounded retry until discovery has matched
            pub_exec.spin_once(timeout_sec=0.0)
            if time.monotonic() - last[0] > 0.2:
                pub.publish(msg)
                last[0] = time.monotonic()

        assert _spin_until(sub_exec, lambda: received, on_tick=republish), (
            f"no Segmentation received within {WAIT_S}s on domain {DOMAIN_ID}"
        )
        check_message(received[0])
    finally:
        rclpy.shutdown(context=pub_ctx)
        rclpy.shutdown(context=sub_ctx)


PUBLISHER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import rclpy
    from rclpy.qos import QoSProfile, QoSDurabilityPolicy, QoSReliabilityPolicy
    from mpg_sam2_ros.msg import Segmentation
    sys.path.insert(0, {test_dir!r})
    from test_msgs import make_message, TOPIC, QOS
    rclpy.init(domain_id={domain_id})
    node = rclpy.create_node("mpg_sam2_test_subprocess_pub")
    pub = node.create_publisher(Segmentation, TOPIC, QOS)
    msg = make_message()
    deadline = time.monotonic() + {wait_s}
    while time.monotonic() < deadline:
        pub.publish(msg)
        if sys.stdin.readline() == "":  # parent closes stdin when done
            break
    rclpy.shutdown()
    """
)


def test_roundtrip_subprocess_publisher():
    """Publisher in another process: real inter-process DDS transport."""
    script = PUBLISHER_SCRIPT.format(
        test_dir=os.path.dirname(os.path.abspath(__file__)),
        domain_id=DOMAIN_ID,
        wait_s=WAIT_S + 5,
    )
    ctx = _new_context()
    received = []
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    try:
        node = rclpy.create_node("mpg_sam2_test_sub2", context=ctx)
        node.create_subscription(Segmentation, TOPIC, received.append, QOS)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        last = [0.0]

        def poke():  # ask the child to publish again every 0.2 s
            if proc.poll() is None and time.monotonic() - last[0] > 0.2:
                proc.stdin.write("\n")
                proc.stdin.flush()
                last[0] = time.monotonic()

        ok = _spin_until(executor, lambda: received, timeout_s=WAIT_S + 5, on_tick=poke)
        assert ok, f"nothing received from subprocess; its stderr: {_drain(proc)}"
        check_message(received[0])
    finally:
        if proc.stdin and not proc.stdin.closed:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        rclpy.shutdown(context=ctx)
    assert proc.returncode == 0, _drain(proc)


def _drain(proc):
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    return proc.stderr.read() if proc.stderr else ""
