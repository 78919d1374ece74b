import pytest
import torch

from psaq.errors import UnknownNameError
from psaq.quant.observers import OBSERVERS, make_observer
from psaq.quant.primitives import fake_quantize, int_range


def test_registry_names():
    assert {"minmax", "percentile", "mse"} <= set(OBSERVERS.names())
    with pytest.raises(UnknownNameError, match="did you mean minmax"):
        make_observer("minmx", 8, symmetric=False)


def test_minmax_accumulates_over_batches():
    obs = make_observer("minmax", 8, symmetric=False)
    obs.update(torch.tensor([0.0, 1.0]))
    obs.update(torch.tensor([-3.0, 0.5]))
    lo, hi = obs.compute_range()
    assert lo.item() == -3.0 and hi.item() == 1.0


def test_per_channel_minmax():
    w = torch.tensor([[1.0, -2.0, 0.0], [0.1, 0.3, -0.2]])
    obs = make_observer("minmax", 8, symmetric=True, axis=0)
    obs.update(w)
    lo, hi = obs.compute_range()
    torch.testing.assert_close(lo, torch.tensor([-2.0, -0.2]))
    torch.testing.assert_close(hi, torch.tensor([1.0, 0.3]))


def test_percentile_clips_outliers():
    x = torch.cat([torch.randn(100_000, generator=torch.Generator().manual_seed(0)), torch.tensor([1000.0])])
    obs = make_observer("percentile", 8, symmetric=False, percentile=99.9)
    obs.update(x)
    lo, hi = obs.compute_range()
    assert 2.5 < hi.item() < 4.0 and -4.0 < lo.item() < -2.5


@pytest.mark.parametrize("bits", [4, 6])
def test_mse_is_no_worse_than_minmax(bits):
    g = torch.Generator().manual_seed(bits)
    x = torch.cat([torch.randn(50_000, generator=g), 40 * torch.rand(20, generator=g)])
    errors = {}
    for name in ("minmax", "mse"):
        obs = make_observer(name, bits, symmetric=False)
        obs.update(x)
        scale, zp = obs.qparams()
        errors[name] = (fake_quantize(x, scale, zp, *int_range(bits, False)) - x).pow(2).mean().item()
    assert errors["mse"] < errors["minmax"]


def test_observer_without_data_refuses():
    with pytest.raises(RuntimeError, match="saw no data"):
        make_observer("minmax", 8, symmetric=False).qparams()
