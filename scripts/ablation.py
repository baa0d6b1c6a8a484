"""Paper Table 3 in miniature on the synthetic benchmark: baseline (no MPG, no HGA), +MPG,
+HGA and the full model, and Table 4's rows (the full model without the MPG's spatiotemporal
self-attention S_si or its cross-modal interaction S_ci, or with the "vanilla" global feature),
trained with the same recipe, data and budget, then scored with ``mpg-sam2 bench-accuracy``
on held-out videos. Writes docs/ablation.md and the raw JSONs.

    .venv/bin/python scripts/ablation.py --steps 500 --out runs/ablation

Each variant is ``mpg-sam2 train --config synthetic_cpu_small --set steps=N --set
model_overrides=[...]`` (one CPU thread, as the shipped model's run) followed by
``mpg-sam2 bench-accuracy --checkpoint RUN/model.safetensors --seed 4242 --videos 30``.
Finished variants are skipped when the script runs again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "mpg_sam2_ros.cli"]
HGA_OFF = ["hga.pixel_global=false", "hga.object_global=false", "hga.object_local=false"]
VARIANTS = {  # name -> model overrides (Tab. 3 rows)
    "baseline": ["mpg.enabled=false", *HGA_OFF],
    "+MPG": ["mpg.enabled=true", *HGA_OFF],
    "+HGA": ["mpg.enabled=false"],
    "full (MPG + HGA)": [],
    # Tab. 4 rows: the full model without one part of the MPG (Eq. 2), or with V_g from the raw patches
    "full, no S_si": ["mpg.spatiotemporal_self_attention=false"],
    "full, no S_ci": ["mpg.cross_modal_interaction=false"],
    "full, vanilla V_g": ["mpg.global_feature=vanilla"],
}
# the full model trained offline as the paper (bidirectional Eq. 2, official clip sampling):
# compared with the streaming-consistent "full" row, both run by the streaming engine
TRAINING_MODES = {
    "full, trained offline (paper)": ["causal=false", "data.sampler=official"],
}


def run(cmd: list[str], log: Path) -> None:
    print("$", " ".join(cmd), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if rc:
        sys.exit(f"failed ({rc}): see {log}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--seed", type=int, default=4242, help="held-out bench-accuracy seed")
    ap.add_argument("--videos", type=int, default=30)
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--doc", default="docs/ablation.md")
    ap.add_argument("--config", default="synthetic_cpu_small", help="the training recipe every row uses")
    ap.add_argument("--variants", action="append", default=[], metavar="NAME",
                    help="the table's rows (repeatable; default: every row)")
    ap.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE",
                    help="more training-config overrides for every row (e.g. optim.schedule=constant)")
    ap.add_argument("--full-run", metavar="RUN",
                    help="a run of the full model with the same recipe and --set, longer than --steps and with a "
                         "checkpoint at step --steps: that checkpoint is the full row (the data order and a constant "
                         "schedule depend on the step only, so it equals a run of --steps steps)")
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help="train and score only these rows (repeatable; e.g. two processes on two cores); "
                         "no table is written: run again without --only once every row has its result")
    args = ap.parse_args()
    from mpg_sam2_ros.training.config import load_training_config

    recipe = list(load_training_config(args.config, []).model_overrides)  # kept: the variants add to them
    out = REPO / args.out
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    runs = [(n, o, []) for n, o in VARIANTS.items()] + [(n, [], extra) for n, extra in TRAINING_MODES.items()]
    if args.variants:
        unknown = set(args.variants) - {r[0] for r in runs}
        if unknown:
            sys.exit(f"unknown variants {sorted(unknown)}; known: {[r[0] for r in runs]}")
        runs = [r for r in runs if r[0] in args.variants]
    for name, overrides, extra in runs:
        if args.only and name not in args.only:
            continue
        slug = name.replace(" ", "_").replace("+", "plus").replace("(", "").replace(")", "").replace(",", "")
        run_dir, result = out / slug, out / f"{slug}.json"
        model = run_dir / "model.safetensors"
        if args.full_run and name == "full (MPG + HGA)":
            model = Path(args.full_run) / "checkpoints" / f"step_{args.steps:06d}.safetensors"
            if not model.exists():
                sys.exit(f"--full-run: {model} does not exist (yet)")
        if not result.exists():
            if not model.exists():
                run([*CLI, "train", "--config", args.config, "--out", str(run_dir), "--quiet",
                     "--set", f"steps={args.steps}", "--set", f"checkpoint_every={args.steps}", "--set", "threads=1",
                     "--set", f"model_overrides={json.dumps(recipe + overrides)}",
                     *[a for e in [*args.sets, *extra] for a in ("--set", e)]], out / f"{slug}.train.log")
            run([*CLI, "bench-accuracy", "--checkpoint", str(model), "--seed", str(args.seed),
                 "--videos", str(args.videos), "--mode", "both", "--quiet", "--out", str(result)], out / f"{slug}.bench.log")
        rows[name] = (overrides + extra, json.loads(result.read_text()))
    if len(rows) < len(runs) or args.only:  # a lane of a split run: the invocation without --only writes the table
        return
    lines = [
        "# Ablation on the synthetic benchmark (paper Tables 3 and 4 in miniature)" if any(" no S_" in n or "vanilla" in n for n in rows) else "# Ablation on the synthetic benchmark (paper Table 3 in miniature)",
        "",
        f"`cpu_small` trained with `config/training/{args.config}.yaml` for {args.steps} steps "
        "each (same data, seed and budget; streaming-consistent training), scored with "
        f"`mpg-sam2 bench-accuracy --seed {args.seed} --videos {args.videos}` (streaming, window 8). "
        f"Made by `.venv/bin/python scripts/ablation.py --steps {args.steps}"
        + (f" --config {args.config}" if args.config != "synthetic_cpu_small" else "")
        + "".join(f" --variants '{v}'" for v in args.variants)
        + (f" --out {args.out}" if args.out != "runs/ablation" else "")
        + (f" --doc {args.doc}" if args.doc != "docs/ablation.md" else "")
        + "".join(f" --set {e}" for e in args.sets)
        + (f" --full-run {args.full_run}`, the full row being step {args.steps} of that run "
           f"(`mpg-sam2 train --config {args.config} --out {args.full_run}"
           + "".join(f" --set {e}" for e in args.sets) + f" --set steps=N --set checkpoint_every={args.steps}`, N > {args.steps}; "
           "the data order and a constant schedule depend on the step only)." if args.full_run else "`."),
        "",
        "Columns after J&F are streaming J&F per expression type; the last column is offline",
        "inference (the whole 24-frame video as context) of the same model.",
        "",
        "| model | settings | J&F | J | F | appearance | spatial | motion | absent | FP rate on absent frames | offline J&F |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (settings, r) in rows.items():
        t = r["modes"]["streaming"]["by_type"]
        fp = r["modes"]["streaming"]["absent_frames"]["false_positive_rate"]
        offline = r["modes"].get("offline", {}).get("J&F", "-")
        lines.append(f"| {name} | `{' '.join(settings) or '-'}` | {r['J&F']} | {r['J']} | {r['F']} | "
                     + " | ".join(str(t[k]["J&F"]) for k in ("appearance", "spatial", "motion", "absent"))
                     + f" | {fp} | {offline} |")
    if args.config == "synthetic_cpu_small":
        lines += ["", "The runs' JSONs and training logs are copied to `docs/results/ablation/`. What the table "
                  "says, and why every row is about the same: "
                  "[training_experiments.md](training_experiments.md#the-ablation-table-and-the-text-blind-models)."]
    else:
        lines += ["", f"The runs' JSONs and training logs are in `{args.out}/` (copied to `docs/results/{Path(args.out).name}/`). What the "
                  "table says: [training_experiments.md](training_experiments.md#breaking-the-text-blindness-the-prior-stage-2026-11-22)."]
    doc = REPO / args.doc
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
