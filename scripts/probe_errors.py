"""Where do the missing J points go: the wrong object, a missed frame, a mask on an absent
object, or a coarse mask on the right one?

``bench-accuracy`` gives J; this splits 1 - J into its causes. Every frame of every expression on
the synthetic videos of a seed (the videos ``bench-accuracy --seed S`` scores) is put in one class:

- ``on_target``: the target is visible and the mask overlaps it at least as much as any other
  object;
- ``wrong_object``: the target is visible and the mask overlaps another object more (or only
  the background);
- ``missed``: the target is visible and the mask is empty;
- ``absent_empty`` / ``absent_shown``: the target is not visible and the mask is empty / not.

J of a frame is ``core.evaluation.region_similarity`` (IoU; 1 when both are empty), J of an
expression the mean over its frames and J the mean over expressions, as ``mpg-sam2 eval``
computes it. ``loss_share[c]`` is the part of 1 - J lost on frames of class c (the shares add up
to 1 - J), so ``J + loss_share[c]`` is J had those frames been perfect. ``on_target`` frames
are also binned by the target's area, to tell mask precision from grounding (``on_target_J``
and the bins are means over frames, not over expressions as J is).

``prior_on_target`` asks whether the decoder or the prior lost the object: for each class of
the frames where the target is visible, the share of frames where the MPG's prior M_p (Eq. 3,
the prompt SAM 2 decoded the frame with) puts more mass on the target than on any other object.

    .venv/bin/python scripts/probe_errors.py --seed 777 --videos 30
"""

from __future__ import annotations

import argparse
import json

import numpy as np

CLASSES = ("on_target", "wrong_object", "missed", "absent_empty", "absent_shown")
AREA_BINS = (0, 200, 500, 1000, 3000)  # pixels of the target (frames are 160 x 120 by default)


def classify(mask: np.ndarray, label: np.ndarray, target: int) -> str:
    """The class of one frame (see the module docstring); ``mask``: bool [H, W]; ``label``:
    object ids [H, W], 0 background."""
    mask = np.asarray(mask, bool)
    if mask.shape != label.shape:
        raise ValueError(f"mask is {mask.shape}, label {label.shape}")
    tgt = label == target
    if not tgt.any():
        return "absent_shown" if mask.any() else "absent_empty"
    if not mask.any():
        return "missed"
    on = np.bincount(label[mask].ravel(), minlength=int(label.max()) + 1)
    on[0] = 0  # the background is not an object
    return "on_target" if on[target] > 0 and on[target] == on.max() else "wrong_object"


def summarise(frames: list[tuple]) -> dict:
    """``frames``: (expression key, expression type, class, J of the frame, target area, ...)."""
    if not frames:
        raise ValueError("no frames to summarise (no videos, or no expressions)")
    keys = list(dict.fromkeys(f[0] for f in frames))
    per_expr = {k: [] for k in keys}
    for f in frames:
        per_expr[f[0]].append(f)
    share = dict.fromkeys(CLASSES, 0.0)
    count = dict.fromkeys(CLASSES, 0)
    for rows in per_expr.values():
        for r in rows:
            c, j = r[2], r[3]
            share[c] += (1.0 - j) / len(rows) / len(keys)
            count[c] += 1
    J = float(np.mean([np.mean([r[3] for r in rows]) for rows in per_expr.values()]))
    on = [(f[3], f[4]) for f in frames if f[2] == "on_target"]
    bins = {}
    for lo, hi in zip(AREA_BINS, AREA_BINS[1:] + (None,)):
        sel = [j for j, a in on if a >= lo and (hi is None or a < hi)]
        if sel:
            bins[f"{lo}-{hi or 'inf'}"] = {"frames": len(sel), "J": round(float(np.mean(sel)), 4)}
    return {
        "expressions": len(keys), "frames": len(frames), "J": round(100 * J, 2),
        "frames_by_class": count,
        "loss_share": {c: round(100 * v, 2) for c, v in share.items()},  # J points; they add up to 100 - J
        "on_target_J": round(float(np.mean([j for j, _ in on])), 4) if on else None,
        "on_target_J_by_area": bins,
    }


def prior_pick(prior: np.ndarray, label: np.ndarray) -> int:
    """The object id (0: none) on which ``prior`` [g, g] (a cell grid over the frame) puts the
    most mass, each object weighted by how much of each cell it covers in ``label`` [H, W]."""
    import torch
    import torch.nn.functional as F

    ids = [int(i) for i in np.unique(label) if i]
    if not ids:
        return 0
    lab = torch.from_numpy(label.astype(np.int64))
    cover = F.adaptive_avg_pool2d(torch.stack([(lab == i).float() for i in ids])[None], prior.shape[-2:])[0]
    mass = (cover * torch.as_tensor(np.ascontiguousarray(prior), dtype=torch.float32)).sum((1, 2))
    return ids[int(mass.argmax())] if float(mass.max()) > 0 else 0


def collect(checkpoint: str | None, *, seed: int, videos: int, window: int, presence_threshold: float | None,
            synthetic=None) -> tuple[list[tuple[str, str, str, float, int, int | None]], object]:
    """Runs the streaming engine on videos ``0 .. videos-1`` of ``seed`` (what bench-accuracy
    scores); returns every frame's (expression key, type, class, J, target area, prior on the
    target: 1 / 0, None where the target is not visible or the model has no prior) and the
    pipeline. The prior is read from the prompts the engine passes to ``track_step`` (the
    objects of a frame are decoded as one batch, in command order)."""
    from mpg_sam2_ros.core.evaluation import region_similarity
    from mpg_sam2_ros.core.pipeline import load_pipeline
    from mpg_sam2_ros.core.segment import run_streaming
    from mpg_sam2_ros.training.synthetic import SyntheticConfig, generate_video

    pipe = load_pipeline(None, [], checkpoint)
    model, priors = pipe.model, []
    decode = model.track_step

    def track_step(*args, **kwargs):  # the prompt's prior of each decoded frame
        prior = kwargs["prompt"].prior
        priors.append(None if prior is None else prior[:, 0].float().cpu().numpy())
        return decode(*args, **kwargs)

    model.track_step = track_step
    frames = []
    try:
        for index in range(videos):
            video = generate_video(seed, index, synthetic or SyntheticConfig())
            priors.clear()
            res = run_streaming(model, pipe.tokenizer, list(video.frames), [e.text for e in video.expressions],
                                window=window, policy={"presence_threshold": presence_threshold})
            if len(priors) != len(video.frames):
                raise RuntimeError(f"{len(priors)} decodes for {len(video.frames)} frames: objects not batched together")
            for k, expr in enumerate(video.expressions):
                for i, label in enumerate(video.labels):
                    mask, tgt = res.masks[k, i], label == expr.target
                    on = None
                    if priors[i] is not None and tgt.any():
                        on = int(prior_pick(priors[i][k], label) == expr.target)
                    frames.append((f"{video.name}/{k}", expr.type, classify(mask, label, expr.target),
                                   region_similarity(mask, tgt), int(tgt.sum()), on))
    finally:
        del model.track_step  # the bound method again
    return frames, pipe


def prior_on_target(frames: list[tuple]) -> dict:
    """{class: share of its frames whose prior is on the target} over frames with a visible target."""
    out = {}
    for c in ("on_target", "wrong_object", "missed"):
        on = [f[5] for f in frames if f[2] == c and f[5] is not None]
        if on:
            out[c] = {"frames": len(on), "prior_on_target": round(float(np.mean(on)), 4)}
    return out


def target_motions(seed: int, videos: int, synthetic=None) -> dict[str, str]:
    """{expression key (as ``collect`` names it): how its target moves} for the motion
    expressions of videos ``0 .. videos-1`` of ``seed``: the growing, shrinking and still
    twins differ in size over time only, which a translation flow cannot see."""
    from mpg_sam2_ros.training.synthetic import SyntheticConfig, generate_video

    kinds = {}
    for index in range(videos):
        video = generate_video(seed, index, synthetic or SyntheticConfig())
        motion = {o.oid: o.motion for o in video.objects}
        for k, expr in enumerate(video.expressions):
            if expr.type == "motion":
                kinds[f"{video.name}/{k}"] = motion[expr.target]
    return kinds


def by_target_motion(frames: list[tuple[str, str, str, float, int]], kinds: dict[str, str]) -> dict:
    """``summarise``'s J and frames by class for the motion expressions, by how the target moves."""
    out = {}
    for kind in sorted(set(kinds.values())):
        rows = [f for f in frames if kinds.get(f[0]) == kind]
        s = summarise(rows)
        out[kind] = {"expressions": s["expressions"], "J": s["J"], "frames_by_class": s["frames_by_class"]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="weights (default: the bundled model)")
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--videos", type=int, default=30)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--presence-threshold", type=float, default=None, help="default: the model's own")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()

    from mpg_sam2_ros.core.inference.engine import resolve_presence_threshold

    frames, pipe = collect(args.checkpoint, seed=args.seed, videos=args.videos, window=args.window,
                           presence_threshold=args.presence_threshold)
    out = {"checkpoint": args.checkpoint or "bundled", "weights": pipe.weights, "seed": args.seed,
           "videos": args.videos, "window": args.window,
           "presence_threshold": resolve_presence_threshold(args.presence_threshold, pipe.model),
           "all": summarise(frames)}
    out["all"]["prior_on_target"] = prior_on_target(frames)
    for t in sorted({f[1] for f in frames}):
        rows = [f for f in frames if f[1] == t]
        out[t] = summarise(rows) | {"prior_on_target": prior_on_target(rows)}
    kinds = target_motions(args.seed, args.videos)
    if kinds:
        out["motion_by_target_motion"] = by_target_motion(frames, kinds)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
