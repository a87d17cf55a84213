"""`distill status` of a run still generating over a large pool: the pool's samples are
estimated from its size and its first rows (stages/generate/poolsize.py), never read whole."""

from __future__ import annotations

import json
import random
from pathlib import Path

import stages.generate as generate
from pipeline.config import load_config, shipped_config
from pipeline.tasks import load_task
from stages.generate import poolsize
from stages.generate.poolsize import estimate_rows
from stages.shared.layout import POOL


def _pool(path: Path, n: int) -> None:
    rng = random.Random(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"s{i}", "completion": "x" * rng.randint(50, 150)}) + "\n")


def test_a_small_file_is_counted_a_large_one_estimated_closely(tmp_path, monkeypatch):
    _pool(tmp_path / "p.jsonl", 3000)
    assert estimate_rows(tmp_path / "p.jsonl") == 3000  # under PROBE: counted
    monkeypatch.setattr(poolsize, "PROBE", 20_000)  # about 150 rows of the 3,000
    assert abs(estimate_rows(tmp_path / "p.jsonl") - 3000) < 150
    assert estimate_rows(tmp_path / "missing.jsonl") == 0


def test_status_of_a_large_pool_reads_only_its_head(tmp_path, monkeypatch):
    cfg = load_config(shipped_config("default"), [f"runs_dir={tmp_path}", "generate.n=4"])
    out = tmp_path / "generate" / "key"
    _pool(out.parent / POOL, 3000)

    def unread(*args, **kwargs):
        raise AssertionError("the pool was read whole")

    monkeypatch.setattr(poolsize, "QUICK_POOL", 100_000)  # the 3,000 rows are over it
    monkeypatch.setattr(poolsize, "PROBE", 20_000)
    monkeypatch.setattr(generate, "good_rows", unread)
    monkeypatch.setattr(generate, "teacher_plans", unread)
    line = generate.progress(cfg, out)
    n = int(line.split("about ")[1].split(" samples")[0].replace(",", ""))
    assert abs(n - 3000) < 150 and "estimated" in line
    train = len(load_task(cfg.task).train)
    assert f"at most {4 * train:,}" in line


def test_a_small_pool_is_still_counted_exactly(tmp_path):
    cfg = load_config(shipped_config("default"), [f"runs_dir={tmp_path}"])
    out = tmp_path / "generate" / "key"
    _pool(out.parent / POOL, 10)  # rows that are no samples: none of them is held
    assert generate.progress(cfg, out) == "0 of 1600 samples"  # the default: 400 questions, n 4
