"""stages/train/softdata.py on its own: soft labels aligned to the student's tokens of the kept
text, rows whose tokens are not the teacher's dropped and counted, a student with another
vocabulary refused in one line. The real teacher path is tests/e2e/test_soft_labels.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stages.shared.layout import KEPT_STORE
from stages.shared.softlabels import Meta, Store, TokenLogprobs, vocab_hash_of
from stages.train.preflight import load_rows, load_tokenizer, prepare
from stages.train.prepared import IGNORE, TrainError
from stages.train.softdata import attach_soft_labels

K = 3


def _kept(tmp: Path, tok, texts: list[str], vocab: str, spoil: set[int]) -> Path:
    """kept.jsonl + its store: row i's soft labels along the student's own completion ids
    (top-k: the token itself, then two others), except rows in `spoil`, whose first id is
    another token."""
    kept = tmp / "kept.jsonl"
    rows = []
    with Store.open(tmp / KEPT_STORE) as store:
        for i, text in enumerate(texts):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            if i in spoil:
                ids = [(ids[0] + 1) % len(tok)] + ids[1:]
            top = [[t, (t + 1) % len(tok), (t + 2) % len(tok)] for t in ids]
            tl = TokenLogprobs.from_lists(
                {
                    "ids": ids,
                    "logprobs": [-0.1] * len(ids),
                    "top_ids": top,
                    "top_logprobs": [[-0.1, -2.5, -3.0]] * len(ids),
                },
                K,
            )
            ref = store.append(f"s{i}", Meta(K, 1.0, "raw", vocab), tl)
            rows.append(
                {
                    "prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
                    "completion": [{"role": "assistant", "content": text}],
                    "logprobs": ref,
                }
            )
    kept.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return kept


def _prepared(tok, kept: Path):
    """(kept.jsonl's rows streamed again, as the kd hook is given them; the prepared rows)"""
    return (lambda: load_rows(kept)), prepare(
        tok, load_rows(kept), max_length=256, work=kept.parent
    )


def test_soft_labels_point_at_the_teacher_tokens_and_mismatches_are_dropped(
    tiny_model: Path, tmp_path: Path
):
    tok = load_tokenizer(tiny_model)
    texts = ["1 + 1 = 2.\nAnswer: 2", "2 + 1 = 3.\nAnswer: 3", "3 + 1 = 4.\nAnswer: 4"]
    kept = _kept(tmp_path, tok, texts, vocab_hash_of(tok), spoil={1})
    rows, prepared = _prepared(tok, kept)
    attach_soft_labels(tok, kept, rows, prepared)

    assert list(prepared.sources) == [0, 2] and prepared.stats["kd_dropped_mismatch"] == 1
    assert prepared.warnings and "1 of 3 examples dropped" in prepared.warnings[-1]
    table = prepared.soft
    assert table is not None and table.k == K
    for row, src in zip(prepared.rows, prepared.sources, strict=True):
        ids = tok(texts[src], add_special_tokens=False)["input_ids"]
        start = next(j for j, x in enumerate(row["labels"]) if x != IGNORE)
        index = row["kd_index"]
        assert len(index) == len(row["input_ids"]) and all(x == -1 for x in index[:start])
        pointed = [x for x in index if x >= 0]
        assert len(pointed) == len(ids)  # every teacher token, and only those
        for pos, x in zip(range(start, start + len(ids)), pointed, strict=True):
            assert row["input_ids"][pos] == table.top_ids[x, 0]  # the token the teacher wrote
    assert np.allclose(table.top_logprobs[:, 0], -0.1, atol=1e-3)  # fp16 in the store


def test_a_student_with_another_vocabulary_is_refused(tiny_model: Path, tmp_path: Path):
    tok = load_tokenizer(tiny_model)
    kept = _kept(tmp_path, tok, ["1 + 1 = 2.\nAnswer: 2"], "0" * 64, spoil=set())
    rows, prepared = _prepared(tok, kept)
    with pytest.raises(TrainError, match="tokenizer vocabulary .* is not the teacher's"):
        attach_soft_labels(tok, kept, rows, prepared)


def test_rows_without_soft_labels_are_refused_by_line(tiny_model: Path, tmp_path: Path):
    tok = load_tokenizer(tiny_model)
    kept = _kept(tmp_path, tok, ["1 + 1 = 2.\nAnswer: 2"], vocab_hash_of(tok), spoil=set())
    row = json.loads(kept.read_text())
    del row["logprobs"]
    kept.write_text(kept.read_text() + json.dumps(row) + "\n")
    rows, prepared = _prepared(tok, kept)
    with pytest.raises(TrainError, match=r"kept.jsonl:2: train.objective=kd needs"):
        attach_soft_labels(tok, kept, rows, prepared)
