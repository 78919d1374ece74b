"""``params.yaml`` → one validated dataclass per section; unknown keys and wrong types are refused."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from psaq.device import resolve_device
from psaq.errors import ConfigError, PsaqError, check_seed
from psaq.evaluation import EvalConfig
from psaq.models import ModelConfig
from psaq.models.train import TrainConfig
from psaq.quant import QuantConfig
from psaq.quant.adaptive import AdaptiveConfig
from psaq.quant.observers import OBSERVERS
from psaq.quant.onnx_export import ExportConfig
from psaq.quant.reconstruct import ReconstructConfig
from psaq.quant.sites import SITE_SETS
from psaq.setting import BitSetting
from psaq.synth import SYNTH_METHODS, SynthesisConfig

def parse_setting(tag: str) -> BitSetting:
    """``"W4A8"`` → W4 A8 with ``quant.sites``; ``"W4A4+repq"`` → W4 A4 on the site set ``repq`` (refused
    where no such set is registered)."""
    setting = BitSetting.parse(tag)
    if setting.sites is not None:
        SITE_SETS.get(setting.sites)
    return setting


@dataclass(frozen=True)
class GridConfig:
    """The cross product that ``grid`` and ``benchmark`` run."""

    train_seeds: list[int] = field(default_factory=lambda: [0])
    methods: list[str] = field(default_factory=lambda: ["psaq", "psaq-noent", "gaussian", "real"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    bits: list[str] = field(default_factory=lambda: ["W8A8", "W4A8"])
    observers: list[str] = field(default_factory=lambda: ["minmax"])
    max_concurrency: int = 2
    # ONNX and integer files: for every point (true), none (a large benchmark may skip them), or the
    # points of the methods listed (the files a user deploys; exports run one at a time). The flows
    # and the command line follow it; dvc.yaml's graph exports every point
    export: bool | list[str] = True

    def __post_init__(self) -> None:
        for name in ("train_seeds", "methods", "seeds", "bits", "observers"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not value:
                raise ConfigError(f"grid.{name} must be a non-empty list, got {value!r}")
            # a repeated entry would count one result twice in every mean and spread
            repeated = sorted({repr(v) for v in value if value.count(v) > 1})
            if repeated:
                raise ConfigError(f"grid.{name} lists {', '.join(repeated)} more than once")
        for m in self.methods:
            SYNTH_METHODS.get(m)
        for o in self.observers:
            OBSERVERS.get(o)
        for b in self.bits:
            parse_setting(b)
        for s in (*self.seeds, *self.train_seeds):
            check_seed("grid seeds", s)
        if not isinstance(self.max_concurrency, int) or self.max_concurrency < 1:
            raise ConfigError(f"grid.max_concurrency must be a positive integer, got {self.max_concurrency!r}")
        if isinstance(self.export, (list, tuple)):
            for m in self.export:  # a method the grid does not run exports nothing (grid.methods may be narrowed)
                SYNTH_METHODS.get(m)
        elif not isinstance(self.export, bool):
            raise ConfigError(f"grid.export must be true, false or a list of methods, got {self.export!r}")

    def exports(self, method: str) -> bool:
        """Whether the points of ``method`` get exported files."""
        return method in self.export if isinstance(self.export, (list, tuple)) else self.export


@dataclass(frozen=True)
class RuntimeConfig:
    device: str = "auto"
    dataset: str | None = None  # None: the model's own (digits for digits-vit)
    calib_dataset: str | None = None  # the folder `real` draws from, when dataset is not a train/val root
    threads: int | None = None  # torch threads per process; None: one per idle core (psaq.cores), or OMP_NUM_THREADS
    keep_freed_memory: bool = True  # glibc keeps freed memory for reuse (psaq.allocator); numbers unchanged

    def __post_init__(self) -> None:
        resolve_device(self.device)  # refuse a GPU that is not there before any work starts
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"runtime.threads must be a positive integer or null, got {self.threads!r}")


@dataclass(frozen=True)
class TrackingConfig:
    """``mlflow_uri: null`` means a sqlite store at an absolute path in the project
    (``MLFLOW_TRACKING_URI`` overrides both)."""

    mlflow_uri: str | None = None
    experiment: str = "psaq"
    enabled: bool = True
    artifacts: bool = True  # log each point's files (weights, ONNX) too, not only its metrics
    register: bool = False  # register each bit setting's best data-free ONNX in the Model Registry (alias best)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "train": TrainConfig,
    "synthesis": SynthesisConfig,
    "quant": QuantConfig,
    "reconstruct": ReconstructConfig,
    "adaptive": AdaptiveConfig,
    "eval": EvalConfig,
    "export": ExportConfig,
    "grid": GridConfig,
    "runtime": RuntimeConfig,
    "tracking": TrackingConfig,
}


@dataclass(frozen=True)
class Params:
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    synthesis: SynthesisConfig = SynthesisConfig()
    quant: QuantConfig = QuantConfig()
    reconstruct: ReconstructConfig = ReconstructConfig()
    adaptive: AdaptiveConfig = AdaptiveConfig()
    eval: EvalConfig = EvalConfig()
    export: ExportConfig = ExportConfig()
    grid: GridConfig = GridConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    tracking: TrackingConfig = TrackingConfig()

    def to_dict(self) -> dict:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}


def _allowed_types(annotation) -> tuple[type, ...]:
    """The plain YAML types a field annotation accepts; () when it cannot say."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(annotation) for t in _allowed_types(arg))
    if origin in (list, tuple) or annotation in (list, tuple):
        return (list, tuple)
    if origin is dict or annotation is dict:
        return (dict,)
    if annotation is float:
        return (int, float)
    if annotation in (int, str, bool):
        return (annotation,)
    if annotation is type(None):
        return (type(None),)
    return ()


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) if typing.get_origin(annotation) is None else str(annotation).replace("typing.", "")


def _check_type(section: str, key: str, value, annotation) -> None:
    """Catch the common mistakes (a string for a number, a scalar for a list) before validation."""
    allowed = _allowed_types(annotation)
    if not allowed:
        return
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if not ok:
        if value is None:
            raise ConfigError(f"params.yaml [{section}] {key}: null is not allowed")
        hint = ""
        if isinstance(value, str) and float in allowed:
            try:
                number = float(value)
            except ValueError:
                pass
            else:  # YAML 1.1 reads 1e30 (no dot, no exponent sign) as text
                mantissa, _, exponent = repr(number).partition("e")
                written = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent}" if exponent else repr(number)
                hint = f" (YAML reads {value} as text: write it as {written})"
        raise ConfigError(f"params.yaml [{section}] {key}: expected {_type_name(annotation)}, got {value!r}{hint}")


_ABSENT = object()


def build_section(section: str, raw=_ABSENT):
    cls = SECTIONS[section]
    if raw is _ABSENT:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"params.yaml [{section}] must be a mapping of keys to values, got {raw!r}; "
                          "delete the section to use the defaults")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"params.yaml [{section}]: unknown key '{key}' (known: {', '.join(sorted(known))})")
        _check_type(section, key, value, hints[key])
    try:
        return cls(**raw)
    except PsaqError as exc:
        raise ConfigError(f"params.yaml [{section}]: {exc}") from exc


def params_from_dict(data: dict) -> Params:
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"params.yaml: unknown section(s) {', '.join(sorted(unknown))} (known: {', '.join(SECTIONS)})")
    return Params(**{name: build_section(name, data.get(name, _ABSENT)) for name in SECTIONS})


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"params file '{path}' is a folder; give the YAML file in it (e.g. {path / 'params.yaml'})")
    if not path.is_file():
        raise ConfigError(f"params file '{path}' does not exist")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"params file '{path}' is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                          f"{exc.start}); save it as UTF-8") from exc
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(f"params file '{path}' is not valid YAML: {reason}") from exc
    except OSError as exc:
        raise ConfigError(f"params file '{path}' cannot be read: {exc.strerror or exc}") from exc
    if data is None:
        raise ConfigError(f"params file '{path}' is empty; it needs at least one section (see the repository's params.yaml)")
    if not isinstance(data, dict):
        raise ConfigError(f"params file '{path}' must be a mapping of sections, got {type(data).__name__}")
    return params_from_dict(data)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key written twice in one mapping: YAML would keep the last,
    so a second ``quant:`` holding only ``a_bits`` would silently reset ``w_bits``."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # ``<<: *defaults``: keys written beside it override the merged ones, as YAML means
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key '{key}' appears twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)
