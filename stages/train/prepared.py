"""What pre-flight hands the trainer: the `Prepared` rows, the soft-label `Table` of objective kd,
the IGNORE label and `TrainError`. Both stages/train/preflight.py and stages/train/softdata.py use
them, so they live below both and the imports go one way (preflight -> softdata -> here). numpy
is only named in annotations, so importing this module stays cheap."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.errors import UserError

if TYPE_CHECKING:
    import numpy as np

IGNORE = -100


class TrainError(UserError, ValueError):
    """A train-stage problem the user can fix; the message says how."""


@dataclass
class Table:
    """Every teacher position's top-k, stacked: a row's `kd_index` points into it."""

    top_ids: np.ndarray  # int32 [P, k]
    top_logprobs: np.ndarray  # float32 [P, k]
    k: int


@dataclass
class Prepared:
    rows: list[dict[str, list[int]]]  # input_ids, labels (and kd_index with soft labels)
    stats: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)  # each row's line in kept.jsonl, from 0
    soft: Table | None = None  # with train.objective: kd (stages/train/softdata.py)
