"""``mpg-sam2 train`` / ``torchrun --nproc_per_node N -m mpg_sam2_ros.training.train``.

A loop to read top to bottom: build (model, data, loss, optimiser), then per step: a global
batch of clips split over ranks and micro-batches, forward through the video path
(``forward.forward_clips``), loss (``losses.ReferringLoss``), backward, clip, AdamW step;
logging (progress bar, CSV, TensorBoard) and checkpoints on rank 0.

Checkpoints: ``OUT/checkpoints/step_NNNNNN.safetensors`` (the model, with its config in the
metadata: every command loads it) and ``step_NNNNNN.train.pt`` beside it (optimiser, loss
head, step, RNG states, the training config), read with ``weights_only=True``. ``--resume``
continues bit-for-bit: the data order is a function of (seed, step) only.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import pickle
import random
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..core.checkpoint import (CheckpointError, load_beit3_checkpoint, load_sam2_checkpoint, load_weights,
                               read_checkpoint_config, save_checkpoint)
from ..core.config import ConfigError, load_model_config, resolve_data_path
from ..core.modeling import MPGSAM2, build_model
from ..core.modeling.mask_prior import previous_frames
from ..core.pipeline import load_tokenizer
from ..core.text import TextTokenizer
from .config import TrainConfig, load_training_config
from .datasets import Augment, ClipDataset, MeViS, RefCOCO, RefDAVIS17, RefYouTubeVOS, ReferringSplit
from .forward import forward_clips, forward_prior, make_batch
from .losses import TERMS, MaskTextSimilarity, ReferringLoss, WordPresence, prior_dice_loss, prior_loss, region_mean

PRIOR_TERMS = ("prior", "prior_dice", "words", "motion_words")
LOG_TERMS = (*TERMS, *PRIOR_TERMS)
# what the prior stage trains (everything else is frozen there)
PRIOR_STAGE_MODULES = ("multimodal_encoder.", "mask_prior.")

# names of the new fusion modules (the official 5e-5 group: mask_linear, mask_product, vmtoken,
# mmfusion_module, objfusion_module, vtlfusion_module), in our module names
FUSION_PREFIXES = (
    "mask_prior.cls_proj.", "mask_prior.mask_head.", "mask_prior.coord_head.", "mask_prior.cls_attention.",
    "aggregator.object_global_layers.", "aggregator.object_local_layers.", "aggregator.pixel_layers.",
)


class TrainingError(RuntimeError):
    """The run cannot go on (non-finite loss, incompatible checkpoint, bad data)."""


# ----- distributed ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """torchrun's environment -> a process group (NCCL on CUDA, gloo on the CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as tdist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)  # NCCL collectives use the current device
    tdist.init_process_group(backend=backend)
    return Dist(rank=tdist.get_rank(), world=tdist.get_world_size(), local_rank=local_rank)


class DistributedStepSampler:
    """The items of each optimisation step: step k's global batch is a fixed slice of a
    per-epoch permutation (seed, epoch), and rank r takes every world-th item of it. The
    union over ranks is the same global batch a single process uses, so N processes and one
    process with the same global batch compute the same update. (torch's
    ``DistributedSampler`` interleaves per epoch instead, which makes a rank's batches
    differ from a single process's.)"""

    def __init__(self, n: int, global_batch: int, *, seed: int, rank: int = 0, world: int = 1,
                 groups: Sequence[Sequence[int]] | None = None, per_group: int = 1) -> None:
        if n < global_batch:
            raise TrainingError(f"the dataset has {n} items, fewer than the global batch of {global_batch}")
        if global_batch % world:
            raise TrainingError(f"the global batch {global_batch} does not split over {world} processes")
        self.n, self.batch, self.seed, self.rank, self.world = n, global_batch, seed, rank, world
        self.per_group, self.groups = per_group, [list(g) for g in groups or [] if g]
        if per_group > 1:
            if global_batch % per_group:
                raise TrainingError(f"the global batch {global_batch} is not a multiple of expressions_per_video={per_group}")
            if len(self.groups) < global_batch // per_group:
                raise TrainingError(f"{len(self.groups)} videos are fewer than the {global_batch // per_group} a batch needs")
            self.steps_per_epoch = len(self.groups) // (global_batch // per_group)
        else:
            self.steps_per_epoch = n // global_batch

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def items(self, step: int) -> list[int]:
        epoch, k = divmod(step, self.steps_per_epoch)
        perm = np.random.default_rng([self.seed, 7919, epoch]).permutation(len(self.groups) if self.per_group > 1 else self.n)
        if self.per_group == 1:
            return perm[k * self.batch : (k + 1) * self.batch][self.rank :: self.world].tolist()
        videos = self.batch // self.per_group
        chosen: list[int] = []
        for g in perm[k * videos : (k + 1) * videos].tolist():
            members = self.groups[g]  # a video's expressions: K distinct ones, or all and then repeats
            rng = np.random.default_rng([self.seed, 7919, epoch, g])
            if len(members) >= self.per_group:
                chosen += [members[j] for j in rng.choice(len(members), self.per_group, replace=False)]
            else:
                chosen += members + [members[j] for j in rng.choice(len(members), self.per_group - len(members))]
        return chosen[self.rank :: self.world]


class StepClips:
    """This rank's clips of each step, in ``sampler.items(step)`` order. With ``workers`` > 0 a
    thread pool reads and augments the clips of the next ``ahead`` steps while the current one
    trains (frame decoding and the augmentation's array work release the GIL; on the GPU the
    loop's own reading left the device idle most of the time). A clip depends on (seed, epoch,
    item) alone (``ClipDataset.clip``), so the batches are the same for any number of workers;
    a reading error surfaces at the step that needs the clip."""

    def __init__(self, dataset: ClipDataset, sampler: "DistributedStepSampler", workers: int, steps: int, ahead: int = 2):
        self.dataset, self.sampler, self.steps, self.ahead = dataset, sampler, steps, ahead
        self.pool = None
        self.pending: dict[int, list] = {}
        if workers > 0:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(workers, thread_name_prefix="clips")

    def _read(self, step: int) -> list:
        epoch = self.sampler.epoch_of(step)
        if self.pool is None:
            return [self.dataset.clip(i, epoch) for i in self.sampler.items(step)]
        return [self.pool.submit(self.dataset.clip, i, epoch) for i in self.sampler.items(step)]

    def get(self, step: int) -> list:
        if self.pool is None:
            return self._read(step)
        for s in range(step, min(step + 1 + self.ahead, self.steps)):
            if s not in self.pending:
                self.pending[s] = self._read(s)
        for s in [s for s in self.pending if s < step]:  # not asked for (a resumed loop starts later)
            for f in self.pending.pop(s):
                f.cancel()
        return [f.result() for f in self.pending.pop(step)]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
            self.pending.clear()


# ----- building ---------------------------------------------------------------------------
def build_split(cfg: TrainConfig, dist: Dist) -> ReferringSplit:
    d = cfg.data
    root = resolve_data_path(d.root)  # the given path, or found under the repo / installed share
    if d.format == "synthetic" and d.generate is not None and not (root / "meta_expressions.json").exists():
        root = Path(d.root)
        if dist.main:
            from .synthetic import SyntheticConfig, write_split

            g = d.generate
            print(f"[train] generating {g.videos} synthetic videos (seed {g.seed}) into {root}", file=sys.stderr, flush=True)
            workers = min(os.cpu_count() or 1, 16) if g.videos >= 64 else 1  # the bytes do not depend on it
            write_split(root, seed=g.seed, videos=g.videos, cfg=SyntheticConfig(frames=g.frames, width=g.width, height=g.height),
                        workers=workers)
        _barrier(dist)
    if not Path(root).exists():
        raise FileNotFoundError(f"dataset not found: {d.root} (data.root of the training config)")
    if d.format in ("synthetic", "ytvos"):
        return RefYouTubeVOS(root, meta=d.meta, frames_dir=d.frames_dir)
    if d.format == "davis":
        return RefDAVIS17(root, meta=d.meta, frames_dir=d.frames_dir)
    if d.format == "mevis":
        return MeViS(root)
    return RefCOCO(root, dataset=d.dataset, split=d.split, split_by=d.split_by)


def _barrier(dist: Dist) -> None:
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()


def build_model_for_training(cfg: TrainConfig) -> tuple[MPGSAM2, TextTokenizer]:
    if cfg.init and Path(cfg.init).suffix == ".safetensors" and cfg.model in ("", "checkpoint"):
        mcfg = read_checkpoint_config(cfg.init)
    else:
        mcfg = load_model_config(cfg.model, list(cfg.model_overrides))
    if cfg.tokenizer:
        mcfg = dataclasses.replace(mcfg, tokenizer=cfg.tokenizer)
    torch.manual_seed(cfg.seed)
    model = build_model(mcfg)
    if cfg.sam2_checkpoint:
        load_sam2_checkpoint(model, cfg.sam2_checkpoint)
    if cfg.beit3_checkpoint:
        load_beit3_checkpoint(model, cfg.beit3_checkpoint)
    if cfg.init:
        try:
            if cfg.init_modules:
                load_modules(model, cfg.init, cfg.init_modules)
            else:
                load_weights(model, cfg.init)
        except CheckpointError as exc:
            raise TrainingError(f"cannot start from {cfg.init}: {_one_line(exc)}") from exc
    for name, p in model.named_parameters():
        trained = not any(name.startswith(f) for f in cfg.freeze)
        if cfg.stage == "prior":
            trained = trained and name.startswith(PRIOR_STAGE_MODULES)
        p.requires_grad_(trained)
    if cfg.stage == "prior" and not mcfg.mpg.enabled:
        raise TrainingError("stage: prior trains the MPG's mask prior, and this model has the MPG switched off (mpg.enabled)")
    return model, load_tokenizer(mcfg)


def load_modules(model: MPGSAM2, path: str, prefixes: Sequence[str]) -> int:
    """The model's tensors under ``prefixes`` from the checkpoint at ``path`` (every one of them
    must be there, with its shape); the checkpoint's other tensors are ignored and the model's
    other tensors keep their values. Returns the number loaded."""
    from ..core.checkpoint import read_state_dict

    state = read_state_dict(path)
    own = model.state_dict()
    wanted = {k for k in own if k.startswith(tuple(prefixes))}
    if not wanted:
        raise CheckpointError(f"init_modules {list(prefixes)} name no tensor of the model")
    missing = sorted(wanted - set(state))
    mismatched = sorted(k for k in wanted & set(state) if state[k].shape != own[k].shape)
    if missing or mismatched:
        raise CheckpointError(f"{path} lacks {len(missing)} of the model's tensors under {list(prefixes)} "
                              f"(e.g. {missing[:3]}) and has {len(mismatched)} of another shape (e.g. {mismatched[:3]})")
    model.load_state_dict({k: state[k] for k in wanted}, strict=False)
    return len(wanted)


def parameter_groups(model: MPGSAM2, loss: ReferringLoss, cfg: TrainConfig) -> list[dict]:
    fusion, base = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (fusion if name.startswith(FUSION_PREFIXES) else base).append(p)
    base += [p for p in loss.parameters() if p.requires_grad]
    o = cfg.optim
    return [{"params": base, "lr": o.lr, "name": "base"}, {"params": fusion, "lr": o.lr_fusion, "name": "fusion"}]


# ----- checkpoints -----------------------------------------------------------------------
def _rng_state(device: str = "cpu") -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].tolist(),
             "numpy_pos": int(np.random.get_state()[2]), "python": list(random.getstate()[1])}
    if torch.device(device).type == "cuda":  # dropout on the GPU draws from the device's generator
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: str = "cpu") -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.device(device).type == "cuda":
        # only rank 0 saves RNG states, so under DDP every rank resumes with rank 0's generators (ranks whose
        # dropout drew other shapes, e.g. other text lengths, had drifted from them: not bit-for-bit there)
        torch.cuda.set_rng_state(state["cuda"], device)


def _one_line(exc: Exception) -> str:
    """load_strict's multi-line report as one line (the CLI prints one error line)."""
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def save_training_checkpoint(out: Path, step: int, model, loss, optimizer, cfg: TrainConfig, keep: int,
                             device: str = "cpu") -> Path:
    ck = out / "checkpoints"
    path = ck / f"step_{step:06d}.safetensors"
    save_checkpoint(model, path, extra={"step": str(step), "training_config": json.dumps(cfg.to_dict())})
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "loss": loss.state_dict(), "rng": _rng_state(device),
                "config": json.dumps(cfg.to_dict())}, path.with_suffix(".train.pt"))
    old = sorted(ck.glob("step_*.safetensors"))[:-keep] if keep > 0 else []
    for p in old:
        p.unlink(missing_ok=True)
        p.with_suffix(".train.pt").unlink(missing_ok=True)
    return path


def heads_path(model_path: str | os.PathLike) -> Path:
    """Where a run's final ``model.safetensors`` keeps its training-only heads: ``model.heads.pt``."""
    return Path(model_path).with_suffix(".heads.pt")


def restore_heads(loss: "ReferringLoss", init: str | os.PathLike) -> str:
    """Start the loss's training-only modules (the ``words`` / ``motion_words`` heads, L_sim's
    text2one) from the run that made ``init``: from ``<init>.heads.pt`` (a run's final model) or
    from the ``loss`` entry of ``<init>.train.pt`` (a checkpoint). Without them a run that starts
    from a trained model starts these heads from scratch, and their first, large losses (``words``
    sums a BCE over the vocabulary: ~500 at the start) take most of the clipped gradient for the
    first hundred steps. Tensors of another shape (another vocabulary) or that the file lacks keep
    their fresh values. Returns one line saying what was restored."""
    own = loss.state_dict()
    if not own:
        return ""
    side = next((p for p in (heads_path(init), Path(init).with_suffix(".train.pt")) if p.is_file()), None)
    if side is None:
        return f"{len(own)} training-head tensors start fresh ({Path(init).name} has no .heads.pt or .train.pt beside it)"
    try:
        state = torch.load(side, map_location="cpu", weights_only=True)["loss"]
    except (KeyError, RuntimeError, OSError, pickle.UnpicklingError) as exc:
        raise TrainingError(f"cannot read the training heads in {side}: {_one_line(exc)}") from exc
    take = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    loss.load_state_dict(take, strict=False)
    fresh = sorted(set(own) - set(take))
    return (f"{len(take)} of {len(own)} training-head tensors restored from {side.name}"
            + (f"; fresh: {', '.join(fresh)}" if fresh else ""))


def resume_from(path: Path, model, loss, optimizer, device: str = "cpu") -> int:
    """Load a training checkpoint (model + sidecar); returns the step to continue from."""
    side = path.with_suffix(".train.pt")
    if not path.is_file() or not side.is_file():
        raise TrainingError(f"cannot resume: {path} and its sidecar {side.name} must both exist")
    try:
        load_weights(model, path)
        state = torch.load(side, map_location="cpu", weights_only=True)
        loss.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"])
    except (CheckpointError, KeyError, RuntimeError, ValueError) as exc:
        raise TrainingError(f"cannot resume from {path}: {_one_line(exc)}") from exc
    _set_rng_state(state["rng"], device)
    return int(state["step"])


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted((out / "checkpoints").glob("step_*.safetensors"))
    return found[-1] if found else None


# ----- the loop ----------------------------------------------------------------------------
def train(cfg: TrainConfig, *, out: str | os.PathLike, resume: str | None = None, device: str = "cpu",
          progress: bool = True) -> dict:
    """Run ``cfg.steps`` optimisation steps; returns a summary (also OUT/summary.json)."""
    dist = init_distributed(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("[train] warning: CUDA is not available, training on the CPU", file=sys.stderr)
        device = "cpu"
    if device.startswith("cuda") and dist.world > 1:
        device = f"cuda:{dist.local_rank}"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(out)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    model, tokenizer = build_model_for_training(cfg)
    model.to(device).train()
    similarity = None
    if cfg.loss.similarity > 0 and cfg.stage == "full":
        proj = model.aggregator.text_proj if model.aggregator is not None and model.aggregator.pixel_global else None
        similarity = MaskTextSimilarity(model.config.beit3.embed_dim, model.hidden_dim, text_proj=proj)
    # the prior stage computes no mask term: the mask losses' weights (and L_sim's module) stay unused
    loss_cfg = cfg.loss if cfg.stage == "full" else dataclasses.replace(cfg.loss, similarity=0.0)
    words = None
    if cfg.loss.words > 0:
        words = WordPresence(model.config.beit3.embed_dim, model.config.beit3.vocab_size, tokenizer.special_ids)
    motion_words = None
    if cfg.loss.motion_words > 0:
        if model.mask_prior.motion_stem is None:
            raise TrainingError("loss.motion_words trains the MPG's motion stem, and this model has none (mpg.motion_stem)")
        motion_words = WordPresence(model.config.beit3.embed_dim, model.config.beit3.vocab_size, tokenizer.special_ids)
    loss_fn = ReferringLoss(loss_cfg, similarity, words, motion_words)
    if cfg.init and cfg.init_heads and Path(cfg.init).suffix == ".safetensors":
        restored = restore_heads(loss_fn, cfg.init)
        if restored and dist.main:
            print(f"[train] init: {restored}", file=sys.stderr)
    loss_fn.to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model, loss_fn, cfg), betas=tuple(cfg.optim.betas),
                                  weight_decay=cfg.optim.weight_decay)
    split = build_split(cfg, dist)
    augment = Augment(hflip=cfg.data.augment.hflip, photometric=cfg.data.augment.photometric)
    dataset = ClipDataset(split, num_frames=cfg.data.num_frames, sampler=cfg.data.sampler, augment=augment, seed=cfg.seed,
                          expression_types=cfg.data.expression_types)
    global_batch = cfg.batch_size * cfg.grad_accum
    groups = None
    if cfg.data.expressions_per_video > 1:
        by_video: dict[str, list[int]] = {}
        for i in range(len(dataset)):
            by_video.setdefault(dataset.item(i)[0].video, []).append(i)
        groups = list(by_video.values())
    sampler = DistributedStepSampler(len(dataset), global_batch, seed=cfg.seed, rank=dist.rank, world=dist.world,
                                     groups=groups, per_group=cfg.data.expressions_per_video)
    start = 0
    if resume:
        path = latest_checkpoint(out) if resume == "auto" else Path(resume)
        if path is None:
            raise TrainingError(f"--resume auto: no checkpoint under {out / 'checkpoints'}")
        start = resume_from(path, model, loss_fn, optimizer, device)
    step_module: torch.nn.Module = ClipStep(model, loss_fn, causal=cfg.causal, stage=cfg.stage)
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        step_module = DistributedDataParallel(step_module, device_ids=[dist.local_rank] if device.startswith("cuda") else None,
                                              find_unused_parameters=True)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    use_bf16 = cfg.precision == "bf16"
    out.mkdir(parents=True, exist_ok=True)
    writer = csv_file = None
    if dist.main:
        (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        new_log = not (out / "log.csv").exists() or start == 0
        csv_file = open(out / "log.csv", "w" if new_log else "a", newline="")
        writer = csv.writer(csv_file)
        if new_log:
            writer.writerow(["step", "epoch", "total", *LOG_TERMS, "lr", "grad_norm", "seconds", "clips_per_s"])
        tb = _tensorboard(out)
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=start, desc=cfg.name, unit="step", disable=not (progress and dist.main))
    last_good = latest_checkpoint(out) if dist.main else None
    loader = StepClips(dataset, sampler, cfg.data.workers, cfg.steps)
    t_start = time.perf_counter()
    window: dict[str, float] = {}
    step = start
    try:
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            _warmup(optimizer, cfg, step)
            clips = loader.get(step)
            micro = [clips[i :: cfg.grad_accum] for i in range(cfg.grad_accum)]
            optimizer.zero_grad(set_to_none=True)
            terms = {k: 0.0 for k in ("total", *LOG_TERMS)}
            for j, chunk in enumerate(micro):
                batch = make_batch(chunk, model, tokenizer).to(device)
                sync = j == len(micro) - 1 or dist.world == 1
                with step_module.no_sync() if not sync else _null():
                    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=use_bf16):
                        losses = step_module(batch)
                    # mean over the global batch: every rank's share, then DDP averages over ranks
                    (losses["total"] * len(chunk) * dist.world / global_batch).backward()
                for k in terms:
                    terms[k] += float(losses[k].detach()) * len(chunk) / (global_batch / dist.world)
            terms = _all_mean(terms, dist, device)  # the global batch's mean on every rank (and in the log)
            total = terms["total"]
            if not math.isfinite(total):
                raise TrainingError(f"loss is {total} at step {step + 1}; stopped. Last good checkpoint: {last_good or 'none'}")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)) if cfg.optim.grad_clip > 0 else 0.0
            optimizer.step()
            dt = time.perf_counter() - t0
            for k, v in terms.items():
                window[k] = window.get(k, 0.0) + v
            window["n"] = window.get("n", 0) + 1
            bar.update(1)
            bar.set_postfix(loss=f"{terms['total']:.3f}", clips_s=f"{global_batch / dt:.1f}")
            if dist.main and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
                n = window.pop("n")
                avg = {k: v / n for k, v in window.items()}
                window.clear()
                writer.writerow([step + 1, sampler.epoch_of(step), *(round(avg[k], 6) for k in ("total", *LOG_TERMS)),
                                 optimizer.param_groups[0]["lr"], round(grad_norm, 4), round(time.perf_counter() - t_start, 1),
                                 round(global_batch / dt, 3)])
                csv_file.flush()
                if tb is not None:
                    for k, v in avg.items():
                        tb.add_scalar(f"loss/{k}", v, step + 1)
                    tb.add_scalar("lr/base", optimizer.param_groups[0]["lr"], step + 1)
                    tb.add_scalar("grad_norm", grad_norm, step + 1)
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                if dist.main:
                    last_good = save_training_checkpoint(out, step + 1, model, loss_fn, optimizer, cfg, cfg.keep_checkpoints,
                                                         device)
                _barrier(dist)
    finally:
        loader.close()
        bar.close()
        if dist.main:
            csv_file.close()
            if tb is not None:
                tb.close()
    summary = {"steps": cfg.steps, "started_at_step": start, "seconds": round(time.perf_counter() - t_start, 1),
               "checkpoint": str(last_good) if last_good else None, "world_size": dist.world, "items": len(dataset),
               "problems": split.problems}
    if dist.main and last_good is not None:
        final = out / "model.safetensors"
        save_checkpoint(model, final, extra={"step": str(cfg.steps), "training_config": json.dumps(cfg.to_dict())})
        heads = loss_fn.state_dict()
        if heads:
            torch.save({"loss": heads}, heads_path(final))
        summary["model"] = str(final)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.destroy_process_group()
    return summary


class ClipStep(torch.nn.Module):
    """Forward + loss of one micro-batch as one module, so DDP sees (and averages the
    gradients of) the model and the loss's own head (``text2one``) together."""

    def __init__(self, model: MPGSAM2, loss: ReferringLoss, *, causal: bool, stage: str = "full") -> None:
        super().__init__()
        self.model, self.loss, self.causal, self.stage = model, loss, causal, stage

    def _prior_terms(self, prior: torch.Tensor | None, cls: torch.Tensor | None, batch) -> dict:
        """The terms on BEiT-3 and the MPG: prior, prior_dice, words and motion_words, and their
        weighted sum."""
        w = self.loss.config
        target = batch.target
        zero = torch.zeros((), device=target.device)
        terms = {k: zero for k in PRIOR_TERMS}
        if prior is not None:
            if w.prior > 0:
                terms["prior"] = prior_loss(prior, target)
            if w.prior_dice > 0:
                terms["prior_dice"] = prior_dice_loss(prior, target)
        if w.words > 0 and cls is not None:
            terms["words"] = self.loss.words(cls, batch.ids, batch.padding)
        if w.motion_words > 0 and batch.mm.shape[1] > 1:
            terms["motion_words"] = self._motion_words(batch)
        terms["weighted"] = sum(getattr(w, k) * terms[k] for k in PRIOR_TERMS)
        return terms

    def _motion_words(self, batch) -> torch.Tensor:
        """``loss.motion_words``: the motion stem's features of frames 1..T-1 against their
        previous frames, averaged over the target's cells, name the command's words."""
        b, t = batch.mm.shape[:2]
        motion = self.model.mask_prior.pixel_motion(batch.mm.flatten(0, 1), previous_frames(batch.mm).flatten(0, 1))
        pooled, seen = region_mean(motion.reshape(b, t, *motion.shape[1:]), batch.target)
        if not bool(seen.any()):
            return torch.zeros((), device=batch.mm.device)
        return self.loss.motion_words(pooled[seen][:, None], batch.ids[seen], batch.padding[seen])

    def forward(self, batch) -> dict:
        """Mean over the B clips of the per-clip loss terms."""
        if self.stage == "prior":
            prior, cls = forward_prior(self.model, batch, causal=self.causal, with_cls=True)
            terms = self._prior_terms(prior, cls, batch)
            zero = torch.zeros((), device=batch.target.device)
            return {**{k: zero for k in TERMS}, **{k: terms[k] for k in PRIOR_TERMS},
                    "total": terms["weighted"]}
        o = forward_clips(self.model, batch, causal=self.causal)
        b = batch.target.shape[0]
        acc: dict = {}
        for i in range(b):
            terms = self.loss(multimask_logits=o.multimask[i], single_logits=o.single[i], iou_pred=o.ious[i],
                              object_score_logits=o.object_score_logits[i], target=batch.target[i],
                              text_tokens=o.text_tokens[i] if self.loss.config.similarity > 0 else None)
            for k, v in terms.items():
                acc[k] = acc.get(k, 0) + v / b
        terms = self._prior_terms(o.prior, o.cls, batch)
        acc.update({k: terms[k] for k in PRIOR_TERMS})
        acc["total"] = acc["total"] + terms["weighted"]
        return acc


def _all_mean(values: dict[str, float], dist: Dist, device: str = "cpu") -> dict[str, float]:
    """Each value's mean over the ranks (one all-reduce, on the training device: NCCL has no CPU tensors)."""
    if dist.world == 1:
        return values
    import torch.distributed as tdist

    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    tdist.all_reduce(t)
    return {k: float(v) / dist.world for k, v in zip(values, t.cpu().tolist())}


def lr_scale(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over ``optim.warmup_steps``, then constant or cosine decay to
    ``optim.min_lr_ratio`` at the last step."""
    o = cfg.optim
    w = o.warmup_steps
    if w > 0 and step < w:
        return (step + 1) / w
    if o.schedule == "cosine":
        span = max(1, cfg.steps - 1 - w)
        t = min(1.0, max(0.0, (step - w) / span))
        return o.min_lr_ratio + (1.0 - o.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
    return 1.0


def _warmup(optimizer, cfg: TrainConfig, step: int) -> None:
    scale = lr_scale(cfg, step)
    for g in optimizer.param_groups:
        g["lr"] = scale * (cfg.optim.lr if g.get("name") == "base" else cfg.optim.lr_fusion)


_null = contextlib.nullcontext


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is in requirements.lock
        print("[train] warning: tensorboard is not installed; logging to log.csv only", file=sys.stderr)
        return None
    return SummaryWriter(str(out / "tensorboard"))


# ----- command line ---------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="training recipe: config/training/NAME.yaml or a YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set steps=100 --set data.num_frames=8 (repeatable)")
    p.add_argument("--out", required=True, help="run folder: checkpoints/, log.csv, tensorboard/, model.safetensors")
    p.add_argument("--resume", help="continue from a checkpoint (step_NNNNNN.safetensors) or 'auto' (the latest in OUT)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (torchrun: each rank takes its local GPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_from_args(args: argparse.Namespace) -> int:
    cfg = load_training_config(args.config, args.overrides)
    summary = train(cfg, out=args.out, resume=args.resume, device=args.device, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpg_sam2_ros.training.train", description="train MPG-SAM 2")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except (ConfigError, CheckpointError, TrainingError, FileNotFoundError, ValueError) as exc:
        print(f"mpg-sam2 train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
