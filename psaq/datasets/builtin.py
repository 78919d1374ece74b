"""Every dataset psaq ships or installs, registered by importing its file."""

from psaq.datasets import digits, fashion_mnist  # noqa: F401 - each registers itself in DATASETS
