"""One definition of a prediction: ties go to the lower class index everywhere, and are counted."""

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from psaq.evaluation import evaluate, ranked, tied_top


def test_ties_go_to_the_lower_class_as_argmax_breaks_them():
    logits = torch.tensor([[0.5, 2.0, 2.0, 1.0], [3.0, 3.0, 3.0, 3.0], [0.1, 0.2, 0.3, 0.4]])
    assert ranked(logits)[:, 0].tolist() == [1, 0, 3]
    assert ranked(logits)[:, 0].tolist() == logits.argmax(1).tolist() == np.argmax(logits.numpy(), 1).tolist()
    assert ranked(logits, 3)[0].tolist() == [1, 2, 3]
    assert tied_top(logits).tolist() == [True, True, False]


class _Fixed(nn.Module):
    """Returns the logits it was built with, one row per input image (by its first pixel)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.register_buffer("table", logits)

    def forward(self, x):
        return self.table[x[:, 0, 0, 0].long()]


def test_evaluate_counts_tied_images_and_scores_them_as_every_check_does():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 10, generator=g)
    logits[::7, 3] = logits[::7, 8] = logits[::7].max(1).values + 1  # a tie for the top, classes 3 and 8
    labels = torch.randint(0, 10, (300,), generator=g)
    labels[::14] = 8  # half the tied images are labelled with the higher class of the tie
    images = torch.arange(300, dtype=torch.float32).view(300, 1, 1, 1)
    result = evaluate(_Fixed(logits), DataLoader(TensorDataset(images, labels), batch_size=64))
    assert result.tied == len(range(0, 300, 7))
    expected = 100.0 * int((logits.argmax(1) == labels).sum()) / 300
    assert result.top1 == expected and result.metrics()["tied"] == result.tied
    assert result.predictions[::7].eq(3).all()  # the lower index of each tie, never 8
