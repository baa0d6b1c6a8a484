"""``mpg-sam2 train`` end to end on a tiny synthetic split (4 videos of 6 frames at 96 x 72,
clips of 3 frames, the 1.8M-parameter ``cpu_small``): bit-for-bit resume, DDP on gloo against
one process, a non-finite loss, bad input, the run folder's outputs, and the causal forward."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mpg_sam2_ros import cli
from mpg_sam2_ros.core.checkpoint import save_checkpoint
from mpg_sam2_ros.core.config import load_model_config
from mpg_sam2_ros.core.modeling import build_model
from mpg_sam2_ros.core.pipeline import load_pipeline, load_tokenizer
from mpg_sam2_ros.training import train as train_mod
from mpg_sam2_ros.training.config import load_training_config
from mpg_sam2_ros.training.forward import ClipBatch, forward_clips
from mpg_sam2_ros.training.losses import TERMS, LossConfig, ReferringLoss
from mpg_sam2_ros.training.synthetic import SyntheticConfig, write_split

REPO = Path(__file__).resolve().parents[1]

# every dropout of cpu_small: MPG, HGA and SAM 2's memory attention (0.1 in sam2.1_hiera_t)
NO_DROPOUT = [
    "mpg.dropout=0", "hga.dropout=0",
    "sam2.overrides.memory_attention.layer.dropout=0",
    "sam2.overrides.memory_attention.layer.self_attention.dropout=0",
    "sam2.overrides.memory_attention.layer.cross_attention.dropout=0",
]


def _recipe(path: Path, split: Path, **changes) -> Path:
    """A small recipe YAML (dropout as configured in cpu_small: 0.1)."""
    data = {
        "name": "tiny", "model": "cpu_small",
        "data": {"format": "synthetic", "root": str(split), "generate": None, "num_frames": 3, "sampler": "official",
                 "augment": {"hflip": 0.5, "photometric": True}},
        "freeze": [], "optim": {"lr": 1.0e-3, "lr_fusion": 1.0e-3, "warmup_steps": 2},
        "steps": 4, "batch_size": 2, "checkpoint_every": 2, "log_every": 2, "keep_checkpoints": 5,
        "threads": 1, "seed": 0,
    }
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return path


def _train(*args: str) -> int:
    return cli.main(["train", *args, "--quiet"])


def _load_train_pt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_weights(a: Path, b: Path) -> None:
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys()
    differ = [k for k in x if not torch.equal(x[k], y[k])]
    assert not differ, f"{len(differ)} of {len(x)} tensors differ between {a} and {b}, e.g. {differ[:3]}"


def _assert_same_tree(a, b, where="") -> None:
    """Nested dicts / lists of tensors and plain values, compared exactly."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            _assert_same_tree(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_same_tree(u, v, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def _assert_same_training_state(a: Path, b: Path) -> None:
    """Optimiser (AdamW moments and step counters), loss head (text2one), RNG states."""
    x, y = _load_train_pt(a), _load_train_pt(b)
    assert x["step"] == y["step"]
    for key in ("optimizer", "loss", "rng"):
        _assert_same_tree(x[key], y[key], key)


def _log_rows(out: Path) -> tuple[list[str], list[dict]]:
    with open(out / "log.csv", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _one_line_error(err: str, *needles: str) -> None:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    assert lines[0].startswith("mpg-sam2 train: error: "), lines[0]
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()  # one thread on a shared CPU (the recipes say threads: 1 too)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_split") / "ytvos"
    write_split(root, seed=3, videos=4, cfg=SyntheticConfig(frames=6, width=96, height=72))
    return root


@pytest.fixture(scope="module")
def straight(split, tmp_path_factory) -> tuple[Path, Path]:
    """(recipe, run folder) of 4 steps in one go, checkpoints at steps 2 and 4."""
    tmp = tmp_path_factory.mktemp("straight")
    recipe = _recipe(tmp / "tiny.yaml", split)
    n = torch.get_num_threads()
    try:
        assert _train("--config", str(recipe), "--out", str(tmp / "run")) == 0
    finally:
        torch.set_num_threads(n)
    return recipe, tmp / "run"


# ----- 1. resume ---------------------------------------------------------------------------
def test_resume_auto_is_bit_for_bit(straight, tmp_path):
    """2 steps, then --resume auto in a fresh process for steps 3-4 == 4 steps straight: every
    weight, the AdamW state, the loss head and the RNG states (dropout 0.1 is on throughout)."""
    recipe, run_a = straight
    run_b = tmp_path / "run"
    assert _train("--config", str(recipe), "--out", str(run_b), "--set", "steps=2") == 0
    assert sorted(p.name for p in (run_b / "checkpoints").iterdir()) == ["step_000002.safetensors", "step_000002.train.pt"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "mpg_sam2_ros.cli", "train", "--config", str(recipe), "--out", str(run_b),
                           "--resume", "auto", "--quiet"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["started_at_step"] == 2
    _assert_same_weights(run_a / "model.safetensors", run_b / "model.safetensors")
    _assert_same_weights(run_a / "checkpoints/step_000004.safetensors", run_b / "checkpoints/step_000004.safetensors")
    _assert_same_training_state(run_a / "checkpoints/step_000004.train.pt", run_b / "checkpoints/step_000004.train.pt")
    # the log goes on where it stopped, with the same losses
    _, rows_a = _log_rows(run_a)
    _, rows_b = _log_rows(run_b)
    assert [r["step"] for r in rows_b] == ["2", "4"]
    assert [r["total"] for r in rows_b] == [r["total"] for r in rows_a]


def test_resume_without_rng_restore_differs(straight, tmp_path, monkeypatch):
    """The control for the test above: dropout really draws random numbers, and resuming
    without restoring the RNG states gives other weights (so bit-for-bit is not vacuous)."""
    recipe, run_a = straight
    monkeypatch.setattr(train_mod, "_set_rng_state", lambda *a, **k: None)
    assert _train("--config", str(recipe), "--out", str(tmp_path / "run"),
                  "--resume", str(run_a / "checkpoints/step_000002.safetensors")) == 0
    a, b = load_file(str(run_a / "model.safetensors")), load_file(str(tmp_path / "run/model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_reading_ahead_in_threads_trains_the_same_weights(straight, tmp_path, monkeypatch):
    """data.workers=2: threads read the clips of the next steps while a step trains; the
    weights, training state and log equal the straight run's (which read in the loop). A
    control: clips drawn with another epoch differ, so the comparison can fail."""
    recipe, run_a = straight
    reads = []
    clip = train_mod.ClipDataset.clip

    def counted(self, i, epoch):
        reads.append(threading.current_thread().name)
        return clip(self, i, epoch)

    monkeypatch.setattr(train_mod.ClipDataset, "clip", counted)
    run_b = tmp_path / "run"
    assert _train("--config", str(recipe), "--out", str(run_b), "--set", "data.workers=2") == 0
    assert reads and all(name.startswith("clips") for name in reads)  # every clip came from the pool
    _assert_same_weights(run_a / "model.safetensors", run_b / "model.safetensors")
    _assert_same_training_state(run_a / "checkpoints/step_000004.train.pt", run_b / "checkpoints/step_000004.train.pt")
    assert [r["total"] for r in _log_rows(run_b)[1]] == [r["total"] for r in _log_rows(run_a)[1]]
    monkeypatch.setattr(train_mod.ClipDataset, "clip", lambda self, i, epoch: clip(self, i, epoch + 1))
    run_c = tmp_path / "control"
    assert _train("--config", str(recipe), "--out", str(run_c), "--set", "data.workers=2") == 0
    a, c = load_file(str(run_a / "model.safetensors")), load_file(str(run_c / "model.safetensors"))
    assert any(not torch.equal(a[k], c[k]) for k in a)


# ----- 3. non-finite loss --------------------------------------------------------------------
def test_nan_loss_stops_with_last_good_checkpoint_intact(straight, tmp_path, monkeypatch, capsys):
    """A NaN loss at step 3 stops the run (exit 2, one line naming step 3 and the step-2
    checkpoint); that checkpoint equals the straight run's, and resuming from it (explicit
    path) finishes the run bit-for-bit."""
    recipe, run_a = straight
    run = tmp_path / "run"
    forward = ReferringLoss.forward
    calls = {"n": 0}

    def nan_from_step_3(self, **kw):
        out = forward(self, **kw)
        calls["n"] += 1
        if calls["n"] > 4:  # 2 clips per step: steps 1-2 are fine
            out["total"] = out["total"] * float("nan")
        return out

    monkeypatch.setattr(ReferringLoss, "forward", nan_from_step_3)
    rc = _train("--config", str(recipe), "--out", str(run))
    err = capsys.readouterr().err
    assert rc == 2
    last_good = run / "checkpoints/step_000002.safetensors"
    _one_line_error(err, "loss is nan at step 3", f"Last good checkpoint: {last_good}")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000002.safetensors", "step_000002.train.pt"]
    assert not (run / "model.safetensors").exists()
    _assert_same_weights(last_good, run_a / "checkpoints/step_000002.safetensors")
    _assert_same_training_state(last_good.with_suffix(".train.pt"), run_a / "checkpoints/step_000002.train.pt")

    monkeypatch.undo()
    assert _train("--config", str(recipe), "--out", str(run), "--resume", str(last_good)) == 0
    _assert_same_weights(run_a / "model.safetensors", run / "model.safetensors")


# ----- 2. DDP ------------------------------------------------------------------------------
# torchrun runs this script per rank: it runs ``mpg_sam2_ros.training.train`` as ``__main__``
# (what ``-m`` does) and then writes the rank's final weights, so ranks can be compared
# without a debug hook in the trainer.
DDP_DUMP = '''
import os, runpy, sys
import mpg_sam2_ros.core.modeling as modeling
from safetensors.torch import save_file

built, build = [], modeling.build_model
def build_model(*args, **kwargs):
    built.append(build(*args, **kwargs))
    return built[-1]
modeling.build_model = build_model  # train.py imports it when runpy executes the module
dump, sys.argv = sys.argv[1], ["mpg_sam2_ros.training.train", *sys.argv[2:]]
code = 0
try:
    runpy.run_module("mpg_sam2_ros.training.train", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
assert len(built) == 1
state = {k: v.detach().contiguous() for k, v in built[0].state_dict().items()}
save_file(state, os.path.join(dump, "rank%s.safetensors" % os.environ["RANK"]))
sys.exit(code)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gloo_two_ranks_match_one_process(split, tmp_path):
    """torchrun, 2 CPU ranks, global batch 4 (batch_size * grad_accum is the global batch,
    2 clips per rank), 2 steps: both ranks end with identical weights (rank 0's saved model
    too), equal to one process with the same global batch, and log.csv holds the global mean."""
    recipe = _recipe(tmp_path / "ddp.yaml", split, steps=2, batch_size=4, log_every=1, model_overrides=NO_DROPOUT)
    script = tmp_path / "ddp_dump.py"
    script.write_text(DDP_DUMP)
    dump = tmp_path / "dump"
    dump.mkdir()
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
         str(script), str(dump), "--config", str(recipe), "--out", str(tmp_path / "ddp"), "--quiet"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads(proc.stdout[proc.stdout.index("{"):])["world_size"] == 2
    _assert_same_weights(dump / "rank0.safetensors", dump / "rank1.safetensors")
    _assert_same_weights(dump / "rank0.safetensors", tmp_path / "ddp/model.safetensors")

    # one process, same global batch: as the same two micro-batches (rank r's clips are
    # items r::2 of the step's global batch, like micro-batch r with grad_accum 2) ...
    assert _train("--config", str(recipe), "--out", str(tmp_path / "accum"), "--set", "batch_size=2", "--set", "grad_accum=2") == 0
    # ... and as one batch of 4
    assert _train("--config", str(recipe), "--out", str(tmp_path / "single")) == 0
    ddp = load_file(str(dump / "rank0.safetensors"))
    init = build_model(load_model_config("cpu_small", NO_DROPOUT)).state_dict()
    for name, other_atol in (("accum", 1e-5), ("single", 1e-4)):
        other = load_file(str(tmp_path / name / "model.safetensors"))
        moved = 0
        for k, v in ddp.items():
            scale = max(1.0, float(v.abs().max()))
            # "single": AdamW's first steps are ~ lr * sign(grad), so a parameter whose true
            # gradient is 0 (attention key biases) turns the float noise of another batching
            # into updates of ~1e-5; a real mismatch moves weights by ~lr = 1e-3
            torch.testing.assert_close(v, other[k], rtol=0, atol=other_atol * scale, msg=lambda m: f"{name} {k}: {m}")
            moved += not torch.equal(other[k], init[k])
        assert moved > 100, "training did not move the weights"

    # the logged losses and gradient norm are the global batch's (not rank 0's half)
    _, rows_ddp = _log_rows(tmp_path / "ddp")
    _, rows_single = _log_rows(tmp_path / "single")
    assert [r["step"] for r in rows_ddp] == ["1", "2"]
    for r, s in zip(rows_ddp, rows_single):
        for k in ("total", *TERMS, "grad_norm"):
            assert math.isclose(float(r[k]), float(s[k]), rel_tol=1e-4, abs_tol=1e-5), (r["step"], k, r[k], s[k])


# ----- 4. bad input ----------------------------------------------------------------------------
def test_bad_input_one_line_errors(split, tmp_path, capsys):
    """Exit 2 and one line naming the problem, no traceback."""
    recipe = _recipe(tmp_path / "ok.yaml", split)
    out = str(tmp_path / "out")

    def check(args, *needles):
        rc = _train(*args)
        captured = capsys.readouterr()
        assert rc == 2, captured.err
        assert captured.out == ""
        _one_line_error(captured.err, *needles)

    check(["--config", "no_such_recipe", "--out", out], "training config not found: no_such_recipe", "synthetic_cpu_small")
    check(["--config", str(recipe), "--out", out, "--set", "optim.lrr=1"], "unknown training config key 'optim.lrr'")
    typo = tmp_path / "typo.yaml"
    typo.write_text(recipe.read_text().replace("num_frames:", "num_frame:"))
    check(["--config", str(typo), "--out", out], "unknown training config key 'data.num_frame'")
    check(["--config", str(recipe), "--out", out, "--set", "steps=ten"], "steps must be an integer", "'ten'")
    check(["--config", str(recipe), "--out", out, "--set", "data.workers=-1"], "data.workers must be an int >= 0", "-1")
    check(["--config", str(recipe), "--out", out, "--set", "model_overrides=[hga.ffn_dimm=64]"], "hga.ffn_dimm")
    missing = tmp_path / "no_such_split"
    check(["--config", str(recipe), "--out", out, "--set", f"data.root={missing}"], "dataset not found", str(missing))
    check(["--config", str(recipe), "--out", out, "--resume", "auto"], "--resume auto: no checkpoint under")

    # a real checkpoint pair (weights + sidecar) of a model with other widths
    other_cfg = load_model_config("cpu_small", ["hga.ffn_dim=64"])
    other = build_model(other_cfg)
    other_ckpt = train_mod.save_training_checkpoint(
        tmp_path / "other", 2, other, ReferringLoss(LossConfig(similarity=0)), torch.optim.AdamW(other.parameters()),
        load_training_config(str(recipe)), keep=1)
    check(["--config", str(recipe), "--out", out, "--resume", str(other_ckpt)],
          f"cannot resume from {other_ckpt}", "shape mismatches")
    lone = tmp_path / "lone" / "step_000002.safetensors"
    save_checkpoint(other, lone)  # no .train.pt beside it
    check(["--config", str(recipe), "--out", out, "--resume", str(lone)], str(lone), "step_000002.train.pt")


# ----- 5. outputs ------------------------------------------------------------------------------
def test_run_folder_outputs(straight):
    """log.csv (step, total, every loss term; a row per log interval), TensorBoard events,
    step checkpoints with sidecars, and a model.safetensors that load_pipeline rebuilds."""
    _, run = straight
    header, rows = _log_rows(run)
    assert header[:3] == ["step", "epoch", "total"] and set(TERMS) <= set(header)
    assert [r["step"] for r in rows] == ["2", "4"]  # log_every 2 over 4 steps
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("total", *TERMS))

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    logged = acc.Scalars("loss/total")
    assert [e.step for e in logged] == [2, 4]
    assert [round(e.value, 6) for e in logged] == pytest.approx([float(r["total"]) for r in rows], abs=1e-5)
    assert {f"loss/{t}" for t in TERMS} <= set(acc.Tags()["scalars"])

    ck = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ck == ["step_000002.safetensors", "step_000002.train.pt", "step_000004.safetensors", "step_000004.train.pt"]
    assert _load_train_pt(run / "checkpoints/step_000004.train.pt")["step"] == 4
    _assert_same_weights(run / "model.safetensors", run / "checkpoints/step_000004.safetensors")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model"] == str(run / "model.safetensors") and summary["steps"] == 4
    assert json.loads((run / "train_config.json").read_text())["data"]["num_frames"] == 3

    pipe = load_pipeline(checkpoint=str(run / "model.safetensors"))
    assert pipe.config.to_dict() == load_model_config("cpu_small").to_dict()
    saved = load_file(str(run / "model.safetensors"))
    state = pipe.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())


# ----- 6. causal forward -----------------------------------------------------------------------
def test_causal_forward_ignores_later_frames(small_model, small_cfg):
    """causal=True: changing the last frame leaves every output of the earlier frames
    unchanged (eval mode); causal=False: Eq. 2 and V_g see the whole clip, so they change."""
    model = small_model
    assert not model.training
    tok = load_tokenizer(small_cfg)
    g = torch.Generator().manual_seed(1)
    b, t, s, m = 2, 3, model.image_size, model.mm_image_size
    ids, pad = tok.encode_batch(["the red ball on the left", "a blue square moving down"])
    sam, mm = torch.randn(b, t, 3, s, s, generator=g), torch.randn(b, t, 3, m, m, generator=g)
    sam2, mm2 = sam.clone(), mm.clone()
    sam2[:, -1] = torch.randn(b, 3, s, s, generator=g)
    mm2[:, -1] = torch.randn(b, 3, m, m, generator=g)
    target = torch.zeros(b, t, s, s)
    one, two = ClipBatch(sam, mm, ids, pad, target, ["", ""]), ClipBatch(sam2, mm2, ids, pad, target, ["", ""])
    names = ("multimask", "single", "ious", "object_score_logits")
    largest = {}
    for causal in (True, False):
        with torch.no_grad():
            x, y = forward_clips(model, one, causal=causal), forward_clips(model, two, causal=causal)
        if causal:
            for n in names:
                assert torch.equal(getattr(x, n)[:, :-1], getattr(y, n)[:, :-1]), f"causal: {n} of earlier frames changed"
            assert not torch.equal(x.object_score_logits[:, -1], y.object_score_logits[:, -1])  # the change is seen
        largest[causal] = max(float((getattr(x, n)[:, :-1] - getattr(y, n)[:, :-1]).abs().max()) for n in names)
    assert largest[True] == 0.0
    assert largest[False] > 1e-5, "non-causal outputs of earlier frames should depend on the last frame"


def test_cosine_schedule_and_its_validation():
    from mpg_sam2_ros.training.config import ConfigError, load_training_config
    from mpg_sam2_ros.training.train import lr_scale

    c = load_training_config("synthetic_cpu_small", ["optim.schedule=cosine", "steps=11", "optim.warmup_steps=2",
                                                     "optim.min_lr_ratio=0.1"])
    scales = [lr_scale(c, s) for s in range(11)]
    assert scales[:3] == [0.5, 1.0, 1.0] and abs(scales[-1] - 0.1) < 1e-9
    assert all(a >= b for a, b in zip(scales[2:], scales[3:]))  # decays monotonically after warm-up
    assert lr_scale(load_training_config("synthetic_cpu_small", ["optim.warmup_steps=0", "optim.schedule=constant"]), 500) == 1.0
    for bad in (["optim.schedule=linear"], ["optim.min_lr_ratio=2"]):
        with pytest.raises(ConfigError):
            load_training_config("synthetic_cpu_small", bad)


def test_expression_types_select_what_a_run_trains_on(split, tmp_path, capsys):
    """data.expression_types keeps only expressions of those types (the synthetic split's
    meta.json types); a type the split does not have is a one-line error, as is a bad value."""
    from mpg_sam2_ros.training.config import ConfigError, load_training_config
    from mpg_sam2_ros.training.datasets import ClipDataset, DatasetError, RefYouTubeVOS

    ref = RefYouTubeVOS(split)
    every = ClipDataset(ref, num_frames=2)
    motion = ClipDataset(ref, num_frames=2, expression_types=["motion"])
    types = [every.item(i)[0].exp_type for i in range(len(every))]
    assert 0 < len(motion) == types.count("motion") < len(every)
    assert {motion.item(i)[0].exp_type for i in range(len(motion))} == {"motion"}
    assert len(ClipDataset(ref, num_frames=2, expression_types=["motion", "spatial"])) == types.count("motion") + types.count("spatial")
    with pytest.raises(DatasetError, match="no expression of the types"):
        ClipDataset(ref, num_frames=2, expression_types=["colour"])
    c = load_training_config("synthetic_cpu_small", ["data.expression_types=[spatial, motion]"])
    assert c.data.expression_types == ("spatial", "motion")
    with pytest.raises(ConfigError, match="expression_types"):
        load_training_config("synthetic_cpu_small", ["data.expression_types=[3]"])
    recipe = _recipe(tmp_path / "r.yaml", split, steps=1)
    assert _train("--config", str(recipe), "--out", str(tmp_path / "run"), "--set", "data.expression_types=[colour]") == 2
    assert "no expression of the types ['colour']" in capsys.readouterr().err

def test_numbers_in_e_notation_without_a_dot_are_floats(tmp_path):
    """YAML 1.1 reads ``5e-4`` as a string; a recipe and ``--set`` must read it as 0.0005."""
    from mpg_sam2_ros.training.config import ConfigError, load_training_config

    c = load_training_config("synthetic_cpu_small", ["optim.lr=5e-4", "optim.lr_fusion=+2E-5", "loss.dice=1e1", "steps=12"])
    assert (c.optim.lr, c.optim.lr_fusion, c.loss.dice, c.steps) == (5e-4, 2e-5, 10.0, 12)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: cpu_small\noptim: {lr: 3e-4, weight_decay: 1e-2}\n")
    c = load_training_config(str(recipe))
    assert (c.optim.lr, c.optim.weight_decay) == (3e-4, 1e-2)
    with pytest.raises(ConfigError, match="optim.lr must be a number"):
        load_training_config("synthetic_cpu_small", ["optim.lr=5e-x"])


def test_expressions_per_video_batches_and_their_validation():
    """data.expressions_per_video=K: every step's global batch is K expressions of each of
    batch/K videos, deterministic in (seed, step), split over ranks like any batch."""
    from mpg_sam2_ros.training.config import ConfigError, load_training_config
    from mpg_sam2_ros.training.train import DistributedStepSampler, TrainingError

    groups = [[10 * v + e for e in range(3 + v % 3)] for v in range(12)]  # 12 videos, 3-5 expressions
    video = {i: v for v, g in enumerate(groups) for i in g}
    n = sum(map(len, groups))
    s = DistributedStepSampler(n, 8, seed=3, groups=groups, per_group=4)
    assert s.steps_per_epoch == 6
    for step in range(8):
        items = s.items(step)
        assert len(items) == 8 and items == DistributedStepSampler(n, 8, seed=3, groups=groups, per_group=4).items(step)
        vids = [video[i] for i in items]
        assert vids[:4] == [vids[0]] * 4 and vids[4:] == [vids[4]] * 4 and vids[0] != vids[4]
        for part in (items[:4], items[4:]):  # distinct expressions; all of them when a video has fewer
            assert len(set(part)) == min(4, len(groups[video[part[0]]]))
        halves = [DistributedStepSampler(n, 8, seed=3, rank=r, world=2, groups=groups, per_group=4).items(step) for r in (0, 1)]
        assert sorted(halves[0] + halves[1]) == sorted(items)
    assert {video[i] for st in range(6) for i in s.items(st)} == set(range(12))  # an epoch sees every video
    with pytest.raises(TrainingError):
        DistributedStepSampler(n, 6, seed=0, groups=groups, per_group=4)
    for bad in (["data.expressions_per_video=0"], ["data.expressions_per_video=3", "batch_size=8"]):
        with pytest.raises(ConfigError):
            load_training_config("synthetic_cpu_small", bad)


# ----- 7. the prior stage -----------------------------------------------------------------------
def test_prior_stage_trains_beit3_and_the_mpg_only(split, tmp_path):
    """stage: prior runs BEiT-3 and the MPG on the mask prior: those weights move, SAM 2's and
    the HGA's stay as initialised, the log holds the prior terms and no mask term, and the
    saved model is a whole model that a full stage starts from (init)."""
    recipe = _recipe(tmp_path / "prior.yaml", split, stage="prior", steps=2, checkpoint_every=2, log_every=1,
                     loss={"prior": 10.0, "prior_dice": 1.0})
    run = tmp_path / "run"
    assert _train("--config", str(recipe), "--out", str(run)) == 0
    _, rows = _log_rows(run)
    assert len(rows) == 2
    for r in rows:
        assert float(r["prior"]) > 0 and float(r["prior_dice"]) > 0
        assert all(float(r[k]) == 0.0 for k in TERMS)
        assert float(r["total"]) == pytest.approx(10 * float(r["prior"]) + float(r["prior_dice"]), rel=1e-5)
    torch.manual_seed(0)  # build_model_for_training seeds with cfg.seed (0) before building
    fresh = build_model(load_model_config("cpu_small")).state_dict()
    trained = load_file(str(run / "model.safetensors"))
    moved = {k for k in trained if not torch.equal(trained[k], fresh[k])}
    assert moved and all(k.startswith(train_mod.PRIOR_STAGE_MODULES) for k in moved), sorted(moved)[:5]
    assert any(k.startswith("multimodal_encoder.") for k in moved) and any(k.startswith("mask_prior.") for k in moved)
    full = _recipe(tmp_path / "full.yaml", split, steps=1, checkpoint_every=1, init=str(run / "model.safetensors"))
    assert _train("--config", str(full), "--out", str(tmp_path / "full")) == 0

    # init_modules: only BEiT-3 and the MPG from the prior stage, into a model without the MPG's
    # mask head (an ablation row); everything else keeps its fresh values
    torch.manual_seed(1)
    no_mpg = build_model(load_model_config("cpu_small", ["mpg.enabled=false"]))
    before = {k: v.clone() for k, v in no_mpg.state_dict().items()}
    n = train_mod.load_modules(no_mpg, str(run / "model.safetensors"), ["multimodal_encoder.", "mask_prior."])
    after = no_mpg.state_dict()
    taken = {k for k in after if k.startswith(("multimodal_encoder.", "mask_prior."))}
    assert n == len(taken) and "mask_prior.mask_head.weight" not in after
    assert all(torch.equal(after[k], trained[k]) for k in taken)
    assert all(torch.equal(after[k], before[k]) for k in after if k not in taken)
    with pytest.raises(train_mod.CheckpointError, match="name no tensor"):
        train_mod.load_modules(no_mpg, str(run / "model.safetensors"), ["no_such_module."])
    narrow = build_model(load_model_config("cpu_small", ["beit3.ffn_dim=64"]))
    with pytest.raises(train_mod.CheckpointError, match="another shape"):
        train_mod.load_modules(narrow, str(run / "model.safetensors"), ["multimodal_encoder."])
    rows = _recipe(tmp_path / "row.yaml", split, steps=1, checkpoint_every=1, init=str(run / "model.safetensors"),
                   init_modules=["multimodal_encoder.", "mask_prior."], model_overrides=["mpg.enabled=false"])
    assert _train("--config", str(rows), "--out", str(tmp_path / "row")) == 0


def test_words_loss_asks_the_class_token_for_every_word(split, tmp_path):
    """loss.words: a training-only head reads the command's pieces off V_cls; its term is logged
    and weighted into the total in both stages, and the model's weights stay the model's."""
    from mpg_sam2_ros.training.losses import WordPresence

    torch.manual_seed(0)
    words = WordPresence(8, 10, ignore_ids=(0, 1, 2))
    ids = torch.tensor([[0, 5, 7, 5, 2], [0, 9, 2, 1, 1]])
    padding = torch.tensor([[False] * 5, [False, False, False, True, True]])
    expected = torch.zeros(2, 10)
    expected[0, [5, 7]] = 1
    expected[1, 9] = 1
    torch.testing.assert_close(words.targets(ids, padding), expected)
    cls = torch.randn(2, 3, 8)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(words.head(cls), expected[:, None].expand(2, 3, 10),
                                                               reduction="none")[..., 3:]
    torch.testing.assert_close(words(cls, ids, padding), bce.sum(-1).mean())

    model_keys = build_model(load_model_config("cpu_small")).state_dict().keys()
    for stage, loss in (("prior", {"prior": 10.0, "prior_dice": 1.0, "words": 0.1}),
                        ("full", {"words": 0.1, "similarity": 0.0})):
        recipe = _recipe(tmp_path / f"{stage}.yaml", split, stage=stage, steps=2, checkpoint_every=2, log_every=1, loss=loss)
        assert _train("--config", str(recipe), "--out", str(tmp_path / stage)) == 0
        _, rows = _log_rows(tmp_path / stage)
        for r in rows:
            assert float(r["words"]) > 1.0  # summed over the vocabulary: an untrained head is far off
            if stage == "prior":
                expected_total = 10 * float(r["prior"]) + float(r["prior_dice"]) + 0.1 * float(r["words"])
                assert float(r["total"]) == pytest.approx(expected_total, rel=1e-5)
        assert load_file(str(tmp_path / stage / "model.safetensors")).keys() == model_keys  # the head is not saved as model
    from mpg_sam2_ros.training.losses import LossConfig

    with pytest.raises(ValueError, match="WordPresence"):
        train_mod.ReferringLoss(LossConfig(words=1.0, similarity=0.0))


def test_init_restores_the_training_heads_of_the_run_it_starts_from(split, tmp_path, capsys):
    """init_heads: a run saves its loss's training-only heads beside model.safetensors
    (model.heads.pt); a run that starts from that model (or from a checkpoint, via its .train.pt)
    starts them from there, not from scratch; a head of another shape stays fresh and is named."""
    from mpg_sam2_ros.training.losses import WordPresence

    loss = {"prior": 10.0, "prior_dice": 1.0, "words": 0.1}
    first = _recipe(tmp_path / "a.yaml", split, stage="prior", steps=2, checkpoint_every=2, loss=loss)
    assert _train("--config", str(first), "--out", str(tmp_path / "a")) == 0
    model = tmp_path / "a" / "model.safetensors"
    saved = _load_train_pt(train_mod.heads_path(model))["loss"]
    assert sorted(saved) == ["words.head.bias", "words.head.weight"]
    vocab = saved["words.head.weight"].shape[0]
    dim = saved["words.head.weight"].shape[1]

    def fresh(v: int = vocab) -> train_mod.ReferringLoss:
        return train_mod.ReferringLoss(LossConfig(words=0.1, similarity=0.0), words=WordPresence(dim, v))

    for init, side in ((model, "model.heads.pt"), (tmp_path / "a" / "checkpoints" / "step_000002.safetensors",
                                                   "step_000002.train.pt")):
        heads = fresh()
        assert not torch.equal(heads.words.head.weight, saved["words.head.weight"])
        assert train_mod.restore_heads(heads, init) == f"2 of 2 training-head tensors restored from {side}"
        torch.testing.assert_close(heads.words.head.weight, saved["words.head.weight"], rtol=0, atol=0)
    other = fresh(vocab + 1)
    assert "0 of 2" in train_mod.restore_heads(other, model) and "fresh: words.head.bias, words.head.weight" in \
        train_mod.restore_heads(other, model)
    bare = tmp_path / "bare.safetensors"
    save_checkpoint(build_model(load_model_config("cpu_small")), bare)
    assert "start fresh" in train_mod.restore_heads(fresh(), bare)

    capsys.readouterr()
    for heads, said in ((True, "[train] init: 2 of 2 training-head tensors restored from model.heads.pt"), (False, None)):
        recipe = _recipe(tmp_path / "b.yaml", split, stage="prior", steps=1, checkpoint_every=1, loss=loss,
                         init=str(model), init_heads=heads)
        assert _train("--config", str(recipe), "--out", str(tmp_path / f"b{heads}")) == 0
        err = capsys.readouterr().err
        assert (said in err) if said else ("training-head" not in err), err
    with pytest.raises(Exception, match="init_heads must be true or false"):
        load_training_config(str(recipe), ["init_heads=2"])


def test_motion_words_ask_the_motion_stem_under_the_target_for_the_words(split, tmp_path):
    """loss.motion_words: the motion stem's features (pixels only) averaged over the target's
    cells of frames 1..T-1 name the command's words; logged and weighted in the prior stage,
    refused for a model without the stem."""
    from mpg_sam2_ros.training.losses import region_mean

    features = torch.arange(2 * 3 * 4 * 2, dtype=torch.float32).reshape(2, 3, 4, 2)  # 2 x 2 cells
    target = torch.zeros(2, 3, 8, 8)
    target[0, 0] = 1  # frame 0 is left out (no previous frame)
    target[0, 1, :4, :4] = 1  # frame 1: the whole top-left cell
    target[0, 2, 4:, 4:6] = 1  # frame 2: half of the bottom-right cell
    pooled, seen = region_mean(features, target)
    torch.testing.assert_close(pooled[0], (1.0 * features[0, 1, 0] + 0.5 * features[0, 2, 3]) / 1.5)
    assert seen.tolist() == [True, False] and pooled[1].abs().max() == 0

    recipe = _recipe(tmp_path / "m.yaml", split, stage="prior", steps=2, checkpoint_every=2, log_every=1,
                     loss={"prior": 10.0, "prior_dice": 1.0, "motion_words": 0.5},
                     model_overrides=["mpg.motion_stem=4"])
    assert _train("--config", str(recipe), "--out", str(tmp_path / "m")) == 0
    _, rows = _log_rows(tmp_path / "m")
    for r in rows:
        assert float(r["motion_words"]) > 1.0 and float(r["words"]) == 0.0
        expected_total = 10 * float(r["prior"]) + float(r["prior_dice"]) + 0.5 * float(r["motion_words"])
        assert float(r["total"]) == pytest.approx(expected_total, rel=1e-5)
    state = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert "mask_prior.motion_stem.2.weight" in state and float(state["mask_prior.motion_stem.2.weight"].abs().max()) > 0
    no_stem = _recipe(tmp_path / "n.yaml", split, stage="prior", steps=1, loss={"prior": 1.0, "motion_words": 0.5})
    assert _train("--config", str(no_stem), "--out", str(tmp_path / "n")) != 0


def test_bf16_training_calls_no_loss_that_cuda_autocast_refuses(split, tmp_path, monkeypatch):
    """CUDA's bf16 autocast raises on F.binary_cross_entropy / nn.BCELoss (they take probabilities);
    CPU autocast lets them through, so a CPU test alone missed it and the first bf16 run on a GPU
    (session 20) stopped at step 1 in the prior loss. Here both refuse as they do under CUDA autocast,
    and one bf16 step with every loss term on (prior, words, presence, IoU) must still run; the
    written-out prior BCE equals the library's outside autocast."""
    from mpg_sam2_ros.training.losses import prior_loss

    prior = torch.rand(2, 3, 1, 4, 4)
    target = (torch.rand(2, 3, 16, 16) > 0.6).float()
    cover = torch.nn.functional.adaptive_avg_pool2d(target.flatten(0, 1)[:, None], 4).reshape(prior.shape)
    expected = torch.nn.functional.binary_cross_entropy(prior.clamp(1e-6, 1 - 1e-6), cover)
    torch.testing.assert_close(prior_loss(prior, target), expected)

    def refuse(*args, **kwargs):
        raise RuntimeError("torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast")

    monkeypatch.setattr(torch.nn.functional, "binary_cross_entropy", refuse)
    monkeypatch.setattr(torch.nn.BCELoss, "forward", refuse)
    recipe = _recipe(tmp_path / "b.yaml", split, steps=1, checkpoint_every=1, log_every=1, precision="bf16",
                     loss={"prior": 1.0, "prior_dice": 1.0, "words": 0.1, "presence": 1.0, "iou": 1.0})
    assert _train("--config", str(recipe), "--out", str(tmp_path / "b")) == 0
    _, rows = _log_rows(tmp_path / "b")
    assert float(rows[0]["prior"]) > 0 and math.isfinite(float(rows[0]["total"]))


def test_prior_losses_and_the_stage_validation():
    from mpg_sam2_ros.training.config import ConfigError
    from mpg_sam2_ros.training.losses import prior_dice_loss, prior_loss

    target = torch.zeros(1, 2, 32, 32)
    target[0, 0, :16, :16] = 1  # frame 0: the top-left cell of a 2 x 2 grid; frame 1: empty
    exact = torch.zeros(1, 2, 1, 2, 2)
    exact[0, 0, 0, 0, 0] = 1
    assert float(prior_dice_loss(exact, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(prior_loss(exact, target)) == pytest.approx(0.0, abs=1e-4)
    wrong = torch.zeros(1, 2, 1, 2, 2)
    wrong[0, :, 0, 1, 1] = 1  # the opposite cell, and a non-empty prior on the empty frame
    assert float(prior_dice_loss(wrong, target)) == pytest.approx(1.0, abs=1e-3)
    assert float(prior_loss(wrong, target)) > 5
    for bad, needle in ((["stage=both"], "stage must be one of"),
                        (["stage=prior", "loss.prior=0", "loss.prior_dice=0"], "loss.prior"),
                        (["loss.prior_dice=-1"], "prior_dice"), (["loss.words=-1"], "words")):
        with pytest.raises(ConfigError, match=needle):
            load_training_config("synthetic_cpu_small_prior", bad)
