"""Registers psaq's built-in model families: importing this module is what makes them known."""

from psaq.families import beit, swin, vit  # noqa: F401 - each registers itself in FAMILIES
