"""Segment what a text names on a live stream with the core engine, no ROS: a video file, a
folder of frames, or a webcam index. Prints one line per frame.

    .venv/bin/python examples/segment_stream.py VIDEO_OR_FOLDER_OR_CAMERA_INDEX "the red mug" ["the cup" ...]
        [--checkpoint PATH] [--window 8] [--max-frames N]
"""

import argparse
import time
from pathlib import Path

import cv2
import torch

from mpg_sam2_ros.core.inference.engine import EngineConfig, StreamingEngine
from mpg_sam2_ros.core.io import list_frames, read_frame
from mpg_sam2_ros.core.pipeline import load_pipeline


def frames(source: str):
    """RGB uint8 frames from a camera index, a folder of images or a video file."""
    if Path(source).is_dir():
        for path in list_frames(Path(source)):
            yield read_frame(path)
        return
    cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not cap.isOpened():
        raise SystemExit(f"cannot open {source}")
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    cap.release()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="video file, folder of frames, or camera index (0)")
    ap.add_argument("texts", nargs="+", help="referring expressions, one object each")
    ap.add_argument("--checkpoint", help="weights (default: the bundled model)")
    ap.add_argument("--window", type=int, default=8, help="frames of global context")
    ap.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: the whole stream)")
    args = ap.parse_args()

    pipe = load_pipeline(checkpoint=args.checkpoint)           # model + tokenizer, on the CPU
    engine = StreamingEngine(pipe.model, pipe.tokenizer, EngineConfig(window=args.window))
    ids = {engine.add_command(text): text for text in args.texts}
    print(f"model {pipe.config.name} ({pipe.weights}); objects {ids}")
    with torch.inference_mode():
        for i, frame in enumerate(frames(args.source)):
            started = time.perf_counter()
            result = engine.step(frame, stamp=float(i))           # None only while a look-ahead fills
            ms = (time.perf_counter() - started) * 1e3
            parts = []
            for obj in result.objects:
                ys, xs = obj.mask.nonzero()
                where = f"box x={xs.min()}..{xs.max()} y={ys.min()}..{ys.max()}" if obj.present else "absent"
                parts.append(f"[{obj.object_id}] {obj.score:.2f} {int(obj.mask.sum()):6d} px {where}")
            print(f"frame {i:4d} {ms:6.1f} ms  " + "  ".join(parts))
            if args.max_frames and i + 1 >= args.max_frames:
                break


if __name__ == "__main__":
    main()
