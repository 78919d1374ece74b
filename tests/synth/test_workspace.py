"""Scratch buffers reused across calls: never handed out twice, per thread, bounded."""

import threading

import torch

from psaq.synth import workspace
from psaq.synth.kde import kde_density


def test_a_buffer_is_handed_out_again_only_after_it_is_given_back():
    workspace.clear()
    like = torch.zeros(1)
    a = workspace.take(like, 1000)
    b = workspace.take(like, 1000)
    assert a.data_ptr() != b.data_ptr()
    workspace.give(a)
    assert workspace.take(like, 1000).data_ptr() == a.data_ptr()
    assert workspace.take(like, 1000).data_ptr() not in (a.data_ptr(), b.data_ptr())  # the pool is empty again


def test_threads_do_not_share_buffers():
    workspace.clear()
    like = torch.zeros(1)
    workspace.give(workspace.take(like, 1000))
    seen = []
    t = threading.Thread(target=lambda: seen.append(workspace.take(like, 1000).data_ptr()))
    t.start()
    t.join()
    assert seen[0] != workspace.take(like, 1000).data_ptr()


def test_the_pool_keeps_at_most_its_budget(monkeypatch):
    workspace.clear()
    monkeypatch.setattr(workspace, "_POOL_BYTES", 4000)
    like = torch.zeros(1)
    first, second = workspace.take(like, 1000), workspace.take(like, 1000)  # 4,000 bytes each
    workspace.give(first, second)
    assert workspace.take(like, 1000).data_ptr() == first.data_ptr()
    assert workspace.take(like, 1000).data_ptr() != second.data_ptr()  # not kept: over the budget


def test_calls_whose_backward_is_pending_do_not_overwrite_each_other():
    """Two densities of the same shape, both kept for one backward: each keeps its own kernels."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 400, generator=g, dtype=torch.float64).requires_grad_(True)
    b = torch.rand(3, 400, generator=g, dtype=torch.float64).requires_grad_(True)
    points = torch.linspace(0, 1, 10, dtype=torch.float64).repeat(3, 1)
    for _ in range(2):  # the second round runs on buffers the first gave back
        (ga, gb) = torch.autograd.grad((kde_density(a, points, 0.05) - 2 * kde_density(b, points, 0.05)).sum(), (a, b))
        (wa,) = torch.autograd.grad(kde_density(a, points, 0.05).sum(), a)
        (wb,) = torch.autograd.grad(kde_density(b, points, 0.05).sum(), b)
        torch.testing.assert_close(ga, wa, rtol=1e-12, atol=0)
        torch.testing.assert_close(gb, -2 * wb, rtol=1e-12, atol=0)
