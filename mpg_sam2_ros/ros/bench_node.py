"""``mpg-sam2 bench-node``: drive a live ``mpg_sam2_node`` over DDS and measure what the ROS
layer costs, as JSON.

1. **Transport overhead** (closed loop, one frame in flight): 640x480 rgb8 frames are published
   one at a time (serialised beforehand, as a driver hands DDS a ready message), each 20 ms
   after the previous result came back (``settle``: the gap a camera leaves between frames, so
   the previous frame's bookkeeping on either side is not timed into the next one); end-to-end latency (publish ->
   ``segmentation`` received as raw bytes, both here) against the engine's own step time on the same frames
   (the node's ``engine_ms_p50`` diagnostic, which times ``engine.step`` only):
   ``transport_overhead_ratio`` = e2e p50 / engine p50 (target <= 1.05).
2. **Overload and memory** (open loop): frames published at 30 Hz, as a camera does (best
   effort), for ``--frames`` frames (default 2,000): input rate the node saw vs output rate, the
   drops it counted, latency p50/p95, and the node process's RSS (psutil) sampled every second:
   growth from the end of the first 10 % of the stream to the end (target < 5 %).

The node is started here as its own process (default model and parameters unless ``--config``
/ ``--checkpoint`` / ``--device`` / ``--dtype``), on its own ROS domain, and stopped at the end.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _frames(n: int, width: int, height: int) -> list[np.ndarray]:
    """n distinct frames: a synthetic scene (moving coloured shapes) at the requested size."""
    from ..training.synthetic import SyntheticConfig, generate_video

    video = generate_video(31337, 0, SyntheticConfig(frames=n, width=width, height=height))
    return [np.ascontiguousarray(f) for f in video.frames]


def _pct(values) -> dict:
    if not len(values):
        return {"p50": None, "p95": None, "max": None}
    a = np.asarray(values, float)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2),
            "max": round(float(a.max()), 2)}


def run_bench_node(*, frames: int = 2000, rate_hz: float = 30.0, width: int = 640, height: int = 480,
                   closed_loop: int = 200, warmup: int = 10, settle: float = 0.02, config: str | None = None, checkpoint: str | None = None,
                   device: str = "cpu", dtype: str = "float32", text: str = "the red circle",
                   start_timeout: float = 180.0, log=lambda m: print(m, file=sys.stderr, flush=True)) -> dict:
    import psutil

    from ..core.pipeline import check_model_paths

    check_model_paths(config, checkpoint)  # "" would silently give the node's default model
    domain = 201 + os.getpid() % 30
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from .dds import use_large_image_transport

    profile = use_large_image_transport()  # 640x480 rgb8 is above Fast DDS's 512 kB shared-memory segment
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from mpg_sam2_ros.msg import Segmentation, TextCommand, TextCommands
    from mpg_sam2_ros.srv import SetCommands

    from .conversions import array_to_image
    from .process import stop_process

    args = ["-p", f"device:={device}", "-p", f"dtype:={dtype}"]
    if config:
        args += ["-p", f"model_config:={config}"]
    if checkpoint:
        args += ["-p", f"checkpoint:={Path(checkpoint).resolve()}"]
    node_log = tempfile.NamedTemporaryFile("w+", prefix="bench_node_", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "mpg_sam2_ros.ros.node", "--ros-args", *args],
                            stdout=node_log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    ps = psutil.Process(proc.pid)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    # a lean client: no parameter services or rosout, so its executor has little to rebuild per wake-up
    node = rclpy.create_node("mpg_sam2_bench_node", context=ctx, start_parameter_services=False, enable_rosout=False)
    reliable = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
    camera = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.BEST_EFFORT)
    pub_loop = node.create_publisher(Image, "/image", reliable)
    pub_cam = node.create_publisher(Image, "/image", camera)
    lock = threading.Lock()
    received: dict[tuple[int, int], float] = {}
    waiters: dict[tuple[int, int], threading.Event] = {}
    diag: dict[str, str] = {}

    def on_seg(raw: bytes) -> None:
        """Raw CDR: the stamp is the first field after the 4-byte encapsulation header, so no
        Python deserialisation of the masks is timed (a C++ consumer would not pay it)."""
        now = time.monotonic()
        little = raw[1] == 1
        sec, nsec = struct.unpack_from("<iI" if little else ">iI", raw, 4)
        with lock:
            received[(sec, nsec)] = now
            waiting = waiters.pop((sec, nsec), None)
        if waiting is not None:
            waiting.set()

    def on_diag(msg) -> None:
        for st in msg.status:
            if st.name == "/mpg_sam2: segmentation":
                with lock:
                    diag.update({kv.key: kv.value for kv in st.values})
                    diag["_t"] = str(time.monotonic())

    node.create_subscription(Segmentation, "/segmentation", on_seg, reliable, raw=True)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, reliable)
    set_cli = node.create_client(SetCommands, "/mpg_sam2/set_commands")
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    running = True

    def spin() -> None:
        while running:
            try:
                ex.spin_once(timeout_sec=0.02)
            except Exception:  # noqa: BLE001 - shutdown
                return

    th = threading.Thread(target=spin, daemon=True)
    th.start()

    def fresh_diag(after: float, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with lock:
                if float(diag.get("_t", 0)) > after:
                    return dict(diag)
            time.sleep(0.05)
        with lock:
            return dict(diag)

    stamp_counter = [0]

    def new_stamp(header) -> tuple[int, int]:
        """The next stamp (30 Hz apart, never repeated) into ``header``."""
        stamp_counter[0] += 1
        ns = 1_800_000_000 * 10**9 + stamp_counter[0] * 33_333_333
        header.stamp.sec, header.stamp.nanosec = ns // 10**9, ns % 10**9
        return header.stamp.sec, header.stamp.nanosec

    def message(rgb: np.ndarray) -> tuple[object, tuple[int, int]]:
        h = Header(frame_id="camera")
        key = new_stamp(h)
        return array_to_image(rgb, "rgb8", header=h), key

    try:
        log(f"[bench-node] starting the node (domain {domain}) ...")
        if not set_cli.wait_for_service(timeout_sec=start_timeout):
            raise RuntimeError("the node did not come up:\n" + Path(node_log.name).read_text()[-3000:])
        req = SetCommands.Request()
        req.commands = TextCommands(mode=TextCommands.REPLACE, commands=[TextCommand(object_id=-1, text=text)])
        fut = set_cli.call_async(req)
        while not fut.done():
            time.sleep(0.02)
        deadline = time.monotonic() + start_timeout
        while fresh_diag(0, 1.0).get("state") != "active" and time.monotonic() < deadline:
            time.sleep(0.2)
        while pub_loop.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        model = {k: diag.get(k) for k in ("model", "weights", "device", "dtype")}
        pool = _frames(60, width, height)
        log(f"[bench-node] closed loop: {warmup} + {closed_loop} frames at {width}x{height}")

        from rclpy.serialization import serialize_message

        e2e = []
        for i in range(warmup + closed_loop):
            msg, key = message(pool[i % len(pool)])
            raw = serialize_message(msg)  # the camera driver's own work, not the graph's
            done = threading.Event()
            with lock:
                waiters[key] = done
            t0 = time.monotonic()
            pub_loop.publish(raw)
            done.wait(30.0)
            with lock:
                got = received.get(key)
            if got is None:
                raise RuntimeError(f"no result for closed-loop frame {i} within 30 s; node diagnostics "
                                   f"{fresh_diag(0, 0.1)}; node log:\n" + Path(node_log.name).read_text()[-2000:])
            if i >= warmup:
                e2e.append((got - t0) * 1e3)
            time.sleep(settle)  # both sides back to waiting before the next frame, as with a camera's frame gap
        d = fresh_diag(time.monotonic())
        engine_p50 = float(d["engine_ms_p50"])
        ratio = float(np.percentile(e2e, 50)) / engine_p50

        log(f"[bench-node] open loop: {frames} frames at {rate_hz:g} Hz")
        with lock:
            received.clear()
        before = fresh_diag(time.monotonic())
        period = 1.0 / rate_hz
        sent: dict[tuple[int, int], float] = {}
        rss: list[tuple[int, float]] = []
        t_start = time.monotonic()
        next_rss = t_start
        msgs = [message(pool[i % len(pool)]) for i in range(min(frames, 60))]  # conversion outside the timed loop
        for i in range(frames):
            due = t_start + i * period
            while (wait := due - time.monotonic()) > 0:
                time.sleep(min(wait, 0.002))
            msg, _ = msgs[i % len(msgs)]
            sent[new_stamp(msg.header)] = time.monotonic()
            pub_cam.publish(msg)
            if time.monotonic() >= next_rss:
                rss.append((i, ps.memory_info().rss / 2**20))
                next_rss += 1.0
        duration = time.monotonic() - t_start
        time.sleep(1.5)
        rss.append((frames, ps.memory_info().rss / 2**20))
        after = fresh_diag(time.monotonic())
        with lock:
            got = dict(received)
        lat = [(got[k] - sent[k]) * 1e3 for k in got if k in sent]
        first = [m for i, m in rss if i >= frames // 10]
        base = first[0] if first else rss[0][1]
        growth = 100.0 * (rss[-1][1] - base) / base
        counted = {k: int(after.get(k, 0)) - int(before.get(k, 0))
                   for k in ("frames_received", "frames_dropped", "frames_missed", "outputs_published")}
        processed = int(after.get("frames_processed", 0)) - int(before.get("frames_processed", 0))
        out = {
            "node": {**model, "pid": proc.pid},
            "dds": {"rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp"),
                    "profile": profile or os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"),
                    "builtin_transports": os.environ.get("FASTDDS_BUILTIN_TRANSPORTS")},
            "frame_size": [height, width],
            "closed_loop": {
                "frames": closed_loop, "e2e_latency_ms": _pct(e2e), "engine_step_ms_p50": engine_p50,
                "node_latency_ms_p50": float(d["latency_ms_p50"]),  # the node's callback -> publish
                "transport_overhead_ratio": round(ratio, 4),
                # where the overhead goes (medians): DDS both ways + the client's publish + executor wake-ups,
                # and the node's own work around the engine (conversion, hand-over, building the outputs)
                "overhead_ms_p50": {
                    "dds_and_executors": round(float(np.percentile(e2e, 50)) - float(d["latency_ms_p50"]), 2),
                    "node_around_engine": round(float(d["latency_ms_p50"]) - engine_p50, 2),
                },
            },
            "open_loop": {
                "frames_sent": frames, "send_rate_hz": round(frames / duration, 2),
                "results": len(got), "output_rate_hz": round(len(got) / duration, 2),
                "node_input_rate_hz": round(counted["frames_received"] / duration, 2),
                "node_output_rate_hz": round(counted["outputs_published"] / duration, 2),
                "frames_processed": processed, "counted_by_node": counted,
                "e2e_latency_ms": _pct(lat), "engine_ms_p50": float(after.get("engine_ms_p50", "nan")),
            },
            "memory": {
                "rss_mb_samples": [[i, round(m, 1)] for i, m in rss[:: max(1, len(rss) // 20)]],
                "rss_mb_start": round(base, 1), "rss_mb_end": round(rss[-1][1], 1),
                "rss_growth_pct": round(growth, 2),
            },
        }
        out["targets"] = {"transport_overhead_ratio<=1.05": ratio <= 1.05, "rss_growth<5%": growth < 5.0}
        return out
    finally:
        running = False
        th.join(timeout=2)
        ex.shutdown(timeout_sec=1)
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
        stop_process(proc)
        node_log.close()
