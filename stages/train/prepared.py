"""What pre-flight hands the trainer: the `Prepared` rows, the soft-label `Table` of objective kd,
the IGNORE label and `TrainError`. Both stages/train/preflight.py and stages/train/softdata.py use
them, so they live below both and the imports go one way (preflight -> softdata -> here). numpy
and datasets are only named in annotations or imported inside functions, so importing this module
stays cheap.

The prepared rows are an Arrow file on disk, memory-mapped by `datasets` (`write_rows`): a
million rows of a thousand tokens would be tens of gigabytes as Python lists (a Python int and a
list slot per token); as Arrow they are 8 bytes a token on disk, paged in as the trainer reads."""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    from datasets import Dataset

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
    rows: Dataset  # input_ids, labels (and kd_index with soft labels), memory-mapped Arrow
    work: Path  # the directory its Arrow files are in (the caller's, removed by the caller)
    stats: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    sources: array = field(default_factory=lambda: array("q"))  # each row's kept.jsonl line, from 0
    soft: Table | None = None  # with train.objective: kd (stages/train/softdata.py)


def write_rows(
    path: Path, rows: Iterable[dict[str, list[int]]], columns: dict[str, str]
) -> Dataset:
    """`rows` streamed into the Arrow file `path` ({column: integer type}), opened memory-mapped.
    An exception from `rows` leaves a partial file the caller's work directory removes."""
    from datasets import Dataset, Features, List, Value
    from datasets.arrow_writer import ArrowWriter

    features = Features({name: List(Value(kind)) for name, kind in columns.items()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # rows are held until a batch is written: 64 long rationales are megabytes, datasets'
    # default of 1,000 could be hundreds
    with ArrowWriter(features=features, path=str(path), writer_batch_size=64) as writer:
        for row in rows:
            writer.write(row)
        writer.finalize()
    return Dataset.from_file(str(path))
