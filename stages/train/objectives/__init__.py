"""The train objectives (train.objective), one module each: sft, kd, features, onpolicy. Each
declares what the train stage, its trainer, its pre-flight and its model card need of it
(stages/train/objectives/objective.py: key parts, extra inputs, locks, what it writes beside the
stage dirs, how it trains, its card line), and they ask here instead of comparing its name.

A new objective is one module here, listed below, and its config section
(pipeline/config/train.py: its name in train.objective's choices, its settings);
tests/stages/train/test_objectives.py checks that the two lists agree."""

from __future__ import annotations

from pipeline.config import Config
from stages.train.objectives import features, kd, onpolicy, sft
from stages.train.objectives.objective import Objective

OBJECTIVES: dict[str, Objective] = {
    o.name: o for o in (sft.OBJECTIVE, kd.OBJECTIVE, features.OBJECTIVE, onpolicy.OBJECTIVE)
}


def objective_of(cfg: Config) -> Objective:
    """The objective train.objective names (the config allows only these)."""
    return OBJECTIVES[cfg.train.objective]
