"""JSONL IO that never loses work: tolerant resume reads, AppendLog tail repair, atomic writes,
strict reads that name file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.records import (
    AppendLog,
    DataError,
    atomic_write_json,
    atomic_write_jsonl,
    read_jsonl,
    read_jsonl_tolerant,
)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_tolerant_read_drops_torn_last_line_and_reports_it(tmp_path: Path) -> None:
    p = tmp_path / "pool.jsonl"
    good = [{"id": "a", "x": 1}, {"id": "b", "x": 2}]
    intact = "".join(json.dumps(r) + "\n" for r in good)
    p.write_text(intact + '{"id": "c", "x": ')  # killed mid-append: no newline, half an object
    r = read_jsonl_tolerant(p)
    assert [row["id"] for row in r.rows] == ["a", "b"]
    assert r.torn == [3]
    assert r.valid_bytes == len(intact.encode())


def test_tolerant_read_complete_but_invalid_last_line(tmp_path: Path) -> None:
    p = tmp_path / "pool.jsonl"
    p.write_text('{"id": "a"}\n{"id": "b", "comp\n')
    r = read_jsonl_tolerant(p)
    assert [row["id"] for row in r.rows] == ["a"]
    assert r.torn == [2]
    assert r.valid_bytes == len(b'{"id": "a"}\n')


def test_tolerant_read_row_without_id_is_torn(tmp_path: Path) -> None:
    p = tmp_path / "pool.jsonl"
    p.write_text('{"id": "a"}\n{"completion": "no id"}\n')
    r = read_jsonl_tolerant(p)
    assert [row["id"] for row in r.rows] == ["a"]
    assert r.torn == [2]


def test_tolerant_read_clean_and_missing_files(tmp_path: Path) -> None:
    assert read_jsonl_tolerant(tmp_path / "absent.jsonl").rows == []
    p = tmp_path / "ok.jsonl"
    p.write_text('{"id": "a"}\n\n{"id": "b"}\n')  # blank lines are not torn
    r = read_jsonl_tolerant(p)
    assert [row["id"] for row in r.rows] == ["a", "b"]
    assert r.torn == []
    assert r.valid_bytes == p.stat().st_size


def test_tolerant_read_invalid_utf8_tail(tmp_path: Path) -> None:
    p = tmp_path / "pool.jsonl"
    p.write_bytes(b'{"id": "a"}\n{"id": "\xe2\x82')  # cut inside a multi-byte character
    r = read_jsonl_tolerant(p)
    assert [row["id"] for row in r.rows] == ["a"]
    assert r.torn == [2]


def test_append_log_truncates_torn_tail_before_appending(tmp_path: Path) -> None:
    p = tmp_path / "pool.jsonl"
    p.write_text('{"id": "a"}\n{"id": "b", "x": [1, ')
    prior = read_jsonl_tolerant(p)
    with AppendLog(p, valid_bytes=prior.valid_bytes, fsync_every=1) as log:
        log.write({"id": "c"})
        log.write({"id": "d"})
    assert _lines(p) == ['{"id": "a"}', '{"id":"c"}', '{"id":"d"}']
    again = read_jsonl_tolerant(p)
    assert [r["id"] for r in again.rows] == ["a", "c", "d"]
    assert again.torn == []


def test_append_log_keeps_intact_file_and_appends(tmp_path: Path) -> None:
    p = tmp_path / "pool.jsonl"
    p.write_text('{"id": "a"}\n')
    with AppendLog(p, valid_bytes=p.stat().st_size) as log:
        log.write({"id": "b", "text": "é"})
    rows = [json.loads(line) for line in _lines(p)]
    assert rows == [{"id": "a"}, {"id": "b", "text": "é"}]


def test_append_log_rows_reach_disk_by_fsync_every(tmp_path: Path) -> None:
    p = tmp_path / "pool.jsonl"
    log = AppendLog(p, fsync_every=2)
    log.write({"id": "a"})
    log.write({"id": "b"})  # second row triggers a flush+fsync
    assert [r["id"] for r in read_jsonl_tolerant(p).rows] == ["a", "b"]
    log.write({"id": "c"})
    log.close()
    assert [r["id"] for r in read_jsonl_tolerant(p).rows] == ["a", "b", "c"]


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    out = tmp_path / "d" / "samples.jsonl"
    n = atomic_write_jsonl(out, ({"id": str(i)} for i in range(5)))
    assert n == 5
    assert [json.loads(line)["id"] for line in _lines(out)] == ["0", "1", "2", "3", "4"]
    atomic_write_json(tmp_path / "d" / "manifest.json", {"k": 1})
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["manifest.json", "samples.jsonl"]


def test_atomic_write_failure_keeps_old_file_and_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "samples.jsonl"
    atomic_write_jsonl(out, [{"id": "old"}])

    def rows():
        yield {"id": "new"}
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError):
        atomic_write_jsonl(out, rows())
    assert _lines(out) == ['{"id": "old"}']
    assert [p.name for p in tmp_path.iterdir()] == ["samples.jsonl"]


def test_strict_read_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "task.jsonl"
    p.write_text('{"id": 1}\n{"id": 2}\n{"id": 3,,}\n{"id": 4}\n')
    it = read_jsonl(p)
    assert next(it) == {"id": 1}
    assert next(it) == {"id": 2}
    with pytest.raises(DataError) as e:
        next(it)
    assert f"{p}:3:" in str(e.value)


def test_strict_read_rejects_non_objects(tmp_path: Path) -> None:
    p = tmp_path / "task.jsonl"
    p.write_text('{"id": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=rf"{p.name}:2: expected a JSON object, got list"):
        list(read_jsonl(p))
