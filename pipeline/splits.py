"""The task's splits: eval held out by hash of each question's group, validation carved from
train by the same rule, and the one line that says both (pipeline/tasks.py loads the questions
and calls these)."""

from __future__ import annotations

import hashlib
from typing import Protocol, TypeVar

from pipeline.config import TaskConfig


class Grouped(Protocol):
    id: str
    group: str


Q = TypeVar("Q", bound=Grouped)


def hash01(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def in_eval(group: str, fraction: float, seed: int) -> bool:
    return hash01(f"{seed}:{group}") < fraction


def splits_line(name: str, sizes: dict[str, int], carved: str) -> str:
    """The three splits up front: `task arith: train 400 · validation 84 · eval 300 (...)`."""
    three = " · ".join(f"{k} {sizes[k]:,}" for k in ("train", "validation", "eval"))
    return f"task {name}: {three}" + (f" ({carved})" if carved else "")


# A validation split never takes more than this share of the train split's questions: on a
# small task the floor (task.min_validation) gives way. Below MIN_VALIDATION questions a
# validation accuracy moves in steps of 20 points or more and picks nothing: no split then.
VALIDATION_SHARE = 0.25
MIN_VALIDATION = 5


def validation_split(train: list[Q], cfg: TaskConfig) -> tuple[list[Q], list[Q], str]:
    """(train, validation, small): whole groups of the train split, in hash order, held out
    until they are `validation_fraction` of its groups and hold `min_validation` questions (the
    floor), the last group always left to train; validation is capped at `max_validation`.
    Questions of a held-out group beyond the cap are in neither: a group is never split. The
    floor never takes validation past VALIDATION_SHARE of the questions, and a validation of
    fewer than MIN_VALIDATION questions is none; `small` says which of the two bound ("")."""
    if not cfg.validation_fraction:
        return train, [], ""
    groups = sorted(
        {q.group or q.id for q in train}, key=lambda g: hash01(f"{cfg.seed}:validation:{g}")
    )
    size: dict[str, int] = {}
    for q in train:
        size[q.group or q.id] = size.get(q.group or q.id, 0) + 1
    taken: set[str] = set()
    count, small = 0, ""
    for g in groups[:-1]:
        if len(taken) >= cfg.validation_fraction * len(groups):
            if count >= cfg.min_validation:
                break
            if count + size[g] > VALIDATION_SHARE * len(train):
                small = "share"  # the floor gives way
                break
        taken.add(g)
        count += size[g]
    validation = [q for q in train if (q.group or q.id) in taken][: cfg.max_validation]
    if len(validation) < MIN_VALIDATION:
        return train, [], "none"
    return [q for q in train if (q.group or q.id) not in taken], validation, small


def validation_words(cfg: TaskConfig, train: int, small: str) -> str:
    """How validation was carved from the `train` questions of the train split, in words."""
    if not cfg.validation_fraction:
        return "no validation split (task.validation_fraction: 0)"
    if small == "none":
        return (
            f"no validation split: {train} train questions are too few to spare "
            f"{MIN_VALIDATION} (at most {VALIDATION_SHARE:.0%} of them); the student trains "
            "without one"
        )
    words = f"validation: {cfg.validation_fraction:.0%} of the train split's groups"
    if small == "share":
        return (
            f"{words}; task.min_validation {cfg.min_validation} gave way: validation takes at "
            f"most {VALIDATION_SHARE:.0%} of the train split's {train} questions"
        )
    return f"{words}, at least {cfg.min_validation} questions"
