"""``mpg-sam2 bag-replay``: segment a recorded ROS 2 bag, write a result bag, score it.

In-process (default), frames go through the node's own ``FrameProcessor`` (the same command
sync, stream restarts on stamps going backwards or resolution changes, downscaling and error
handling as ``mpg_sam2_node``), in bag order:
  - every frame (default): the best case, nothing dropped;
  - ``--realtime [RATE]``: the pace of the recording (or RATE x). The clock is simulated: frame
    i arrives at its recorded receive time / RATE, and the worker is busy for the engine's
    measured time on each frame; a frame that arrives while the worker is busy waits in a
    one-frame slot, and a newer arrival replaces it (dropped, counted), exactly the node's
    latest-wins rule. Latency is then arrival -> result (waiting included). Simulating the clock
    gives the drops a robot with this CPU/GPU would see without sleeping through idle time.
``--live`` (``live.py``) instead publishes the bag over real ROS topics to a running node.

Outputs in OUT_DIR: ``result_bag/`` (input storage format), ``masks/object_K/<name>.png``,
``gt/object_K/<name>.png`` (the ground truth used), ``overlay.mp4``, ``frames.csv`` and
``summary.json``. J&F over processed frames is what ``mpg-sam2 eval OUT_DIR/masks OUT_DIR/gt``
prints; with ``--realtime`` a dropped frame has no mask file (eval would score it as empty),
and ``hold_last`` scores every frame with the newest result published before it.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..core.render import Drawn
from .bags import BagError, DecodeError, InputBag, ResultBag, decode_image
from .groundtruth import GroundTruth
from .sink import FrameRecord, ResultSink, object_scores

OUTPUT_NAMES = ("result_bag", "masks", "gt", "overlay.mp4", "frames.csv", "summary.json")


@dataclass
class ReplayOptions:
    bag: str
    texts: list[str]
    out: str
    image_topic: str | None = None
    gt: str | None = None
    gt_topic: str | None = None
    config: str | None = None
    overrides: tuple[str, ...] = ()
    checkpoint: str | None = None
    window: int = 8
    lookahead: int = 0
    # the engine's stream policies (EngineConfig, POLICY_FIELDS); presence_threshold None: the model's own
    reanchor_after_absent: int = 0
    reanchor_every: int = 0
    presence_threshold: float | None = None
    realtime: float | None = None     # None: every frame; else the replay rate (1.0 = recorded pace)
    live: bool = False
    overwrite: bool = False
    progress: bool = True
    mask_threshold: float = 0.0
    max_image_side: int = 1280
    # --live only
    node_name: str = "/mpg_sam2"
    start_node: bool = False
    node_timeout: float = 60.0
    node_args: list[str] = field(default_factory=list)


@dataclass
class _Header:
    """What FrameProcessor needs of a message header, plus the frame's record."""

    stamp: Any
    frame_id: str
    record: FrameRecord


def prepare_output(out: Path, overwrite: bool) -> None:
    """Refuse a folder that already holds results unless ``overwrite`` (then clear ours only)."""
    existing = [n for n in OUTPUT_NAMES if (out / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds results ({', '.join(existing)}); use --overwrite or another --out")
    for n in existing:
        p = out / n
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "max": None, "mean": None}
    a = np.asarray(values)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2),
            "max": round(float(a.max()), 2), "mean": round(float(a.mean()), 2)}


def _recorded_fps(bag: InputBag, topic: str) -> float:
    n = bag.count(topic)
    dur = bag.duration_s if n > 1 else 0.0
    return float(min(60.0, max(1.0, (n - 1) / dur))) if dur > 0 else 10.0


def policy_of(opts: ReplayOptions) -> dict[str, Any]:
    """The stream policies asked for (``POLICY_FIELDS``; presence_threshold None: the model's own)."""
    from ..core.inference.engine import POLICY_FIELDS

    return {f: getattr(opts, f) for f in POLICY_FIELDS}


def node_policy(opts: ReplayOptions) -> dict[str, Any]:
    """The same as the node's parameters, typed as ``NodeSettings`` declares them: a
    presence_threshold of 0.0 is the model's own."""
    from ..ros.params import NodeSettings

    return {f: type(getattr(NodeSettings, f))(v or 0) for f, v in policy_of(opts).items()}


def check_model_options(opts: ReplayOptions) -> None:
    """A one-line error for empty model paths or a bad policy, before the model loads or the node
    starts; with --start-node the policy must also be in the node's parameter ranges."""
    from ..core.inference.engine import EngineConfig
    from ..core.pipeline import check_model_paths

    check_model_paths(opts.config, opts.checkpoint)
    policy = policy_of(opts)
    EngineConfig(window=opts.window, lookahead=opts.lookahead, **policy)
    if opts.live and opts.start_node:
        from ..ros.params import validate

        for name, value in node_policy(opts).items():
            why = validate(name, value)
            if why:
                raise ValueError(f"--{name.replace('_', '-')}: {why}")
    if opts.live and not opts.start_node and (opts.reanchor_after_absent or opts.reanchor_every
                                              or opts.presence_threshold is not None):
        raise ValueError("--reanchor-after-absent, --reanchor-every and --presence-threshold go to a node started "
                         "here (--live --start-node); set a running node's with `ros2 param set`")


def open_inputs(opts: ReplayOptions) -> tuple[InputBag, str, list[str]]:
    """Checks that need no model: texts, bag, topic, output folder."""
    texts = [t for t in opts.texts]
    if not texts:
        raise ValueError("give at least one --text")
    if any(not t.strip() for t in texts):
        raise ValueError("--text must not be empty")
    if len({t.strip().lower() for t in texts}) != len(texts):
        raise ValueError("the same --text is given twice")
    if opts.gt and opts.gt_topic:
        raise ValueError("give --gt or --gt-topic, not both")
    if opts.realtime is not None and opts.realtime <= 0:
        raise ValueError("--realtime RATE must be > 0")
    check_model_options(opts)
    bag = InputBag(opts.bag)
    try:
        topic = bag.select_image_topic(opts.image_topic)
        if bag.count(topic) == 0:
            raise BagError(f"topic {topic} in {bag.path} holds no message (empty bag)")
        prepare_output(Path(opts.out), opts.overwrite)
    except BaseException:
        bag.close()
        raise
    return bag, topic, texts


def load_ground_truth(opts: ReplayOptions, bag: InputBag, n: int) -> GroundTruth | None:
    if not opts.gt and not opts.gt_topic:
        return None
    gt = GroundTruth(n, Path(opts.out) / "gt")
    return gt.from_folder(opts.gt) if opts.gt else gt.from_topic(bag, opts.gt_topic)


def run_bag_replay(opts: ReplayOptions, log: Callable[[str], Any] | None = None) -> dict:
    """``log``: one-line warnings (default: stderr)."""
    log = log or (lambda m: print(m, file=sys.stderr))
    t_start = time.perf_counter()
    bag, topic, texts = open_inputs(opts)
    out = Path(opts.out)
    result_bag = None
    try:
        gt = load_ground_truth(opts, bag, len(texts))
        msgtype = bag.msgtype(topic)
        result_bag = ResultBag(out / "result_bag", bag.storage, topic, msgtype)
        fps = _recorded_fps(bag, topic) * (opts.realtime or 1.0)
        if opts.live:
            from .live import run_live

            core = run_live(opts, bag, topic, texts, gt, result_bag, fps, log)
        else:
            core = _run_in_process(opts, bag, topic, texts, gt, result_bag, fps, log)
    finally:
        bag.close()
        if result_bag is not None:
            result_bag.close()  # a valid bag whatever happened (metadata written)
    sink: ResultSink = core.pop("sink")
    sink.close()
    sink.write_frames_csv()
    per, overall = object_scores(sink.scores, texts)
    recs = sink.records
    problems: dict[str, Any] = {}
    if gt is not None:
        no_gt = [r.name for r in recs if r.output and not any(gt.has(k, r.name) for k in range(len(texts)))]
        if no_gt:
            problems["frames_without_gt"] = {"count": len(no_gt), "first": no_gt[:10]}
        frame_names = {r.name for r in recs}
        orphan = sorted(set().union(*gt.names) - frame_names)
        if orphan:
            problems["gt_without_frame"] = {"count": len(orphan), "first": orphan[:10]}
        if gt.problems:
            problems["unreadable_gt"] = gt.problems[:20]
    skipped = [r for r in recs if r.skipped]
    if skipped:
        problems["undecodable"] = {"count": len(skipped), "first": [f"message {r.index}: {r.skipped}" for r in skipped[:10]]}
    if sink.duplicate_names:
        problems["duplicate_stamps"] = {"count": len(sink.duplicate_names), "first": sink.duplicate_names[:10],
                                        "note": "later frames with an already used stamp are saved as <stamp>-<index>.png and not scored"}
    if sink.size_mismatch:
        problems["size_mismatch"] = sink.size_mismatch[:20]
    skip_reasons: dict[str, int] = {}
    for r in skipped:
        skip_reasons[r.skipped] = skip_reasons.get(r.skipped, 0) + 1
    summary: dict[str, Any] = {
        "bag": str(bag.path), "storage": bag.storage, "image_topic": topic, "image_type": msgtype,
        "mode": "live" if opts.live else "in_process",
        "pacing": ({"realtime": True, "rate": opts.realtime or 1.0,
                    "clock": "live ROS graph" if opts.live else "simulated (recorded receive times / rate, measured engine time)"}
                   if opts.realtime is not None or opts.live else {"realtime": False, "note": "every frame processed (best case)"}),
        "texts": texts, "model": core.pop("model"), "window": opts.window, "lookahead": opts.lookahead,
        "policy": core.pop("policy"),
        "frames": {
            "read": len(recs), "skipped": len(skipped), "processed": sum(r.processed for r in recs),
            "dropped": sum(r.dropped for r in recs), "outputs": sum(r.output for r in recs),
        },
        "skipped_by_reason": skip_reasons,
        "stream_resets": core.pop("stream_resets"),
        "J": overall["J"], "F": overall["F"], "J&F": overall["J&F"],
        "ground_truth": None if gt is None else {"source": opts.gt or f"topic {opts.gt_topic}", "naming": gt.naming},
        "per_object": per,
        "latency_ms": _percentiles([r.latency_ms for r in recs if r.latency_ms is not None]),
    }
    if opts.realtime is not None or opts.live:
        hl_per, hl = object_scores(sink.hold_last_scores(), texts)
        summary["hold_last"] = {**hl, "per_object": {k: v["J&F"] for k, v in hl_per.items()},
                                "note": "every frame with ground truth, scored with the newest earlier result"}
    summary.update(core)
    summary["problems"] = problems
    summary["outputs"] = {"result_bag": str(out / "result_bag"), "masks": str(out / "masks"),
                          "gt": str(out / "gt") if gt is not None else None, "overlay": str(out / "overlay.mp4"),
                          "frames_csv": str(out / "frames.csv"), "summary": str(out / "summary.json"),
                          "result_bag_messages": result_bag.counts}
    summary["seconds"] = round(time.perf_counter() - t_start, 2)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


# ----- in process ---------------------------------------------------------------------------

def _run_in_process(opts: ReplayOptions, bag: InputBag, topic: str, texts: list[str], gt: GroundTruth | None,
                    result_bag: ResultBag, fps: float, log) -> dict:
    from tqdm import tqdm

    from ..core.pipeline import load_pipeline
    from ..core.inference.engine import StreamingEngine, resolve_presence_threshold
    from ..ros.commands import AUTO_ID, REPLACE, CommandTable, fit_expression
    from ..ros.health import Counters, LatencyWindow
    from ..ros.params import NodeSettings
    from ..ros.processing import FrameProcessor
    from ..ros.scheduling import FrameJob

    pipe = load_pipeline(opts.config, opts.overrides, opts.checkpoint)
    table = CommandTable(fit=lambda t: fit_expression(pipe.tokenizer, t), max_objects=max(8, len(texts)))
    applied = table.apply(REPLACE, [(AUTO_ID, t) for t in texts])
    clean = list(applied.texts)
    counters = Counters()
    warned: set[str] = set()

    def warn(key: str, message: str) -> None:
        if key not in warned:
            warned.add(key)
            log(f"[bag-replay] {message}")

    processor = FrameProcessor(build_engine=lambda cfg: StreamingEngine(pipe.model, pipe.tokenizer, cfg),
                               table=table, counters=counters, engine_times=LatencyWindow(), warn=warn)
    settings = NodeSettings(window=opts.window, lookahead=opts.lookahead, max_objects=max(8, len(texts)),
                            mask_threshold=opts.mask_threshold, max_image_side=opts.max_image_side, **node_policy(opts))
    caption = f"{pipe.config.name}, W={opts.window}" + (f", k={opts.lookahead}" if opts.lookahead else "")
    sink = ResultSink(Path(opts.out), clean, gt, result_bag, fps=fps, caption=caption)
    msgtype = bag.msgtype(topic)
    state = {"busy_until": 0.0, "resets": 0, "engine_ms": []}

    def emit(outputs, finish: float, step_ms: float) -> None:
        for o in outputs:
            rec: FrameRecord = o.header.record
            if o.stream_reset:
                state["resets"] += 1
            latency = (finish - o.received) * 1e3 if opts.realtime is not None else step_ms
            objects = [Drawn(x.object_id, x.text, x.mask, x.score, x.present) for x in o.objects]
            sink.add_output(rec, o.rgb, objects, latency_ms=latency, frame_index=o.frame_index, stream_reset=o.stream_reset)

    def run(job, start: float) -> None:
        rec: FrameRecord = job.header.record
        before = counters.get("skipped.model_error") + counters.get("skipped.cuda_oom")
        t = time.perf_counter()
        out = processor.process(job, rec.stamp[0] + rec.stamp[1] * 1e-9, settings)
        d = time.perf_counter() - t
        state["busy_until"] = start + d
        if counters.get("skipped.model_error") + counters.get("skipped.cuda_oom") > before:
            rec.skipped = "model_error"
            return
        rec.processed = True
        state["engine_ms"].append(d * 1e3)
        emit([out] if out is not None else [], start + d, d * 1e3)

    bar = tqdm(total=bag.count(topic), desc="bag-replay", unit="frame", disable=not opts.progress, file=sys.stderr)
    pending = None
    t0_ns = None
    last_arrival = 0.0
    interrupted = False
    try:
        for m in bag.messages(topic):
            bar.update(1)
            msg, rec = sink.read_input(m, msgtype)
            if msg is None:
                warn(rec.skipped, f"message {m.index}: {rec.error} (skipped; more are counted in summary.json)")
                continue
            try:
                rgb = decode_image(msg, msgtype)
            except DecodeError as exc:
                rec.skipped = exc.reason
                warn(exc.reason, f"message {m.index}: {exc} (skipped; more are counted in summary.json)")
                continue
            t0_ns = m.recv_ns if t0_ns is None else t0_ns
            arrival = max(last_arrival, (m.recv_ns - t0_ns) / 1e9 / (opts.realtime or 1.0))
            last_arrival = arrival
            job = FrameJob(rgb=rgb, header=_Header(msg.header.stamp, rec.frame_id, rec), received=arrival)
            if opts.realtime is None:
                run(job, arrival)
                continue
            if pending is not None and state["busy_until"] <= arrival:
                run(pending, max(state["busy_until"], pending.received))
                pending = None
            if pending is not None:  # still busy: the waiting frame is replaced (latest wins)
                pending.header.record.dropped = True
            pending = job
            if state["busy_until"] <= arrival:
                run(pending, arrival)
                pending = None
        if pending is not None:
            run(pending, max(state["busy_until"], pending.received))
            pending = None
        t = time.perf_counter()
        flushed = processor.flush()
        emit(flushed, state["busy_until"] + time.perf_counter() - t, (time.perf_counter() - t) * 1e3)
    except KeyboardInterrupt:
        interrupted = True
        log("[bag-replay] interrupted: writing what is done (the result bag stays valid)")
    finally:
        bar.close()
    policy = {**policy_of(opts), "presence_threshold": resolve_presence_threshold(opts.presence_threshold, pipe.model)}
    return {"sink": sink, "model": {"config": pipe.config.name, "weights": pipe.weights}, "policy": policy,
            "stream_resets": state["resets"], "interrupted": interrupted,
            "engine_ms": _percentiles(state["engine_ms"])}
