"""What a train objective declares: everything the train stage, its trainer, its pre-flight and
its model card need to know of it, so none of them compares the objective's name.

An objective either trains over the filter's kept rows in the trainer's loop
(stages/train/trainer.py, in this process or in each `accelerate launch` process), with its own
loss and what that loss needs (`kept`), or brings a training of its own (`trains`: on-policy's
rounds). Every hook has a default that adds nothing, so an objective declares only what is its."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.budget import Calls
from pipeline.config import Config
from pipeline.config.train import TrainConfig
from pipeline.stage import ExtraInput, KeyParts, RunContext
from stages.train.prepared import Prepared, Table

KeptRows = Callable[[], Iterator[dict[str, Any]]]


def no_key_parts(cfg: Config) -> KeyParts:
    return KeyParts(config={})


def no_extra_inputs(cfg: Config, stage: str) -> list[ExtraInput]:
    return []


def no_locks(cfg: Config, out: Path) -> list[Path]:
    return []


def no_card_detail(t: TrainConfig) -> str:
    return ""


def no_teacher_calls(cfg: Config) -> list[Calls]:
    return []


def rows_as_they_are(tok: Any, kept: Path, rows: KeptRows, prepared: Prepared) -> None:
    """Pre-flight's rows are all the loss needs."""


def dataset_as_it_is(cfg: Config, args: Any, dataset: Any) -> Any:
    return dataset


def nothing_to_attach(cfg: Config, trainer: Any, soft: Table | None, bf16: bool) -> None:
    """The trainer class's loss needs nothing beside the batches."""


@dataclass(frozen=True)
class OnKept:
    """How an objective trains over the kept rows in the trainer's loop."""

    # use_cpu -> the SFTTrainer subclass whose compute_loss is the objective's loss
    # (stages/train/losses/trainers.py)
    trainer_class: Callable[[bool], Any]
    # pre-flight (stages/train/preflight.py): what the loss needs added to the prepared rows
    # (kd: each row's soft labels and its index into their table)
    # (`KeptRows` streams kept.jsonl's rows again, from the first)
    prepare_rows: Callable[[Any, Path, KeptRows, Prepared], None] = rows_as_they_are
    # before the trainer is built: the training arguments it needs, and the dataset it trains on
    configure: Callable[[Config, Any, Any], Any] = dataset_as_it_is
    # once it is built: the tables, collator or teachers its loss reads
    attach: Callable[[Config, Any, Table | None, bool], None] = nothing_to_attach


@dataclass(frozen=True)
class Objective:
    """One train objective (train.objective), as the registry holds it."""

    name: str  # train.objective's value
    # what its output depends on beyond the train section and the student: merged into the
    # train stage's key parts
    key_parts: Callable[[Config], KeyParts] = no_key_parts
    # its train section (train.<section>) keyed whole, at its defaults too: a section is keyed
    # only where set, so that other objectives' keys never moved with it, which leaves its
    # defaults' values out of this objective's key; one whose default changes needs them in
    keyed_section: str = ""
    # another keyed train run it starts from (the train stage's name is passed in)
    extra_inputs: Callable[[Config, str], list[ExtraInput]] = no_extra_inputs
    # lock files besides the stage dir's own, taken before anything is changed
    locks: Callable[[Config, Path], list[Path]] = no_locks
    # what it writes beside the train key dirs, shared by every train key of the run
    # (stages/shared/layout.py); in its stage dir every objective writes the stage's OUTPUTS
    shared: tuple[str, ...] = ()
    # how it trains: over the kept rows in the trainer's loop, or (trains) on its own
    kept: OnKept | None = None
    trains: Callable[[Config, RunContext], dict[str, Any]] | None = None
    # what the model card says of it after its name (its settings)
    card: Callable[[TrainConfig], str] = no_card_detail
    # `distill plan`: the teacher calls it makes at most (pipeline/budget.py Calls)
    teacher_calls: Callable[[Config], list[Calls]] = no_teacher_calls

    def __post_init__(self) -> None:
        if (self.kept is None) == (self.trains is None):
            raise TypeError(f"objective {self.name}: give `kept` or `trains`, one of them")
