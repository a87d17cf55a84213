"""Generate shards without a model: the share each shard takes, the flag and Slurm's variables,
the merge by union (soft-label records first), its refusal while a shard runs, and the CLI's
one line for a bad --shard."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from pipeline.asklog import RecordLog
from pipeline.cache import StageLock
from pipeline.errors import UserError
from pipeline.records import read_jsonl
from stages.generate.samples import check_sample
from stages.generate.shards import Shard, merge, parse_shard, shard_of, shard_progress
from stages.shared.softlabels import Meta, Store, TokenLogprobs

META = Meta(k=2, temperature=1.0, mode="raw", vocab="v" * 64)


def _row(i: int, logprobs: dict | None = None) -> dict:
    row = {
        "id": f"s{i}",
        "question_id": f"q{i}",
        "sample_index": 0,
        "messages": [{"role": "user", "content": f"question {i}"}],
        "completion": f"answer {i}",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
        "gold": str(i),
    }
    return row | ({"logprobs": logprobs} if logprobs else {})


def _tl(seed: int) -> TokenLogprobs:
    rng = np.random.default_rng(seed)
    top = -np.sort(rng.exponential(2, (2, 2)), 1).astype(np.float32)
    ids = rng.integers(0, 100, (2, 2)).astype(np.int32)
    return TokenLogprobs(ids[:, 0].copy(), top[:, 0].copy(), ids, top)


def test_every_question_is_in_exactly_one_shard_whatever_the_order() -> None:
    questions = [f"train-{i}" for i in range(400)]
    for n in (1, 2, 3, 7):
        owners = [[i for i in range(n) if Shard(i, n).owns(q)] for q in questions]
        assert all(len(o) == 1 for o in owners)
        sizes = [sum(o == [i] for o in owners) for i in range(n)]
        assert min(sizes) > 400 / n * 0.7  # a hash, not a prefix: shares come out even
    # The share is a function of the id alone (not of its position in the task).
    assert [Shard(1, 3).owns(q) for q in questions] == [
        Shard(1, 3).owns(q) for q in reversed(questions)
    ][::-1]


@pytest.mark.parametrize(
    ("text", "why"), [("3/2", "below N"), ("0/0", "at least 1"), ("a/b", "expected I/N")]
)
def test_a_bad_shard_says_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(UserError, match=why):
        parse_shard(text)


def test_slurm_array_variables_give_the_shard() -> None:
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "4"}
    assert shard_of(None, env) == Shard(1, 3)  # --array=4-6: task 5 is the second
    assert shard_of("2/3", env) == Shard(2, 3)  # the flag wins
    assert shard_of(None, {}) is None
    with pytest.raises(UserError, match="pass --shard"):
        shard_of(None, {"SLURM_ARRAY_TASK_ID": "1"})


def test_merge_adds_each_missing_row_once_with_its_record_first(tmp_path) -> None:
    shared = tmp_path
    refs = {}
    for s, ids in ((Shard(0, 2), [0, 1, 2]), (Shard(1, 2), [2, 3])):
        with (
            Store.open(s.store(shared)) as store,
            RecordLog.open(s.pool(shared), check_sample, "samples") as log,
        ):
            for i in ids:
                refs[i] = store.append(f"s{i}", META, _tl(i))
                log.write(_row(i, refs[i]))
    with (
        Store.open(shared / "logprobs.bin") as store,
        RecordLog.open(shared / "pool.jsonl", check_sample, "samples") as log,
    ):
        log.write(_row(0, store.append("s0", META, _tl(0))))  # the pool had one already
        assert merge(shared, log, store) == 3  # 1, 2, 3: row 2 of both shards is one sample
        assert merge(shared, log, store) == 0  # a second merge changes nothing
    rows = list(read_jsonl(shared / "pool.jsonl"))
    assert [r["id"] for r in rows] == ["s0", "s1", "s2", "s3"]
    store = Store.open(shared / "logprobs.bin")
    for i in range(4):
        _, tl = store.read(refs[i]["sha"])
        assert (tl.top_ids == _tl(i).top_ids).all()


def test_merge_refuses_while_a_shard_holds_its_lock(tmp_path) -> None:
    s = Shard(1, 3)
    with RecordLog.open(s.pool(tmp_path), check_sample, "samples") as log:
        log.write(_row(1))
    with StageLock(s.lock(tmp_path)):
        assert "running" in shard_progress(tmp_path)[0]
        with RecordLog.open(tmp_path / "pool.jsonl", check_sample, "samples") as log:
            with pytest.raises(UserError, match="shard 1/3 is still running"):
                merge(tmp_path, log, None)
            assert log.rows == {}
    assert shard_progress(tmp_path) == ["shard 1/3: 1 samples, stopped before its end"]


@pytest.mark.parametrize("bad", ["3/2", "0/0", "a/b"])
def test_cli_bad_shard_is_one_line_before_anything_runs(bad: str, tmp_path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "generate", "--shard", bad, f"runs_dir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: --shard") and r.stderr.count("\n") == 1
    assert not any(tmp_path.iterdir())  # nothing was made, nothing asked
