"""``bag-replay --live``: the whole ROS graph under test. The bag's image messages are published
(their recorded CDR bytes, unchanged) on the node's ``image`` (or ``image/compressed``) topic at
the recorded pace (x ``--realtime`` RATE), the expressions are set through ``~/set_commands``,
and what the node publishes on ``segmentation`` and ``mask`` is recorded (raw bytes, straight into
the result bag). So DDS transport, conversion, the node's scheduling and its drops are measured.

Latency per frame: end to end (publish here -> its segmentation received here), the node's own
``latency_ms`` (its callback -> publish), and transport = end to end - node. A frame without a
result within the wait after the last publish counts as dropped.

The node is a running ``mpg_sam2_node`` (``--node`` names it), or with ``--start-node`` one this
command starts (same model arguments, ``use_compressed`` set for the bag's topic) and stops.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.render import Drawn
from .bags import BagError, DecodeError, InputBag, ResultBag, decode_image, deserialize, stamp_of, SEGMENTATION_TYPE
from .groundtruth import GroundTruth
from .run import node_policy
from .sink import FrameRecord, ResultSink


class LiveError(BagError):
    """The node could not be reached or failed (exit 2, like any other bag-replay error)."""


def _node_paths(node_name: str) -> tuple[str, str]:
    """'/ns/name' -> ('/ns', '/ns/name'); topics are in the node's namespace."""
    full = node_name if node_name.startswith("/") else "/" + node_name
    ns = full.rsplit("/", 1)[0]
    return ns, full


def diagnosed_policy(values: dict[str, str]) -> dict:
    """The stream policy in force, as the node's diagnostics report it (None where a value is
    missing, e.g. no diagnostics arrived, or a node of an older version)."""

    def number(key: str, kind):
        try:
            return kind(values[key])
        except (KeyError, ValueError):
            return None

    return {"reanchor_after_absent": number("reanchor_after_absent", int),
            "reanchor_every": number("reanchor_every", int),
            "presence_threshold": number("presence_threshold", float)}


def start_node_process(opts, compressed: bool, log_path: Path) -> subprocess.Popen:
    args = ["-p", f"window:={opts.window}", "-p", f"lookahead:={opts.lookahead}",
            "-p", f"use_compressed:={'true' if compressed else 'false'}", "-p", "image_reliability:=reliable",
            "-p", "image_depth:=1", "-p", f"mask_threshold:={float(opts.mask_threshold)}"]
    for name, value in node_policy(opts).items():
        args += ["-p", f"{name}:={value}"]
    if opts.config:
        args += ["-p", f"model_config:={opts.config}"]
    if opts.checkpoint:
        args += ["-p", f"checkpoint:={Path(opts.checkpoint).resolve()}"]
    ns, full = _node_paths(opts.node_name)
    args += ["-r", f"__node:={full.rsplit('/', 1)[1]}"] + (["-r", f"__ns:={ns}"] if ns else [])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "mpg_sam2_ros.ros.node", "--ros-args", *args, *opts.node_args],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    proc._log_file = log  # type: ignore[attr-defined]
    return proc


def stop_node_process(proc: subprocess.Popen) -> int | None:
    from ..ros.process import stop_process

    code = stop_process(proc)
    proc._log_file.close()  # type: ignore[attr-defined]
    return code


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def run_live(opts, bag: InputBag, topic: str, texts: list[str], gt: GroundTruth | None, result_bag: ResultBag,
             fps: float, log) -> dict:
    from ..ros.dds import use_large_image_transport

    use_large_image_transport()  # frames above 512 kB over Fast DDS shared memory (config/fastdds_large_images.xml)
    try:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image
        from std_srvs.srv import Trigger

        from mpg_sam2_ros.msg import Segmentation, TextCommand, TextCommands
        from mpg_sam2_ros.srv import SetCommands
    except ImportError as exc:
        raise LiveError(f"--live needs ROS 2 (rclpy) and the package's built messages: {exc}") from None
    from diagnostic_msgs.msg import DiagnosticArray

    if opts.overrides:
        raise LiveError("--set cannot be passed to the node (it takes a model config name or YAML); "
                        "write a config YAML, or run in process without --live / with demo --no-ros")
    msgtype = bag.msgtype(topic)
    compressed = msgtype.endswith("CompressedImage")
    ns, full = _node_paths(opts.node_name)
    node_log = Path(opts.out) / "node.log"
    proc = start_node_process(opts, compressed, node_log) if opts.start_node else None
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    client = rclpy.create_node("mpg_sam2_bag_replay", context=ctx)
    reliable = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
    image_pub = client.create_publisher(CompressedImage if compressed else Image,
                                        f"{ns}/image/compressed" if compressed else f"{ns}/image", reliable)
    outputs: queue.Queue = queue.Queue()
    masks: dict[tuple[int, int], bytes] = {}
    masks_lock = threading.Lock()
    diag_values: dict[str, str] = {}
    status_name = f"{full}: segmentation"

    def on_segmentation(raw: bytes) -> None:
        outputs.put((time.monotonic(), raw))

    def on_mask(raw: bytes) -> None:
        try:
            m = deserialize(raw, "sensor_msgs/msg/Image")
        except DecodeError:
            return
        with masks_lock:
            masks[stamp_of(m)] = raw

    def on_diag(msg) -> None:
        for status in msg.status:
            if status.name == status_name:
                diag_values.update({kv.key: kv.value for kv in status.values})

    client.create_subscription(Segmentation, f"{ns}/segmentation", on_segmentation, reliable, raw=True)
    client.create_subscription(Image, f"{ns}/mask", on_mask, reliable, raw=True)
    client.create_subscription(DiagnosticArray, "/diagnostics", on_diag, reliable)
    set_cli = client.create_client(SetCommands, f"{full}/set_commands")
    reset_cli = client.create_client(Trigger, f"{full}/reset")
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(client)
    spinning = threading.Event()
    spinning.set()

    def spin() -> None:
        while spinning.is_set():
            try:
                executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - the context is shut down at the end
                return

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()

    def call(cli, request, what: str):
        deadline = time.monotonic() + opts.node_timeout
        while not cli.wait_for_service(timeout_sec=0.5):
            if proc is not None and proc.poll() is not None:
                raise LiveError(f"mpg_sam2_node exited with code {proc.returncode} while starting:\n{_tail(node_log)}")
            if time.monotonic() > deadline:
                hint = "" if proc is not None else " (start one, or use --start-node)"
                raise LiveError(f"no mpg_sam2_node answers {cli.srv_name} within {opts.node_timeout:.0f} s{hint}")
        future = cli.call_async(request)
        while not future.done():
            if time.monotonic() > deadline:
                raise LiveError(f"{what}: no reply from {cli.srv_name} within {opts.node_timeout:.0f} s")
            time.sleep(0.02)
        return future.result()

    sink: ResultSink | None = None
    interrupted = False
    records_by_stamp: dict[tuple[int, int], FrameRecord] = {}
    published: dict[int, float] = {}
    node_ms: list[float] = []
    transport_ms: list[float] = []
    resets = 0
    try:
        req = SetCommands.Request()
        req.commands = TextCommands(mode=TextCommands.REPLACE,
                                    commands=[TextCommand(object_id=TextCommand.AUTO_ID, text=t) for t in texts])
        reply = call(set_cli, req, "setting the expressions")
        if not reply.success:
            raise LiveError(f"the node refused the expressions: {reply.message}")
        id_to_k = {int(oid): k for k, oid in enumerate(reply.object_ids)}
        clean = list(reply.texts)
        call(reset_cli, Trigger.Request(), "resetting the stream")
        deadline = time.monotonic() + opts.node_timeout
        while image_pub.get_subscription_count() == 0:  # the node subscribes once active
            if time.monotonic() > deadline:
                raise LiveError(f"the node has no subscription on {image_pub.topic_name} within {opts.node_timeout:.0f} s "
                                f"(not active, or use_compressed does not match a {'compressed' if compressed else 'raw'} bag)")
            time.sleep(0.05)
        deadline = time.monotonic() + 3.0  # the node's 1 Hz diagnostics name its model and policy
        while "model" not in diag_values and time.monotonic() < deadline:
            time.sleep(0.05)
        if "model" not in diag_values:
            log(f"[bag-replay] warning: no diagnostics from {full} on /diagnostics within 3 s: "
                "its model and policy are recorded as unknown")
        time.sleep(0.3)  # let the image match settle on both sides
        model = {"config": diag_values.get("model", "?"), "weights": diag_values.get("weights", "?")}
        policy = diagnosed_policy(diag_values)
        caption = f"{model['config']}, W={opts.window}" + (f", k={opts.lookahead}" if opts.lookahead else "") + ", live"
        sink = ResultSink(Path(opts.out), clean, gt, result_bag, fps=fps, caption=caption)

        def drain(until: float) -> None:
            """Record the node's outputs until ``until`` (monotonic), then whatever is queued."""
            nonlocal resets
            while True:
                remaining = until - time.monotonic()
                try:
                    received, raw = outputs.get(timeout=remaining) if remaining > 0 else outputs.get_nowait()
                except queue.Empty:
                    return
                resets += _record_output(raw, received)

        def _record_output(raw: bytes, received: float) -> int:
            try:
                seg = deserialize(raw, SEGMENTATION_TYPE)
            except DecodeError:
                return 0
            stamp = stamp_of(seg)
            rec = records_by_stamp.get(stamp)
            if rec is None or rec.output:
                return 0
            rec.processed = True
            e2e = (received - published[rec.index]) * 1e3
            node_ms.append(float(seg.latency_ms))
            transport_ms.append(max(0.0, e2e - float(seg.latency_ms)))
            objects = []
            for o in seg.objects:
                k = id_to_k.get(int(o.object_id))
                if k is None:
                    continue
                m = np.asarray(o.mask.data, np.uint8).reshape(o.mask.height, o.mask.step)[:, : o.mask.width] > 0
                objects.append(Drawn(k, clean[k], m, float(o.score), bool(o.present)))
            rgb = rec_rgb.pop(rec.index, None)
            for index in [i for i in rec_rgb if i < rec.index]:  # older frames the node dropped: no result will come
                del rec_rgb[index]
            if rgb is None:
                return 0
            with masks_lock:
                raw_mask = masks.pop(stamp, None)
            sink.add_output(rec, rgb, objects, latency_ms=e2e, frame_index=int(seg.frame_index),
                            stream_reset=bool(seg.stream_reset), raw_mask=raw_mask, raw_segmentation=raw)
            return int(bool(seg.stream_reset))

        rec_rgb: dict[int, np.ndarray] = {}
        t_start = None
        first_ns = None
        rate = opts.realtime or 1.0
        from tqdm import tqdm

        bar = tqdm(total=bag.count(topic), desc="bag-replay --live", unit="frame", disable=not opts.progress, file=sys.stderr)
        try:
            for m in bag.messages(topic):
                bar.update(1)
                msg, rec = sink.read_input(m, msgtype)
                if msg is None:
                    continue
                stamp = rec.stamp
                try:
                    rgb = decode_image(msg, msgtype)  # for the overlay; the node decodes its own copy
                except DecodeError as exc:
                    rec.skipped = exc.reason  # still published: the node must count and skip it too
                    rgb = None
                if first_ns is None:
                    first_ns, t_start = m.recv_ns, time.monotonic()
                due = t_start + (m.recv_ns - first_ns) / 1e9 / rate
                drain(due)
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                records_by_stamp[stamp] = rec  # outputs are matched by stamp (a repeated stamp: the newest frame)
                if rgb is not None:
                    rec_rgb[rec.index] = rgb
                published[rec.index] = time.monotonic()
                image_pub.publish(m.raw)
                if proc is not None and proc.poll() is not None:
                    raise LiveError(f"mpg_sam2_node exited with code {proc.returncode} during the replay:\n{_tail(node_log)}")
            # wait for the last results: until nothing new arrives for a while
            quiet = max(2.0, 4 * (float(np.percentile(node_ms, 95)) / 1e3 if node_ms else 1.0))
            last_change, seen = time.monotonic(), -1
            while time.monotonic() - last_change < quiet:
                drain(time.monotonic() + 0.1)
                done = sum(r.output for r in sink.records)
                if done != seen:
                    seen, last_change = done, time.monotonic()
                if all(r.output or r.skipped for r in sink.records):
                    break
        except KeyboardInterrupt:
            interrupted = True
            log("[bag-replay] interrupted: writing what is done (the result bag stays valid)")
        finally:
            bar.close()
        for rec in sink.records:
            if not rec.skipped and not rec.output:
                rec.dropped = True
    finally:
        spinning.clear()
        spinner.join(timeout=2)
        executor.shutdown(timeout_sec=1)
        client.destroy_node()
        rclpy.try_shutdown(context=ctx)
        node_rc = stop_node_process(proc) if proc is not None else None
    if sink is None:  # pragma: no cover - errors above raise
        raise LiveError("the live replay did not start")

    def pct(values):
        if not values:
            return {"p50": None, "p95": None, "max": None}
        a = np.asarray(values)
        return {"p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2),
                "max": round(float(a.max()), 2)}

    return {"sink": sink, "model": model, "policy": policy, "stream_resets": resets, "interrupted": interrupted,
            "node_latency_ms": pct(node_ms), "transport_latency_ms": pct(transport_ms),
            "node": {"name": full, "started_here": proc is not None, "exit_code": node_rc,
                     "log": str(node_log) if proc is not None else None, "device": diag_values.get("device")}}
