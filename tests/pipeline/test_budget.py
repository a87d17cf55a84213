"""pipeline/budget.py: calls are admitted in plan order while what the pool spent plus the most
every admitted call may cost stays within each cap; the first call that could cross it closes
the budget; and the budget's bad values are refused where the config is built."""

from __future__ import annotations

import pytest

from pipeline.budget import Budget
from pipeline.calls import Request
from pipeline.config import ConfigError, load_config
from pipeline.config.generate import BudgetConfig

MSG = [{"role": "user", "content": "x" * 40}]  # about 10 prompt tokens


def _req(i: int, n: int = 2, max_tokens: int = 32) -> Request:
    return Request([f"r{i}-{k}" for k in range(n)], MSG, {"max_tokens": max_tokens})


def test_calls_are_admitted_in_order_up_to_the_first_that_could_cross() -> None:
    pool = [{"usage": {"completion_tokens": 30, "prompt_tokens": 10}}] * 2  # 60 spent
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
        ("generate.budget.completion_tokens=0", "generate.budget.completion_tokens"),
        ("generate.budget.prompt_tokens=-5", "generate.budget.prompt_tokens"),
        (
            "generate.budget.usd_per_million_completion=3",
            "generate.budget.usd_per_million_completion",
        ),
        ("generate.budget.usd_per_million_prompt=-1", "generate.budget.usd_per_million_prompt"),
    ],
)
def test_bad_budget_values_are_refused_where_the_config_is_built(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert str(e.value).startswith(key) and "\n" not in str(e.value)
