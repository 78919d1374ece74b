"""Errors a user can fix. The command line prints them as one line, no traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PsaqError(Exception):
    """Base class: a problem with the user's input, environment or artifacts."""


class ConfigError(PsaqError, ValueError):
    """A configuration value is out of range or of the wrong type."""


class UnknownNameError(PsaqError, LookupError):
    """A name that no registry knows."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        if not close and len(known) <= 12:
            hint = f"; known: {', '.join(known)}"
        super().__init__(f"unknown {kind} '{name}'{hint}")
        self.kind, self.name, self.suggestions = kind, name, close


class CheckpointError(PsaqError):
    """A checkpoint that is missing, unreadable, or for another architecture."""


class DatasetError(PsaqError):
    """A dataset path that is missing, empty, or not laid out as class folders."""


class SampleSetError(PsaqError):
    """A sample-set file that is truncated, corrupt, or made for another model."""


class TrackingError(PsaqError):
    """The MLflow store failed while a run was being logged."""


class ArtifactError(PsaqError):
    """A stored artifact that is missing, or whose content no longer matches its recorded hash."""


class SynthesisDivergedError(PsaqError):
    """A loss term became NaN or infinite during synthesis."""


class DeviceError(PsaqError):
    """A device was asked for that this machine does not have."""


class NotCalibratedError(PsaqError):
    """A quantized model was used or exported before calibration."""


class Interrupted(PsaqError):
    """A stop was requested (Ctrl-C or SIGTERM) while a stage ran."""


class CompileError(PsaqError):
    """torch.compile could not build the synthesis step on this machine."""


MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds


def check_seed(name: str, value: object) -> None:
    """Seeds are integers from 0 to 2^63 − 1."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{name} must be an integer from 0 to 2^63-1, got {value!r}")
