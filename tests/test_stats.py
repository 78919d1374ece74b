"""The paired interval against hand-computed cases."""

import numpy as np
import pytest

from psaq.stats import pack_correct, paired_difference, unpack_correct


def test_a_constant_difference_has_a_zero_width_interval():
    a = np.ones((3, 50), dtype=bool)
    b = np.zeros((3, 50), dtype=bool)  # a right and b wrong on every image: +100 points whatever is resampled
    d = paired_difference(a, b)
    assert d.mean == 100.0 and d.low == 100.0 and d.high == 100.0
    assert d.decided and (d.runs, d.images) == (3, 50)
    assert str(d) == "+100.00 [+100.00, +100.00]"


def test_run_level_noise_widens_the_interval():
    """Run 0: a is 10 points better; run 1: a is 10 points worse. The mean is 0 and resampling
    runs alone spans [−10, +10]."""
    a = np.zeros((2, 10), dtype=bool)
    b = np.zeros((2, 10), dtype=bool)
    a[0, :1] = True
    b[1, :1] = True
    d = paired_difference(a, b)
    assert d.mean == 0.0 and d.low < -4 and d.high > 4 and not d.decided


def test_one_run_two_images_by_hand():
    """Differences 0 and 100 points; resampling 2 images gives means 0, 50, 100 with
    probabilities 1/4, 1/2, 1/4, so the 95 % percentile interval is [0, 100]."""
    a = np.array([[True, True]])
    b = np.array([[True, False]])
    d = paired_difference(a, b, replicates=4000)
    assert d.mean == 50.0 and d.low == 0.0 and d.high == 100.0
    assert not d.decided


def test_equal_methods_cannot_be_told_apart():
    rng = np.random.default_rng(0)
    a = rng.random((6, 400)) < 0.9
    d = paired_difference(a, a)
    assert d.mean == 0.0 and d.low == 0.0 and d.high == 0.0 and not d.decided
    b = rng.random((6, 400)) < 0.9  # independent noise, same accuracy
    d = paired_difference(a, b)
    assert d.low < 0 < d.high


def test_shapes_must_pair():
    with pytest.raises(ValueError, match="equal"):
        paired_difference(np.ones((2, 3)), np.ones((3, 3)))


def test_correctness_round_trips_through_hex():
    bits = np.random.default_rng(1).random(361) < 0.5
    assert np.array_equal(unpack_correct(pack_correct(bits), 361), bits)
