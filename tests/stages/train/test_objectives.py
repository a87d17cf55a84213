"""The train objectives as a registry (stages/train/objectives/): every name the config allows
has its module and nothing else does, each declares how it trains (one way), and what each
declares is what the train stage did before it asked (keys: test_objective_keys.py; the model
card's line: here)."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from conftest import ROOT

from pipeline.config import load_config, shipped_config
from pipeline.config.train import TrainConfig
from stages.train.objectives import OBJECTIVES, objective_of
from stages.train.objectives.objective import Objective, OnKept


def test_the_registry_holds_every_objective_the_config_allows_and_no_other() -> None:
    allowed = typing.get_args(typing.get_type_hints(TrainConfig)["objective"])
    assert sorted(OBJECTIVES) == sorted(allowed)
    modules = {
        p.stem if p.suffix == ".py" else p.name
        for p in (ROOT / "stages" / "train" / "objectives").iterdir()
        if p.name not in ("__init__.py", "objective.py", "__pycache__")
    }
    assert modules == set(allowed)
    for name, objective in OBJECTIVES.items():
        assert objective.name == name


@pytest.mark.parametrize("name", ["sft", "kd", "features", "onpolicy"])
def test_each_objective_trains_one_way(name: str) -> None:
    objective = OBJECTIVES[name]
    assert (objective.kept is None) != (objective.trains is None)
    cfg = load_config(
        shipped_config("default"), ["generate.logprobs=20", f"train.objective={name}"]
    )
    assert objective_of(cfg) is objective


def test_an_objective_that_trains_both_ways_or_neither_is_refused() -> None:
    with pytest.raises(TypeError, match="one of them"):
        Objective(name="x")
    with pytest.raises(TypeError, match="one of them"):
        Objective(name="x", kept=OnKept(trainer_class=lambda use_cpu: None), trains=lambda c, x: {})


def test_only_onpolicy_writes_beside_the_train_dirs_and_locks() -> None:
    cfg = load_config(shipped_config("default"))
    out = Path("/r/train/abc")
    for name, objective in OBJECTIVES.items():
        assert bool(objective.shared) == (name == "onpolicy")
        assert bool(objective.locks(cfg, out)) == (name == "onpolicy")


def test_the_model_cards_objective_line_is_what_it_was() -> None:
    """The card's line after the objective's name, as stages/shared/cards.py wrote it before
    the objectives declared it."""
    t = load_config(shipped_config("default")).train
    assert OBJECTIVES["sft"].card(t) == "" and OBJECTIVES["features"].card(t) == ""
    assert OBJECTIVES["kd"].card(t) == " (alpha 0.5, T 1.0, forward)"
    assert OBJECTIVES["onpolicy"].card(t) == (
        " (4 rounds from sft: 64 questions x 2 samples a round, loss topk, learning rate "
        "1e-05, top-5, teacher hint none; a round per 'step' below)"
    )
