"""benchmarks/gpu_check.sh, dry-run on the CPU: every part's commands and code run (tiny sizes,
no compilation, no CUDA graphs), so the script cannot fail on a lent GPU for a missing import,
name or argument. Device time is minutes; a typo found there costs one of them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.cost(25)
def test_the_gpu_check_runs_every_part_on_the_cpu(tmp_path):
    env = {**os.environ, "GPU_CHECK_DRY": "1", "OUT": str(tmp_path), "PY": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    log = (tmp_path / "gpu_check.log").read_text()
    assert done.returncode == 0 and log.rstrip().endswith("gpu_check done"), log[-2000:]
    assert "Traceback" not in log and "failed" not in log and "command not found" not in log, log[-2000:]
    assert log.count("W4A8          top-1") == 1  # part 1: the CLI end to end
    assert "deit_tiny_patch16_224 {'precision': 'bf16'}: 32 images x 2 steps on cpu" in log  # part 2
    assert "3 seeds in one batch" in (tmp_path / "synthesis_levers.md").read_text()  # part 3, in its OUT folder
