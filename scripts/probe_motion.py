"""Can an object's direction of motion be read from BEiT-3's patches of the frames around it?

For every object of the synthetic videos that moves up, down, left or right or stands still,
at frames t = 4, 7, 10, ... (where it covers at least 20 pixels at t and t-3), BEiT-3 encodes
the frames with the neutral command "the object"; the feature is the change of the patch under
the object's centroid, ``V_t - V_{t-k}`` for k = 1 and 3 (what ``mpg.frame_difference`` gives
Eq. 2); with ``--stem``, the output of the MPG's motion stem for frame t against frame t-k
(``mpg.motion_stem``, trained for k = 1) under the centroid; with ``--block-flow``, the
camera-compensated block-matching velocity and its evidence (``mpg.block_flow``, no weights)
of the patch under the centroid against frame t-k. A linear classifier (softmax regression, standardised features, Adam, 500 full-batch
steps) is fitted on training videos and scored on held-out ones. Prints JSON: accuracies for
each k, the number of samples, the majority-class share of the test set.

    .venv/bin/python scripts/probe_motion.py --checkpoint runs/cur2_mixed/model.safetensors
    .venv/bin/python scripts/probe_motion.py --block-flow
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpg_sam2_ros.core.modeling.mask_prior import block_flow  # noqa: E402
from mpg_sam2_ros.core.pipeline import load_pipeline  # noqa: E402
from mpg_sam2_ros.training.datasets import ReferringClip  # noqa: E402
from mpg_sam2_ros.training.forward import make_batch  # noqa: E402
from mpg_sam2_ros.training.synthetic import generate_video  # noqa: E402

CLASSES = ("up", "down", "left", "right", "still")
OFFSETS = (1, 3)


def patch_changes(model, tokenizer, seed: int, videos: int, stem: bool = False, min_pixels: int = 20, flow: bool = False):
    """{k: [S, D] V_t - V_{t-k} (or the motion stem's output for t against t-k) under each
    sampled object's centroid}, labels [S]."""
    feats: dict[int, list[np.ndarray]] = {k: [] for k in OFFSETS}
    labels: list[int] = []
    with torch.no_grad():
        for i in range(videos):
            video = generate_video(seed, i)
            t_len, h, w = video.labels.shape
            clip = ReferringClip(video=video.name, exp_id="", text="the object", exp_type=None,
                                 frame_names=[str(f) for f in range(t_len)], frames=video.frames, masks=video.labels > 0)
            batch = make_batch([clip], model, tokenizer)
            if flow:  # [T - k, N, 3] (vy, vx, evidence) per patch, no weights
                p = model.config.beit3.patch_size
                images = batch.mm[0]
                moved = {}
                for k in OFFSETS:
                    d, e = block_flow(images[k:], images[:-k], cell=p, radius=model.mask_prior.block_flow_radius)
                    moved[k] = torch.cat([d / k, e], 1).flatten(2).transpose(1, 2)
                patches = moved[OFFSETS[0]]
            else:
                patches = model.encode_multimodal(batch.mm[0], *tokenizer.encode_batch(["the object"] * t_len)).patches
            if stem:
                images = batch.mm[0]
                moved = {k: model.mask_prior.pixel_motion(images[k:], images[:-k]) for k in OFFSETS}
            g = int(round(patches.shape[1] ** 0.5))
            for obj in video.objects:
                if obj.motion not in CLASSES:
                    continue
                for t in range(max(OFFSETS) + 1, t_len, 3):
                    here = video.labels[t] == obj.oid
                    if here.sum() < min_pixels or (video.labels[t - max(OFFSETS)] == obj.oid).sum() < min_pixels:
                        continue
                    ys, xs = np.nonzero(here)
                    cell = int(ys.mean() / h * g) * g + int(xs.mean() / w * g)
                    for k in OFFSETS:
                        change = moved[k][t - k, cell] if stem or flow else patches[t, cell] - patches[t - k, cell]
                        feats[k].append(change.numpy())
                    labels.append(CLASSES.index(obj.motion))
    return {k: torch.tensor(np.array(v)) for k, v in feats.items()}, torch.tensor(labels)


def linear_accuracy(x_train, y_train, x_test, y_test, steps: int = 500) -> tuple[float, float]:
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mu) / sd, (x_test - mu) / sd
    torch.manual_seed(0)
    head = torch.nn.Linear(a.shape[1], len(CLASSES))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(a), y_train).backward()
        opt.step()
    with torch.no_grad():
        return float((head(a).argmax(1) == y_train).float().mean()), float((head(b).argmax(1) == y_test).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="weights (default: the bundled model)")
    ap.add_argument("--train-seed", type=int, default=1000)
    ap.add_argument("--train-videos", type=int, default=150)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--stem", action="store_true", help="read the motion stem's output instead of BEiT-3's patch change")
    ap.add_argument("--block-flow", action="store_true", help="read the block-matching velocity (mpg.block_flow) instead")
    args = ap.parse_args()
    torch.set_num_threads(1)
    pipe = load_pipeline(None, [], args.checkpoint)
    model, tokenizer = pipe.model.eval(), pipe.tokenizer
    x_train, y_train = patch_changes(model, tokenizer, args.train_seed, args.train_videos, args.stem, flow=args.block_flow)
    x_test, y_test = patch_changes(model, tokenizer, args.seed, args.videos, args.stem, flow=args.block_flow)
    out = {"checkpoint": args.checkpoint or "bundled", "features": "block flow" if args.block_flow else "motion stem" if args.stem else "patch change", "train": {"seed": args.train_seed, "videos": args.train_videos,
           "samples": len(y_train)}, "test": {"seed": args.seed, "videos": args.videos, "samples": len(y_test),
           "majority_share": round(float(torch.bincount(y_test).max()) / len(y_test), 3)}}
    for k in OFFSETS:
        train_acc, test_acc = linear_accuracy(x_train[k], y_train, x_test[k], y_test)
        out[f"t against t-{k}"] = {"train_accuracy": round(train_acc, 3), "test_accuracy": round(test_acc, 3)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
