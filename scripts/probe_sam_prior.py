"""Would a mask prior that reads SAM 2's features tell shapes apart? A frozen-feature test.

``probe_shape_features.py`` found shape in SAM 2's stride-8 features (in their layout over an
object) and not in BEiT-3's patches. Before the model is changed, this asks the question the
prior (Eq. 3) must answer: given the command, which cells of BEiT-3's g x g grid hold the named
object? On the bundled model's frozen features, three small per-cell heads are trained on the
appearance expressions of training-seed videos and scored on another seed's:

- ``beit3``: the cell's BEiT-3 output patch (Eq. 1) and the command's [CLS];
- ``sam2``: SAM 2's stride-8 features inside the cell, laid out (space-to-depth: every
  position of the cell its own channels), and the [CLS];
- ``both``: all of it.

Each head projects the cell's features and the [CLS] to one width, lets the text gate the cell
(their product, plus the cell's own projection), and reads a logit through a small MLP; it is
trained with a per-cell binary cross-entropy against the share of the cell the target covers.
Scored as ``probe_prior.py`` scores the model's prior: for each look-alike of an appearance
expression (chance 1/2), is the head's prior, upsampled to the frame, higher on average inside
the named object than inside the look-alike; split by what tells them apart. The [CLS] is
BEiT-3's, which read the command with the frame: all heads get the same words.

    .venv/bin/python scripts/probe_sam_prior.py --train-seed 1000 --train-videos 200 --seed 4242 --videos 30
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpg_sam2_ros.core.pipeline import load_pipeline  # noqa: E402
from mpg_sam2_ros.training.datasets import ReferringClip  # noqa: E402
from mpg_sam2_ros.training.forward import make_batch  # noqa: E402
from mpg_sam2_ros.training.synthetic import generate_video  # noqa: E402

FRAMES = (0, 12, 23)
HEADS = ("beit3", "sam2", "both")


def sam2_cells(model, feats, g: int) -> torch.Tensor:
    """SAM 2's stride-8 level [HW, 1, C] -> [g*g, C * k * k]: each BEiT-3 cell's k x k block,
    every position its own channels (resampled first if the level is not k*g wide)."""
    fmap = feats.level_map(8, model.image_size)[:1]
    h, w = fmap.shape[-2:]
    k = max(1, round(h / g))
    if (h, w) != (k * g, k * g):
        fmap = F.interpolate(fmap, size=(k * g, k * g), mode="bilinear", align_corners=False)
    return F.pixel_unshuffle(fmap, k)[0].flatten(1).T


def collect(model, tokenizer, seed: int, videos: int, min_pixels: int = 20) -> list[dict]:
    """One row per (appearance expression, frame) where the target and its look-alikes show."""
    g = model.multimodal_encoder.cfg.grid_size
    rows = []
    with torch.no_grad():
        for i in range(videos):
            video = generate_video(seed, i)
            objects = {o.oid: o for o in video.objects}
            exprs = [e for e in video.expressions if e.type == "appearance" and e.distractors]
            for t in FRAMES:
                if t >= len(video.frames) or not exprs:
                    continue
                label = video.labels[t]
                sam = None
                for e in exprs:
                    target = label == e.target
                    others = [label == d for d in e.distractors]
                    if target.sum() < min_pixels or any(o.sum() < min_pixels for o in others):
                        continue
                    clip = ReferringClip(video=video.name, exp_id="", text=e.text, exp_type=e.type, frame_names=["0"],
                                         frames=video.frames[t : t + 1], masks=target[None])
                    batch = make_batch([clip], model, tokenizer)
                    if sam is None:
                        sam = sam2_cells(model, model.encode_image(batch.sam[:, 0]), g)
                    mm = model.encode_multimodal(batch.mm[:, 0], batch.ids, batch.padding)
                    cover = F.interpolate(torch.from_numpy(target.astype(np.float32))[None, None], size=(g, g),
                                          mode="area")[0, 0].flatten()
                    kinds = [objects[e.target].differences(objects[d]) for d in e.distractors]
                    rows.append({"beit3": mm.patches[0], "sam2": sam, "cls": mm.cls[0], "cover": cover,
                                 "target": target, "others": others, "kinds": kinds})
    return rows


class CellHead(nn.Module):
    """Per-cell logit: the cell's projection, gated by the [CLS]'s projection, through an MLP."""

    def __init__(self, cell_dim: int, cls_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.cell = nn.Linear(cell_dim, hidden)
        self.cls = nn.Linear(cls_dim, hidden)
        self.out = nn.Sequential(nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, cells: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """cells [B, N, C], cls [B, D] -> logits [B, N]: the text enters each cell's features
        multiplicatively, as the prior's similarity does (Eq. 3)."""
        c = self.cell(cells)
        return self.out(c * self.cls(cls)[:, None] + c)[..., 0]


def cells_of(rows: list[dict], head: str) -> torch.Tensor:
    if head == "both":
        return torch.stack([torch.cat([r["beit3"], r["sam2"]], -1) for r in rows])
    return torch.stack([r[head] for r in rows])


def fit(rows: list[dict], head: str, steps: int, seed: int = 0) -> tuple[CellHead, tuple]:
    torch.manual_seed(seed)
    x, cls, y = cells_of(rows, head), torch.stack([r["cls"] for r in rows]), torch.stack([r["cover"] for r in rows])
    mu, sd = x.mean((0, 1)), x.std((0, 1)) + 1e-6
    cmu, csd = cls.mean(0), cls.std(0) + 1e-6
    net = CellHead(x.shape[-1], cls.shape[-1])
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(rows), (64,), generator=gen)
        loss = F.binary_cross_entropy_with_logits(net((x[idx] - mu) / sd, (cls[idx] - cmu) / csd), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net, (mu, sd, cmu, csd)


def score(net: CellHead, norm: tuple, rows: list[dict], head: str) -> dict:
    mu, sd, cmu, csd = norm
    g = int(round(rows[0]["cover"].numel() ** 0.5))
    tally: dict[str, list[int]] = {}
    with torch.no_grad():
        logits = net((cells_of(rows, head) - mu) / sd, (torch.stack([r["cls"] for r in rows]) - cmu) / csd)
    for r, lg in zip(rows, logits):
        prior = F.interpolate(lg.sigmoid().reshape(1, 1, g, g), size=r["target"].shape, mode="bilinear")[0, 0].numpy()
        on_target = prior[r["target"]].mean()
        for kind, other in zip(r["kinds"], r["others"]):
            t = tally.setdefault(kind, [0, 0])
            t[0] += int(on_target > prior[other].mean())
            t[1] += 1
    total = [sum(a for a, _ in tally.values()), sum(n for _, n in tally.values())]
    return {"all": {"correct": round(total[0] / max(total[1], 1), 3), "pairs": total[1]},
            **{k: {"correct": round(a / n, 3), "pairs": n} for k, (a, n) in sorted(tally.items())}}


def probe(checkpoint: str | None, train_seed: int, train_videos: int, seed: int, videos: int, steps: int) -> dict:
    pipe = load_pipeline(None, [], checkpoint)
    model, tokenizer = pipe.model.eval(), pipe.tokenizer
    train, test = collect(model, tokenizer, train_seed, train_videos), collect(model, tokenizer, seed, videos)
    if not train or not test:
        raise SystemExit("no appearance expression with visible look-alikes in these videos")
    out = {"checkpoint": checkpoint or "bundled", "train": {"seed": train_seed, "videos": train_videos, "rows": len(train)},
           "test": {"seed": seed, "videos": videos, "rows": len(test)}, "steps": steps, "heads": {}}
    for head in HEADS:
        net, norm = fit(train, head, steps)
        out["heads"][head] = {"test": score(net, norm, test, head), "train": score(net, norm, train, head)["all"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="weights (default: the bundled model)")
    ap.add_argument("--train-seed", type=int, default=1000, help="seed of the videos the heads train on")
    ap.add_argument("--train-videos", type=int, default=200)
    ap.add_argument("--seed", type=int, default=4242, help="seed of the videos they are scored on")
    ap.add_argument("--videos", type=int, default=30)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    text = json.dumps(probe(args.checkpoint, args.train_seed, args.train_videos, args.seed, args.videos, args.steps), indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
