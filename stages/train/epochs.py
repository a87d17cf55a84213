"""train.epochs: auto, how long the student trains, chosen by its validation accuracy (issue 48).

Each epoch is its own cosine from the peak learning rate to zero (`each_epoch_cosine`: warm
restarts, after a warmup in the first), so the student is annealed at every epoch's end, where
the validator measures it (stages/train/validation.py), `verdict` says whether to go on, and
training may stop. (One cosine over train.max_epochs left a student stopped at epoch 2 at 71% of
its peak rate, never annealed: 13 points under the fixed default, docs/results/strong-teacher.md.)

An epoch counts as a rise only when it beats the best measured so far by more than the 95%
Wilson interval's half-width at the best's accuracy, taken on the validation questions or on
their split groups when those are fewer (answers within a group move together): the comparison
the sweep's ranking uses, so noise on a small split is not read as learning. After
train.patience epochs without a rise the training stops; `select: best` keeps the best measured
epoch, whichever it was. A task too small for a validation split trains AUTO_WITHOUT_VALIDATION
epochs, and says so, under one cosine as a fixed number of epochs does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.config import Config
from stages.shared.intervals import noise

AUTO_WITHOUT_VALIDATION = 2.0  # the fixed default before auto, measured over 3 seeds


def auto(cfg: Config) -> bool:
    return cfg.train.epochs == "auto"


def planned_epochs(cfg: Config, validating: bool) -> float:
    """The epochs the learning-rate schedule spans."""
    t = cfg.train
    if not auto(cfg):
        return float(t.epochs)
    return float(t.max_epochs) if validating else AUTO_WITHOUT_VALIDATION


def each_epoch_cosine(steps_per_epoch: float, warmup_ratio: float) -> Callable[[int], float]:
    """The learning-rate factor at each optimizer step under epochs: auto: a linear warmup over
    `warmup_ratio` of the first epoch, then in every epoch a cosine from 1 to 0 that ends at the
    epoch's end."""
    warmup = math.ceil(warmup_ratio * steps_per_epoch)

    def factor(step: int) -> float:  # the rate of optimizer step `step` + 1 (1-based)
        if step < warmup:
            return step / warmup
        epoch = math.floor(step / steps_per_epoch)
        start = max(epoch * steps_per_epoch, warmup)
        length = max(1.0, (epoch + 1) * steps_per_epoch - start)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - start) / length)))

    return factor


def anneal_each_epoch(trainer: Any, epochs: float, warmup_ratio: float) -> None:
    """Give `trainer` (a transformers Trainer whose schedule spans `epochs`) the schedule of
    `each_epoch_cosine`. The Trainer builds its scheduler only once it has the optimizer, inside
    train(), by create_scheduler, the hook its docs name for a custom schedule: it is replaced on
    this instance (the objective chose the Trainer's class). On resume the Trainer loads the
    step count into it."""
    from torch.optim.lr_scheduler import LambdaLR

    def create_scheduler(num_training_steps: int, optimizer: Any = None) -> LambdaLR:
        if trainer.lr_scheduler is None:
            per_epoch = each_epoch_cosine(num_training_steps / epochs, warmup_ratio)
            trainer.lr_scheduler = LambdaLR(optimizer or trainer.optimizer, per_epoch)
        return trainer.lr_scheduler

    trainer.create_scheduler = create_scheduler


def units_of(questions: list[Any]) -> int:
    """What a validation split resolves: its questions, or its split groups when fewer."""
    return min(len(questions), len({q.group or q.id for q in questions}))


@dataclass(frozen=True)
class Verdict:
    stop: bool
    why: str  # in words, for the log, the stats and the model card


def verdict(results: list[dict[str, Any]], units: int, patience: int, most: int) -> Verdict:
    """Whether training stops after the last of `results` (one measurement per epoch end, in
    order): `patience` epochs without a rise beyond noise over the best so far, or `most`."""
    if not results:
        return Verdict(False, "")
    best, since = results[0], 0
    for r in results[1:]:
        if r["accuracy"] - best["accuracy"] > noise(best["accuracy"], units):
            best, since = r, 0
        else:
            since += 1
    epochs = round(float(results[-1]["epoch"]))
    if since >= patience:
        margin = 100 * noise(best["accuracy"], units)
        return Verdict(
            True,
            f"stopped after epoch {epochs}: validation accuracy has not risen beyond noise "
            f"(±{margin:.1f} points on {units} units) for {since} epoch(s) since epoch "
            f"{round(float(best['epoch']))} ({100 * best['accuracy']:.1f}%; train.patience "
            f"{patience})",
        )
    if epochs >= most:
        return Verdict(True, f"stopped at train.max_epochs ({most}), still rising")
    return Verdict(False, f"epoch {epochs}: go on (best {100 * best['accuracy']:.1f}%)")


@dataclass
class EpochStop:
    """The stop rule of one training run, and its last verdict (for the stats and the card)."""

    units: int  # what the validation split resolves: its questions, or its groups when fewer
    patience: int
    most: int
    last: Verdict = Verdict(False, "")
    step: int | None = None  # the step it stopped at

    @classmethod
    def of(cls, cfg: Config, questions: list[Any]) -> EpochStop | None:
        """None unless epochs: auto with a validation split."""
        if not auto(cfg) or not questions:
            return None
        return cls(units_of(questions), cfg.train.patience, cfg.train.max_epochs)

    def check(self, results: list[dict[str, Any]]) -> Verdict:
        """The verdict on the epoch-end measurements among `results` (the last one's step is
        where training stops when it says stop)."""
        ends = [r for r in results if float(r["epoch"]).is_integer() and r["epoch"] > 0]
        self.last = verdict(ends, self.units, self.patience, self.most)
        if self.last.stop and ends:
            self.step = ends[-1]["step"]
        return self.last

    def stats(self, epochs: float) -> dict[str, Any]:
        return {"epochs_auto": {"ran": epochs, "max_epochs": self.most, "why": self.last.why}}
