#!/usr/bin/env bash
# The GPU check, prepared for a session that is lent a GPU machine. Run from the repo root there:
#   bash benchmarks/gpu_check.sh                    # at most 9.5 minutes (the parts' time limits)
#   PARTS="3" bash benchmarks/gpu_check.sh          # only part 3, e.g. when a call limit cut it short
# The device image has its own python3 with torch, timm, scikit-learn, safetensors, pyarrow and
# tqdm; psaq itself needs nothing else (no Prefect/MLflow/DVC), so no install step.
# In priority order, each part under its own time limit so one slow part cannot eat the rest:
# 1. correctness on the GPU: the CLI end to end on digits-vit with --device cuda, eager fp32 and
#    with every speed option (bf16, compiled KDE and model, CUDA graphs);
# 2. DeiT-Base at 224 (random weights): wall time of 32 images × 1,000 steps, defaults and fastest;
# 3. steps/s lever by lever for DeiT-Tiny, Swin-Tiny and DeiT-Base at 224 against the baseline.
# Measured on an H200 on 2026-12-04 (benchmarks/results/gpu_check.{md,log}): part 1 ~100 s, part 2
# ~100 s for the defaults + ~50 s for the fastest options once compiled (more cold), part 3 ~200 s
# for DeiT-Base alone (each lever compiles): the limits below follow those figures.
# Results: benchmarks/results/synthesis_levers_cuda.{md,json} and gpu_check.log (copied to $OUT when set).
set -uo pipefail
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUTDIR=${OUT:-benchmarks/results}
LOG="$OUTDIR/gpu_check.log"
mkdir -p "$OUTDIR"
# the device's python3 has no psaq installed: scripts under benchmarks/ find it through PYTHONPATH
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PSAQ_CACHE=${PSAQ_CACHE:-.psaq-cache}
PARTS=${PARTS:-1 2 3}

check() {
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name())"

if [[ " $PARTS " == *" 1 "* ]]; then
echo "== 1. correctness: psaq quantize on the GPU (trains digits-vit there first)"
timeout 110 $PY -m psaq.cli quantize --model digits-vit --device cuda --w-bits 4 --a-bits 8 --calib psaq --steps 100 --quiet
timeout 80 $PY -m psaq.cli quantize --model digits-vit --device cuda --w-bits 4 --a-bits 8 --calib psaq --steps 100 \
    --quiet --precision bf16 --compile all --cuda-graphs
fi

if [[ " $PARTS " == *" 2 "* ]]; then
echo "== 2. DeiT-Base, 32 images x 1,000 steps"
timeout 180 $PY - <<'PY'
import time, torch, timm
from psaq.data import InputSpec
import psaq.families.builtin  # noqa: F401  (registers the ViT and Swin families)
from psaq.synth import SynthesisConfig, synthesize
torch.manual_seed(0)
model = timm.create_model("deit_base_patch16_224").eval()
spec = InputSpec((3, 224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1000)
# defaults first: a cold compile of the fastest options can take longer than the limit leaves
for options in ({}, dict(precision="bf16", compile="all", cuda_graphs=True), dict(precision="bf16", compile="kde")):
    t = time.perf_counter()
    try:
        res = synthesize(model, SynthesisConfig(**options), spec, "cuda", progress=False)
    except Exception as exc:  # one failing option must not hide the others
        print(f"DeiT-B {options}: failed: {type(exc).__name__}: {exc}"[:500], flush=True)
        continue
    total = time.perf_counter() - t
    print(f"DeiT-B {options or 'defaults (fp32, eager)'}: 32 images x {res.steps} steps on "
          f"{torch.cuda.get_device_name()}: {total:.1f} s with compilation, loop {res.wall_s:.1f} s "
          f"({res.steps_per_s:.1f} steps/s), final entropy {res.final('entropy'):.3f}, "
          f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)
PY
fi

if [[ " $PARTS " == *" 3 "* ]]; then
echo "== 3. steps/s, lever by lever (results are written after each model)"
timeout 200 $PY benchmarks/synthesis_levers.py --device cuda --models deit_tiny swin_tiny deit_base \
    --steps 20 20 20 --repeats 1 --skip-quality --skip-breakdown --out "$OUTDIR"
fi
echo "gpu_check done"
}

check 2>&1 | tee "$LOG"
if [ "$OUTDIR" != benchmarks/results ]; then cp "$OUTDIR"/synthesis_levers_cuda.* benchmarks/results/ 2>/dev/null; fi
