"""generate over a pool of 10^5 synthetic samples (tests/synthetic_pool.py): killed with -9
while it streams the pool's repair and while it streams the selection, a rerun loses and
doubles nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from synthetic_pool import scale_overrides, write_pool, write_task

ROOT = Path(__file__).resolve().parents[3]
N = 100_000


def _start(overrides: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "generate", *overrides],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _kill_when(proc: subprocess.Popen, where: Path, pattern: str) -> None:
    """kill -9 `proc` as soon as a file matching `pattern` appears in `where` (a temp file it
    is streaming into); fails if the process ends first."""
    while proc.poll() is None:
        if any(where.glob(pattern)):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]


def _ids(path: Path) -> list[str]:
    with open(path, "rb") as f:
        return [json.loads(line)["id"] for line in f if line.strip()]


@pytest.mark.slow
def test_generate_killed_mid_stream_over_100k_samples_loses_and_doubles_nothing(
    tiny_model, tmp_path
):
    task = tmp_path / "task.jsonl"
    write_task(task, N + N // 500 + 20)
    ov = scale_overrides(task, tmp_path / "runs", tmp_path / "cache", tiny_model, N)
    pool, n = write_pool(ov, 200)
    assert n == N
    planned = _ids(pool)
    # A repeated row in the middle: the reopen must move it out and rewrite the pool, streamed.
    with open(pool, "rb") as f:
        lines = f.readlines()
    with open(pool, "wb") as f:
        f.writelines([*lines[: N // 2], lines[10], *lines[N // 2 :]])
    del lines

    _kill_when(_start(ov), pool.parent, ".pool.jsonl.*.tmp")  # in the pool's rewrite
    assert len(_ids(pool)) in (N, N + 1)  # the old pool or the new one, never half of one
    first = _start(ov)
    _kill_when(first, pool.parent, "*/.samples.jsonl.*.tmp")  # streaming the selection
    done = _start(ov)
    _, err = done.communicate()
    assert done.returncode == 0, err.decode()[-2000:]

    held = _ids(pool)
    assert len(held) == N and set(held) == set(planned)  # none lost, none twice
    quarantine = pool.with_name(pool.name + ".quarantine")
    moved = [json.loads(line) for line in quarantine.read_text().splitlines()]
    # the killed rewrite had quarantined the line already: the quarantine is written first, so
    # it may hold the same line twice, never a row the pool lacks
    assert {m["reason"] for m in moved} == {"repeats an earlier id"}
    assert len({m["bytes_b64"] for m in moved}) == 1
    (samples,) = pool.parent.glob("*/samples.jsonl")
    got = _ids(samples)
    assert len(got) == N and set(got) == set(planned)
    stats = json.loads((samples.parent / "manifest.json").read_text())["stats"]
    assert stats["requested"] == 0 and stats["samples"] == N
