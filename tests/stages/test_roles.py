"""Readers of a finished point ask the graph which stage made the model they read, never a name:
a stage added between calibrate and evaluate (CONTRIBUTING's recipe) is what export, the
record (and so the report and MLflow) and evaluate read."""

import dataclasses
import functools

import pytest

from psaq.pipeline import Point, inline_runner, record, setting_names, submit_points
from psaq.stages import graph
from psaq.stages.stage import POINT, POINT_STEM, Stage
from psaq.store import stable_hash
from tests.test_pipeline import tiny


def toy_run(store, quantized, stem):
    """A stage after reconstruct that hands on a copy of the model under its own name."""
    out = store.path("models/toy", stem, stable_hash("toy", quantized.sha256), ".safetensors")
    return store.publish(out, lambda tmp: tmp.write_bytes(open(quantized.verify(), "rb").read()))


@pytest.fixture
def toy_stage(monkeypatch):
    toy = Stage("toy", __name__, (), ("reconstruct",), POINT, (f"pipeline/toy/{POINT_STEM}.safetensors",),
                "models/toy", "quantized")
    order = list(graph.GRAPH)
    stages = {**graph.GRAPH, "toy": toy}
    for reader in ("evaluate", "export"):  # the recipe: they read the new stage instead of reconstruct
        old = stages[reader]
        stages[reader] = dataclasses.replace(old, needs=tuple("toy" if n == "reconstruct" else n for n in old.needs))
    order.insert(order.index("reconstruct") + 1, "toy")
    saved = dict(graph.GRAPH)
    graph.GRAPH.clear()
    graph.GRAPH.update({name: stages[name] for name in order})
    monkeypatch.setitem(graph.RUN, "toy", toy_run)
    setting_names.cache_clear()
    yield toy
    graph.GRAPH.clear()
    graph.GRAPH.update(saved)
    setting_names.cache_clear()


def test_a_stage_between_calibrate_and_evaluate_is_what_every_reader_reads(tmp_path, toy_stage):
    from psaq.store import Store

    seen = {}
    run_evaluate, run_export = graph.RUN["evaluate"], graph.RUN["export"]

    def spy(name, fn):
        @functools.wraps(fn)  # the pipeline reads a stage's settings from its signature
        def wrapped(store, **inputs):
            seen[name] = inputs["quantized"].path
            return fn(store, **inputs)
        return wrapped

    graph.RUN["evaluate"], graph.RUN["export"] = spy("evaluate", run_evaluate), spy("export", run_export)
    try:
        params = tiny(grid={"export": True})
        [job] = submit_points(inline_runner(Store(tmp_path), progress=False), params,
                              [Point.parse(0, "psaq", 0, "W8A8", "minmax")])
    finally:
        graph.RUN["evaluate"], graph.RUN["export"] = run_evaluate, run_export
    toy_out = job["toy"].result().path
    assert "/models/toy/" in toy_out
    assert seen == {"evaluate": toy_out, "export": toy_out}  # both read the new stage's model
    assert record(job)["quantized"] == toy_out  # the record, which the report and MLflow read
    assert graph.producer("quantized") == "toy" == graph.producer("quantized", "export")


def test_a_reader_with_two_models_of_one_role_is_refused(toy_stage):
    graph.GRAPH["evaluate"] = dataclasses.replace(graph.GRAPH["evaluate"],
                                                  needs=(*graph.GRAPH["evaluate"].needs, "reconstruct"))
    with pytest.raises(LookupError, match="stage 'evaluate' reads 2 stages as 'quantized'"):
        graph.producer("quantized")


def test_a_grid_point_carries_its_bits_as_ints_and_its_site_set_apart():
    from psaq.params import params_from_dict
    from psaq.pipeline import grid_points, quant_config

    params = params_from_dict({"grid": {"bits": ["W4A8", "W4A4+repq"], "methods": ["psaq"], "seeds": [0]}})
    points = grid_points(params)
    assert [(p.w_bits, p.a_bits, p.sites) for p in points] == [(4, 8, None), (4, 4, "repq")]
    assert [p.bits for p in points] == ["W4A8", "W4A4+repq"]  # the tag views, records and tables spell
    assert Point.parse(*points[1].coords.values()) == points[1]
    q = quant_config(params, points[1])
    assert (q.w_bits, q.a_bits, q.sites) == (4, 4, "repq")
    assert quant_config(params, points[0]).sites == params.quant.sites
