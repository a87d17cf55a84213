"""Pre-flight streams kept.jsonl and writes the prepared rows as Arrow, memory-mapped: what it
holds in memory does not grow with the rows, and the trainer trains on that file."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest
from test_train import make_cfg, make_rows, write_kept

from pipeline.records import DataError
from pipeline.stage import RunContext
from stages import train
from stages.train.preflight import load_rows, load_tokenizer, preflight, prepare
from stages.train.trainer import PREPARED_PREFIX


def _kept(tmp: Path, n: int) -> Path:
    rows = [
        {**r, "completion": [{"role": "assistant", "content": f"{i} " * 20 + "Answer : 7"}]}
        for i, r in enumerate(make_rows(n))
    ]
    return write_kept(tmp, rows) / "kept.jsonl"


def test_prepared_rows_are_a_memory_mapped_arrow_file_in_the_work_dir(tiny_model, tmp_path):
    cfg = make_cfg(tiny_model, tmp_path)
    work = tmp_path / "work"
    _, prepared = preflight(tiny_model, _kept(tmp_path / "f", 12), cfg.train, work)
    files = [Path(f["filename"]) for f in prepared.rows.cache_files]
    assert files and all(f.parent == work and f.suffix == ".arrow" for f in files)
    assert len(prepared.rows) == prepared.stats["examples"] == 12
    assert list(prepared.sources) == list(range(12))


def test_kept_rows_are_streamed_not_read_whole(tmp_path):
    """A damaged last line is met after the rows before it were handed on, one by one."""
    kept = _kept(tmp_path, 3)
    with open(kept, "a") as f:
        f.write(json.dumps({"prompt": "not messages"}) + "\n")
    rows = load_rows(kept)
    assert next(rows)["prompt"][0]["role"] == "user"  # read before the bad line is reached
    with pytest.raises(DataError, match=r"kept.jsonl:4: 'prompt' must be a list"):
        list(rows)


def _traced_peak(tok, kept: Path, work: Path) -> int:
    tracemalloc.start()
    prepare(tok, load_rows(kept), max_length=128, work=work)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_preparing_more_rows_holds_no_more_memory(tiny_model, tmp_path):
    """Ten times the rows: the Python heap's peak grows by far less than the rows' tokens
    would take as lists (the whole rows held would grow it ~10x)."""
    tok = load_tokenizer(tiny_model)
    _traced_peak(tok, _kept(tmp_path / "w", 20), tmp_path / "ww")  # imports, caches: once
    small = _traced_peak(tok, _kept(tmp_path / "s", 200), tmp_path / "ws")
    large = _traced_peak(tok, _kept(tmp_path / "l", 2000), tmp_path / "wl")
    # the sources array grows 8 bytes a row (16 while it doubles); everything else stays
    assert large - small < (small // 4) + 16 * 2000, (small, large)


def test_a_killed_runs_prepared_rows_are_removed(tiny_model, tmp_path):
    kept = _kept(tmp_path / "filter", 8)
    out = tmp_path / "out"
    stale = out / f"{PREPARED_PREFIX}killed"
    stale.mkdir(parents=True)
    (stale / "rows.arrow").write_bytes(b"x" * 100)
    cfg = make_cfg(tiny_model, tmp_path, "train.max_steps=1")
    stats = train.run(cfg, RunContext.of({"filter": kept.parent}, out))
    assert stats["steps"] == 1 and stats["examples"] == 8
    assert not list(out.rglob(f"{PREPARED_PREFIX}*"))  # neither the stale nor its own
