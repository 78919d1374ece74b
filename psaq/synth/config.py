"""SynthesisConfig: the paper's and the official code's defaults, each with a name, validated on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass

from psaq.errors import ConfigError, check_seed
from psaq.synth.acceleration import COMPILE_TARGETS, PRECISIONS
from psaq.synth.entropy import ENTROPY_ESTIMATORS
from psaq.synth.methods import SYNTH_METHODS


OFFICIAL_JITTER_PX = (15, 30)  # generate_data.py: ±15 px in its first round, ±30 px in its second
OFFICIAL_WARMUP_STEPS = 100  # generate_data.py: 100 warm-up steps of each 500-step round


@dataclass(frozen=True)
class SynthesisConfig:
    """How to make calibration images.

    ``method`` names an entry of ``SYNTH_METHODS``: psaq, psaq-noent, gaussian,
    gaussian-clamped or real. ``lr=None`` takes the paper's per-family rate: 0.20 for
    ViT/DeiT, 0.25 for Swin. ``jitter_px`` is per round and given at 224 px; it and the
    TV target are scaled to the model's input (see ``psaq.synth.priors``). Left out (None), it is
    the official code's: ±15 px in the first round and ±30 px after (``jitter``), so any number of
    rounds works.

    ``entropy_estimator`` names an entry of ``ENTROPY_ESTIMATORS``: ``official`` (the official
    code's, the default) or ``unique-pairs`` (psaq's variant; see ``psaq.synth.entropy``).

    Speed options (``psaq.synth.acceleration``): ``precision`` is the model forward's autocast
    dtype (fp32 or bf16; the entropy is float32 either way); ``compile`` names what
    torch.compile wraps (none, kde, model, all); ``cuda_graphs`` replays the compiled regions as
    CUDA graphs (CUDA only, needs ``compile``).
    """

    method: str = "psaq"
    num_samples: int = 32
    seed: int = 0
    rounds: int = 2
    steps_per_round: int = 500
    warmup_steps: int | None = None  # None: the official 100 steps, a fifth of a shorter round (``warmup``)
    lr: float | None = None
    betas: tuple[float, float] = (0.5, 0.9)
    adam_eps: float = 1e-8
    entropy_weight: float = 1.0
    ce_weight: float = 1.0
    tv_weight: float = 0.05
    tv_target_range: tuple[float, float] = (2500.0, 3000.0)
    jitter_px: tuple[int, ...] | None = None  # None: OFFICIAL_JITTER_PX, one per round (``jitter``)
    flip_prob: float = 0.5
    kde_bandwidth: float = 0.01
    kde_points: int = 10
    kde_eps: float = 1e-4
    entropy_estimator: str = "official"
    precision: str = "fp32"
    compile: str = "none"
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        SYNTH_METHODS.get(self.method)
        ENTROPY_ESTIMATORS.get(self.entropy_estimator)
        PRECISIONS.get(self.precision)
        COMPILE_TARGETS.get(self.compile)
        if not isinstance(self.cuda_graphs, bool):
            raise ConfigError(f"cuda_graphs must be true or false, got {self.cuda_graphs!r}")
        if self.cuda_graphs and self.compile == "none":
            raise ConfigError("cuda_graphs replays compiled regions: set compile to kde, model or all")
        object.__setattr__(self, "betas", tuple(self.betas))
        object.__setattr__(self, "tv_target_range", tuple(self.tv_target_range))
        if self.jitter_px is not None:
            object.__setattr__(self, "jitter_px", tuple(self.jitter_px))
        for name in ("num_samples", "rounds", "steps_per_round", "kde_points"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        check_seed("seed", self.seed)
        if self.warmup_steps is not None and not (isinstance(self.warmup_steps, int)
                                                  and 0 <= self.warmup_steps < self.steps_per_round):
            raise ConfigError(f"warmup_steps must be in [0, steps_per_round), got {self.warmup_steps}; leave it out "
                              "for the official 100 steps (a fifth of a shorter round)")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.jitter_px is not None and len(self.jitter_px) != self.rounds:
            raise ConfigError(f"jitter_px needs one offset per round ({self.rounds}), got {list(self.jitter_px)}; "
                              "leave it out for the official offsets")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {list(self.betas)}")
        lo, hi = self.tv_target_range
        if not 0 <= lo <= hi:
            raise ConfigError(f"tv_target_range must be (low, high) with 0 <= low <= high, got {[lo, hi]}")
        for name in ("entropy_weight", "ce_weight", "tv_weight", "kde_eps"):
            if not 0 <= getattr(self, name) < math.inf:  # NaN fails too
                raise ConfigError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if not 0 < self.kde_bandwidth < math.inf:
            raise ConfigError(f"kde_bandwidth must be a finite positive number, got {self.kde_bandwidth}")
        if self.kde_points < 2:
            # the trapezoid rule over one point is 0: an entropy term that silently does nothing
            raise ConfigError(f"kde_points must be at least 2 (the grid the density is integrated on), got {self.kde_points}")
        if not 0 <= self.flip_prob <= 1:
            raise ConfigError(f"flip_prob must be in [0, 1], got {self.flip_prob}")

    @property
    def warmup(self) -> int:
        """Linear warm-up steps at the start of each round: ``warmup_steps``, or the official 100 (of
        500), a fifth of a round that is shorter than 500 steps."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(OFFICIAL_WARMUP_STEPS, self.steps_per_round // 5)

    @property
    def jitter(self) -> tuple[int, ...]:
        """The roll offset of each round at 224 px: ``jitter_px``, or the official ones."""
        if self.jitter_px is not None:
            return self.jitter_px
        return tuple(OFFICIAL_JITTER_PX[min(r, len(OFFICIAL_JITTER_PX) - 1)] for r in range(self.rounds))

    @property
    def total_steps(self) -> int:
        return self.rounds * self.steps_per_round
