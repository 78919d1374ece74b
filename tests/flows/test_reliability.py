"""Faults: kill -9 mid-run, SIGTERM, two runs at once, a full disk; wrong services and bad input."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import shared_prefect
from tests.conftest import run_folder
from tests.flows.conftest import enter_project, subprocess_env, write_params
from tests.impostors import HealthOnly, NotAService, serve

pytestmark = pytest.mark.slow


def start(project: Path, *args: str, prefect_api_url: str | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=project, env=subprocess_env(project, prefect_api_url),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def published(project: Path) -> list[Path]:
    return [p for p in project.rglob("*") if p.is_file() and p.suffix in (".parquet", ".json", ".safetensors", ".onnx")
            and not p.name.startswith(".") and ".prefect" not in str(p) and "mlruns" not in p.parts]


def assert_all_published_verify(project: Path) -> int:
    from psaq.store import Store

    store = Store(project)
    count = 0
    for p in published(project):
        if store.sidecar(p).exists():
            assert store.lookup(p) is not None, p
            count += 1
    return count


def sample_sets(project: Path) -> list[Path]:
    """Published sample sets: a set being written is a hidden ``.<name>.<pid>-….partial.parquet``."""
    return sorted(p for p in (project / "data" / "samples").glob("*.parquet") if not p.name.startswith("."))


def children(pid: int) -> list[int]:
    import psutil

    return [c.pid for c in psutil.Process(pid).children(recursive=True)]


@pytest.mark.cost(50)
def test_kill_9_then_rerun_reuses_finished_work_and_leaves_no_server_or_stale_state(tmp_path, monkeypatch,
                                                                                  prefect_server):
    import mlflow
    import psutil

    # the kill lands within 0.1 s of the first sample set (gaussian), long before psaq's 2 x 200 steps end
    params = write_params(tmp_path, synthesis={"steps_per_round": 200, "warmup_steps": 10},
                          grid={"methods": ["gaussian", "psaq"], "bits": ["W8A8"]})
    shared_prefect.seed_home(run_folder(), tmp_path / ".prefect-home")  # where subprocess_env points it
    proc = start(tmp_path, "-m", "flows.grid", "--params", str(params))  # with a temporary server of its own
    deadline = time.time() + 300
    first_done = None
    while time.time() < deadline and proc.poll() is None:
        done = sample_sets(tmp_path)
        if done:
            first_done = done[0]
            break
        time.sleep(0.1)
    assert first_done is not None, proc.communicate()[0][-3000:]
    helpers = children(proc.pid)  # the temporary Prefect server among them
    os.kill(proc.pid, signal.SIGKILL)  # the process alone, as the OOM killer would
    proc.wait()
    assert sample_sets(tmp_path) == [first_done], "killed after the work was done"
    alive = lambda: [p for p in helpers if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]  # noqa: E731
    deadline = time.time() + 10
    while alive() and time.time() < deadline:
        time.sleep(0.2)
    assert not alive(), "a server outlived its flow"
    stamp = first_done.stat().st_mtime_ns
    assert assert_all_published_verify(tmp_path) >= 1  # nothing half-written is visible

    # the rerun in this process (another pid, as a new process would be), on the session's server
    from flows.grid import main

    enter_project(monkeypatch, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["--params", str(params)]) == 0
    assert first_done.stat().st_mtime_ns == stamp  # finished work was not recomputed
    assert len(list((tmp_path / "data" / "samples").glob("*.parquet"))) == 2
    assert not list(tmp_path.rglob(".*.partial*")), "stale temporary files were left"
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("psaq").experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert [r for r in runs if r.info.status == "FAILED"]  # the killed run's parent, marked by the rerun


@pytest.mark.cost(15)
def test_sigterm_stops_synthesis_within_seconds_and_leaves_nothing_half_written(tmp_path):
    write_params(tmp_path)  # the command line reads params.yaml here: a 1-block digits-vit trained 2 epochs
    proc = start(tmp_path, "-m", "psaq.cli", "quantize", "--steps", "5000")
    deadline = time.time() + 300
    while time.time() < deadline and not list(tmp_path.glob("data/samples/.*.partial*")):
        if list(tmp_path.glob("models/*.safetensors")):
            time.sleep(0.5)
            break
        time.sleep(0.2)
    time.sleep(4)  # well inside the 10,000-step synthesis
    stopped = time.time()
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, out[-2000:]
    assert time.time() - stopped < 10
    assert "psaq: interrupted" in out and "Traceback" not in out
    assert not list((tmp_path / "data").rglob("*.parquet")) and not list(tmp_path.rglob(".*.partial*"))


@pytest.mark.cost(30)
def test_two_grid_runs_at_once_both_finish_with_the_same_results(tmp_path, prefect_server):
    params = write_params(tmp_path, grid={"methods": ["psaq", "gaussian"], "bits": ["W8A8", "W4A8"]},
                          tracking={"enabled": False})
    a, b = (start(tmp_path, "-m", "flows.grid", "--params", str(params), prefect_api_url=prefect_server) for _ in range(2))
    out_a, out_b = a.communicate(timeout=900)[0], b.communicate(timeout=900)[0]
    assert a.returncode == 0, out_a[-3000:]
    assert b.returncode == 0, out_b[-3000:]
    lines = lambda out: sorted(l.split("|")[-1].strip() for l in out.splitlines() if ": top-1" in l)  # noqa: E731
    assert lines(out_a) == lines(out_b) and len(lines(out_a)) == 4
    assert assert_all_published_verify(tmp_path) > 0
    # the run's log records reach the temporary server before it stops: no "Error logging to API" after success
    assert "Error logging to API" not in out_a + out_b
    assert "Traceback" not in out_a + out_b  # the temporary server's own output goes to .prefect/


def test_disk_full_leaves_nothing_half_written_and_the_rerun_recomputes(project, monkeypatch):
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
    assert not [p for p in (project / "data" / "samples").rglob("*")], "a partial sample set was left behind"

    monkeypatch.setattr(pq, "write_table", real_write)
    record = quantize(calib="psaq", params_path=str(params))  # reruns synthesis: the failure was not kept
    assert 0 <= record["top1"] <= 100
    assert len(list((project / "data" / "samples").glob("*.parquet"))) == 1


def test_same_seed_gives_identical_samples_and_metrics(tmp_path, monkeypatch, prefect_server):
    from flows.quantize import quantize
    from psaq.io import read_samples

    results = []
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        enter_project(monkeypatch, folder)
        params = write_params(folder, tracking={"enabled": False})
        record = quantize(calib="psaq", params_path=str(params))
        [samples] = (folder / "data" / "samples").glob("*.parquet")
        results.append(({k: record[k] for k in ("top1", "top5", "agreement")},
                        read_samples(samples).metadata["content_sha256"], record["weights_sha256"]))
    assert results[0] == results[1]


@pytest.fixture
def impostor():
    servers = [serve(NotAService), serve(HealthOnly)]
    yield tuple(f"http://127.0.0.1:{s.server_port}" for s in servers)
    for server in servers:
        server.shutdown()


@pytest.mark.cost(9)
@pytest.mark.parametrize("value,message", [
    ("http://127.0.0.1:9/api", "Prefect server http://127.0.0.1:9/api is unreachable"),
    ("IMPOSTOR/api", "answers, but not as a Prefect API (/health gave 200)"),
    ("HEALTHY_IMPOSTOR/api", "answers /health, but not as a Prefect API (/admin/version gave 404)"),
])
def test_wrong_prefect_servers_are_named_in_one_line(tmp_path, impostor, value, message):
    """In a real process: Prefect reads PREFECT_API_URL when it starts."""
    params = write_params(tmp_path)
    value = value.replace("HEALTHY_IMPOSTOR", impostor[1]).replace("IMPOSTOR", impostor[0])
    env = {**subprocess_env(tmp_path), "PREFECT_API_URL": value}
    proc = subprocess.run([sys.executable, "-m", "flows.grid", "--params", str(params)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("value,message", [
    ("http://127.0.0.1:9", "MLflow tracking server http://127.0.0.1:9 is unreachable"),
    ("ftp://somewhere/mlflow", "has a scheme psaq does not know"),
    ("IMPOSTOR", "answers, but not as an MLflow tracking server"),
])
def test_wrong_mlflow_stores_are_named_in_one_line(tmp_path, monkeypatch, capsys, impostor, value, message):
    """In this process (a real one is tested above and in tests/test_cli.py): the URI is read at
    the check, before any work."""
    from flows.grid import main

    params = write_params(tmp_path)
    enter_project(monkeypatch, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", value.replace("IMPOSTOR", impostor[0]))
    assert main(["--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "data").exists()


def test_gpu_asked_for_where_there_is_none(tmp_path, monkeypatch, capsys):
    import torch

    from flows.dvc_stages import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    params = write_params(tmp_path, runtime={"device": "cuda"})
    enter_project(monkeypatch, tmp_path)
    assert main(["fp32", "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "Traceback" not in err


def test_a_sample_set_of_another_model_is_never_used(tmp_path):
    import torch

    from psaq.errors import SampleSetError
    from psaq.io import SampleSet, write_samples
    from psaq.params import load_params
    from psaq.pipeline import Point, model_config, quant_config
    from psaq.stages import calibrate, model
    from psaq.store import Artifact, Store

    params = load_params(write_params(tmp_path))
    store = Store(tmp_path)
    weights, _ = model.run(store, model_config(params, 0), params.train, progress=False)
    quant = quant_config(params, Point.parse(0, "psaq", 0, "W8A8", "minmax"))
    foreign = write_samples(tmp_path / "foreign.parquet",
                            SampleSet(torch.zeros(4, 3, 32, 32), torch.zeros(4), {"model": "deit"}))
    with pytest.raises(SampleSetError, match="made for model='deit'"):
        calibrate.run(store, model_config(params, 0), weights, Artifact.of(foreign), quant, "x", "cpu")
    other = write_samples(tmp_path / "other.parquet", SampleSet(torch.zeros(4, 3, 32, 32), torch.zeros(4),
                                                                {"model": "digits-vit", "weights_sha256": "0" * 64}))
    with pytest.raises(SampleSetError, match="weights_sha256"):
        calibrate.run(store, model_config(params, 0), weights, Artifact.of(other), quant, "x", "cpu")
    assert not list((tmp_path / "models" / "quantized").glob("*.safetensors"))
