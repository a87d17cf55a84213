"""Manifests are checked on read: a stage is complete only if every output it lists is there with
the recorded size and row count (and, with --verify, sha256); locks name their holder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.cache import (
    LockedError,
    ManifestError,
    StageLock,
    describe_outputs,
    read_manifest,
    verify_outputs,
    write_manifest,
)


def _stage(tmp_path: Path) -> Path:
    d = tmp_path / "stage"
    (d / "model").mkdir(parents=True)
    (d / "kept.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(10)))
    (d / "report.json").write_text('{"kept": 10}\n')
    (d / "model" / "config.json").write_text("{}\n")
    (d / "model" / "weights.bin").write_bytes(os.urandom(4096))
    write_manifest(
        d,
        stage="filter",
        key="k" * 64,
        config={},
        inputs={},
        outputs=["kept.jsonl", "report.json", "model"],
        stats={},
        started=0.0,
    )
    return d


def test_intact_outputs_verify(tmp_path: Path) -> None:
    d = _stage(tmp_path)
    m = read_manifest(d)
    assert m is not None and m["outputs"]["kept.jsonl"]["rows"] == 10
    assert set(m["outputs"]["model"]["files"]) == {"config.json", "weights.bin"}
    assert verify_outputs(d, m) == [] and verify_outputs(d, m, deep=True) == []


def test_an_output_cut_short_under_a_complete_manifest_is_caught(tmp_path: Path) -> None:
    """It used to be read as complete, and the next stage trained on the fragment."""
    d = _stage(tmp_path)
    data = (d / "kept.jsonl").read_bytes()
    (d / "kept.jsonl").write_bytes(data[: len(data) // 2])
    problems = verify_outputs(d, read_manifest(d))
    assert (
        len(problems) == 1
        and "kept.jsonl has" in problems[0]
        and "the manifest says" in problems[0]
    )


def test_missing_changed_and_flipped_files(tmp_path: Path) -> None:
    d = _stage(tmp_path)
    m = read_manifest(d)
    (d / "report.json").unlink()
    (d / "model" / "weights.bin").write_bytes(b"x")
    problems = verify_outputs(d, m)
    assert "report.json is missing" in problems
    assert any(p.startswith("model/weights.bin has 1 bytes") for p in problems)
    # Same size, other bytes: only the sha256 tells, and only when asked (status --verify).
    d2 = _stage(tmp_path / "two")
    blob = bytearray((d2 / "model" / "weights.bin").read_bytes())
    blob[7] ^= 0xFF
    (d2 / "model" / "weights.bin").write_bytes(bytes(blob))
    m2 = read_manifest(d2)
    assert verify_outputs(d2, m2) == []
    assert verify_outputs(d2, m2, deep=True) == [
        "model/weights.bin: sha256 differs from the manifest's"
    ]


@pytest.mark.parametrize(
    "content", [b"\xff\xfe{not json", b'{"key": "k", "outp', b"[1, 2]", b'{"stage": "x"}']
)
def test_a_damaged_manifest_is_an_error_not_a_crash(tmp_path: Path, content: bytes) -> None:
    d = _stage(tmp_path)
    (d / "manifest.json").write_bytes(content)
    with pytest.raises(ManifestError, match="manifest.json"):
        read_manifest(d)


def test_outputs_describe_rows_bytes_and_hashes(tmp_path: Path) -> None:
    d = _stage(tmp_path)
    info = describe_outputs(d, ["kept.jsonl", "absent.txt"])
    assert set(info) == {"kept.jsonl"}
    assert info["kept.jsonl"]["bytes"] == (d / "kept.jsonl").stat().st_size
    assert len(info["kept.jsonl"]["sha256"]) == 64


def test_lock_refusal_names_the_holder(tmp_path: Path) -> None:
    with StageLock(tmp_path / "s" / ".lock"):
        with pytest.raises(LockedError) as e:
            StageLock(tmp_path / "s" / ".lock").acquire()
    msg = str(e.value)
    assert f"pid {os.getpid()}" in msg and "python" in msg  # the holder's command line
    StageLock(tmp_path / "s" / ".lock").acquire()  # released with its holder


def test_lock_where_a_file_blocks_the_dir(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("not a dir")
    with pytest.raises(LockedError, match="a file and a directory are mixed up"):
        StageLock(tmp_path / "s" / ".lock").acquire()
