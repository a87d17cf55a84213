"""pipeline/report.py on its own: what `distill config` and `distill status` print."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import load_config
from pipeline.report import _size, print_config, print_status
from pipeline.status import StageStatus


def test_config_lists_every_field_with_key_or_runtime(capsys):
    print_config(load_config(None, ["generate.n=7"]))
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.strip().startswith("generate.n "))
    assert " key " in line and "default 4" in line and "(now 7)" in line
    conc = next(x for x in out.splitlines() if x.strip().startswith("generate.concurrency "))
    assert " runtime " in conc


def test_status_shows_each_stage_its_state_and_disk(capsys, tmp_path: Path):
    cfg = load_config(None, [f"runs_dir={tmp_path}"])
    rows = [
        StageStatus(
            "generate",
            "complete",
            "abc",
            rows={"samples.jsonl": 12},
            disk=2_500,
            shared_disk=3_000_000,
            seconds=1.25,
        ),
        StageStatus("filter", "partial", "def", note="3 of 9 samples"),
        StageStatus("train", "missing", "ghi"),
    ]
    print_status(cfg, rows)
    out = capsys.readouterr().out
    assert "generate" in out and "complete" in out and "2.5 kB + 3.0 MB shared" in out
    assert "partial" in out and "3 of 9 samples" in out and "missing" in out
    # the task's three splits, up front (from the kept task facts: nothing is read whole)
    assert "task arith: train " in out and " · validation " in out and "(eval: " in out


def test_sizes():
    assert [_size(n) for n in (0, 999, 1_000, 2_500_000, 3e9)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "2.5 MB",
        "3.0 GB",
    ]
