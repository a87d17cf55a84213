"""Adaptive sampling and teacher cascades against real vLLM (the offline engine).

The strong teacher is the tiny model after a short SFT on the bundled arithmetic
(tests/tiny_model.py): it answers in format and is right on some questions, wrong on others,
so the stopping rule sees both. The cheap teacher is the tiny random model, which never writes
an answer line: every question it is sent goes on to the next teacher.
"""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import kill_generate_when, run_cli

from pipeline.config import load_config, shipped_config
from pipeline.reasoning import Convention, inline_text
from pipeline.records import read_jsonl, read_jsonl_tolerant
from pipeline.runner import plan
from stages.shared.verify import text_digest, verified

pytestmark = pytest.mark.slow
QUESTIONS = 40
ADAPTIVE = [
    "generate.strategy=adaptive",
    "generate.n=2",
    "generate.target_verified=2",
    "generate.max_samples=8",
]


@pytest.fixture(scope="module")
def models(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tiny_model import build_tiny_teacher

    tmp = tmp_path_factory.mktemp("strategies")
    return {
        "tmp": tmp,
        "strong": build_tiny_teacher(tmp / "teacher", tiny_model),
        "cheap": tiny_model,
    }


def _ov(models: dict, run: str, *extra: str) -> list[str]:
    return [
        f"runs_dir={models['tmp'] / 'runs'}",
        f"cache_dir={models['tmp'] / 'cache'}",
        f"teacher.model={models['strong']}",
        f"run={run}",
        f"task.max_train={QUESTIONS}",
        "generate.sampling.max_tokens=32",
        "generate.concurrency=8",  # small rounds on 2 cores: the kill lands mid-round
        "generate.fsync_every=1",
        *extra,
    ]


def _dir(ov: list[str]) -> Path:
    return plan(load_config(shipped_config("default"), ov), "generate")["generate"].dir


def _manifest(ov: list[str]) -> dict:
    return json.loads((_dir(ov) / "manifest.json").read_text())


def _samples(ov: list[str]) -> list[dict]:
    return list(read_jsonl(_dir(ov) / "samples.jsonl"))


def _ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    return r


def _pool_ids(pool: Path) -> list[str]:
    return [r["id"] for r in read_jsonl_tolerant(pool).rows]


@pytest.fixture(scope="module")
def adaptive_killed(models: dict) -> dict:
    """An adaptive run killed in its second round, resumed; and the same run uninterrupted."""
    ov = _ov(models, "killed", *ADAPTIVE)
    pool = models["tmp"] / "runs" / "killed" / "generate" / "pool.jsonl"
    first_round = QUESTIONS * 2
    at = kill_generate_when(ov, pool, first_round + 6, timeout=600)
    before = _pool_ids(pool)
    resumed = _ok(run_cli("generate", *ov))
    cold_ov = _ov(models, "cold", *ADAPTIVE)
    _ok(run_cli("generate", *cold_ov))
    return {"ov": ov, "pool": pool, "at": at, "before": before, "resumed": resumed, "cold": cold_ov}


def test_adaptive_kill_mid_round_loses_nothing_and_buys_nothing_twice(
    adaptive_killed: dict,
) -> None:
    k = adaptive_killed
    assert len(k["before"]) > QUESTIONS * 2, "the kill should land after the first round"
    after = _pool_ids(k["pool"])
    assert len(after) == len(set(after)), "a sample was bought twice"
    assert set(k["before"]) <= set(after), "a sample written before the kill was lost"
    st = _manifest(k["ov"])["stats"]
    assert st["reused"] == len(set(k["before"]))
    assert st["requested"] == st["samples"] - st["reused"]
    # Nothing asked that the strategy does not use: the pool is the selection, exactly.
    assert sorted(after) == sorted(r["id"] for r in _samples(k["ov"]))


def test_resumed_adaptive_run_is_the_uninterrupted_one(adaptive_killed: dict) -> None:
    """Decisions replayed from the pool are the decisions made live: same samples, same ids."""
    k = adaptive_killed
    resumed, cold = _samples(k["ov"]), _samples(k["cold"])
    assert [r["id"] for r in resumed] == [r["id"] for r in cold]
    assert [r["completion"] for r in resumed] == [r["completion"] for r in cold]
    st = _manifest(k["cold"])["stats"]
    assert st["requested"] == st["samples"]  # cold: it paid for exactly its selection


def _counted(rs: list[dict], conv: Convention) -> tuple[list[int], list[bool], list[bool]]:
    """A question's samples in order: distinct verified samples so far after each; whether each
    is a verified copy (exact, or near as the filter's defaults find it: Jaccard 0.8 on 5-word
    shingles); and whether each is a repeat for reheat (a text drawn before, or such a copy)."""
    from stages.filter.dedup import near_duplicates

    seen: dict[bytes, str] = {}
    drawn: set[bytes] = set()
    counted, copy, repeat = [], [], []
    for r in rs:
        text = inline_text(conv.split(r), conv.tags)
        dup = verified(r, conv) and (
            text_digest(text) in seen
            or near_duplicates([*seen.values(), text], shingle=5)[-1] is not None
        )
        if verified(r, conv) and not dup:
            seen[text_digest(text)] = text
        counted.append(len(seen))
        copy.append(dup)
        repeat.append(dup or text_digest(text) in drawn)
        drawn.add(text_digest(text))
    return counted, copy, repeat


def test_adaptive_stops_each_question_by_the_rule(adaptive_killed: dict) -> None:
    """Rounds of 2: a question goes on only while it has fewer than 2 distinct verified samples
    (not exact copies, and not near ones as the filter's near_dedup finds them) and fewer than 8
    samples; its samples are indices 0..k-1."""
    rows = _samples(adaptive_killed["cold"])
    conv = Convention()
    by_q: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_q[r["question_id"]].append(r)
    assert len(by_q) == QUESTIONS
    stopped_early = ran_out = copies = distinct = 0
    for q, rs in by_q.items():
        idx = [r["sample_index"] for r in rs]
        assert idx == list(range(len(rs))), q
        counted, copy, _ = _counted(rs, conv)
        copies += sum(copy)
        distinct += counted[-1]
        rounds = [counted[i] for i in range(1, len(rs), 2)]  # after each round
        assert all(c < 2 for c in rounds[:-1]), f"{q} went on after reaching the target"
        assert rounds[-1] >= 2 or len(rs) == 8, f"{q} stopped short of target and cap"
        stopped_early += len(rs) < 8
        ran_out += len(rs) == 8
    assert stopped_early and ran_out, "the tiny teacher should solve some questions, not all"
    st = _manifest(adaptive_killed["cold"])["stats"]
    t = next(iter(st["teachers"].values()))
    assert t["rounds"] == 4 and t["samples"] == len(rows)
    assert t["verified"] == sum(verified(r, conv) for r in rows)
    assert (st["copies"], st["distinct_verified"]) == (copies, distinct)
    assert st["unsolved"] == sum(not any(verified(r, conv) for r in rs) for rs in by_q.values())


def test_reheat_asks_a_question_that_drew_a_copy_hotter(models: dict) -> None:
    """generate.reheat on the real engine, greedy first: rounds of 1 at temperature 0 give a
    question the same text again, so its next round is asked 0.5 hotter (the pool rows carry
    the raised temperature, one step per round that drew a repeat, three at most) and the stats
    count those samples. (A replay asking nothing: tests/stages/generate/test_strategy.py.)"""
    ov = _ov(
        models,
        "reheat",
        *ADAPTIVE,
        "generate.n=1",
        "generate.sampling.temperature=0",
        "generate.reheat=0.5",
    )
    _ok(run_cli("generate", *ov))
    conv = Convention()
    by_q: dict[str, list[dict]] = defaultdict(list)
    for r in _samples(ov):
        by_q[r["question_id"]].append(r)
    hot = 0
    for q, rs in by_q.items():
        _, _, repeat = _counted(rs, conv)
        for k, r in enumerate(rs):
            steps = min(3, sum(repeat[:k]))
            assert r["sampling"]["temperature"] == 0.5 * steps, (q, k)
            hot += steps > 0
    st = _manifest(ov)["stats"]
    assert st["hotter_samples"] == hot > 0


def test_adaptive_samples_are_the_fixed_run_s_samples(models: dict, adaptive_killed: dict) -> None:
    """Fixed n=8 in the same run reuses every adaptive sample (same ids, same seeds) and asks
    only for the rest."""
    ov = _ov(models, "cold", "generate.n=8")
    _ok(run_cli("generate", *ov))
    adaptive = {r["id"]: r["completion"] for r in _samples(adaptive_killed["cold"])}
    fixed = {r["id"]: r["completion"] for r in _samples(ov)}
    assert adaptive.items() <= fixed.items()
    st = _manifest(ov)["stats"]
    assert st["reused"] == len(adaptive) and st["requested"] == QUESTIONS * 8 - len(adaptive)


# --- a cascade: the random model first, the trained one for what it left ---------------------


def _cascade(models: dict, run: str, order: tuple[str, str]) -> list[str]:
    teachers = ", ".join(f"{{model: {models[m]}, label: {m}}}" for m in order)
    return _ov(models, run, "generate.n=2", "generate.target_verified=1", f"teachers=[{teachers}]")


@pytest.fixture(scope="module")
def cascade_killed(models: dict) -> dict:
    ov = _cascade(models, "cascade", ("cheap", "strong"))
    pool = models["tmp"] / "runs" / "cascade" / "generate" / "pool.jsonl"
    at = kill_generate_when(
        ov, pool, QUESTIONS * 2 + 6, timeout=600
    )  # in the second teacher's step
    before = _pool_ids(pool)
    resumed = _ok(run_cli("generate", *ov))
    return {"ov": ov, "pool": pool, "at": at, "before": before, "resumed": resumed}


def test_cascade_kill_in_second_step_loses_nothing_and_buys_nothing_twice(
    cascade_killed: dict,
) -> None:
    k = cascade_killed
    rows = read_jsonl_tolerant(k["pool"]).rows
    teachers_before = {r["teacher"] for r in rows if r["id"] in set(k["before"])}
    assert teachers_before == {"cheap", "strong"}, "the kill should land in the second step"
    after = _pool_ids(k["pool"])
    assert len(after) == len(set(after)) and set(k["before"]) <= set(after)
    st = _manifest(k["ov"])["stats"]
    assert st["reused"] == len(set(k["before"])) and st["requested"] == st["samples"] - st["reused"]
    assert sorted(after) == sorted(r["id"] for r in _samples(k["ov"]))


def test_cascade_sends_on_only_what_the_cheap_teacher_left(cascade_killed: dict) -> None:
    st = _manifest(cascade_killed["ov"])["stats"]["teachers"]
    assert st["cheap"]["questions_sent"] == QUESTIONS and st["cheap"]["verified"] == 0
    assert st["strong"]["questions_sent"] == QUESTIONS  # the random model solved nothing
    for t in st.values():
        assert t["samples"] == 2 * t["questions_sent"] and t["completion_tokens"] > 0
    rows = _samples(cascade_killed["ov"])
    assert {r["teacher"] for r in rows} == {"cheap", "strong"}  # each sample names its teacher
    assert sum(r["teacher"] == "strong" for r in rows) == st["strong"]["samples"]


def test_cascade_strong_first_spares_the_second_teacher(models: dict) -> None:
    ov = _cascade(models, "cascade", ("strong", "cheap"))
    r = _ok(run_cli("generate", *ov))
    st = _manifest(ov)["stats"]["teachers"]
    solved = st["strong"]["questions_verified"]
    assert 0 < solved < QUESTIONS
    assert st["cheap"]["questions_sent"] == QUESTIONS - solved
    assert st["strong"]["requested"] == 0  # the strong teacher's samples: already in the pool
    assert "teacher cheap" in r.stdout and "teacher strong" in r.stdout  # the summary


def test_all_teachers_and_filter_selection(models: dict) -> None:
    """combine: all — every teacher answers every question; filter prefers one teacher, and
    reports what each gave; kept rows carry pass rates."""
    teachers = ", ".join(f"{{model: {models[m]}, label: {m}}}" for m in ("cheap", "strong"))
    ov = _ov(
        models,
        "cascade",
        "generate.n=2",
        "generate.combine=all",
        f"teachers=[{teachers}]",
        "filter.prefer_teacher=strong",
        "filter.min_pass_rate=0.01",
    )
    _ok(run_cli("filter", *ov))
    st = _manifest(ov)["stats"]["teachers"]
    assert st["cheap"]["questions_sent"] == st["strong"]["questions_sent"] == QUESTIONS
    fdir = plan(load_config(shipped_config("default"), ov), "filter")["filter"].dir
    report = json.loads((fdir / "report.json").read_text())
    assert report["teachers"]["cheap"]["kept"] == 0 and report["teachers"]["strong"]["kept"] > 0
    per_q = report["pass_rate"]["per_question"]
    unsolved = [c for c in per_q.values() if not sum(t["verified"] for t in c.values())]
    # every sample of a question no teacher solved is dropped first, as too_hard
    assert report["reasons"].get("too_hard", 0) == sum(
        t["sampled"] for c in unsolved for t in c.values()
    )
    assert len(per_q) == QUESTIONS and all(set(v) == {"cheap", "strong"} for v in per_q.values())
    for row in read_jsonl(fdir / "kept.jsonl"):
        rates = row["pass_rate_by_teacher"]
        assert rates["cheap"] == 0.0 and rates["strong"] > 0 and row["pass_rate"] > 0
        counts = per_q[row["question_id"]]
        v = sum(c["verified"] for c in counts.values())
        assert row["pass_rate"] == round(v / sum(c["sampled"] for c in counts.values()), 4)
