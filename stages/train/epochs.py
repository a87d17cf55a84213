"""train.epochs: auto, how long the student trains, chosen by its validation accuracy (issue 48).

The schedule spans train.max_epochs; at each epoch's end the validator measures the student
(stages/train/validation.py) and `verdict` says whether to go on. An epoch counts as a rise
only when it beats the best measured so far by more than the 95% Wilson interval's half-width
at the best's accuracy, taken on the validation questions or on their split groups when those
are fewer (answers within a group move together): the comparison the sweep's ranking uses, so
noise on a small split is not read as learning. After train.patience epochs without a rise the
training stops; `select: best` keeps the best measured epoch, whichever it was. A task too small
for a validation split trains AUTO_WITHOUT_VALIDATION epochs, and says so.
"""

from __future__ import annotations

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
