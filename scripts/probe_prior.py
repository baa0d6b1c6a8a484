"""Does the MPG's mask prior M_p (Eq. 3) pick the named object among its look-alikes?

For each expression with distractors (appearance / spatial / motion) of the synthetic videos
of a seed, a causal window of W frames ending at frames W-1, 15 and 23 goes through BEiT-3 and
the MPG (``training.forward.forward_prior``, what the ``prior`` stage trains); the window's last
prior, upsampled to the frame, is averaged inside the target's mask and inside each
distractor's. "Correct" when the target's mean is above every distractor's. Chance is 1/2 for
a pair and 1/3 for a triple of look-alikes. Frames where any of them covers under 20 pixels are
left out. Prints JSON: per type, the fraction correct and the number of windows.

    .venv/bin/python scripts/probe_prior.py --checkpoint assets/models/default.safetensors --seed 4242
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpg_sam2_ros.core.pipeline import load_pipeline  # noqa: E402
from mpg_sam2_ros.training.datasets import ReferringClip  # noqa: E402
from mpg_sam2_ros.training.forward import forward_prior, make_batch  # noqa: E402
from mpg_sam2_ros.training.synthetic import generate_video  # noqa: E402


def probe(checkpoint: str | None, seed: int, videos: int, window: int, min_pixels: int = 20) -> dict:
    pipe = load_pipeline(None, [], checkpoint)
    model, tokenizer = pipe.model.eval(), pipe.tokenizer
    tally: dict[str, list[int]] = {}
    with torch.no_grad():
        for i in range(videos):
            video = generate_video(seed, i)
            ends = sorted({e for e in (window - 1, 15, 23) if window - 1 <= e < len(video.frames)})
            for expr in video.expressions:
                if expr.type == "absent" or not expr.distractors:
                    continue
                for end in ends:
                    sl = slice(end - window + 1, end + 1)
                    labels = video.labels[sl]
                    target = labels[-1] == expr.target
                    others = [labels[-1] == d for d in expr.distractors]
                    if target.sum() < min_pixels or any(o.sum() < min_pixels for o in others):
                        continue
                    clip = ReferringClip(video=video.name, exp_id="", text=expr.text, exp_type=expr.type,
                                         frame_names=[str(f) for f in range(sl.start, sl.stop)],
                                         frames=video.frames[sl], masks=labels == expr.target)
                    prior = forward_prior(model, make_batch([clip], model, tokenizer), causal=True)[0, -1]
                    prior = F.interpolate(prior[None], size=labels.shape[1:], mode="bilinear")[0, 0].numpy()
                    right = prior[target].mean() > max(prior[o].mean() for o in others)
                    t = tally.setdefault(expr.type, [0, 0])
                    t[0] += int(right)
                    t[1] += 1
    return {k: {"correct": round(a / n, 3), "windows": n} for k, (a, n) in sorted(tally.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="weights (default: the bundled model)")
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--window", type=int, default=8)
    args = ap.parse_args()
    out = {"checkpoint": args.checkpoint or "bundled", "seed": args.seed, "videos": args.videos, "window": args.window,
           "prior_picks_the_target": probe(args.checkpoint, args.seed, args.videos, args.window)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
