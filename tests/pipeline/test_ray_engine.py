"""engine: ray against real vLLM on a local Ray cluster (the tiny model): the same samples as
the offline engine, a driver killed with -9 then rerun loses and repeats nothing and leaves no
Ray process behind, a killed actor's chunks go to the other, and the two refusals (an address
that does not answer, Ray not installed) are one line each."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from conftest import kill_generate_when, run_cli

from pipeline import cli
from pipeline.records import read_jsonl_tolerant

pytestmark = pytest.mark.slow
QUESTIONS, N = 9, 2


def _ov(tmp: Path, model: Path, run: str, *extra: str) -> list[str]:
    return [
        f"runs_dir={tmp / 'runs'}",
        f"cache_dir={tmp / 'cache'}",
        f"teacher.model={model}",
        f"run={run}",
        f"task.max_train={QUESTIONS}",
        f"generate.n={N}",
        "generate.sampling.max_tokens=24",
        *extra,
    ]


RAY = ("teacher.serve.engine=ray",)


def _samples(tmp: Path, run: str) -> bytes:
    (d,) = [p.parent for p in (tmp / "runs" / run / "generate").glob("*/manifest.json")]
    return (d / "samples.jsonl").read_bytes()


def _pool(tmp: Path, run: str) -> list[str]:
    path = tmp / "runs" / run / "generate" / "pool.jsonl"
    return [r["id"] for r in read_jsonl_tolerant(path).rows] if path.exists() else []


def _ray_processes() -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["name", "cmdline"]):
        line = " ".join(p.info["cmdline"] or [])
        if "raylet" in line or "gcs_server" in line or "ray::" in line:
            out.append(p)
    return out


@pytest.fixture(scope="module")
def work(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("ray")
    r = run_cli("generate", *_ov(tmp, tiny_model, "offline1", "teacher.serve.engine=offline"))
    assert r.returncode == 0, r.stderr[-3000:]
    return {"tmp": tmp, "model": tiny_model, "offline": _samples(tmp, "offline1")}


def test_two_actors_write_the_offline_engines_samples(work: dict) -> None:
    ov = _ov(
        work["tmp"],
        work["model"],
        "two",
        *RAY,
        "teacher.serve.replicas=2",
        "teacher.serve.ray.chunk=4",
    )
    r = run_cli("generate", *ov)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 vLLM engine actor(s) on Ray" in r.stdout
    # Same weights, prompts and per-request seeds on the same cores: the same ids and texts.
    assert _samples(work["tmp"], "two") == work["offline"]
    assert not _ray_processes()  # the local cluster this run started is gone


def test_a_driver_killed_with_minus_9_loses_and_repeats_nothing(work: dict) -> None:
    tmp = work["tmp"]
    ov = _ov(tmp, work["model"], "killed", *RAY, "teacher.serve.ray.chunk=1")
    seen = kill_generate_when(ov, tmp / "runs" / "killed" / "generate" / "pool.jsonl", 2, 300)
    assert 2 <= seen < QUESTIONS * N
    deadline = time.monotonic() + 60
    while _ray_processes() and time.monotonic() < deadline:  # Ray's processes share its fate
        time.sleep(1)
    assert not _ray_processes(), [p.info["cmdline"] for p in _ray_processes()]
    r = run_cli("generate", *ov)
    assert r.returncode == 0, r.stderr[-3000:]
    ids = _pool(tmp, "killed")
    assert len(ids) == len(set(ids)) == QUESTIONS * N
    assert f"{seen} already in the pool" in r.stdout
    assert _samples(tmp, "killed") == work["offline"]


def test_a_dead_actors_chunks_go_to_the_other(work: dict) -> None:
    import subprocess
    import sys

    from conftest import ROOT

    tmp = work["tmp"]
    ov = _ov(
        tmp, work["model"], "oneleft", *RAY, "teacher.serve.replicas=2", "teacher.serve.ray.chunk=1"
    )
    cmd = [sys.executable, "-m", "pipeline.cli", "generate", *ov]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not _pool(tmp, "oneleft") and time.monotonic() < deadline:
        time.sleep(0.1)
    actors = [p for p in _ray_processes() if "EngineActor" in " ".join(p.info["cmdline"] or [])]
    assert len(actors) == 2, "both engine actors should be up once samples arrive"
    os.kill(actors[0].pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    ids = _pool(tmp, "oneleft")
    assert len(ids) == len(set(ids)) == QUESTIONS * N
    assert _samples(tmp, "oneleft") == work["offline"]


def test_an_address_that_does_not_answer_is_one_line(work: dict) -> None:
    ov = _ov(work["tmp"], work["model"], "noray", *RAY, "teacher.serve.ray.address=127.0.0.1:9")
    r = run_cli("generate", *ov)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "serve.ray.address 127.0.0.1:9: nothing answers there" in r.stderr
    assert _pool(work["tmp"], "noray") == []  # nothing asked


def test_ray_not_installed_is_one_line(monkeypatch, capsys) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    assert cli.main(["config", "teacher.serve.engine=ray"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "teacher.serve.engine" in err
    assert "pip install -e '.[ray]'" in err
