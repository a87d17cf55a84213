"""A log's rows held as byte offsets (pipeline/records.py RowIndex, pipeline/applog.py): what a
log of a million rows costs in memory is an id and an int per row, and the offsets stay right
through appends, recovery and rewrites."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from pipeline.applog import recover_log
from pipeline.asklog import RecordLog
from pipeline.records import DataError, RowIndex, good_rows


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_recovered_offsets_read_back_every_row_after_a_rewrite(tmp_path):
    """Damage before good rows makes recovery rewrite the log; the offsets it returns must be
    those of the rewritten file (a stale offset reads another row, or half of one)."""
    p = tmp_path / "log.jsonl"
    rows = [{"id": f"s{i}", "text": "x" * (i * 7)} for i in range(8)]
    lines = [json.dumps(r) for r in rows]
    lines.insert(2, "{not json")
    lines.insert(5, "")
    lines.insert(7, json.dumps(rows[1]))  # a repeated id
    p.write_text("\n".join(lines) + "\n")
    rec = recover_log(p)
    assert rec.quarantined == [3] and rec.duplicates == [8]
    index = RowIndex(p, rec.offsets)
    assert [index[f"s{i}"] for i in range(8)] == rows
    assert list(index.values()) == rows


def test_a_torn_tail_is_cut_and_the_offsets_hold(tmp_path):
    p = tmp_path / "log.jsonl"
    _write(p, [{"id": "a"}, {"id": "b", "t": "y"}])
    with open(p, "ab") as f:
        f.write(b'{"id": "c", "t": "half')
    rec = recover_log(p)
    assert rec.torn_tail == 3 and RowIndex(p, rec.offsets)["b"] == {"id": "b", "t": "y"}
    assert p.read_bytes().endswith(b'"y"}\n')


def test_a_whole_last_row_without_its_newline_gets_one_in_place(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_bytes(b'{"id": "a"}\n{"id": "b"}')
    inode = p.stat().st_ino
    rec = recover_log(p)
    assert p.read_bytes() == b'{"id": "a"}\n{"id": "b"}\n' and p.stat().st_ino == inode
    assert RowIndex(p, rec.offsets)["b"] == {"id": "b"}


def test_record_log_reads_back_rows_it_appended_before_they_are_synced(tmp_path):
    p = tmp_path / "log.jsonl"
    _write(p, [{"id": "old", "n": 1}])
    with RecordLog.open(p, None, "rows", fsync_every=1000) as log:
        log.write({"id": "new", "n": 2})
        assert log.rows["new"] == {"id": "new", "n": 2}  # still in the write buffer
        assert log.rows["old"] == {"id": "old", "n": 1}
        assert "new" in log.rows and len(log.rows) == 2
        assert [r["id"] for r in log.rows.values()] == ["old", "new"]
    with RecordLog.open(p, None, "rows") as again:
        assert dict(again.rows) == {"old": {"id": "old", "n": 1}, "new": {"id": "new", "n": 2}}


def test_an_index_answers_for_another_log_it_is_given(tmp_path):
    """A shard counts the run's pool as held: its own rows first, then the pool's."""
    mine, pool = tmp_path / "shard.jsonl", tmp_path / "pool.jsonl"
    _write(mine, [{"id": "a", "from": "shard"}])
    _write(pool, [{"id": "a", "from": "pool"}, {"id": "b", "from": "pool"}])
    index = RowIndex.of(mine)
    index.also = RowIndex.of(pool)
    assert index["a"]["from"] == "shard" and index["b"]["from"] == "pool"
    assert sorted(index) == ["a", "b"] and len(index) == 2
    assert [r["from"] for r in index.values()] == ["shard", "pool"]
    with pytest.raises(KeyError):
        index["c"]


def test_a_log_changed_under_its_index_is_an_error_not_another_row(tmp_path):
    p = tmp_path / "log.jsonl"
    _write(p, [{"id": "a"}, {"id": "b"}])
    index = RowIndex.of(p)
    _write(p, [{"id": "b"}, {"id": "a"}])
    with pytest.raises(DataError, match="changed while this run read it"):
        index["b"]


def test_good_rows_streams_past_damage_without_touching_the_file(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text('{"id": "a"}\nnot json\n{"no_id": 1}\n{"id": "b"}\n{"id": "c", "t')
    before = p.read_bytes()
    assert [r["id"] for r in good_rows(p)] == ["a", "b"]
    assert p.read_bytes() == before


def test_opening_a_log_holds_offsets_not_its_rows(tmp_path):
    """The memory a reopened log costs does not grow with the size of its rows: 2,000 rows of
    8 KB (16 MB) are opened, indexed and streamed in a small fraction of that."""
    p = tmp_path / "pool.jsonl"
    with open(p, "w") as f:
        for i in range(2000):
            f.write(json.dumps({"id": f"sample-{i:06d}", "completion": f"{i} " + "w" * 8000}))
            f.write("\n")
    size = p.stat().st_size
    tracemalloc.start()
    try:
        with RecordLog.open(p, None, "samples") as log:
            total = sum(len(r["completion"]) for r in log.rows.values())
            one = log.rows["sample-001234"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == sum(len(f"{i} ") + 8000 for i in range(2000))
    assert one["completion"].startswith("1234 ")
    assert peak < size / 10, f"peak {peak:,} bytes for a {size:,}-byte log"


def test_rows_are_read_after_their_log_is_closed(tmp_path):
    """eval reads its predictions once the log is closed: the index needs no open file."""
    p = tmp_path / "log.jsonl"
    with RecordLog.open(p, None, "rows") as log:
        log.write({"id": "a", "n": 1})
    assert log.rows["a"] == {"id": "a", "n": 1} and list(log.rows.values()) == [{"id": "a", "n": 1}]
