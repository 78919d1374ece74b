"""Quantizer parts swapped for learning inside ``learning(...)``, and back on exit whatever happens."""

import pytest
import torch

from psaq.quant.quantizers import ActQuantizer, Log2Quantizer, WeightQuantizer, learning


def _weights():
    return torch.randn(4, 3, generator=torch.Generator().manual_seed(0))


def _calibrated(bits=4):
    q = ActQuantizer(bits)
    q.set_qparams(torch.tensor([0.1]), torch.tensor([7.0]))
    return q


def test_parts_are_swapped_inside_and_defaults_back_after():
    act, log2 = _calibrated(), Log2Quantizer(4)
    wq = WeightQuantizer(_weights(), 4)
    soft = lambda w: w * 0  # noqa: E731
    with learning([act, log2], scales=[act], straight_through=True, drop_prob=0.25, rounding={wq: soft}) as learned:
        assert learned == [act.learned_scale] and isinstance(act.learned_scale, torch.nn.Parameter)
        assert act.straight_through and log2.straight_through and act.drop_prob == log2.drop_prob == 0.25
        assert wq.soft_rounding is soft and torch.equal(wq(torch.ones(4, 3)), torch.zeros(4, 3))
        with torch.no_grad():
            act.learned_scale.fill_(-0.2)  # LSQ learns |s|
    assert act.learned_scale is None and wq.soft_rounding is None
    assert not act.straight_through and not log2.straight_through and act.drop_prob == log2.drop_prob == 0.0
    torch.testing.assert_close(act.scale, torch.tensor([0.2]))  # the learned scale, frozen
    torch.testing.assert_close(act.zero_point, torch.tensor([7.0]))


def test_an_error_inside_still_restores_every_part():
    act = _calibrated()
    wq = WeightQuantizer(_weights(), 4)
    with pytest.raises(RuntimeError, match="boom"):
        with learning([act], scales=[act], straight_through=True, drop_prob=0.5, rounding={wq: lambda w: w}):
            raise RuntimeError("boom")
    assert act.learned_scale is None and wq.soft_rounding is None and not act.straight_through and act.drop_prob == 0.0


def test_straight_through_keeps_the_values_and_passes_the_gradient_where_the_grid_reaches():
    act = _calibrated()
    x = torch.linspace(-1, 1, 11, requires_grad=True)
    plain = act(x).detach()
    with learning([act], straight_through=True):
        out = act(x)
        out.sum().backward()
    assert torch.equal(out.detach(), plain)  # the official values
    lo = float((act.qmin - act.zero_point) * act.scale)
    hi = float((act.qmax - act.zero_point) * act.scale)
    reached = ((x >= lo) & (x <= hi)).float()
    assert 0 < reached.sum() < len(x)  # the calibrated range clips some of these values
    assert torch.equal(x.grad, reached)  # 1 where the grid reaches, 0 where the forward clips
    x.grad = None
    act(x).sum().backward()  # after: the official rounding has no gradient again
    assert torch.equal(x.grad, torch.zeros_like(x))
