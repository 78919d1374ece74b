"""Registers psaq's built-in model families: importing this module is what makes them known."""

from psaq.families import beit, swin, vit

BUILTIN = (vit.VIT, swin.SWIN, beit.BEIT)
