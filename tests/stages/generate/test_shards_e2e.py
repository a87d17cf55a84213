"""Generate shards against real vLLM (the offline engine over the tiny model): three shards at
once then the merge, and the Slurm array scripts `distill slurm generate` writes, run by bash
with Slurm's variables set by hand (Slurm is not installed here). The one stand-in is
`scontrol`, a two-line script that records the requeue it was asked for.

Each asserts what a broken shard would get wrong: the merged stage output equals one process's
byte for byte, every sample is written once across the shards' pools, and a preempted or
killed shard resumes without losing or repeating a sample."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

from pipeline.records import read_jsonl_tolerant

pytestmark = pytest.mark.slow
QUESTIONS, N = 9, 2


def _status(ov: list[str]) -> str:
    """`distill status`'s table as one line of words: a wrapped note reads on (its row's other
    cells are empty on the wrapped lines)."""
    return " ".join(_ok(run_cli("status", *ov)).stdout.replace("│", " ").split())


def _ov(tmp: Path, model: Path, run: str, *extra: str) -> list[str]:
    return [
        f"runs_dir={tmp / 'runs'}",
        f"cache_dir={tmp / 'cache'}",
        f"teacher.model={model}",
        f"run={run}",
        "teacher.serve.engine=offline",
        f"task.max_train={QUESTIONS}",
        f"generate.n={N}",
        "generate.sampling.max_tokens=24",
        *extra,
    ]


def _ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    return r


def _shared(tmp: Path, run: str) -> Path:
    return tmp / "runs" / run / "generate"


def _samples(tmp: Path, run: str) -> tuple[bytes, dict]:
    (d,) = [p.parent for p in _shared(tmp, run).glob("*/manifest.json")]
    return (d / "samples.jsonl").read_bytes(), json.loads((d / "manifest.json").read_text())


def _rows(path: Path) -> list[dict]:
    return read_jsonl_tolerant(path).rows if path.exists() else []


@pytest.fixture(scope="module")
def work(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One process's generate: the output every sharded run must reproduce."""
    tmp = tmp_path_factory.mktemp("shards")
    _ok(run_cli("generate", *_ov(tmp, tiny_model, "one")))
    return {"tmp": tmp, "model": tiny_model, "one": _samples(tmp, "one")[0]}


def _all_shard_ids(shared: Path) -> list[str]:
    return [r["id"] for p in sorted(shared.glob("pool.shard-*.jsonl")) for r in _rows(p)]


def test_three_shards_at_once_then_the_merge_equal_one_process(work: dict) -> None:
    tmp, ov = work["tmp"], _ov(work["tmp"], work["model"], "three")
    cmd = [sys.executable, "-m", "pipeline.cli", "generate"]
    procs = [
        subprocess.Popen(
            [*cmd, "--shard", f"{i}/3", *ov],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        assert "merge with a plain `distill generate`" in out
    shared = _shared(tmp, "three")
    ids = _all_shard_ids(shared)
    assert len(ids) == len(set(ids)) == QUESTIONS * N  # each sample written once, by one shard
    assert not (shared / "pool.jsonl").exists()  # no shard touched the run's pool
    status = _status(ov)
    for i in range(3):
        assert (
            f"shard {i}/3: {len(_rows(shared / f'pool.shard-{i}-of-3.jsonl'))} samples, done"
            in status
        )
    _ok(run_cli("generate", *ov))
    got, manifest = _samples(tmp, "three")
    assert got == work["one"]  # byte for byte
    assert manifest["stats"]["merged_from_shards"] == QUESTIONS * N
    assert manifest["stats"]["requested"] == 0  # the merge asked for nothing


def test_slurm_array_preempted_killed_requeued_then_merged(work: dict, tmp_path: Path) -> None:
    """Task 0 gets Slurm's USR1 (as `--signal=B:USR1@120` sends it to the batch shell) and
    requeues itself; task 1 is killed with -9; both rerun as requeued tasks; the merge job runs.
    generate.concurrency=1 (a runtime knob, outside every key) makes samples finish one by one,
    so the signals land mid-shard."""
    tmp, ov = work["tmp"], _ov(work["tmp"], work["model"], "array", "generate.concurrency=1")
    _ok(run_cli("slurm", "generate", "--array", "2", *ov))
    scripts = tmp / "runs" / "array" / "slurm"
    stub = tmp_path / "bin"
    stub.mkdir()
    requeued = tmp_path / "requeued"
    (stub / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {requeued}\n')  # stand-in
    (stub / "scontrol").chmod(0o755)
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env = base | {
        "PATH": f"{stub}:{base['PATH']}",
        "SLURM_ARRAY_JOB_ID": "77",
        "SLURM_ARRAY_TASK_COUNT": "2",
        "SLURM_ARRAY_TASK_MIN": "0",
    }
    shared = _shared(tmp, "array")

    def task(i: int) -> subprocess.Popen:
        return subprocess.Popen(
            ["bash", str(scripts / "generate-array.sbatch")],
            env=env | {"SLURM_ARRAY_TASK_ID": str(i)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def when_rows(p: subprocess.Popen, pool: Path) -> int:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and p.poll() is None and not _rows(pool):
            time.sleep(0.05)
        assert p.poll() is None, "the task ended before it could be signalled"
        return len(_rows(pool))

    t0 = task(0)
    when_rows(t0, shared / "pool.shard-0-of-2.jsonl")
    os.kill(t0.pid, signal.SIGUSR1)
    assert t0.wait(timeout=120) == 0
    assert requeued.read_text().split() == ["requeue", "77_0"]
    stopped = _rows(shared / "pool.shard-0-of-2.jsonl")
    assert not (shared / "shard-0-of-2.json").exists()  # stopped before its end

    t1 = task(1)
    when_rows(t1, shared / "pool.shard-1-of-2.jsonl")
    os.killpg(t1.pid, signal.SIGKILL)
    t1.wait()
    status = _status(ov)
    assert f"shard 0/2: {len(stopped)} samples, stopped before its end" in status

    for i in (0, 1):  # the requeued tasks
        assert task(i).wait(timeout=600) == 0
        assert (shared / f"shard-{i}-of-2.json").exists()
    ids = _all_shard_ids(shared)
    assert len(ids) == len(set(ids)) == QUESTIONS * N  # nothing lost, nothing twice
    first = [r["id"] for r in stopped]
    assert ids[: len(first)] == first  # the preempted task's rows were kept as written

    merge = subprocess.run(["bash", str(scripts / "generate-merge.sbatch")], env=base)
    assert merge.returncode == 0
    got, manifest = _samples(tmp, "array")
    assert got == work["one"]
    assert manifest["stats"]["requested"] == 0
