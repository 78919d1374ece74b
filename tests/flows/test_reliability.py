"""Faults: kill -9 mid-run, two runs at once, a full disk; unreachable services and bad input."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.flows.conftest import write_params

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def env_for(project: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(PSAQ_PROJECT=str(project), PYTHONPATH=str(REPO), PREFECT_HOME=str(project / ".prefect-home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
               PREFECT_LOCAL_STORAGE_PATH=str(project / ".prefect" / "storage"))
    return env


def start_grid(project: Path, params: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.grid", "--params", str(params)], cwd=project,
                            env=env_for(project), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def artifacts(project: Path) -> list[Path]:
    return [p for p in project.rglob("*") if p.is_file() and p.suffix in (".parquet", ".json", ".safetensors", ".onnx")
            and ".partial" not in p.name and ".prefect" not in p.parts]


def assert_all_artifacts_verify(project: Path) -> int:
    import json

    from psaq.io import read_samples
    from psaq.models.checkpoint import read_state_dict

    count = 0
    for p in artifacts(project):
        if p.suffix == ".parquet":
            read_samples(p)
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".safetensors":
            read_state_dict(p)
        count += 1
    return count


def test_kill_9_mid_synthesis_then_rerun_finishes_and_reuses_finished_work(tmp_path):
    params = write_params(tmp_path, synthesis={"steps_per_round": 150, "warmup_steps": 10},
                          grid={"methods": ["gaussian", "psaq", "psaq-noent"], "bits": ["W8A8"]},
                          tracking={"enabled": False})
    proc = start_grid(tmp_path, params)
    deadline = time.time() + 300
    first_done = None
    while time.time() < deadline and proc.poll() is None:
        done = sorted((tmp_path / "data" / "samples").glob("*.parquet")) if (tmp_path / "data").exists() else []
        if done:
            first_done = done[0]
            break
        time.sleep(0.2)
    assert first_done is not None, proc.communicate()[0][-3000:]
    time.sleep(1.0)  # the next synthesis is under way
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stamp = first_done.stat().st_mtime_ns
    assert_all_artifacts_verify(tmp_path)  # nothing half-written is visible

    rerun = subprocess.run([sys.executable, "-m", "flows.grid", "--params", str(params)], cwd=tmp_path,
                           env=env_for(tmp_path), capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert first_done.stat().st_mtime_ns == stamp  # finished work was not recomputed
    assert len(list((tmp_path / "data" / "samples").glob("*.parquet"))) == 3
    assert assert_all_artifacts_verify(tmp_path) >= 3 + 3 + 3


def test_two_grid_runs_at_once_both_finish_with_the_same_results(tmp_path):
    params = write_params(tmp_path, grid={"methods": ["psaq", "gaussian"], "bits": ["W8A8", "W4A8"]},
                          tracking={"enabled": False})
    a, b = start_grid(tmp_path, params), start_grid(tmp_path, params)
    out_a, out_b = a.communicate(timeout=900)[0], b.communicate(timeout=900)[0]
    assert a.returncode == 0, out_a[-3000:]
    assert b.returncode == 0, out_b[-3000:]
    lines = lambda out: sorted(l.split("|")[-1].strip() for l in out.splitlines() if ": top-1" in l)  # noqa: E731
    assert lines(out_a) == lines(out_b) and len(lines(out_a)) == 4
    assert assert_all_artifacts_verify(tmp_path) > 0


def test_disk_full_leaves_nothing_half_written_and_no_cache_entry(project, monkeypatch):
    import errno

    import pyarrow.parquet as pq

    from flows.quantize import quantize

    params = write_params(project, tracking={"enabled": False})
    real_write = pq.write_table

    def full_disk(table, where, **kw):
        Path(where).write_bytes(b"PAR1 partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(where))

    monkeypatch.setattr(pq, "write_table", full_disk)
    with pytest.raises(OSError, match="No space left"):
        quantize(calib="psaq", params_path=str(params))
    assert not list((project / "data" / "samples").glob("*")), "a partial sample set was left behind"

    monkeypatch.setattr(pq, "write_table", real_write)
    record = quantize(calib="psaq", params_path=str(params))  # reruns synthesis: the failure was not cached
    assert 0 <= record["top1"] <= 100
    assert len(list((project / "data" / "samples").glob("*.parquet"))) == 1


def test_same_seed_gives_identical_samples_and_metrics(tmp_path, monkeypatch, prefect_server):
    from flows.quantize import quantize

    results = []
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.setenv("PSAQ_PROJECT", str(folder))
        monkeypatch.chdir(folder)
        params = write_params(folder, tracking={"enabled": False})
        record = quantize(calib="psaq", params_path=str(params))
        [samples] = (folder / "data" / "samples").glob("*.parquet")
        from psaq.io import read_samples

        results.append(({k: record[k] for k in ("top1", "top5", "agreement")},
                        read_samples(samples).metadata["content_sha256"]))
        from psaq.io import tensor_sha256
        from psaq.models.checkpoint import read_state_dict

        [trained] = (folder / "models").glob("digits-vit-seed0-*.safetensors")
        weights = read_state_dict(trained)  # compared by tensors: the file also holds the wall time
        results[-1] += (tuple(tensor_sha256(weights[k]) for k in sorted(weights)),)
    assert results[0] == results[1]


@pytest.mark.parametrize("variable,value,message", [
    ("MLFLOW_TRACKING_URI", "http://127.0.0.1:9", "MLflow tracking server http://127.0.0.1:9 is unreachable"),
    ("PREFECT_API_URL", "http://127.0.0.1:9/api", "Prefect server http://127.0.0.1:9/api is unreachable"),
])
def test_unreachable_services_are_named(tmp_path, variable, value, message):
    params = write_params(tmp_path)
    env = {**env_for(tmp_path), variable: value}
    proc = subprocess.run([sys.executable, "-m", "flows.grid", "--params", str(params)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_gpu_asked_for_where_there_is_none(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    params = write_params(tmp_path, runtime={"device": "cuda"})
    proc = subprocess.run([sys.executable, "-m", "flows.stages", "fp32", "--params", str(params)], cwd=tmp_path,
                          env=env_for(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA GPU" in proc.stderr and "Traceback" not in proc.stderr


def test_sample_set_of_another_model_is_never_used(project):
    import torch

    from psaq.io import SampleSet, write_samples
    from tasks.artifacts import Artifact
    from tasks.calibrate import calibrate_model

    params = write_params(project)
    from flows.points import load_checkpoint_stage
    from tasks.params import load_params

    p = load_params(params)
    ckpt = load_checkpoint_stage(p, 0)
    model = {"name": "digits-vit", "checkpoint": None, "pretrained": False, "model_args": {}, "train_seed": 0}
    runtime = {"device": "cpu", "dataset": None, "threads": None}
    quant = {"w_bits": 8, "a_bits": 8, "act_observer": "minmax", "weight_observer": "minmax", "percentile": 99.99,
             "quantize_attention": True}
    from psaq.errors import SampleSetError

    foreign = write_samples(project / "foreign.parquet", SampleSet(torch.zeros(4, 3, 32, 32), torch.zeros(4), {"model": "deit"}))
    with pytest.raises(SampleSetError, match="made for model='deit'"):
        calibrate_model.fn(model, ckpt, Artifact.of(foreign), quant, runtime, str(project / "q.safetensors"), "x")
    wrong_shape = write_samples(project / "shape.parquet",
                                SampleSet(torch.zeros(4, 3, 16, 16), torch.zeros(4), {"model": "digits-vit"}))
    with pytest.raises(SampleSetError, match="shape"):
        calibrate_model.fn(model, ckpt, Artifact.of(wrong_shape), quant, runtime, str(project / "q.safetensors"), "x")
    assert not (project / "q.safetensors").exists()
