"""Which of the model's features can tell an object's shape: BEiT-3's, or SAM 2's?

The bundled model's mask prior reads colour and size but not shape (``probe_prior.py``). The
prior is computed from BEiT-3's patches (Eqs. 1-3); SAM 2's image encoder sees the same frame at
a finer stride, and its masks follow the objects' outlines. This probe asks which features carry
shape at all: for every object visible in frames 0, 12 and 23 of the synthetic videos of a seed,
each feature map is averaged inside the object's mask (the mask resized to the map's grid by
area, so a partly covered cell counts by its coverage), and a linear classifier (multinomial
logistic regression, L2, standardised inputs) is trained on the first part of the videos and
scored on the rest: shape (6 classes), colour and size. Feature maps:

- ``rgb_mean``: the object's mean colour (a control: colour, not shape);
- ``silhouette``: the object's own mask, cropped to its box and resized to 12 x 12 (what a
  reader of the outline could reach; an upper bound for shape);
- ``beit3_embed``: BEiT-3's patch embedding (one linear projection per patch, before attention);
- ``beit3_out``: BEiT-3's output patches (Eq. 1), with the neutral command "the object";
- ``sam2_s4``, ``sam2_s8``, ``sam2_s16``: SAM 2's image-encoder levels (strides 4, 8, 16 of
  its input, as the mask decoder gets them).

Each map is also read as ``NAME@box``: sampled at 4 x 4 points spread over the object's box and
flattened, so a classifier can see where in the object each value lies (the mean above loses
that), as a reader of the layout, such as attention over the patches, could.

A feature whose shape accuracy is near chance (1/6) cannot tell a triangle from a circle,
whatever head reads it. Prints JSON: per feature and attribute, test accuracy, and the counts.

    .venv/bin/python scripts/probe_shape_features.py --seed 4242 --videos 60
    .venv/bin/python scripts/probe_shape_features.py --config cpu_small --set beit3.patch_size=16 ...   # random weights
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
from mpg_sam2_ros.training.forward import make_batch  # noqa: E402
from mpg_sam2_ros.training.synthetic import generate_video  # noqa: E402

ATTRIBUTES = ("shape", "color", "size")
FRAMES = (0, 12, 23)


def pool(feature: torch.Tensor, mask: np.ndarray) -> np.ndarray:
    """feature [C, h, w], mask bool [H, W] -> the mask-weighted mean of the feature [C]."""
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    w = F.interpolate(m, size=feature.shape[-2:], mode="area")[0, 0]
    return ((feature * w).sum((-2, -1)) / w.sum().clamp_min(1e-6)).numpy()


def box_grid(feature: torch.Tensor, mask: np.ndarray, k: int = 4) -> np.ndarray:
    """feature [C, h, w], mask bool [H, W] -> the feature sampled (bilinear) at k x k points
    spread over the object's box, flattened [C * k * k]: where in the object each value is."""
    ys, xs = np.nonzero(mask)
    hgt, wid = mask.shape
    # cell centres of a k x k grid over the box, in grid_sample's [-1, 1] (align_corners=False)
    gx = (xs.min() + (np.arange(k) + 0.5) * (xs.max() + 1 - xs.min()) / k) / wid * 2 - 1
    gy = (ys.min() + (np.arange(k) + 0.5) * (ys.max() + 1 - ys.min()) / k) / hgt * 2 - 1
    grid = torch.from_numpy(np.stack(np.meshgrid(gx, gy), -1).astype(np.float32))[None]
    return F.grid_sample(feature[None], grid, mode="bilinear", align_corners=False)[0].flatten().numpy()


def silhouette(mask: np.ndarray, size: int = 12) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32)
    return F.interpolate(torch.from_numpy(crop)[None, None], size=(size, size), mode="area").flatten().numpy()


def feature_maps(model, tokenizer, frame: np.ndarray) -> dict[str, torch.Tensor]:
    """Every probed feature map of one RGB frame, each [C, h, w]."""
    clip = ReferringClip(video="", exp_id="", text="the object", exp_type=None, frame_names=["0"],
                         frames=frame[None], masks=np.zeros((1, *frame.shape[:2]), bool))
    batch = make_batch([clip], model, tokenizer)
    enc = model.multimodal_encoder
    g = enc.cfg.grid_size
    maps = {}
    embed = enc.beit3.vision_embed(batch.mm[:, 0])[:, -g * g :]  # the patch rows (the [CLS] row leads)
    maps["beit3_embed"] = embed[0].T.reshape(-1, g, g)
    out = model.encode_multimodal(batch.mm[:, 0], batch.ids, batch.padding)
    maps["beit3_out"] = out.patches[0].T.reshape(-1, g, g)
    feats = model.encode_image(batch.sam[:, 0])
    for h, _ in feats.feat_sizes:
        stride = model.image_size // h
        maps[f"sam2_s{stride}"] = feats.level_map(stride, model.image_size)[0]
    return maps


def collect(checkpoint: str | None, seed: int, videos: int, min_pixels: int = 20, config: str | None = None,
            overrides: tuple[str, ...] = ()):
    """Per feature: rows X [N, C]; labels per attribute [N]; the video index of each row."""
    pipe = load_pipeline(config, list(overrides), checkpoint)
    model, tokenizer = pipe.model.eval(), pipe.tokenizer
    rows: dict[str, list[np.ndarray]] = {}
    labels: dict[str, list[str]] = {a: [] for a in ATTRIBUTES}
    owner: list[int] = []
    with torch.no_grad():
        for i in range(videos):
            video = generate_video(seed, i)
            for t in FRAMES:
                if t >= len(video.frames):
                    continue
                frame, label = video.frames[t], video.labels[t]
                maps = None
                for obj in video.objects:
                    mask = label == obj.oid
                    if mask.sum() < min_pixels:
                        continue
                    maps = maps if maps is not None else feature_maps(model, tokenizer, frame)
                    rows.setdefault("rgb_mean", []).append(frame[mask].mean(0).astype(np.float32))
                    rows.setdefault("silhouette", []).append(silhouette(mask))
                    for name, fmap in maps.items():
                        rows.setdefault(name, []).append(pool(fmap, mask))
                        rows.setdefault(f"{name}@box", []).append(box_grid(fmap, mask))
                    for a in ATTRIBUTES:
                        labels[a].append(getattr(obj, a))
                    owner.append(i)
    return {k: np.stack(v) for k, v in rows.items()}, {a: np.array(v) for a, v in labels.items()}, np.array(owner)


def linear_probe(x: np.ndarray, y: np.ndarray, train: np.ndarray, l2: float = 1e-3, steps: int = 200) -> float:
    """Multinomial logistic regression fitted on the ``train`` rows: accuracy on the others."""
    classes, yi = np.unique(y, return_inverse=True)
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
    xt = torch.from_numpy((x - mu) / sd).double()
    yt = torch.from_numpy(yi)
    w = torch.zeros(x.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")
    tr = torch.from_numpy(train)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xt[tr] @ w + b, yt[tr]) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = (xt[~tr] @ w + b).argmax(1)
    return float((pred == yt[~tr]).double().mean())


def probe(checkpoint: str | None, seed: int, videos: int, train_fraction: float = 0.7, config: str | None = None,
          overrides: tuple[str, ...] = ()) -> dict:
    features, labels, owner = collect(checkpoint, seed, videos, config=config, overrides=overrides)
    if len(owner) == 0:
        raise SystemExit("no object covers enough pixels in these videos")
    train = owner < int(round(videos * train_fraction))
    if train.all() or not train.any():
        raise SystemExit(f"need videos on both sides of the split, got {videos}")
    out = {"checkpoint": checkpoint or ("bundled" if config is None else f"random {config} {list(overrides)}"), "seed": seed, "videos": videos, "frames": list(FRAMES),
           "objects": {"train": int(train.sum()), "test": int((~train).sum())},
           "chance": {a: round(1 / len(np.unique(labels[a])), 3) for a in ATTRIBUTES},
           "majority": {a: round(float(max(np.mean(labels[a][~train] == c) for c in np.unique(labels[a]))), 3)
                        for a in ATTRIBUTES},
           "accuracy": {}}
    for name, x in features.items():
        out["accuracy"][name] = {"dims": int(x.shape[1]),
                                 **{a: round(linear_probe(x, labels[a], train), 3) for a in ATTRIBUTES}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="weights (default: the bundled model)")
    ap.add_argument("--config", default=None, help="a model config: with no --checkpoint, its random weights (a control)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value (repeatable)")
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    result = probe(args.checkpoint, args.seed, args.videos, config=args.config, overrides=tuple(args.set))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
