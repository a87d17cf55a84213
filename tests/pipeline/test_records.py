"""JSONL IO that never loses work: tolerant resume reads, log recovery with a quarantine,
atomic writes, strict reads that name file and line."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from pipeline.applog import AppendLog, recover_log
from pipeline.records import (
    DataError,
    atomic_open,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    current_umask,
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


def test_tolerant_read_complete_but_invalid_last_line(tmp_path: Path) -> None:
    p = tmp_path / "pool.jsonl"
    p.write_text('{"id": "a"}\n{"id": "b", "comp\n')
    r = read_jsonl_tolerant(p)
    assert [row["id"] for row in r.rows] == ["a"]
    assert r.torn == [2]


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


def test_tolerant_read_invalid_utf8_tail(tmp_path: Path) -> None:
    p = tmp_path / "pool.jsonl"
    p.write_bytes(b'{"id": "a"}\n{"id": "\xe2\x82')  # cut inside a multi-byte character
    r = read_jsonl_tolerant(p)
    assert [row["id"] for row in r.rows] == ["a"]
    assert r.torn == [2]


def test_recovery_cuts_torn_tail_before_appending(tmp_path: Path) -> None:
    p = tmp_path / "pool.jsonl"
    p.write_text('{"id": "a"}\n{"id": "b", "x": [1, ')
    rec = recover_log(p)
    assert [r["id"] for r in rec.rows] == ["a"] and rec.torn_tail == 2 and not rec.quarantined
    with AppendLog(p, fsync_every=1) as log:
        log.write({"id": "c"})
        log.write({"id": "d"})
    assert _lines(p) == ['{"id": "a"}', '{"id":"c"}', '{"id":"d"}']
    again = read_jsonl_tolerant(p)
    assert [r["id"] for r in again.rows] == ["a", "c", "d"]
    assert again.torn == []
    moved = [json.loads(x) for x in _lines(tmp_path / "pool.jsonl.quarantine")]
    assert [(m["line"], m["text"]) for m in moved] == [(2, '{"id": "b", "x": [1, ')]


def test_recovery_keeps_every_good_row_around_damage_in_the_middle(tmp_path: Path) -> None:
    """One damaged line mid-file used to cut the file there, deleting every good row after it."""
    p = tmp_path / "pool.jsonl"
    good = [json.dumps({"id": f"s{i}", "text": "é \u2028 x"}, ensure_ascii=False) for i in range(6)]
    damaged = [
        *good[:2],
        '{"id": "s9", "text": "half',  # a torn write followed by later appends
        *good[2:4],
        "\x00" * 40,  # a zeroed block after a crash
        '{"text": "no id"}',
        *good[4:],
    ]
    data = "\n".join(damaged).encode() + b"\n"
    p.write_bytes(data)
    rec = recover_log(p)
    assert [r["id"] for r in rec.rows] == [f"s{i}" for i in range(6)]
    assert rec.quarantined == [3, 6, 7] and rec.torn_tail is None
    # The good rows, byte for byte, in order (split on \\n only: the text holds U+2028).
    assert p.read_bytes() == "".join(g + "\n" for g in good).encode()
    q = tmp_path / "pool.jsonl.quarantine"
    moved = [json.loads(x) for x in _lines(q)]
    assert [m["line"] for m in moved] == [3, 6, 7]
    assert "not valid JSON" in moved[0]["reason"] and "'id'" in moved[2]["reason"]
    import base64

    assert base64.b64decode(moved[1]["bytes_b64"]) == b"\x00" * 40  # exact bytes kept
    msg = rec.message(p, q, "samples")
    assert msg is not None and "line 3, 6, 7" in msg and "every other row is kept" in msg
    assert recover_log(p).quarantined == [] and q.read_text().count("\n") == 3  # idempotent


def test_recovery_moves_repeated_ids_and_rows_failing_the_check(tmp_path: Path) -> None:
    p = tmp_path / "pool.jsonl"
    p.write_text('{"id": "a", "n": 1}\n{"id": "b", "n": "x"}\n{"id": "a", "n": 2}\n')
    rec = recover_log(p, lambda r: None if isinstance(r["n"], int) else "n is not an int")
    assert [(r["id"], r["n"]) for r in rec.rows] == [("a", 1)]
    assert rec.quarantined == [2] and rec.duplicates == [3]
    assert _lines(p) == ['{"id": "a", "n": 1}']


def test_recovery_keeps_a_complete_last_row_without_its_newline(tmp_path: Path) -> None:
    p = tmp_path / "pool.jsonl"
    p.write_text('{"id": "a"}\n{"id": "b"}')
    rec = recover_log(p)
    assert [r["id"] for r in rec.rows] == ["a", "b"] and rec.torn_tail is None
    assert p.read_text() == '{"id": "a"}\n{"id": "b"}\n'
    assert not (tmp_path / "pool.jsonl.quarantine").exists()


def test_append_log_keeps_intact_file_and_appends(tmp_path: Path) -> None:
    p = tmp_path / "pool.jsonl"
    p.write_text('{"id": "a"}\n')
    assert recover_log(p).rows == [{"id": "a"}]
    with AppendLog(p) as log:
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


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_written_atomically_get_the_mode_the_umask_gives(
    tmp_path: Path, umask: int, mode: int
) -> None:
    """Not mkstemp's owner-only 0600: kept.jsonl, report.json, manifests, cards and weights are
    readable by whom the user's umask lets read them, as the files libraries write beside them
    are; appended logs were already."""
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        atomic_write_text(tmp_path / "card.md", "# card\n")
        atomic_write_json(tmp_path / "manifest.json", {"key": "k"})
        atomic_write_jsonl(tmp_path / "kept.jsonl", [{"id": "a"}])
        with atomic_open(tmp_path / "model.safetensors", binary=True) as f:
            f.write(b"\0" * 8)
        with AppendLog(tmp_path / "pool.jsonl") as log:
            log.write({"id": "a"})
    finally:
        os.umask(old)
    for name in ("card.md", "manifest.json", "kept.jsonl", "model.safetensors", "pool.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
