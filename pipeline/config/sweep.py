"""The `sweep:` section: train settings tried on one cached dataset (`distill sweep`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pipeline.fields import ConfigError, check_fields, knob

MAX_TRIALS = 256  # a grid bigger than this is a typo, not a plan: each trial is a training run


@dataclass(frozen=True)
class SweepConfig:
    grid: dict[str, list[Any]] = knob(
        factory=dict,
        doc="train settings to try, as dotted train.* keys -> lists of values (e.g. "
        "train.learning_rate: [1e-5, 3e-5]); every combination is a trial, an ordinary "
        "cached train stage on the same filter output, ranked by validation accuracy",
    )
    seeds: list[int] = knob(
        factory=list,
        doc="train seeds per trial: each trial trains once per seed and is ranked by its "
        "mean validation accuracy (the spread is reported); [] = train.seed alone",
    )

    def __post_init__(self) -> None:
        check_fields(self)
        for key, values in self.grid.items():
            if not key.startswith("train.") or key in ("train.seed", "train.student"):
                raise ConfigError(
                    "a sweep tries train settings (train.*, not the seed, which sweep.seeds "
                    "sets, nor the student)",
                    f"grid.{key}",
                )
            if not values:
                raise ConfigError("give at least one value", f"grid.{key}")
            # A value listed twice is refused by config.load.check_sweep, once each value is
            # read as its field reads it (1e-5 and 1.0e-5 are one value).
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("a seed is listed twice", "seeds")
        if math.prod(len(v) for v in self.grid.values()) > MAX_TRIALS:
            raise ConfigError(f"more than {MAX_TRIALS} trials; narrow the grid", "grid")
