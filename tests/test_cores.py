"""Thread count from the idle usable cores, measured on a /proc/stat written by the test."""

import pytest

from psaq import cores
from psaq.cores import choose_threads, idle_cores


def stat_line(core: int, busy: int, idle: int) -> str:
    # user nice system idle iowait irq softirq steal guest guest_nice
    return f"cpu{core} {busy} 0 0 {idle} 0 0 0 0 0 0"


@pytest.fixture
def fake_stat(tmp_path, monkeypatch):
    """A /proc/stat whose second reading is ``after``: cores 0 and 1 usable, core 2 not."""
    path = tmp_path / "stat"
    before = ["cpu 0 0 0 0 0 0 0 0 0 0", stat_line(0, 1000, 5000), stat_line(1, 1000, 5000), stat_line(2, 0, 0)]

    def make(after: dict[int, tuple[int, int]]):
        path.write_text("\n".join(before) + "\n")

        def sleep(_seconds):
            path.write_text("\n".join(["cpu 0 0 0 0 0 0 0 0 0 0",
                                       *(stat_line(c, 1000 + b, 5000 + i) for c, (b, i) in after.items())]) + "\n")

        monkeypatch.setattr(cores.time, "sleep", sleep)
        monkeypatch.setattr(cores, "usable_cores", lambda: [0, 1])
        return path

    return make


def test_one_core_busy_with_other_work_counts_half(fake_stat):
    # core 0 busy the whole time, core 1 idle; core 2 (not ours) is ignored even when busy
    path = fake_stat({0: (20, 0), 1: (0, 20), 2: (20, 0)})
    assert idle_cores(stat=path) == pytest.approx(1.0)


def test_partly_busy_cores_add_up(fake_stat):
    path = fake_stat({0: (5, 15), 1: (15, 5)})
    assert idle_cores(stat=path) == pytest.approx(1.0)


def test_unreadable_stat_is_unknown(tmp_path):
    assert idle_cores(sample_s=0, stat=tmp_path / "missing") is None
    (tmp_path / "garbled").write_text("cpu0 x y\n")
    assert idle_cores(sample_s=0, stat=tmp_path / "garbled") is None


def test_requested_threads_win(monkeypatch):
    monkeypatch.setattr(cores, "idle_cores", lambda: pytest.fail("measured although a count was given"))
    assert choose_threads(3).count == 3


def test_omp_num_threads_is_obeyed(monkeypatch):
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(cores, "idle_cores", lambda: pytest.fail("measured although OMP_NUM_THREADS was set"))
    assert choose_threads(None).count == torch.get_num_threads()


@pytest.mark.parametrize("idle, want", [(2.0, 2), (1.4, 1), (1.6, 2), (0.1, 1), (None, 2)])
def test_one_thread_per_idle_core(monkeypatch, idle, want):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cores, "usable_cores", lambda: [0, 1])
    monkeypatch.setattr(cores, "idle_cores", lambda: idle)
    chosen = choose_threads(None)
    assert chosen.count == want
    assert chosen.reason.startswith(str(want))
