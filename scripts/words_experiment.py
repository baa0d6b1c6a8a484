"""The experiment behind ``loss.words``: does a from-scratch BEiT-3 + MPG learn "on the left" /
"at the top" when its [CLS] token must also name the command's words?

Trains BEiT-3 and the MPG of ``cpu_small`` (8 x 8 grid) on the mask prior M_p (Eq. 3) of
single frames of the spatial expressions of 400 training videos (seed 1000; twins that only
the relation word tells apart), batches of 32, lr 1e-3, BCE x 10 + soft dice on the prior;
with ``WORDS > 0`` plus WORDS x a bag-of-words BCE (summed over the vocabulary) of a Linear
head on V_cls (``training.losses.WordPresence``). Every 200 steps prints the share of held-out
spatial expressions (seed 4242, 40 videos, frames 0 / 12 / 23) whose prior sits more on the named
twin than on the other (chance 0.5). About 4 minutes for 1,200 steps on one core.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/words_experiment.py 0.1   # the words term on
    OMP_NUM_THREADS=1 .venv/bin/python scripts/words_experiment.py 0     # off
    (extra arguments are model overrides, e.g. beit3.pos_init=sincos)
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpg_sam2_ros.core.config import load_model_config  # noqa: E402
from mpg_sam2_ros.core.modeling.build import build_model  # noqa: E402
from mpg_sam2_ros.core.pipeline import load_tokenizer  # noqa: E402
from mpg_sam2_ros.training.datasets import ReferringClip  # noqa: E402
from mpg_sam2_ros.training.datasets.augment import Augment  # noqa: E402
from mpg_sam2_ros.training.forward import forward_prior, make_batch  # noqa: E402
from mpg_sam2_ros.training.losses import LossConfig, ReferringLoss, WordPresence  # noqa: E402
from mpg_sam2_ros.training.synthetic import generate_video  # noqa: E402
from mpg_sam2_ros.training.train import ClipStep  # noqa: E402


def spatial_items(seed: int, videos: int) -> list:
    """(video, expression) for every spatial expression of the first ``videos`` of ``seed``."""
    out = []
    for i in range(videos):
        video = generate_video(seed, i)
        out += [(video, e) for e in video.expressions if e.type == "spatial"]
    return out


def frame_clip(video, expr, frame: int) -> ReferringClip:
    return ReferringClip(video=video.name, exp_id="", text=expr.text, exp_type=expr.type, frame_names=["0"],
                         frames=video.frames[frame : frame + 1], masks=video.labels[frame : frame + 1] == expr.target)


def held_out_share(model, tokenizer, items) -> float:
    """Share of (expression, frame) whose prior sits more on the named twin than on the other."""
    model.eval()
    right = n = 0
    with torch.no_grad():
        for video, expr in items:
            for frame in (0, 12, 23):
                target, other = video.labels[frame] == expr.target, video.labels[frame] == expr.distractors[0]
                if target.sum() < 20 or other.sum() < 20:
                    continue
                prior = forward_prior(model, make_batch([frame_clip(video, expr, frame)], model, tokenizer), causal=True)[0, -1]
                up = F.interpolate(prior[None], size=target.shape, mode="bilinear")[0, 0].numpy()
                right += bool(up[target].mean() > up[other].mean())
                n += 1
    model.train()
    return round(right / n, 3)


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    weight, overrides = float(sys.argv[1]), sys.argv[2:]
    cfg = load_model_config("cpu_small", ["beit3.patch_size=16", *overrides])
    model, tokenizer = build_model(cfg).train(), load_tokenizer(cfg)
    words = WordPresence(cfg.beit3.embed_dim, cfg.beit3.vocab_size, tokenizer.special_ids)
    # the prior stage's step and loss: 10 x BCE + soft dice on M_p, + weight x words
    step_loss = ClipStep(model, ReferringLoss(LossConfig(similarity=0.0, prior=10.0, prior_dice=1.0, words=weight), None, words),
                         causal=True, stage="prior")
    train, hold = spatial_items(1000, 400), spatial_items(4242, 40)
    print("train", len(train), "hold", len(hold), flush=True)
    params = [p for n, p in model.named_parameters() if n.startswith(("multimodal_encoder", "mask_prior"))]
    params += list(words.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=5e-4)
    augment, rng = Augment(hflip=0.5, photometric=True), np.random.default_rng(0)
    t0 = time.time()
    for step in range(1, 1201):
        idx = rng.choice(len(train), 32, replace=False)
        batch = make_batch([augment(frame_clip(*train[i], int(rng.integers(24))), rng) for i in idx], model, tokenizer)
        loss = step_loss(batch)["total"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 200 == 0:
            print(weight, overrides, step, round(loss.item(), 3), "held", held_out_share(model, tokenizer, hold),
                  round(time.time() - t0), flush=True)


if __name__ == "__main__":
    main()
