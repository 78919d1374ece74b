"""The report's figures render from what the report computes, gray or colour, with or without real images."""

import torch

from psaq.data import InputSpec
from psaq.plots import sample_grid, similarity_histograms


def test_similarity_rows_per_set_with_entropies_and_a_reference(tmp_path):
    g = torch.Generator().manual_seed(0)
    sims = {name: [torch.rand(200, generator=g) * 2 - 1 for _ in range(3)] for name in ("psaq", "gaussian", "real")}
    entropies = {name: [-0.5, -0.4, -0.3] for name in sims}
    out = similarity_histograms(sims, tmp_path / "sim.png", entropies=entropies)
    assert out.stat().st_size > 10_000
    without_real = {k: v for k, v in sims.items() if k != "real"}
    assert similarity_histograms(without_real, tmp_path / "sim2.png").is_file()


def test_samples_of_a_gray_model_with_their_agreement(tmp_path):
    spec = InputSpec((1, 28, 28), (0.3,), (0.35,), 10, class_names=tuple("abcdefghij"))
    g = torch.Generator().manual_seed(0)
    sets = {"psaq": (torch.randn(8, 1, 28, 28, generator=g), torch.arange(8)),
            "gaussian": (torch.randn(8, 1, 28, 28, generator=g), torch.full((8,), -1))}
    out = sample_grid(sets, spec, tmp_path / "samples.png", agreement={"psaq": (5, 8), "gaussian": (0, 0)})
    assert out.stat().st_size > 10_000
