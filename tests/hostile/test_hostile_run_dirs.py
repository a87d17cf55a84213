"""Damaged run dirs, through the real CLI, over a real vLLM teacher (the tiny model).

A crashed disk or a stray edit damages finished work. Each case damages a copy of one real run
and checks that the next command recovers without losing or duplicating a sample (the pool's
good rows stay byte for byte; a damaged sample is asked again and, seeded, comes back the same),
or refuses with one line and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from pipeline.cache import StageLock
from pipeline.config import load_config, shipped_config
from pipeline.records import read_jsonl
from pipeline.runner import plan

pytestmark = pytest.mark.slow


def overrides(runs: Path, server: dict, *extra: str) -> list[str]:
    return [
        f"runs_dir={runs}",
        f"cache_dir={runs / 'cache'}",
        f"teacher.endpoint={server['url']}",
        "teacher.name=tiny",
        f"teacher.api_key_env={server['env']}",
        "task.max_train=10",
        "generate.n=2",
        "generate.sampling.max_tokens=24",
        *extra,
    ]


def distill(server: dict, *args: str) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, server["env"]: server["key"]},
    )
    assert "Traceback" not in p.stdout + p.stderr, p.stderr[-3000:]
    return p


def ok(p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def dirs(ov: list[str]) -> dict[str, Path]:
    plans = plan(load_config(shipped_config("default"), ov), "filter")
    return {name: p.dir for name, p in plans.items()}


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file() and not f.name.endswith(".lock")  # the test's own lock writes its pid
    }


@pytest.fixture(scope="module")
def base_run(keyed_server: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """generate (n=2) and filter, and generate n=3 for reference, all finished."""
    runs = tmp_path_factory.mktemp("base") / "runs"
    ok(distill(keyed_server, "filter", *overrides(runs, keyed_server)))
    ok(distill(keyed_server, "generate", *overrides(runs, keyed_server, "generate.n=3")))
    return runs


@pytest.fixture
def run(base_run: Path, tmp_path: Path, keyed_server: dict) -> dict:
    """A fresh copy of the finished run, as the n=2 config sees it."""
    runs = tmp_path / "runs"
    shutil.copytree(base_run, runs)
    ov = overrides(runs, keyed_server)
    d = dirs(ov)
    want3 = {
        r["id"]: r for r in read_jsonl(dirs([*ov, "generate.n=3"])["generate"] / "samples.jsonl")
    }
    shutil.rmtree(dirs([*ov, "generate.n=3"])["generate"])  # n=3 must be rebuilt from the pool
    pool = d["generate"].parent / "pool.jsonl"
    return {"ov": ov, "dirs": d, "pool": pool, "runs": runs, "want3": want3}


# --- the pool: damage anywhere loses no good row ------------------------------------------------


def _damage_line(pool: Path, lineno: int, new: bytes) -> bytes:
    lines = pool.read_bytes().split(b"\n")
    old = lines[lineno - 1]
    lines[lineno - 1] = new
    pool.write_bytes(b"\n".join(lines))
    return old


def _missing_usage(raw: bytes) -> bytes:
    row = json.loads(raw)
    del row["usage"]
    return json.dumps(row).encode()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda raw: raw[: len(raw) // 2], id="half a line"),
        pytest.param(lambda raw: b"\x00" * len(raw), id="zeroed block"),
        pytest.param(lambda raw: raw.replace(b'"', b"\xff", 3), id="non-UTF-8 bytes"),
        pytest.param(_missing_usage, id="row without usage"),
    ],
)
def test_damaged_pool_line_is_quarantined_and_its_sample_made_again(run, keyed_server, damage):
    pool = run["pool"]
    before = pool.read_bytes().split(b"\n")[:-1]
    total = len(before)
    damaged_line = 7
    original = _damage_line(pool, damaged_line, damage(before[damaged_line - 1]))
    lost_id = json.loads(original)["id"]

    # A new key (n=3) reads the pool: the damage is found, moved aside, and repaired.
    p = ok(distill(keyed_server, "generate", *run["ov"], "generate.n=3"))
    assert f"{pool}:" in p.stderr and f"line {damaged_line}" in p.stderr, p.stderr
    assert "pool.jsonl.quarantine" in p.stderr and "every other row is kept" in p.stderr

    after = pool.read_bytes().split(b"\n")[:-1]
    ids = [json.loads(x)["id"] for x in after]
    assert len(ids) == len(set(ids)), "a sample is in the pool twice"
    for raw in before[: damaged_line - 1] + before[damaged_line:]:
        assert raw in after, "a good pool row was lost or changed"
    q = [json.loads(x) for x in (pool.parent / "pool.jsonl.quarantine").read_text().splitlines()]
    assert [e["line"] for e in q] == [damaged_line]
    m = json.loads((dirs([*run["ov"], "generate.n=3"])["generate"] / "manifest.json").read_text())
    assert m["stats"]["damaged_lines_quarantined"] == 1
    assert m["stats"]["requested"] == 1 + 10 * 3 - total  # the damaged one, and what n=3 adds
    got = {
        r["id"]: r
        for r in read_jsonl(dirs([*run["ov"], "generate.n=3"])["generate"] / "samples.jsonl")
    }
    assert set(got) == set(run["want3"])
    # Seeded per sample: the sample asked again is the very text that was damaged.
    assert got[lost_id]["completion"] == run["want3"][lost_id]["completion"]


def test_a_repeated_pool_row_is_moved_out(run, keyed_server):
    pool = run["pool"]
    lines = pool.read_bytes().split(b"\n")[:-1]
    pool.write_bytes(b"\n".join([*lines, lines[2]]) + b"\n")  # a row appended twice
    p = ok(distill(keyed_server, "generate", *run["ov"], "generate.n=3"))
    assert "repeated id" in p.stderr
    ids = [json.loads(x)["id"] for x in pool.read_bytes().split(b"\n")[:-1]]
    assert len(ids) == len(set(ids)) == 30


# --- outputs that no longer match their manifest ------------------------------------------------


def _status(server: dict, ov: list[str], *flags: str) -> dict[str, str]:
    """Each stage's state and note, from `distill status` as the user sees it."""
    from pipeline.status import status

    p = ok(distill(server, "status", *flags, *ov))
    states = status(load_config(shipped_config("default"), ov), verify=bool(flags))
    out = {}
    for s in states:
        out[s.name] = f"{s.state}: {s.note}"
        assert s.state in p.stdout
    return out


@pytest.mark.parametrize(
    "stage, name, damage",
    [
        (
            "generate",
            "samples.jsonl",
            lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        ),
        ("generate", "errors.jsonl", lambda p: p.unlink()),
        ("generate", "manifest.json", lambda p: p.write_bytes(b"\xff\xfe" + p.read_bytes()[:40])),
        (
            "filter",
            "kept.jsonl",
            lambda p: p.write_bytes(b"\n".join(p.read_bytes().split(b"\n")[:2]) + b"\n"),
        ),
        ("filter", "report.json", lambda p: p.write_text("{}")),
    ],
)
def test_an_output_cut_short_is_corrupt_and_rebuilt(run, keyed_server, stage, name, damage):
    d = run["dirs"][stage]
    good = snapshot(d)
    damage(d / name)
    st = _status(keyed_server, run["ov"])
    assert st[stage].startswith("corrupt") and name in st[stage], st[stage]
    p = ok(distill(keyed_server, stage, *run["ov"]))
    assert f"{stage}: {d} is corrupt" in p.stderr and "rebuilding" in p.stderr
    rebuilt = snapshot(d)
    for f, h in good.items():  # every output back as it was (the manifest's times differ)
        if f != "manifest.json":
            assert rebuilt[f] == h, f
    m = json.loads((d / "manifest.json").read_text())
    if stage == "generate":
        assert m["stats"]["requested"] == 0  # rebuilt from the pool: nothing asked again
    assert _status(keyed_server, run["ov"])[stage].startswith("complete")


def test_same_size_damage_is_found_by_verify(run, keyed_server):
    d = run["dirs"]["generate"]
    f = d / "samples.jsonl"
    good = f.read_bytes()
    i = good.index(b'"completion": "') + 16
    f.write_bytes(good[:i] + bytes([good[i] ^ 0x01]) + good[i + 1 :])  # one bit, same size
    assert _status(keyed_server, run["ov"])["generate"].startswith("complete")  # sizes match
    st = _status(keyed_server, run["ov"], "--verify")
    assert st["generate"].startswith("corrupt") and "sha256" in st["generate"], st["generate"]
    ok(distill(keyed_server, "generate", "--verify", *run["ov"]))
    assert f.read_bytes() == good


# --- locks before deletes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "stage, lock", [("generate", "pool"), ("generate", "stage"), ("filter", "stage")]
)
def test_force_refused_by_a_lock_changes_nothing(run, keyed_server, stage, lock):
    d = run["dirs"][stage]
    held = d.parent / ".pool.lock" if lock == "pool" else d / ".lock"
    before = snapshot(run["runs"])
    with StageLock(held):
        p = distill(keyed_server, stage, "--force", *run["ov"])
    assert p.returncode == 2
    errors = [x for x in p.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and f"pid {os.getpid()}" in errors[0], p.stderr
    assert snapshot(run["runs"]) == before  # a refused --force deletes nothing
    ok(distill(keyed_server, stage, "--force", *run["ov"]))  # and works once the lock is free


def test_status_shows_complete_partial_stale_missing_and_corrupt(run, keyed_server):
    """`distill status` as a user reads it, in every state a stage can be in."""
    ov = run["ov"]
    st = _status(keyed_server, ov)
    assert st["generate"].startswith("complete") and st["filter"].startswith("complete")
    assert st["train"].startswith("missing") and st["eval"].startswith("missing")
    n3 = [*ov, "generate.n=3"]
    st = _status(keyed_server, n3)  # no dir for n=3 (the fixture removed it), others complete
    assert st["generate"].startswith("stale") and "other configs" in st["generate"]
    dirs([*n3])["generate"].mkdir(parents=True)  # a run for n=3 started: the pool has 30
    st = _status(keyed_server, n3)
    assert st["generate"].startswith("partial") and "30 of 30 samples" in st["generate"]
    (run["dirs"]["filter"] / "kept.jsonl").write_text("{}\n")  # (the random teacher kept none)
    st = _status(keyed_server, ov)
    assert st["filter"].startswith("corrupt") and "kept.jsonl" in st["filter"]
