"""One stage graph: dvc.yaml is generated from it, and each stage's code is its import closure."""

from pathlib import Path

import pytest

from psaq import codehash
from psaq.stages.graph import GRAPH

REPO = Path(__file__).resolve().parents[2]


def test_committed_dvc_yaml_is_what_the_graph_generates():
    from flows.dvc_stages import dvc_yaml
    from psaq.params import load_params

    committed = (REPO / "dvc.yaml").read_text()
    assert committed == dvc_yaml(load_params(REPO / "params.yaml")), "run: python -m flows.dvc_stages write-dvc-yaml"
    # the default reads nothing outside the project: `dvc status` is clean after `dvc repro`
    assert "always_changed" not in committed.split("stages:", 1)[1]


def _params(**sections):
    import yaml

    from psaq.params import params_from_dict

    data = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in sections.items():
        data[section].update(values)
    return params_from_dict(data)


def test_only_what_reads_outside_the_project_runs_on_every_repro(tmp_path, monkeypatch):
    """DVC cannot see a dataset folder, a checkpoint or timm's cache change: those stages hash them
    themselves and run on every repro. The built-in datasets and psaq's own training are fixed by
    the code (their files are checked against pinned hashes), so nothing runs for them."""
    import yaml

    from flows.dvc_stages import dvc_yaml
    from psaq.pipeline import reads_outside

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "images"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
    assert reads_outside(_params()) == {}
    assert reads_outside(_params(model={"name": "fashion-vit"})) == {}
    assert reads_outside(_params(model={"name": "vit_tiny_patch16_224", "random_weights": True, "pretrained": False},
                                 runtime={"dataset": str(folder)})) == {"data": f"the image folder {folder}"}
    assert set(reads_outside(_params(model={"checkpoint": str(tmp_path / "w.safetensors")}))) == {"model"}
    assert set(reads_outside(_params(model={"name": "vit_tiny_patch16_224", "pretrained": True},
                                     runtime={"dataset": str(folder)}))) == {"model", "data"}
    stages = yaml.safe_load(dvc_yaml(_params(model={"name": "vit_tiny_patch16_224", "random_weights": True, "pretrained": False},
                                             runtime={"dataset": str(folder)})))["stages"]
    assert [name for name, spec in stages.items() if spec.get("always_changed")] == ["data"]


def test_a_stage_command_refuses_a_dvc_yaml_that_would_not_rerun_an_outside_read(tmp_path, monkeypatch):
    from flows.dvc_stages import check_reruns_outside_reads, dvc_yaml
    from psaq.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "images"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
    before = _params(model={"name": "vit_tiny_patch16_224", "random_weights": True, "pretrained": False})
    after = _params(model={"name": "vit_tiny_patch16_224", "random_weights": True, "pretrained": False}, runtime={"dataset": str(folder)})
    (tmp_path / "dvc.yaml").write_text(dvc_yaml(before))
    check_reruns_outside_reads("data", before)
    with pytest.raises(ConfigError, match=r"stage 'data' read the image folder .*make repro"):
        check_reruns_outside_reads("data", after)
    (tmp_path / "dvc.yaml").write_text(dvc_yaml(after))
    check_reruns_outside_reads("data", after)


def test_each_stage_depends_on_the_code_it_runs_and_not_on_the_rest():
    files = {name: set(stage.code_files()) for name, stage in GRAPH.items()}
    assert "psaq/synth/kde.py" in files["samples"] and "psaq/synth/kde.py" not in files["fp32"]
    assert "psaq/io.py" in files["samples"] and "psaq/io.py" in files["calibrate"]
    assert "psaq/quant/primitives.py" in files["calibrate"] and "psaq/quant/primitives.py" in files["export"]
    assert "psaq/quant/primitives.py" not in files["samples"] and "psaq/quant/primitives.py" not in files["fp32"]
    assert "psaq/evaluation.py" in files["fp32"] and "psaq/evaluation.py" in files["evaluate"]
    assert "psaq/data.py" in files["data"] and "psaq/folders.py" in files["data"]
    assert "psaq/plots.py" in files["report"] and "psaq/plots.py" not in files["evaluate"]
    for name, stage in GRAPH.items():
        assert f"psaq/stages/{name}.py" in files[name]
        assert all(n in GRAPH for n in stage.needs)


def test_the_graph_is_in_no_stage_s_code_and_each_stage_in_its_own_only():
    # a stage declares itself; adding or reordering stages in the graph re-keys nothing, and a
    # stage's declaration keys that stage alone
    for name, stage in GRAPH.items():
        files = set(stage.code_files())
        assert "psaq/stages/graph.py" not in files and "psaq/pipeline.py" not in files
        others = {f"psaq/stages/{other}.py" for other in GRAPH if other != name}
        assert not files & others, f"stage {name} imports {sorted(files & others)}"


def test_every_stage_argument_is_wired_from_params_or_upstream():
    # the pipeline builds each point stage's call from declarations alone: an argument that is
    # neither an upstream output (Stage.passes_as) nor a known setting fails here, not mid-run
    from psaq.pipeline import GRID_STAGES, setting_names

    for name, stage in GRAPH.items():
        if name not in GRID_STAGES:
            setting_names(name)
        for up in stage.needs:
            assert GRAPH[up].passes_as, f"{up} declares no argument name"
    assert list(GRAPH)[0] == "model", "a model that cannot be loaded is the first thing a run reports"


def test_an_argument_nobody_provides_is_refused(monkeypatch):
    from psaq import pipeline

    def run(store, model, mystery):
        return None, False

    monkeypatch.setitem(pipeline.RUN, "fp32", run)
    pipeline.setting_names.cache_clear()
    try:
        with pytest.raises(TypeError, match="mystery"):
            pipeline.setting_names("fp32")
    finally:
        pipeline.setting_names.cache_clear()


def test_training_code_keys_the_model_stage_only():
    # editing the trainer retrains psaq's own models; the sample sets, calibrations and results of
    # a checkpoint or a timm model (keyed by their weights' hash, not by the model stage's code) stay
    training = {"psaq/models/train.py", "psaq/models/trainers.py", "psaq/stages/model.py"}
    for name, stage in GRAPH.items():
        files = set(stage.code_files())
        if name == "model":
            assert training <= files
        else:
            assert not training & files, f"stage {name} imports {sorted(training & files)}"


def test_loading_a_model_imports_no_store_and_no_stage():
    files = {p.relative_to(REPO).as_posix() for p in codehash.closure("psaq.models")}
    assert not {f for f in files if f.startswith("psaq/stages/") or f in ("psaq/store.py", "psaq/models/train.py")}


@pytest.fixture
def package(tmp_path, monkeypatch):
    pkg = tmp_path / "pkgx"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkgx.sub import b\n    return b\n")
    (pkg / "sub" / "b.py").write_text("from . import c\nX = 1\n")
    (pkg / "sub" / "c.py").write_text("Y = 2\n")
    (pkg / "d.py").write_text("Z = 3\n")
    monkeypatch.setattr(codehash, "ROOT", tmp_path)
    monkeypatch.setattr(codehash, "PACKAGES", ("pkgx",))
    codehash.closure.cache_clear()
    codehash.code_hash.cache_clear()
    yield pkg
    codehash.closure.cache_clear()
    codehash.code_hash.cache_clear()


def test_closure_follows_imports_inside_functions_relative_imports_and_package_inits(package):
    got = {p.relative_to(package.parent).as_posix() for p in codehash.closure("pkgx.a")}
    assert got == {"pkgx/__init__.py", "pkgx/a.py", "pkgx/sub/__init__.py", "pkgx/sub/b.py", "pkgx/sub/c.py"}


def test_the_code_hash_changes_with_a_file_in_the_closure_only(package):
    before = codehash.code_hash("pkgx.a")
    (package / "d.py").write_text("Z = 4\n")
    codehash.code_hash.cache_clear()
    assert codehash.code_hash("pkgx.a") == before
    (package / "sub" / "c.py").write_text("Y = 3\n")
    codehash.code_hash.cache_clear()
    assert codehash.code_hash("pkgx.a") != before


def _module_imports() -> dict[str, set[str]]:
    """psaq module → the psaq modules it imports (``from pkg import submodule`` names the submodule;
    a package's ``__init__`` running first is not an edge)."""
    import ast

    names = {}
    for path in (REPO / "psaq").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in names.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "psaq":
                subs = {f"{node.module}.{a.name}" for a in node.names} & names.keys()
                deps |= subs if len(subs) == len(node.names) else subs | {node.module}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = (deps & names.keys()) - {name}
    return graph


def test_the_package_has_no_import_cycles():
    graph = _module_imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " → ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert len(graph) > 50


def test_make_repro_regenerates_dvc_yaml_when_params_make_a_stage_read_outside(tmp_path, monkeypatch):
    from flows.dvc_stages import refresh_dvc_yaml

    monkeypatch.chdir(tmp_path)
    (tmp_path / "images" / "a").mkdir(parents=True)
    (tmp_path / "images" / "b").mkdir()
    dvc_file = tmp_path / "dvc.yaml"
    dvc_file.write_text((REPO / "dvc.yaml").read_text())
    assert refresh_dvc_yaml(_params(), dvc_file) is None
    outside = _params(model={"name": "vit_tiny_patch16_224", "random_weights": True, "pretrained": False},
                      runtime={"dataset": str(tmp_path / "images")})
    line = refresh_dvc_yaml(outside, dvc_file)
    assert line and "stage 'data' reads the image folder" in line and "always_changed: true" in dvc_file.read_text()
    assert refresh_dvc_yaml(outside, dvc_file) is None
    assert refresh_dvc_yaml(_params(), dvc_file) == "sync: dvc.yaml regenerated"
    assert dvc_file.read_text() == (REPO / "dvc.yaml").read_text()
