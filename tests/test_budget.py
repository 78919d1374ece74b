"""The benchmark's plan: the work a grid holds and the cold time it multiplies out to."""

import dataclasses
import math

import pytest

from psaq.budget import Speeds, Work, estimate, measure, minutes, work_of
from psaq.datasets.digits import digits_split
from psaq.models.trainers import TRAINERS
from psaq.params import params_from_dict
from psaq.pipeline import grid_points


def digits_params(**grid):
    return params_from_dict({"grid": {"train_seeds": [0, 1], "methods": ["psaq", "gaussian"], "seeds": [0, 1, 2],
                                      "bits": ["W4A8", "W4A4+repq"], **grid},
                             "synthesis": {"rounds": 2, "steps_per_round": 5, "warmup_steps": 1, "jitter_px": [1, 2]}})


def test_work_counts_what_the_grid_holds():
    params = digits_params()
    work = work_of(params, grid_points(params))
    train = params.train.resolved(TRAINERS.get("digits-vit").defaults)
    assert work.models_to_train == 2
    assert work.train_steps == train.epochs * math.ceil(len(digits_split("train")) / train.batch_size)
    assert work.sample_sets == {"psaq": 6, "gaussian": 6}  # 2 training seeds x 3 seeds, shared by the bit settings
    assert work.synthesis_steps == 10
    assert work.points == 2 * 2 * 3 * 2
    assert work.eval_images == len(digits_split("test"))
    assert "2 to train" in work.lines()[0] and "24 points" in work.lines()[0]


def test_a_checkpoint_means_nothing_to_train(tmp_path):
    params = params_from_dict({"model": {"name": "digits-vit", "checkpoint": str(tmp_path / "w.safetensors")}})
    assert work_of(params, grid_points(params)).models_to_train == 0


def test_estimate_multiplies_speeds_by_work():
    work = Work("m", models_to_train=2, train_steps=100, train_batch=8, sample_sets={"psaq": 3, "gaussian": 3},
                synthesis_steps=50, points=12, eval_images=1000)
    speeds = Speeds(train_step_s=0.1, synthesis_step_s={"psaq": 0.02}, float_image_s=1e-4, quantized_image_s=2e-4)
    got = estimate(work, speeds)
    assert got["train"] == pytest.approx(2 * 100 * 0.1)
    assert got["synthesize"] == pytest.approx(3 * 50 * 0.02)  # gaussian draws at once
    assert got["evaluate"] == pytest.approx(1000 * (12 * 2e-4 + 2 * 1e-4))
    assert minutes(90) == "1.5 min" and minutes(30) == "30 s"


def test_psaq_v2_points_add_their_rounds():
    params = digits_params(train_seeds=[0], seeds=[0], bits=["W8A8", "W4A8"], methods=["psaq", "psaq-v2"])
    params = dataclasses.replace(params, adaptive=dataclasses.replace(params.adaptive, rounds=2, sample_steps=3,
                                                                        student_steps=2))
    work = work_of(params, grid_points(params))
    assert work.adaptive_points == 2 and work.adaptive_steps == 2 * (3 + 2)
    plain = Work("m", 0, 0, 0, {"psaq": 1}, 10, 2, 100)
    speeds = Speeds(0.0, {"psaq": 0.02}, 1e-4, 2e-4, adaptive_step_s=0.01)
    assert "psaq-v2 rounds" not in estimate(plain, speeds)
    assert estimate(work, speeds)["psaq-v2 rounds"] == pytest.approx(2 * 10 * 0.01)


def test_measure_times_every_stage_that_costs():
    params = digits_params(train_seeds=[0], seeds=[0], bits=["W8A8"])
    speeds = measure(params, work_of(params, grid_points(params)))
    assert speeds.train_step_s > 0 and speeds.float_image_s > 0 and speeds.quantized_image_s > 0
    assert set(speeds.synthesis_step_s) == {"psaq"}


def test_slowdown_counts_the_cores_other_work_holds():
    from psaq.budget import slowdown

    assert slowdown(workers=2, threads=1, idle=2.0, cores=2) == pytest.approx(1.0)  # quiet
    assert slowdown(workers=2, threads=1, idle=1.0, cores=2) == pytest.approx(1.5)  # one core held
    assert slowdown(workers=2, threads=1, idle=0.0, cores=2) == pytest.approx(2.0)  # both held
    assert slowdown(workers=1, threads=1, idle=2.0, cores=2) == pytest.approx(1.0)  # a core to spare
    assert slowdown(workers=2, threads=1, idle=None, cores=2) == pytest.approx(1.0)  # unknown: as quiet


def test_probes_take_cpu_time_which_a_busy_machine_does_not_stretch():
    import time

    import torch

    from psaq.budget import _timed

    def busy_then_asleep():
        end = time.process_time() + 0.05  # 50 ms of this process's CPU, however long other work makes it take
        while time.process_time() < end:
            pass
        time.sleep(0.3)  # waiting for the core, as a probe does beside other work: not its cost

    spent = _timed(busy_then_asleep, torch.device("cpu"))
    assert 0.04 < spent < 0.25


def test_makespan_schedules_tasks_as_the_flow_submits_them():
    from psaq.budget import REPORT_S, TASK_OVERHEAD_S, makespan

    params = digits_params(train_seeds=[0], seeds=[0, 1], bits=["W8A8"], methods=["psaq", "gaussian"])
    params = dataclasses.replace(params, grid=dataclasses.replace(params.grid, export=False))
    points = grid_points(params)
    work = Work("m", 0, 0, 0, {"psaq": 2, "gaussian": 2}, 100, len(points), 1000)
    speeds = Speeds(0.0, {"psaq": 0.1}, float_image_s=0.0, quantized_image_s=0.002, calibrate_s=1.0)
    one = makespan(params, points, work, speeds, workers=1)
    two = makespan(params, points, work, speeds, workers=2)
    # one worker: everything in a row (2 syntheses of 10 s, 4 calibrations of 1 s, 4 evaluations of 2 s)
    tasks = 1 + 1 + 1 + 4 + 4 + 4 + 4  # model, data, fp32, samples, calibrate, reconstruct, evaluate
    assert one == pytest.approx(2 * 10 + 4 * 1 + 4 * 2 + tasks * TASK_OVERHEAD_S + REPORT_S)
    # two workers run the two syntheses side by side, then the rest two at a time
    assert two < one and two == pytest.approx(10 + 2 * 1 + 2 * 2 + REPORT_S, abs=20 * TASK_OVERHEAD_S)


def test_a_plan_measures_schedules_and_weights_each_task():
    from psaq.budget import plan

    params = digits_params(train_seeds=[0], seeds=[0], bits=["W8A8"], methods=["psaq", "gaussian"])
    params = dataclasses.replace(params, grid=dataclasses.replace(params.grid, export=False),
                                 runtime=dataclasses.replace(params.runtime, threads=1))
    quiet = plan(params, grid_points(params), idle=2.0, cores=2)
    busy = plan(params, grid_points(params), idle=1.0, cores=2)
    assert quiet.factor == 1.0 and busy.factor == 1.5 and quiet.wall_s > 0
    assert quiet.task_seconds("samples", "psaq") > quiet.task_seconds("samples", "gaussian") == 0.0
