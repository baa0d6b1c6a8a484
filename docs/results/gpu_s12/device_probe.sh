source .devsite/env.sh
nvidia-smi -L; python3 -c "import torch,sys;print(sys.version, torch.__version__, torch.cuda.is_available())"
t0=$(date +%s)
if [ ! -f $W/synth/meta_expressions.json ]; then
  python3 -m mpg_sam2_ros.cli make-synthetic --out $W/synth --seed 1000 --videos 1500 --workers 16 --quiet > $W/gen.json || { echo GEN FAILED; exit 1; }
fi
echo "gen $(( $(date +%s) - t0 )) s"; head -c 300 $W/gen.json; echo
t0=$(date +%s)
$T --config synthetic_cpu_small_grounded --out $W/pA --set "$OV" $D --set init=assets/models/default.safetensors --set steps=40 --set checkpoint_every=40 > $W/pA.log 2>&1 &
$T --config synthetic_cpu_small_grounded --out $W/pA32 --set "$OV" $D --set init=assets/models/default.safetensors --set steps=40 --set batch_size=32 --set checkpoint_every=40 > $W/pA32.log 2>&1 &
$T --config synthetic_cpu_small_prior --out $W/pP --set "$OV" $D --set 'data.expression_types=[spatial]' --set data.num_frames=1 --set batch_size=32 --set data.expressions_per_video=1 --set steps=40 --set checkpoint_every=40 > $W/pP.log 2>&1 &
$T --config synthetic_cpu_small_prior --out $W/pS2 --set "$OV" $D --set data.num_frames=8 --set batch_size=8 --set data.expressions_per_video=4 --set steps=40 --set checkpoint_every=40 > $W/pS2.log 2>&1 &
wait
echo "probe $(( $(date +%s) - t0 )) s"
for r in pA pA32 pP pS2; do echo "== $r"; tail -5 $W/$r.log; cut -d, -f1,2,3 $W/$r/log.csv 2>/dev/null | head -2; awk -F, 'NR>1{print $1, $(NF-1), $NF}' $W/$r/log.csv 2>/dev/null; done
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv
