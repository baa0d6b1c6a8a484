"""``mpg-sam2``: one console entry point with subcommands (JSON on stdout where a script reads it)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence


def _add_model_args(p: argparse.ArgumentParser, default_config: str) -> None:
    default_help = f"(default: {default_config})" if default_config else "(default: the bundled default model)"
    p.add_argument("--config", default=default_config,
                   help=f"model config name (config/models/NAME.yaml) or a YAML path {default_help}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set sam2.base=sam2/sam2_hiera_l (repeatable)")


def _emit(result: dict, out: str | None = None) -> None:
    """The JSON result on stdout, and in ``out`` when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text)


def cmd_info(args: argparse.Namespace) -> int:
    from .core.config import load_model_config
    from .core.modeling import build_model, parameter_counts

    t0 = time.perf_counter()
    cfg = load_model_config(args.config, args.overrides)
    # structure only: the counts do not depend on the (skipped) random initialisation
    model = build_model(cfg, init_weights=False)
    counts = parameter_counts(model)
    out = {
        "config": cfg.name,
        "source": cfg.source,
        "sam2_base": cfg.sam2.base,
        "sam2_image_size": model.image_size,
        "beit3": {"embed_dim": cfg.beit3.embed_dim, "layers": cfg.beit3.num_layers, "img_size": cfg.beit3.img_size},
        "parameters": counts,
        "total_billions": round(counts["total"] / 1e9, 4),
        "build_seconds": round(time.perf_counter() - t0, 2),
    }
    _emit(out)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The real node on the bundled bag (or the engine alone with --no-ros); JSON, then a summary."""
    from .demo import human_summary, run_demo

    summary = run_demo(out=args.out, no_ros=args.no_ros, config=args.config, overrides=args.overrides, checkpoint=args.checkpoint,
                       window=args.window, progress=not args.quiet)
    _emit(summary)
    print(human_summary(summary), file=sys.stderr)
    node = summary.get("node") or {}
    if summary.get("interrupted"):
        return 130
    if node.get("started_here") and node.get("exit_code") not in (0, None):
        print(f"mpg-sam2 demo: error: mpg_sam2_node exited with code {node['exit_code']} (log: {node['log']})", file=sys.stderr)
        return 1
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from .core.segment import run_segment

    summary = run_segment(
        input_path=args.input, texts=args.text, out_dir=args.out, config=args.config, overrides=args.overrides,
        checkpoint=args.checkpoint, window=args.window, lookahead=args.lookahead, offline=args.offline,
        clip_len=args.clip, policy=_policy(args),
        progress=not args.quiet,
    )
    _emit(summary)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .core.evaluation import evaluate_folders

    def progress(items, total):
        return tqdm(items, total=total, desc="eval", unit="seq", disable=args.quiet)

    report = evaluate_folders(args.pred, args.gt, bound_th=args.bound_th, progress=progress)
    _emit(report.as_dict(), args.out)
    for kind, items in report.problems.items():
        print(f"mpg-sam2 eval: warning: {len(items)} {kind.replace('_', ' ')} (listed under problems)", file=sys.stderr)
    return 1 if args.strict and report.problems else 0


def cmd_submit(args: argparse.Namespace) -> int:
    import logging

    from .core.submission import run_submission

    logging.basicConfig(level=logging.WARNING, format="mpg-sam2 submit: warning: %(message)s")
    summary = run_submission(
        data=args.data, out_dir=args.out, meta=args.meta, frames_dir=args.frames, config=args.config,
        overrides=args.overrides, checkpoint=args.checkpoint, clip_len=args.clip, videos=args.videos,
        zip_path=args.zip, progress=not args.quiet,
    )
    _emit(summary)
    return 1 if summary["problems"] else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .core.bench import run_bench

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    if len(set(args.windows)) != 3 or sorted(args.windows) != list(args.windows):
        raise ValueError("--windows takes three increasing sizes: SMALL MID LARGE")
    if args.memory_frames <= args.memory_warmup:
        raise ValueError("--memory-frames must exceed --memory-warmup")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: CUDA is not available on this machine (torch {torch.__version__})")
    result = run_bench(
        config=args.config, overrides=args.overrides, windows=tuple(args.windows), measure=args.measure, memory_config=args.memory_config,
        memory_frames=args.memory_frames, memory_warmup=args.memory_warmup, predictor_frames=args.predictor_frames,
        device=args.device, bf16=args.bf16, threads=args.threads, skip_memory=args.skip_memory,
        compare_frames=args.compare_frames, expression_frames=args.expression_frames, compile=args.compile, log=log,
    )
    _emit(result, args.out)
    return 0


def _add_policy_args(p: argparse.ArgumentParser) -> None:
    """The engine's stream policies (EngineConfig, POLICY_FIELDS): conditioning, presence."""
    p.add_argument("--reanchor-after-absent", type=int, default=0, metavar="N",
                   help="streaming: restart an object's SAM 2 memory N frames after it was last present (0: off)")
    p.add_argument("--reanchor-every", type=int, default=0, metavar="N",
                   help="streaming: restart each object's SAM 2 memory every N frames (0: off)")
    p.add_argument("--presence-threshold", type=float, default=None, metavar="P",
                   help="an object counts as present, and its mask is shown, where its presence probability "
                        "(sigmoid of the object score) exceeds P, in [0.5, 1) (0.5: SAM 2's own rule); "
                        "default: the model's own (stored in its file, as in the bundled model; 0.5 where none is)")


def _policy(args: argparse.Namespace) -> dict[str, float]:
    from .core.inference.engine import POLICY_FIELDS

    return {f: getattr(args, f) for f in POLICY_FIELDS}


def _synthetic_config(args: argparse.Namespace):
    from .training.synthetic import SyntheticConfig

    return SyntheticConfig(frames=args.frames, width=args.width, height=args.height)


def _add_synthetic_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, default=24, help="frames per video")
    p.add_argument("--width", type=int, default=160, help="frame width in pixels")
    p.add_argument("--height", type=int, default=120, help="frame height in pixels")


def cmd_make_synthetic(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .training.synthetic import write_split

    cfg = _synthetic_config(args)
    with tqdm(total=args.videos, desc="make-synthetic", unit="video", disable=args.quiet) as bar:
        stats = write_split(args.out, seed=args.seed, videos=args.videos, cfg=cfg, jpeg=args.jpeg,
                            overwrite=args.overwrite, progress=bar.update, workers=args.workers)
    _emit({"out": str(args.out), **stats})
    return 0


def cmd_bench_accuracy(args: argparse.Namespace) -> int:
    from .training.bench_accuracy import run_bench_accuracy

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"[bench-accuracy {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    modes = ["streaming", "offline"] if args.mode == "both" else [args.mode]
    result = run_bench_accuracy(
        seed=args.seed, videos=args.videos, checkpoint=args.checkpoint, config=args.config, overrides=args.overrides,
        modes=modes, window=args.window, lookahead=args.lookahead, clip_len=args.clip,
        policy=_policy(args),
        synthetic=_synthetic_config(args), data=args.data, progress=not args.quiet, log=log,
    )
    _emit(result, args.out)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .training.train import run_from_args

    return run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpg-sam2", description="MPG-SAM 2 referring video object segmentation")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="parameter counts per component (JSON), built on the CPU without weights")
    _add_model_args(p, "mpg_sam2_l")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="the real ROS 2 node on the bundled bag with the bundled model: scores, overlay video, report plot",
                       description="Start mpg_sam2_node, publish the bundled bag (assets/demo: 10 s at 12 Hz, two commands, "
                                   "one of them a motion expression) to it over ROS topics at its recorded pace, record "
                                   "what it publishes, and score it. Writes OUT (default out/demo): result_bag/, masks/, "
                                   "overlay.mp4, report.png, frames.csv, summary.json; prints the JSON on stdout and a "
                                   "short summary on stderr.")
    _add_model_args(p, None)
    p.add_argument("--checkpoint", help="weights (default: the bundled model)")
    p.add_argument("--out", default="out/demo", help="output folder (replaced on each run; default out/demo)")
    p.add_argument("--window", type=int, default=8, help="frames of global context (default 8)")
    p.add_argument("--no-ros", action="store_true", help="run the engine in this process instead of the node (no ROS 2 needed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("segment", help="segment a video file or frame folder: PNG masks, overlay video, JSON summary")
    _add_model_args(p, "cpu_small")
    p.add_argument("--input", required=True, help="video file or folder of frames")
    p.add_argument("--text", action="append", required=True, help="referring expression (repeat for several objects)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--checkpoint", help="full-model weights (ours, a release folder, or a .pt with 'model')")
    p.add_argument("--window", type=int, default=8, help="streaming: frames of global context")
    p.add_argument("--lookahead", type=int, default=0, help="streaming: delay output k frames for future context")
    _add_policy_args(p)
    p.add_argument("--offline", action="store_true", help="whole video (or --clip frames) as global context")
    p.add_argument("--clip", type=int, default=None, help="offline: fixed clip length (the paper uses 24 for MeViS)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("eval", help="J&F (DAVIS 2017 definitions) of predicted mask folders against ground truth (JSON)")
    p.add_argument("--pred", required=True, help="folder with one sub-folder of PNG masks per sequence (or video/expression)")
    p.add_argument("--gt", required=True, help="ground truth in the same layout; frames are matched by file name")
    p.add_argument("--bound-th", type=float, default=0.008, help="boundary tolerance: fraction of the image diagonal (or pixels if >= 1)")
    p.add_argument("--out", help="also write the JSON to this file")
    p.add_argument("--strict", action="store_true", help="exit 1 when frames or sequences are missing, extra, unreadable or mis-sized")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("submit", help="Ref-YouTube-VOS / MeViS submission: offline runner on a split -> Annotations/ + zip")
    _add_model_args(p, "cpu_small")
    p.add_argument("--data", required=True, help="split folder with meta_expressions.json and JPEGImages/")
    p.add_argument("--meta", help="meta_expressions.json elsewhere (Ref-YouTube-VOS keeps it in meta_expressions/valid/)")
    p.add_argument("--frames", help="JPEGImages folder elsewhere")
    p.add_argument("--out", required=True, help="output folder: Annotations/<video>/<exp_id>/<frame>.png and submission.zip")
    p.add_argument("--zip", help="zip path (default OUT/submission.zip)")
    p.add_argument("--checkpoint", help="full-model weights (ours, a release folder, or a .pt with 'model')")
    p.add_argument("--clip", type=int, default=None, help="fixed clip length as global context (the paper uses 24 for MeViS)")
    p.add_argument("--videos", nargs="+", help="only these videos")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("bench", help="speed (per-frame breakdown, overhead and window ratios) and memory growth, as JSON")
    _add_model_args(p, "bench_hiera_t")  # speed model (default: SAM 2.1 Hiera-T 1024 + BEiT-3-base 224)
    p.add_argument("--windows", type=int, nargs=3, default=[4, 8, 16], metavar=("SMALL", "MID", "LARGE"),
                   help="window sizes: window_ratio = LARGE / SMALL, overhead_ratio at MID")
    p.add_argument("--measure", type=int, default=3, help="frames timed per window size, once window and memory are full")
    p.add_argument("--memory-config", default="cpu_small", help="model for the long-stream memory test")
    p.add_argument("--memory-frames", type=int, default=1000, help="frames of the long stream")
    p.add_argument("--memory-warmup", type=int, default=100, help="RSS growth is measured from this frame on")
    p.add_argument("--predictor-frames", type=int, default=300, help="frames for sam2's SAM2VideoPredictor memory comparison")
    p.add_argument("--skip-memory", action="store_true", help="speed only")
    p.add_argument("--compare-frames", type=int, default=10,
                   help="frames timed alternately for the engine and SAM2VideoPredictor (medians)")
    p.add_argument("--expression-frames", type=int, default=10, help="frames timed per expression count (1, 2, 4)")
    p.add_argument("--compile", action="store_true", help="torch.compile SAM 2's image encoder and memory attention")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (for the GPU run)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--out", help="also write the JSON to this file")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("make-synthetic", help="write a synthetic referring-video split (Ref-YouTube-VOS layout); statistics as JSON")
    p.add_argument("--out", required=True, help="output folder (JPEGImages/, Annotations/, meta_expressions.json, meta.json)")
    p.add_argument("--seed", type=int, required=True, help="video i of a seed is always the same bytes")
    p.add_argument("--videos", type=int, required=True, help="number of videos")
    _add_synthetic_args(p)
    p.add_argument("--jpeg", action="store_true", help="write frames as JPEG (default: lossless PNG)")
    p.add_argument("--overwrite", action="store_true", help="replace a split already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=int, default=1, help="processes that render videos (the output is the same for any number)")
    p.set_defaults(func=cmd_make_synthetic)

    p = sub.add_parser("bench-accuracy", help="J&F per expression type on held-out synthetic videos (JSON)")
    _add_model_args(p, None)
    p.add_argument("--checkpoint", help="weights (default: the bundled default model)")
    p.add_argument("--seed", type=int, required=True, help="seed of the held-out videos (use one never trained on)")
    p.add_argument("--videos", type=int, required=True, help="number of videos")
    p.add_argument("--mode", choices=["streaming", "offline", "both"], default="streaming", help="inference mode(s)")
    p.add_argument("--window", type=int, default=8, help="streaming: frames of global context")
    p.add_argument("--lookahead", type=int, default=0, help="streaming: frames of look-ahead")
    p.add_argument("--clip", type=int, default=None, help="offline: fixed clip length (default: the whole video)")
    _add_policy_args(p)
    p.add_argument("--data", help="score an existing split (Ref-YouTube-VOS layout) instead of generating one")
    _add_synthetic_args(p)
    p.add_argument("--out", help="also write the JSON to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    p.set_defaults(func=cmd_bench_accuracy)

    p = sub.add_parser("bag-replay", help="segment a recorded ROS 2 bag: result bag, masks, overlay video, J&F (JSON)",
                       description="Segment the image topic of a ROS 2 bag (sqlite3 or mcap, split bags too) with the "
                                   "streaming engine or, with --live, a running mpg_sam2_node; write OUT/result_bag "
                                   "(input images + /mask + /segmentation), OUT/masks/object_K/<stamp>.png, "
                                   "OUT/overlay.mp4, OUT/frames.csv, OUT/summary.json, and print the summary.")
    _add_model_args(p, None)
    p.add_argument("--bag", required=True, help="input bag: a rosbag2 folder (metadata.yaml) or one .db3/.mcap file")
    p.add_argument("--text", action="append", required=True, metavar="TEXT",
                   help="referring expression; repeat for several objects (object K = the K-th --text, from 0)")
    p.add_argument("--out", required=True, help="output folder (refused if it holds results, unless --overwrite)")
    p.add_argument("--image-topic", help="image topic (default: the only sensor_msgs/Image or CompressedImage topic)")
    gt = p.add_mutually_exclusive_group()
    gt.add_argument("--gt", help="ground-truth PNG folder: object_K/<name>.png (or <name>.png for one --text); "
                                 "<name> = header stamp <sec>_<nanosec 9 digits> or the frame index in bag order")
    gt.add_argument("--gt-topic", help="ground-truth mask topic in the bag (mono8, matched by header stamp; "
                                       "with several --text, pixel value K+1 marks object K)")
    p.add_argument("--checkpoint", help="weights (default: the bundled default model)")
    p.add_argument("--window", type=int, default=8, help="frames of global context (default 8)")
    p.add_argument("--lookahead", type=int, default=0, help="frames of look-ahead (output delay; default 0)")
    _add_policy_args(p)
    p.add_argument("--realtime", type=float, nargs="?", const=1.0, default=None, metavar="RATE",
                   help="replay at the recorded pace (x RATE, default 1.0): frames arriving while the model is busy "
                        "are dropped as on the robot. Default: every frame is processed (best case)")
    p.add_argument("--live", action="store_true",
                   help="publish the bag over real ROS topics to a running mpg_sam2_node and record what it publishes")
    p.add_argument("--node", default="/mpg_sam2", help="--live: the node's name, for its services (default /mpg_sam2)")
    p.add_argument("--start-node", action="store_true",
                   help="--live: start mpg_sam2_node (with --config/--checkpoint/--window/--lookahead and the "
                        "policy options) and stop it after")
    p.add_argument("--node-timeout", type=float, default=60.0, help="--live: seconds to wait for the node (default 60)")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_bag_replay)

    p = sub.add_parser("bench-node", help="the live node over DDS: transport overhead, output vs input rate at 30 Hz, RSS growth (JSON)")
    p.add_argument("--config", default=None, help="model config (default: the bundled model)")
    p.add_argument("--checkpoint", help="weights (default: the bundled model)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--frames", type=int, default=2000, help="open-loop frames (default 2000)")
    p.add_argument("--rate", type=float, default=30.0, help="open-loop publish rate in Hz (default 30)")
    p.add_argument("--closed-loop", type=int, default=200, help="closed-loop frames for the transport overhead (default 200)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--out", help="also write the JSON here")
    p.set_defaults(func=cmd_bench_node)

    from .training.train import add_arguments as add_train_arguments

    p = sub.add_parser("train", help="train a model from a recipe (config/training/*.yaml); DDP with torchrun")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)
    return parser


def cmd_bag_replay(args: argparse.Namespace) -> int:
    from .replay.run import ReplayOptions, run_bag_replay

    opts = ReplayOptions(
        bag=args.bag, texts=args.text, out=args.out, image_topic=args.image_topic, gt=args.gt, gt_topic=args.gt_topic,
        config=args.config, overrides=tuple(args.overrides), checkpoint=args.checkpoint, window=args.window,
        lookahead=args.lookahead, **_policy(args), realtime=args.realtime, live=args.live, overwrite=args.overwrite,
        progress=not args.quiet, node_name=args.node, start_node=args.start_node, node_timeout=args.node_timeout,
    )
    summary = run_bag_replay(opts)
    _emit(summary)
    return 130 if summary.get("interrupted") else 0


def cmd_bench_node(args: argparse.Namespace) -> int:
    from .ros.bench_node import run_bench_node

    out = run_bench_node(frames=args.frames, rate_hz=args.rate, width=args.width, height=args.height,
                         closed_loop=args.closed_loop, config=args.config, checkpoint=args.checkpoint,
                         device=args.device, dtype=args.dtype)
    _emit(out, args.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .core.checkpoint import CheckpointError
    from .core.config import ConfigError
    from .core.preprocess import FrameError
    from .core.text import TextError
    from .replay.bags import BagError
    from .training.train import TrainingError

    try:
        return args.func(args)
    except (ConfigError, CheckpointError, FrameError, TextError, TrainingError, BagError, FileNotFoundError,
            FileExistsError, ValueError) as exc:
        print(f"mpg-sam2 {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
