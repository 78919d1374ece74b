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
# GPU_CHECK_DRY=1: the same commands and code paths on the CPU with tiny sizes (a 1-block digits-vit,
# DeiT-Tiny at 32 px, 1-2 steps, no compilation or CUDA graphs), so the suite proves on a machine without a
# GPU that the script cannot fail on the device for a missing import, name or argument
DRY=${GPU_CHECK_DRY:-0}
if [ "$DRY" = 1 ]; then
  mkdir -p "$OUTDIR/dry-store"
  printf 'model: {name: digits-vit, model_args: {depth: 1}}\ntrain: {epochs: 1}\nsynthesis: {num_samples: 4}\n' \
    > "$OUTDIR/dry-params.yaml"
  DEVICE=cpu STEPS=2 FAST_OPTS="--precision bf16" TINY_MODEL="--params $OUTDIR/dry-params.yaml --store $OUTDIR/dry-store"
  export CHECK_MODEL=deit_tiny_patch16_224 CHECK_IMG=32 CHECK_STEPS=2 CHECK_FAST='{"precision": "bf16"}'
  LEVER_ARGS="--models deit_tiny --steps 1 --skip-compiled --img-size 32"
else
  DEVICE=cuda STEPS=100 FAST_OPTS="--precision bf16 --compile all --cuda-graphs" TINY_MODEL=""
  LEVER_ARGS="--models deit_tiny swin_tiny deit_base --steps 20 20 20"
fi
export CHECK_DEVICE=$DEVICE

check() {
[ "$DRY" = 1 ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__,
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device (dry run)')"

if [[ " $PARTS " == *" 1 "* ]]; then
echo "== 1. correctness: psaq quantize on the GPU (trains digits-vit there first)"
timeout 110 $PY -m psaq.cli quantize --model digits-vit $TINY_MODEL --device $DEVICE --w-bits 4 --a-bits 8 \
    --calib psaq --steps $STEPS --quiet || echo "part 1 (defaults) failed"
# the dry run leaves this one out: on the CPU it would add nothing but --precision bf16, which
# tests/synth/test_acceleration.py covers (compilation and CUDA graphs need the device)
[ "$DRY" = 1 ] || timeout 80 $PY -m psaq.cli quantize --model digits-vit $TINY_MODEL --device $DEVICE --w-bits 4 \
    --a-bits 8 --calib psaq --steps $STEPS --quiet $FAST_OPTS || echo "part 1 (fastest options) failed"
fi

if [[ " $PARTS " == *" 2 "* ]]; then
echo "== 2. DeiT-Base, 32 images x 1,000 steps"
timeout 180 $PY - <<'PY'
import json, os, time, torch, timm
from psaq.data import InputSpec
import psaq.families.builtin  # noqa: F401  (registers the ViT and Swin families)
from psaq.synth import SynthesisConfig, synthesize
torch.manual_seed(0)
device, name = os.environ["CHECK_DEVICE"], os.environ.get("CHECK_MODEL", "deit_base_patch16_224")
steps = int(os.environ.get("CHECK_STEPS", 0))  # 0: the paper's schedule
schedule = dict(rounds=1, steps_per_round=steps, warmup_steps=0) if steps else {}
side = int(os.environ.get("CHECK_IMG", 224))
model = timm.create_model(name, **({"img_size": side} if side != 224 else {})).eval()
spec = InputSpec((3, side, side), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1000)
fast = [json.loads(os.environ["CHECK_FAST"])] if "CHECK_FAST" in os.environ else [
    dict(precision="bf16", compile="all", cuda_graphs=True), dict(precision="bf16", compile="kde")]
on_gpu = device.startswith("cuda")
# defaults first: a cold compile of the fastest options can take longer than the limit leaves
for options in ({}, *fast):
    t = time.perf_counter()
    try:
        res = synthesize(model, SynthesisConfig(**schedule, **options), spec, device, progress=False)
    except Exception as exc:  # one failing option must not hide the others
        print(f"{name} {options}: failed: {type(exc).__name__}: {exc}"[:500], flush=True)
        continue
    total = time.perf_counter() - t
    print(f"{name} {options or 'defaults (fp32, eager)'}: 32 images x {res.steps} steps on "
          f"{torch.cuda.get_device_name() if on_gpu else device}: {total:.1f} s with compilation, loop "
          f"{res.wall_s:.1f} s ({res.steps_per_s:.1f} steps/s), final entropy {res.final('entropy'):.3f}, "
          f"peak memory {torch.cuda.max_memory_allocated() / 2**30 if on_gpu else float('nan'):.1f} GiB", flush=True)
PY
fi

if [[ " $PARTS " == *" 3 "* ]]; then
echo "== 3. steps/s, lever by lever (results are written after each model)"
timeout 200 $PY benchmarks/synthesis_levers.py --device $DEVICE $LEVER_ARGS --repeats 1 --skip-quality \
    --skip-breakdown --out "$OUTDIR"
fi
echo "gpu_check done"
}

check 2>&1 | tee "$LOG"
if [ "$DRY" != 1 ] && [ "$OUTDIR" != benchmarks/results ]; then
  cp "$OUTDIR"/synthesis_levers_cuda.* benchmarks/results/ 2>/dev/null
fi
