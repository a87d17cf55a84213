"""pipeline/budget.py and stages/shared/spend.py: calls are admitted in plan order while what
the run spent (its pool and its ledgers) plus the most every admitted call may cost stays
within each cap; the first call that could cross it closes the budget; only the teacher's calls
are charged; and the budget's bad values are refused where the config is built."""

from __future__ import annotations

import json

import pytest

from pipeline.budget import Budget
from pipeline.calls import Completion, Request
from pipeline.config import ConfigError, load_config
from pipeline.config.generate import BudgetConfig
from stages.shared.spend import SPEND, ledger, run_budget, spent

MSG = [{"role": "user", "content": "x" * 40}]  # about 10 prompt tokens


def _req(i: int, n: int = 2, max_tokens: int = 32) -> Request:
    return Request([f"r{i}-{k}" for k in range(n)], MSG, {"max_tokens": max_tokens})


def test_calls_are_admitted_in_order_up_to_the_first_that_could_cross() -> None:
    pool = [{"completion_tokens": 30, "prompt_tokens": 10}] * 2  # 60 spent: two calls
    b = Budget.of(BudgetConfig(completion_tokens=250), pool)
    assert b.completion == 60 and b.prompt == 20
    got = b.admit([_req(i) for i in range(5)])  # 64 each, at most: 60 + 2 * 64 = 188 fits
    assert [r.ids[0] for r in got] == ["r0-0", "r1-0"] and b.held == 6 and b.closed
    assert b.admit([_req(9, n=1, max_tokens=1)]) == []  # closed: nothing after, however small


def test_the_prompt_cap_counts_a_calls_prompt_with_each_sample() -> None:
    b = Budget(completion_cap=-1, prompt_cap=45)
    assert len(b.admit([_req(i) for i in range(3)])) == 2  # 10 x 2 per call: 40 fits, 60 not


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("budget.completion_tokens=0", "budget.completion_tokens"),
        ("budget.prompt_tokens=-5", "budget.prompt_tokens"),
        (
            "budget.usd_per_million_completion=3",
            "budget.usd_per_million_completion",
        ),
        ("budget.usd_per_million_prompt=-1", "budget.usd_per_million_prompt"),
    ],
)
def test_bad_budget_values_are_refused_where_the_config_is_built(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert str(e.value).startswith(key) and "\n" not in str(e.value)


def test_only_the_calls_charged_count_and_they_pass_in_order() -> None:
    """eval's teacher and base share an engine: the base's calls are free and always pass,
    even once the teacher's are held."""
    b = Budget(completion_cap=100, prompt_cap=-1)
    reqs = [_req(i) for i in range(4)]  # 64 tokens each at most
    got = b.admit(reqs, charged=lambda r: r.ids[0] in ("r0-0", "r2-0"))
    assert [r.ids[0] for r in got] == ["r0-0", "r1-0", "r3-0"] and b.held == 2
    assert b.completion == 64


def test_generate_budget_moved_to_the_run_level_with_one_line() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, ["generate.budget.completion_tokens=100"])
    msg = str(e.value)
    assert msg.startswith("generate.budget: moved to the run level") and "\n" not in msg
    assert load_config(None, ["budget.completion_tokens=100"]).budget.completion_tokens == 100


def _completion(rid: str, prompt: int, completion: int) -> Completion:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    return Completion(rid, "text", "stop", usage, "local")


def test_the_run_spend_is_its_pools_once_each_and_every_ledger(tmp_path) -> None:
    """A sample in the pool and in a shard's pool counts once; the ledgers of eval and of the
    on-policy rounds count; a call asked again is a second ledger row: it was paid twice."""
    cfg = load_config(None, [f"runs_dir={tmp_path}", "run=r", "budget.completion_tokens=10000"])
    gen = tmp_path / "r" / "generate"
    gen.mkdir(parents=True)
    row = {"id": "s1", "usage": {"prompt_tokens": 100, "completion_tokens": 20}}
    (gen / "pool.jsonl").write_text(json.dumps(row) + "\n")
    other = {"id": "s2", "usage": {"prompt_tokens": 50, "completion_tokens": 5}}
    shard = gen / "pool.shard-0-of-2.jsonl"
    shard.write_text(json.dumps(row) + "\n" + json.dumps(other) + "\n")
    for where in (tmp_path / "r" / "eval" / "k1", tmp_path / "r" / "train" / "onpolicy" / "c"):
        where.mkdir(parents=True)
        with ledger(where) as paid:
            paid(_completion("a", 7, 3))
            paid(_completion("a", 7, 3))  # its answer was lost: asked and paid again
    rows = [json.loads(x) for x in (tmp_path / "r" / "eval" / "k1" / SPEND).read_text().split()]
    assert [r["id"] for r in rows] == ["a", "a#1"]
    assert spent(tmp_path / "r" / "eval" / "k1" / SPEND) == {
        "calls": 2,
        "prompt_tokens": 14,
        "completion_tokens": 6,
    }
    b = run_budget(cfg)
    assert (b.prompt, b.completion) == (150 + 28, 25 + 12)
    assert run_budget(load_config(None, [f"runs_dir={tmp_path}", "run=r"])) is None
