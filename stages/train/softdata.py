"""Soft labels for train.objective: kd, checked before a model is loaded.

The filter stage's `kept.logprobs.bin` holds each kept sample's top-k teacher logprobs along the
teacher's own token ids. Here:

- the student's tokenizer vocabulary must be the one the teacher's records name (one line
  naming both hashes otherwise: the ids would mean other tokens);
- each training row must hold the teacher's ids where the completion starts: the student's
  tokenization of the kept text (its chat template rendering) is compared with the stored
  ids; a row whose kept text is not covered by the common prefix is dropped and counted, so
  the student never learns a distribution against tokens it does not see (no re-tokenization
  drift);
- every row gets `kd_index`, aligned with its labels: for a position holding a teacher token,
  that token's row in one [P, k] table of teacher top-k ids and logprobs; -1 elsewhere (the
  prompt, and what the student's template adds after the teacher's text).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stages.shared.layout import KEPT_STORE
from stages.shared.softlabels import Store, vocab_hash_of
from stages.train.prepared import IGNORE, Prepared, Table, TrainError, write_rows

KD_ROWS_FILE = "rows-kd.arrow"  # in pre-flight's work directory


def _common_prefix(a: list[int], b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.nonzero(np.asarray(a[:n]) != b[:n])[0]
    return int(diff[0]) if diff.size else n


def attach_soft_labels(
    tok: Any, kept: Path, rows: Callable[[], Iterator[dict]], prepared: Prepared
) -> None:
    """Check the soft labels against the student and add `kd_index` to `prepared.rows` (a new
    Arrow file beside them); rows whose tokens differ from the teacher's are dropped (counted in
    the stats). `rows` streams kept.jsonl's rows again, from the first."""
    store = Store.open(Path(kept).parent / KEPT_STORE)
    student_vocab = vocab_hash_of(tok)
    got = _Aligned()
    indexed = write_rows(
        prepared.work / KD_ROWS_FILE,
        _aligned(tok, kept, rows(), prepared, store, student_vocab, got),
        {"input_ids": "int32", "labels": "int32", "kd_index": "int64"},
    )
    if not len(indexed):
        raise TrainError(
            f"none of the {len(prepared.rows)} training rows holds the teacher's own tokens "
            "(the student tokenizes the kept text otherwise); kd cannot align the soft labels"
        )
    prepared.rows, prepared.sources = indexed, got.sources
    prepared.soft = Table(np.concatenate(got.ids), np.concatenate(got.logprobs), got.k)
    prepared.stats |= {
        "examples": len(indexed),
        "kd_k": got.k,
        "kd_tokens": got.base,
        "kd_dropped_mismatch": got.mismatched,
        "trained_tokens": got.trained,
    }
    if got.mismatched:
        prepared.warnings.append(
            f"{got.mismatched} of {len(indexed) + got.mismatched} examples dropped: the "
            "student's tokens for the kept text differ from the teacher's (soft labels cannot "
            "be aligned)"
        )


@dataclass
class _Aligned:
    """What the alignment gathers as the rows stream past: the soft labels' parts, in order."""

    ids: list[np.ndarray] = field(default_factory=list)
    logprobs: list[np.ndarray] = field(default_factory=list)
    sources: array = field(default_factory=lambda: array("q"))
    base: int = 0
    mismatched: int = 0
    trained: int = 0
    k: int = 0


def _aligned(
    tok: Any,
    kept: Path,
    source_rows: Iterator[dict],
    prepared: Prepared,
    store: Store,
    student_vocab: str,
    got: _Aligned,
) -> Iterator[dict[str, list[int]]]:
    """Each prepared row with its kd_index; its kept.jsonl row is read alongside (`sources`
    ascend, so one stream of kept.jsonl serves)."""
    at, source = -1, None
    for row, src in zip(prepared.rows, prepared.sources, strict=True):
        while at < src:
            source, at = next(source_rows), at + 1
        assert source is not None
        if "logprobs" not in source:
            raise TrainError(
                f"{kept}:{src + 1}: train.objective=kd needs the teacher's soft labels, and "
                "this sample has none; generate with generate.logprobs set (e.g. 20)"
            )
        tl = _read_checked(store, source["logprobs"], f"{kept.name} line {src + 1}", student_vocab)
        got.k = tl.top_ids.shape[1]
        m = _matched(tok, row, source, tl.ids)
        if m is None:
            got.mismatched += 1
            continue
        start = _completion_start(row)
        index = [-1] * len(row["input_ids"])
        index[start : start + m] = range(got.base, got.base + m)
        got.ids.append(tl.top_ids[:m])
        got.logprobs.append(tl.top_logprobs[:m])
        got.base += m
        got.trained += sum(x != IGNORE for x in row["labels"])
        got.sources.append(src)
        yield {**row, "kd_index": index}


def _read_checked(store: Store, ref: dict, where: str, student_vocab: str) -> Any:
    """A row's soft labels, from the teacher whose vocabulary the student has."""
    if not store.has(ref["sha"]):
        raise TrainError(
            f"{store.path}: the soft labels of {where} are missing or damaged; rerun the "
            "filter stage (distill run --force filter)"
        )
    header, tl = store.read(ref["sha"])
    if header["vocab"] != student_vocab:
        raise TrainError(
            f"train.student: its tokenizer vocabulary (sha256 {student_vocab[:12]}) is not the "
            f"teacher's (sha256 {str(header['vocab'])[:12]}) that wrote the soft labels; kd "
            "needs a student with the teacher's tokenizer (or use objective: sft)"
        )
    return tl


def _completion_start(row: dict) -> int:
    return next(j for j, x in enumerate(row["labels"]) if x != IGNORE)


def _matched(tok: Any, row: dict, src_row: dict, teacher_ids: np.ndarray) -> int | None:
    """How many completion tokens are the teacher's own (they cover the whole kept text), or
    None when the kept text is not covered by them."""
    completion = row["input_ids"][_completion_start(row) :]
    m = _common_prefix(completion, teacher_ids)
    text = src_row["completion"][-1]["content"].strip()
    covered = tok.decode(completion[:m], skip_special_tokens=False).strip()
    return m if m and covered.startswith(text) else None
