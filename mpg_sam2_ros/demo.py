"""``mpg-sam2 demo``: the first thing a new user runs. The real ``mpg_sam2_node`` (bundled model)
is started, the bundled bag (``assets/demo/``: 10 s of a held-out synthetic scene at 12 Hz, JPEG
``CompressedImage``) is published to it over real ROS topics at its recorded pace with two
commands (one a motion expression), and what the node publishes is recorded and scored: this is
``bag-replay --live --start-node``. ``--no-ros`` runs the same bag through the engine in this
process, at the same simulated pace (``bag-replay --realtime``).

Outputs in ``out/demo/``: the result bag, PNG masks, ``overlay.mp4``, ``report.png`` (per-frame
J&F of each expression and per-frame latency), ``frames.csv`` and ``summary.json``.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .core.config import resolve_data_path
from .core.render import color_of
from .replay.run import ReplayOptions, run_bag_replay

DEMO_DIR = "assets/demo"


def demo_assets() -> tuple[Path, dict]:
    root = resolve_data_path(DEMO_DIR)
    meta_path = root / "demo.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"the bundled demo input is missing ({meta_path}); run scripts/make_demo_bag.py")
    return root, json.loads(meta_path.read_text())


def run_demo(*, out: str = "out/demo", no_ros: bool = False, config: str | None = None, overrides: tuple = (),
             checkpoint: str | None = None,
             window: int = 8, lookahead: int = 0, progress: bool = True, node_timeout: float = 120.0,
             log=None) -> dict:
    root, meta = demo_assets()
    opts = ReplayOptions(bag=str(root / "bag"), texts=list(meta["texts"]), out=out, image_topic=meta["image_topic"],
                         gt=str(root / "gt"), config=config, overrides=tuple(overrides), checkpoint=checkpoint, window=window, lookahead=lookahead,
                         realtime=1.0, live=not no_ros, start_node=not no_ros, overwrite=True, progress=progress,
                         node_timeout=node_timeout,
                         # the bag player and recorder run beside the node: leave them a core (on 2 cores the
                         # node's model at 2 threads stalled on every parallel op: 67 -> 45 ms p50 at 1 thread)
                         node_args=["-p", f"cpu_threads:={max(1, (os.cpu_count() or 2) - 1)}"])
    summary = run_bag_replay(opts, log)
    summary["demo"] = {"input": str(root), "expression_types": meta["types"], "rate_hz": meta["rate_hz"],
                       "ros": not no_ros}
    report = Path(out) / "report.png"
    write_report(Path(out) / "frames.csv", report, summary)
    summary["outputs"]["report"] = str(report)
    (Path(out) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def write_report(frames_csv: Path, path: Path, summary: dict) -> None:
    """Per-frame J&F of each expression (top) and per-frame latency (bottom), dropped frames
    marked; the model and window in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(frames_csv.open()))
    texts = summary["texts"]
    rate = summary.get("demo", {}).get("rate_hz") or 10.0
    t0 = int(rows[0]["recv_ns"]) if rows else 0
    secs = np.array([(int(r["recv_ns"]) - t0) / 1e9 for r in rows])
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for k, text in enumerate(texts):
        vals = np.array([float(r[f"jf_object_{k}"]) if r[f"jf_object_{k}"] else np.nan for r in rows])
        per = summary["per_object"][str(k)]["J&F"]
        label = f"{k}: \"{text}\"  (J&F {per:.1f})" if per is not None else f"{k}: \"{text}\""
        ax1.plot(secs, vals, "-", lw=1.4, color=np.array(color_of(k)) / 255, label=label)
    ax1.set_ylabel("J&F per frame")
    ax1.set_ylim(-3, 103)
    ax1.grid(alpha=0.3)
    ax1.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=1, fontsize=9, frameon=False)
    lat = np.array([float(r["latency_ms"]) if r["latency_ms"] else np.nan for r in rows])
    ax2.plot(secs, lat, ".-", lw=0.8, ms=3, color="0.25", label="latency (frame -> result)")
    dropped = [s for s, r in zip(secs, rows) if r["status"] != "output"]
    if dropped:
        ax2.plot(dropped, np.zeros(len(dropped)), "|", color="crimson", ms=10, label=f"no result ({len(dropped)} frame{'' if len(dropped) == 1 else 's'})")
    ax2.axhline(1e3 / rate, color="0.6", ls="--", lw=0.8, label=f"frame period ({rate:g} Hz)")
    ax2.set_ylabel("latency (ms)")
    ax2.set_xlabel("time in the bag (s)")
    ax2.set_ylim(bottom=0)
    ax2.grid(alpha=0.3)
    ax2.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
    model = summary.get("model", {})
    mode = "live node over ROS 2" if summary.get("mode") == "live" else "engine in process"
    jf = summary.get("J&F")
    weights = str(model.get("weights", ""))
    weights = Path(weights).name if weights.endswith(".safetensors") else weights
    fig.suptitle(f"MPG-SAM 2 streaming, window W={summary['window']}, model {model.get('config')} ({weights}), {mode}"
                 + (f"\nJ&F {jf:.1f} over the frames with a result" if jf is not None else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def human_summary(s: dict[str, Any]) -> str:
    """A few lines for a person: what ran, the scores, where the files are."""
    f = s["frames"]
    model = s["model"]
    how = (f"the real mpg_sam2_node over ROS 2 ({s['node']['name']}), fed the bag at its recorded pace"
           if s["mode"] == "live" else "the streaming engine in this process (no ROS), at the bag's recorded pace (simulated)")
    lines = [
        "",
        "MPG-SAM 2 demo",
        f"  ran:      {how}",
        f"  model:    {model.get('config')} ({model.get('weights')}), window W={s['window']}",
        f"  input:    {s['bag']} ({f['read']} frames, {s['image_type'].split('/')[-1]} on {s['image_topic']})",
    ]
    for k, text in enumerate(s["texts"]):
        p = s["per_object"][str(k)]
        kind = s.get("demo", {}).get("expression_types", [""] * len(s["texts"]))[k]
        jf = "n/a" if p["J&F"] is None else f"{p['J&F']:.1f}"
        lines.append(f"  J&F {jf:>5}  \"{text}\" ({kind})")
    lat = s["latency_ms"]
    lines += [
        f"  overall:  J&F {s['J&F']:.1f} over {f['outputs']} frames with a result; {f['dropped']} dropped"
        if s["J&F"] is not None else f"  overall:  {f['outputs']} frames with a result; {f['dropped']} dropped",
        f"  latency:  p50 {lat['p50']} ms, p95 {lat['p95']} ms (frame -> result)",
        f"  files:    {Path(s['outputs']['summary']).parent}/ (overlay.mp4, report.png, masks/, result_bag/, summary.json)",
    ]
    return "\n".join(lines)
