"""filter's passes: the fates the checks in order give, and memory that does not hold samples."""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.reasoning import Convention
from pipeline.records import DataError, atomic_write_jsonl
from pipeline.stage import RunContext
from pipeline.tasks import load_task
from stages import filter as filt
from stages.filter.passes import decide, filter_records, outcomes


def _row(i: int, q: str, text: str, gold: str = "7") -> dict:
    return {
        "id": f"s{i}",
        "question_id": q,
        "gold": gold,
        "answer_type": "numeric",
        "completion": text,
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 3, "completion_tokens": len(text.split())},
    }


def _checks(*names: str):
    return load_config(None, [f"filter.checks=[{', '.join(names)}]"]).filter


def test_a_copy_of_a_rejected_sample_is_no_duplicate_and_scores_stop_at_the_fate() -> None:
    rows = [
        _row(0, "a", "Three and four.\nAnswer: 8"),  # wrong
        _row(1, "a", "Three and four.\nAnswer: 8"),  # a copy of a wrong one
        _row(2, "a", "Three and four make seven.\nAnswer: 7"),
        _row(3, "a", "Three and four make seven.\nAnswer: 7"),  # a copy of a right one
    ]
    # correct first: the wrong copy is wrong, not a duplicate (its original never got in)
    kept, rejected, scores = filter_records(rows, _checks("correct", "exact_dedup"), {}, [])
    assert [r["id"] for r in kept] == ["s2"]
    got = {r["id"]: (r["reason"], r.get("duplicate_of")) for r in rejected}
    assert got == {
        "s0": ("wrong_answer", None),
        "s1": ("wrong_answer", None),
        "s3": ("exact_duplicate", "s2"),
    }
    assert scores["s3"] == {"correct": True, "answer": "7"}  # correct ran before dedup
    # dedup first: a copy is a duplicate whatever it says, and no later check scored it
    kept, rejected, scores = filter_records(rows, _checks("exact_dedup", "correct"), {}, [])
    got = {r["id"]: (r["reason"], r.get("duplicate_of")) for r in rejected}
    assert got == {
        "s0": ("wrong_answer", None),
        "s1": ("exact_duplicate", "s0"),
        "s3": ("exact_duplicate", "s2"),
    }
    assert scores["s1"] == {} and scores["s2"]["score"] == pytest.approx(2.0)


def test_samples_that_change_between_passes_stop_the_filter() -> None:
    rows = [_row(i, "a", f"Way {i}: seven.\nAnswer: 7") for i in range(3)]
    reads = iter([rows, rows[:2] + [_row(9, "a", "Other.\nAnswer: 7")]])
    cfg = _checks("correct")
    decided = decide(lambda: next(reads), cfg, {}, [], Convention(), bounds=False)
    with pytest.raises(DataError, match="sample 3 \\(s9\\).*changed while filter read them"):
        list(outcomes(lambda: next(reads), decided))
    decided = decide(lambda: rows, cfg, {}, [], Convention(), bounds=False)
    with pytest.raises(DataError, match=r"changed while filter read them \(3, then 2\)"):
        list(outcomes(lambda: rows[:2], decided))


def _samples(dir: Path, cfg, n: int) -> int:
    """n samples of about 2.7 KB, each right; returns the file's size."""
    train = load_task(cfg.task).train
    rng = random.Random(n)
    words = "the of and to in is that it for on with as was by at from this be are".split()
    rows = []
    for i in range(n):
        q = train[i % len(train)]
        text = " ".join(rng.choices(words, k=700))[:2700] + f"\nAnswer: {q.answer}"
        rows.append(_row(i, q.id, text, q.answer))
    atomic_write_jsonl(dir / "samples.jsonl", rows)
    return (dir / "samples.jsonl").stat().st_size


def _peak(cfg, gen: Path, out: Path) -> tuple[int, dict]:
    out.mkdir()
    tracemalloc.start()
    try:
        stats = filt.run(cfg, RunContext.of({"generate": gen}, out))
        return tracemalloc.get_traced_memory()[1], stats
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_the_stage_holds_no_sample_text_in_memory(tmp_path: Path) -> None:
    """500, then 2,500 samples through the stage: the peak grows by under a quarter of the 5 MB
    of samples added (15% when written: ~420 bytes a sample). A filter that holds its rows, as it
    did, grows by more than their size; one that streams them holds an id, a question and its
    checks' outcome per sample."""
    cfg = load_config(None, [f"runs_dir={tmp_path}"])
    sizes, peaks = [], []
    for n in (50, 500, 2500):  # 50: what a first run imports is not counted after it
        gen = tmp_path / f"gen{n}"
        sizes.append(_samples(gen, cfg, n))
        peak, stats = _peak(cfg, gen, tmp_path / f"out{n}")
        peaks.append(peak)
        assert stats["input"] == n and stats["kept"] > 0
        assert json.loads((tmp_path / f"out{n}" / "report.json").read_text())["input"] == n
    grew, added = peaks[2] - peaks[1], sizes[2] - sizes[1]
    assert grew < added / 4, f"peak grew {grew:,} bytes for {added:,} bytes of samples"
