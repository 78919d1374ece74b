"""Command-line flags and deployment parameters on top of params.yaml, each override named once.

``psaq quantize --w-bits 4`` and ``prefect deployment run 'quantize/quantize' -p w_bits=4`` both
go through ``apply_overrides``: a name here is a flag (``--w-bits``) and a flow parameter
(``w_bits``); the config dataclass of its section validates the value.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from psaq.params import SECTIONS, Params

# override name → (params.yaml section, key)
OVERRIDES: dict[str, tuple[str, str]] = {
    "model": ("model", "name"),
    "checkpoint": ("model", "checkpoint"),
    "train_seed": ("model", "train_seed"),
    "model_args": ("model", "model_args"),
    "pretrained": ("model", "pretrained"),
    "random_weights": ("model", "random_weights"),
    "headless": ("model", "headless"),
    "w_bits": ("quant", "w_bits"),
    "a_bits": ("quant", "a_bits"),
    "act_observer": ("quant", "act_observer"),
    "observer": ("quant", "act_observer"),  # the deployment's shorter name
    "weight_observer": ("quant", "weight_observer"),
    "sites": ("quant", "sites"),
    "calibrate_with_quantized_weights": ("quant", "calibrate_with_quantized_weights"),
    "calib": ("synthesis", "method"),
    "seed": ("synthesis", "seed"),
    "num_samples": ("synthesis", "num_samples"),
    "steps_per_round": ("synthesis", "steps_per_round"),
    "warmup_steps": ("synthesis", "warmup_steps"),
    "entropy_estimator": ("synthesis", "entropy_estimator"),
    "precision": ("synthesis", "precision"),
    "compile": ("synthesis", "compile"),
    "cuda_graphs": ("synthesis", "cuda_graphs"),
    "reconstruct": ("reconstruct", "enabled"),
    "reconstruct_iters": ("reconstruct", "iters"),
    "v2_rounds": ("adaptive", "rounds"),
    "v2_student": ("adaptive", "student"),
    "v2_discrepancy": ("adaptive", "discrepancy"),
    "device": ("runtime", "device"),
    "dataset": ("runtime", "dataset"),
    "calib_dataset": ("runtime", "calib_dataset"),
    "weight_type": ("export", "weight_type"),
}


def apply_overrides(params: Params, values: dict) -> Params:
    """``params`` with every value that is not None put in its place, one section at a time."""
    by_section: dict[str, dict] = defaultdict(dict)
    for name, value in values.items():
        if value is not None:
            section, key = OVERRIDES[name]
            by_section[section][key] = value
    return dataclasses.replace(params, **{s: dataclasses.replace(getattr(params, s), **kv) for s, kv in by_section.items()})


def _check_table() -> None:
    for name, (section, key) in OVERRIDES.items():
        if key not in {f.name for f in dataclasses.fields(SECTIONS[section])}:
            raise AssertionError(f"override '{name}' names {section}.{key}, which the section does not have")


_check_table()  # a renamed config field fails at import, not on the one run that uses the flag
