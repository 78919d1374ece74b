#!/usr/bin/env bash
# The GPU check, prepared for a session that is lent a GPU machine (run from the repo root there):
#   bash benchmarks/gpu_check.sh            # ~5 minutes on an H100
# 1. correctness on the GPU: the CLI end to end on digits-vit with --device cuda;
# 2. steps/s, lever by lever, for DeiT-Tiny, DeiT-Base and Swin-Tiny at 224 (random weights);
# 3. DeiT-Base: wall time of 32 images × 1,000 steps with psaq's defaults.
# Results land in benchmarks/results/synthesis_speed_cuda.{md,json} (and $OUT when set).
set -euo pipefail
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv
$PY -m psaq.cli quantize --model digits-vit --device cuda --w-bits 4 --a-bits 8 --calib psaq --steps 100 --quiet
$PY benchmarks/synthesis_speed.py --device cuda --models deit_tiny deit_base swin_tiny --steps 30 30 30 --skip-quality
$PY - <<'PY'
import time, torch, timm
from psaq.data import InputSpec
from psaq.synth import SynthesisConfig, synthesize
model = timm.create_model("deit_base_patch16_224").eval()
spec = InputSpec((3, 224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1000)
t = time.perf_counter()
res = synthesize(model, SynthesisConfig(), spec, "cuda", progress=False)
torch.cuda.synchronize()
print(f"DeiT-B, 32 images x {res.steps} steps on {torch.cuda.get_device_name()}: {time.perf_counter() - t:.1f} s "
      f"({res.steps_per_s:.1f} steps/s)")
PY
if [ -n "${OUT:-}" ]; then cp benchmarks/results/synthesis_speed_cuda.* "$OUT"/; fi
