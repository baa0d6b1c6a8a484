#!/bin/bash
# Session 20's one device call (one H200, 15 device-minutes for the session, this command <= 570 s):
#  1. the paper-size model's speed and bf16 agreement (`bench --config mpg_sam2_l --device cuda --bf16`),
#     beside the generation of the recipe's 3,000-video training split (seed 1000) on the CPU cores;
#  2. a 30-step probe of two runs sharing the GPU, to size the real runs to the time left;
#  3. stage 11 -> two continuations of its recipe (batch 8, lr 1e-4 cosine, absent x10), fp32 (A) and
#     bf16 autocast (B), sharing the GPU, each reading clips ahead with data.workers=6.
# Run from the repo root with .devsite/site (sam2, torchscale, fairscale, iopath, hydra, omegaconf, antlr4
# copied from .venv) carried; everything that comes back is under $OUT (8 files at most).
# As run in session 20 the two `wait`s were bare and the script hung at the probe's (see README.md);
# this is the corrected script, not yet run again.
set -u
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
export PYTHONPATH=$PWD/.devsite/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
W=/root/w; mkdir -p $W; OUT=${OUT:-/tmp/out}; mkdir -p $OUT
LOG=$OUT/device.log; exec > >(tee -a $LOG) 2>&1
CLI="python3 -m mpg_sam2_ros.cli"
OV='model_overrides=[beit3.patch_size=16,sam2.overrides.multimask_output_in_sam=false,mpg.relative_time=true,mpg.block_flow=3,mpg.motion_readout=true]'
R=(--config synthetic_cpu_small_grounded --set "$OV" --set init=assets/models/default.safetensors
   --set loss.presence_absent_weight=10.0 --set data.root=$W/synth --set data.generate.videos=3000 --set optim.lr=1.0e-4 --set optim.lr_fusion=1.0e-4
   --set optim.warmup_steps=20 --set data.workers=6 --set keep_checkpoints=2)
nvidia-smi -L; python3 -c "import torch,sys;print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())"
echo "== [$(el) s] bench mpg_sam2_l + generation"
timeout 170 $CLI bench --config mpg_sam2_l --device cuda --bf16 --measure 20 --skip-memory --quiet --out $OUT/bench_mpg_sam2_l_h200.json > $W/bench.out 2>&1 &
BP=$!
timeout 200 $CLI make-synthetic --out $W/synth --seed 1000 --videos 3000 --workers 14 --quiet > $W/gen.json || { echo "GEN FAILED"; cat $W/gen.json; }
echo "generation done at $(el) s: $(head -c 200 $W/gen.json)"
wait $BP; echo "bench rc $? at $(el) s"; tail -c 1500 $W/bench.out
echo "== [$(el) s] probe: 30 steps, A fp32 and B bf16 together"
$CLI train --device cuda --quiet "${R[@]}" --out $W/pA --set steps=30 --set checkpoint_every=30 > $W/pA.out 2>&1 & PA=$!
$CLI train --device cuda --quiet "${R[@]}" --out $W/pB --set steps=30 --set checkpoint_every=30 --set precision=bf16 > $W/pB.out 2>&1 & PB=$!
wait $PA $PB  # by PID: a bare `wait` also waits for the `tee` above, which never ends (bash 5.1+)
for r in pA pB; do echo "-- $r"; tail -3 $W/$r.out; cat $W/$r/log.csv 2>/dev/null | cut -d, -f1,3,13,15,16; done
RATE=$(python3 - <<'PY'
import csv
rates = []
for r in ("pA", "pB"):
    try:
        rows = list(csv.DictReader(open(f"/root/w/{r}/log.csv")))
        rates.append((float(rows[-1]["seconds"]) - float(rows[0]["seconds"])) / (int(rows[-1]["step"]) - int(rows[0]["step"])))
    except Exception as e:
        print(f"# {r}: {e}", file=__import__("sys").stderr)
print(max(rates) if rates else 0.6)
PY
)
LEFT=$(( 535 - $(el) ))
STEPS=$(python3 -c "print(max(100, int(($LEFT - 40) / $RATE) // 50 * 50))")
echo "== [$(el) s] rate $RATE s/step with two runs; $LEFT s left -> $STEPS steps each"
timeout $(( LEFT - 5 )) $CLI train --device cuda --quiet "${R[@]}" --out $W/A --set steps=$STEPS --set checkpoint_every=100 > $W/A.out 2>&1 & PA=$!
timeout $(( LEFT - 5 )) $CLI train --device cuda --quiet "${R[@]}" --out $W/B --set steps=$STEPS --set checkpoint_every=100 --set precision=bf16 > $W/B.out 2>&1 & PB=$!
sleep 90; nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv; top -bn1 | head -15
wait $PA $PB
echo "== [$(el) s] training ended"
for r in A B; do
  echo "-- $r"; tail -4 $W/$r.out
  if [ -f $W/$r/model.safetensors ]; then
    cp $W/$r/model.safetensors $OUT/$r.model.safetensors; cp $W/$r/model.heads.pt $OUT/$r.model.heads.pt
  else  # stopped by the time box: its last checkpoint, heads taken from the sidecar
    last=$(ls $W/$r/checkpoints/step_*.safetensors 2>/dev/null | tail -1)
    echo "no final model; last checkpoint: $last"
    [ -n "$last" ] && cp $last $OUT/$r.model.safetensors && python3 -c "import torch,sys;s=torch.load(sys.argv[1],map_location='cpu',weights_only=True);torch.save({'loss':s['loss']},sys.argv[2])" ${last%.safetensors}.train.pt $OUT/$r.model.heads.pt
  fi
  cp $W/$r/log.csv $OUT/$r.log.csv 2>/dev/null
done
cat $W/A/train_config.json 2>/dev/null | head -c 20000 > $W/A_cfg.json; echo "train_config A: $(python3 -c "import json;print(json.dumps(json.load(open('$W/A_cfg.json'))))" 2>/dev/null)"
ls -la $OUT; echo "== done at $(el) s"
