"""Does the MPG's mask prior M_p (Eq. 3) pick the named object among its look-alikes?

For each expression with distractors (appearance / spatial / motion) of the synthetic videos
of a seed, a causal window of W frames ending at frames W-1, 15 and 23 goes through BEiT-3 and
the MPG (``training.forward.forward_prior``, what the ``prior`` stage trains); the window's last
prior, upsampled to the frame, is averaged inside the target's mask and inside each
distractor's. "Correct" when the target's mean is above every distractor's. Chance is 1/2 for
a pair and 1/3 for a triple of look-alikes. Frames where any of them covers under 20 pixels are
left out. Prints JSON: per type, the fraction correct and the number of windows; and, for the
appearance expressions, each look-alike on its own (chance 1/2), by what tells it from the
named object (colour, shape, size, or several): which words the prior reads; and the motion
windows by how the target moves (a growing, shrinking or still target differs from its
look-alikes in size over time only). ``--masks`` also
runs the streaming engine (window W, the model's own threshold) over each video and asks the same
of its mask at the window's last frame (IoU with the target above the IoU with every
look-alike), crossed with the prior's answer: whether the decoder follows the prior, or the
prior is what goes wrong.

``--word-swaps`` asks the question before that one: how much do BEiT-3's outputs ([CLS] and
patches, Eq. 1) move, relative to their norm, when one word of a command is swapped for
another of its kind ("left" -> "right", "blue" -> "red", ...), averaged over frames of the
seed's videos. A word the model ignores moves them by a fraction of a percent.

    .venv/bin/python scripts/probe_prior.py --checkpoint assets/models/default.safetensors --seed 4242
    .venv/bin/python scripts/probe_prior.py --word-swaps --seed 1000
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

from mpg_sam2_ros.core.evaluation import region_similarity  # noqa: E402
from mpg_sam2_ros.core.pipeline import load_pipeline  # noqa: E402
from mpg_sam2_ros.core.segment import run_streaming  # noqa: E402
from mpg_sam2_ros.training.datasets import ReferringClip  # noqa: E402
from mpg_sam2_ros.training.forward import forward_prior, make_batch  # noqa: E402
from mpg_sam2_ros.training.synthetic import generate_video  # noqa: E402


def probe(checkpoint: str | None, seed: int, videos: int, window: int, min_pixels: int = 20,
          masks: bool = False) -> dict:
    pipe = load_pipeline(None, [], checkpoint)
    model, tokenizer = pipe.model.eval(), pipe.tokenizer
    tally: dict[str, list[int]] = {}
    pairs: dict[str, list[int]] = {}
    moving: dict[str, list[int]] = {}  # motion windows by how the target moves
    follow: dict[str, np.ndarray] = {}  # per type: [prior right?, mask right?] counts
    with torch.no_grad():
        for i in range(videos):
            video = generate_video(seed, i)
            objects = {o.oid: o for o in video.objects}
            probed = [e for e in video.expressions if e.type != "absent" and e.distractors]
            if masks and probed:  # the streaming engine's masks for the same expressions
                stream = run_streaming(model, tokenizer, list(video.frames), [e.text for e in probed], window=window)
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
                    on_target = prior[target].mean()
                    right = on_target > max(prior[o].mean() for o in others)
                    if masks:
                        m = stream.masks[probed.index(expr), end]
                        mask_right = all(region_similarity(m, target) > region_similarity(m, o) for o in others)
                        follow.setdefault(expr.type, np.zeros((2, 2), int))[int(right), int(mask_right)] += 1
                    t = tally.setdefault(expr.type, [0, 0])
                    t[0] += int(right)
                    t[1] += 1
                    if expr.type == "motion":
                        t = moving.setdefault(objects[expr.target].motion, [0, 0])
                        t[0] += int(right)
                        t[1] += 1
                    if expr.type == "appearance":  # each look-alike on its own, by what tells it apart
                        for d, o in zip(expr.distractors, others):
                            t = pairs.setdefault(objects[expr.target].differences(objects[d]), [0, 0])
                            t[0] += int(on_target > prior[o].mean())
                            t[1] += 1
    result = {k: {"correct": round(a / n, 3), "windows": n} for k, (a, n) in sorted(tally.items())}
    result["appearance_pairs_by_difference"] = {k: {"correct": round(a / n, 3), "pairs": n}
                                                for k, (a, n) in sorted(pairs.items())}
    result["motion_by_target_motion"] = {k: {"correct": round(a / n, 3), "windows": n} for k, (a, n) in sorted(moving.items())}
    if masks:
        result["masks"] = {k: {"mask_right": round(int(t[:, 1].sum()) / int(t.sum()), 3),
                               "prior_right_mask_right": int(t[1, 1]), "prior_right_mask_wrong": int(t[1, 0]),
                               "prior_wrong_mask_right": int(t[0, 1]), "both_wrong": int(t[0, 0])}
                           for k, t in sorted(follow.items())}
    return result


WORD_SWAPS = {  # base command -> (kind of word, command with that word swapped)
    "the blue star on the left": [("colour", "the red star on the left"), ("shape", "the blue circle on the left"),
                                  ("left/right", "the blue star on the right")],
    "the blue star at the top": [("top/bottom", "the blue star at the bottom")],
    "the big blue star": [("size", "the small blue star")],
    "the blue star moving up": [("up/down", "the blue star moving down")],
    "the blue star moving to the left": [("motion left/right", "the blue star moving to the right")],
}


def word_swaps(checkpoint: str | None, seed: int, videos: int) -> dict:
    """Mean relative change of BEiT-3's [CLS] and patches when one word is swapped."""
    pipe = load_pipeline(None, [], checkpoint)
    model, tokenizer = pipe.model.eval(), pipe.tokenizer
    sums: dict[str, list[float]] = {}
    with torch.no_grad():
        for i in range(videos):
            video = generate_video(seed, i)
            clip = ReferringClip(video=video.name, exp_id="", text="a frame", exp_type=None, frame_names=["0"],
                                 frames=video.frames[:1], masks=video.labels[:1] > 0)
            image = make_batch([clip], model, tokenizer).mm[:, 0]
            for base, swaps in WORD_SWAPS.items():
                ref = model.encode_multimodal(image, *tokenizer.encode_batch([base]))
                for kind, text in swaps:
                    out = model.encode_multimodal(image, *tokenizer.encode_batch([text]))
                    acc = sums.setdefault(kind, [0.0, 0.0])
                    acc[0] += float((out.cls - ref.cls).norm() / ref.cls.norm()) / videos
                    acc[1] += float((out.patches - ref.patches).norm() / ref.patches.norm()) / videos
    return {k: {"cls": round(c, 4), "patches": round(p, 4)} for k, (c, p) in sums.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="weights (default: the bundled model)")
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--word-swaps", action="store_true", help="measure how far one swapped word moves BEiT-3's outputs")
    ap.add_argument("--masks", action="store_true",
                    help="also run the streaming engine: does the mask at the same frame pick the target when the prior does?")
    args = ap.parse_args()
    if args.word_swaps:
        print(json.dumps({"checkpoint": args.checkpoint or "bundled", "seed": args.seed, "videos": args.videos,
                          "relative_change": word_swaps(args.checkpoint, args.seed, args.videos)}))
        return
    out = {"checkpoint": args.checkpoint or "bundled", "seed": args.seed, "videos": args.videos, "window": args.window,
           "prior_picks_the_target": probe(args.checkpoint, args.seed, args.videos, args.window, masks=args.masks)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
