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

from pathlib import Path
from typing import Any

import numpy as np

from stages.shared.layout import KEPT_STORE
from stages.shared.softlabels import Store, vocab_hash_of
from stages.train.prepared import IGNORE, Prepared, Table, TrainError


def _common_prefix(a: list[int], b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.nonzero(np.asarray(a[:n]) != b[:n])[0]
    return int(diff[0]) if diff.size else n


def attach_soft_labels(tok: Any, kept: Path, rows: list[dict], prepared: Prepared) -> None:
    """Check the soft labels against the student and add `kd_index` to `prepared.rows`; rows
    whose tokens differ from the teacher's are dropped (counted in the stats)."""
    store_path = Path(kept).parent / KEPT_STORE
    missing = [i for i in prepared.sources if "logprobs" not in rows[i]]
    if missing:
        raise TrainError(
            f"{kept}:{missing[0] + 1}: train.objective=kd needs the teacher's soft labels, and "
            "this sample has none; generate with generate.logprobs set (e.g. 20)"
        )
    store = Store.open(store_path)
    student_vocab = vocab_hash_of(tok)
    ids_parts, lp_parts = [], []
    keep, base, mismatched, k = [], 0, 0, 0
    for row, src in zip(prepared.rows, prepared.sources, strict=True):
        tl = _read_checked(
            store, rows[src]["logprobs"], f"{kept.name} line {src + 1}", student_vocab
        )
        k = tl.top_ids.shape[1]
        m = _matched(tok, row, rows[src], tl.ids)
        if m is None:
            mismatched += 1
            continue
        start = _completion_start(row)
        index = [-1] * len(row["input_ids"])
        index[start : start + m] = range(base, base + m)
        row["kd_index"] = index
        ids_parts.append(tl.top_ids[:m])
        lp_parts.append(tl.top_logprobs[:m])
        base += m
        keep.append((row, src))
    if not keep:
        raise TrainError(
            f"none of the {len(prepared.rows)} training rows holds the teacher's own tokens "
            "(the student tokenizes the kept text otherwise); kd cannot align the soft labels"
        )
    prepared.rows = [r for r, _ in keep]
    prepared.sources = [s for _, s in keep]
    prepared.soft = Table(np.concatenate(ids_parts), np.concatenate(lp_parts), k)
    prepared.stats |= {
        "examples": len(keep),
        "kd_k": k,
        "kd_tokens": base,
        "kd_dropped_mismatch": mismatched,
        "trained_tokens": sum(sum(x != IGNORE for x in r["labels"]) for r, _ in keep),
    }
    if mismatched:
        prepared.warnings.append(
            f"{mismatched} of {len(prepared.rows) + mismatched} examples dropped: the student's "
            "tokens for the kept text differ from the teacher's (soft labels cannot be aligned)"
        )


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
