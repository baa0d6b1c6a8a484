export PYTHONPATH=$PWD/.devsite/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
W=/root/w; mkdir -p $W
OV='model_overrides=[beit3.patch_size=16,sam2.overrides.multimask_output_in_sam=false,mpg.relative_time=true,mpg.block_flow=3]'
T="python3 -m mpg_sam2_ros.cli train --device cuda --quiet"
D="--set data.root=$W/synth"
