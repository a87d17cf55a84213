"""pipeline/ratelimit.py on a simulated clock: no 60-second window ever holds more calls or
tokens than the limits, calls wait no longer than they must, a Retry-After block holds every
call until it ends, and Retry-After reads as seconds or an HTTP date."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from pipeline.ratelimit import (
    EndpointLimiter,
    PastDeadline,
    expected_tokens,
    retry_after_seconds,
)


class Clock:
    """Simulated time: sleeping advances it, nothing else does."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.now += s
        await asyncio.sleep(0)


def _run(limiter: EndpointLimiter, clock: Clock, costs: list[int]) -> list[float]:
    """Send one call per cost, all at once (as a client's concurrent tasks); their times."""
    sent: list[float] = []

    async def one(cost: int) -> None:
        await limiter.acquire(cost)
        sent.append(clock.now)

    async def main() -> None:
        await asyncio.gather(*(one(c) for c in costs))

    asyncio.run(main())
    return sent


def _most_in_a_window(times: list[float], weights: list[int] | None = None) -> int:
    w = weights or [1] * len(times)
    return max(sum(x for t2, x in zip(times, w, strict=True) if t <= t2 < t + 60) for t in times)


def test_requests_per_minute_is_never_exceeded_in_any_window() -> None:
    clock = Clock()
    lim = EndpointLimiter(requests_per_minute=7, clock=clock, sleep=clock.sleep)
    sent = _run(lim, clock, [10] * 30)
    assert _most_in_a_window(sent) == 7
    assert sent[:7] == [0.0] * 7 and sent[7] == 60.0  # no longer than it must
    assert max(sent) == 240.0  # 30 calls at 7 a minute: 7 at 0, 60, 120, 180 s, the last 2 at 240


def test_tokens_per_minute_is_never_exceeded_in_any_window() -> None:
    clock = Clock()
    lim = EndpointLimiter(tokens_per_minute=1000, clock=clock, sleep=clock.sleep)
    rng = random.Random(0)
    costs = [rng.randint(50, 400) for _ in range(40)]
    sent = _run(lim, clock, costs)
    order = sorted(range(len(sent)), key=lambda i: sent[i])
    times = [sent[i] for i in order]
    assert _most_in_a_window(times, [costs[i] for i in order]) <= 1000
    assert lim.waited_s > 0


def test_a_call_over_the_token_limit_goes_alone() -> None:
    clock = Clock()
    lim = EndpointLimiter(tokens_per_minute=100, clock=clock, sleep=clock.sleep)
    assert _run(lim, clock, [500, 10]) == [0.0, 60.0]


def test_retry_after_blocks_every_call_until_it_ends() -> None:
    clock = Clock()
    lim = EndpointLimiter(clock=clock, sleep=clock.sleep)  # no limits: only the block
    lim.block(12.5)
    assert _run(lim, clock, [1, 1, 1]) == [12.5, 12.5, 12.5]
    assert _run(lim, clock, [1]) == [12.5]  # over: no wait


def test_retry_after_reads_seconds_or_an_http_date() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(" 0.5 ") == 0.5
    now = 1_800_000_000.0
    date = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert retry_after_seconds(date, now) == pytest.approx(30.0)
    assert (
        retry_after_seconds(format_datetime(datetime.fromtimestamp(now - 5, UTC), usegmt=True), now)
        == 0.0
    )
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    assert retry_after_seconds("-3") == 0.0 and retry_after_seconds("nan") is None


def test_expected_tokens_counts_prompt_and_every_sample() -> None:
    msgs = [{"role": "user", "content": "x" * 40}]
    assert expected_tokens(msgs, None, {"max_tokens": 16}, 4) == 10 + 64
    assert expected_tokens(None, [1, 2, 3], {"max_tokens": 1}, 1) == 4


@pytest.mark.parametrize("key", ["max_requests_per_minute", "max_tokens_per_minute"])
def test_a_limit_of_zero_is_refused_in_one_line(key: str, tmp_path) -> None:
    from conftest import run_cli

    r = run_cli("generate", f"runs_dir={tmp_path}", f"teacher.serve.{key}=0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"teacher.serve.{key}: 0 lets nothing through" in r.stderr


def test_the_limits_reach_the_model_spec() -> None:
    from pipeline.config import load_config
    from stages.shared.models import teacher_spec

    cfg = load_config(
        None,
        [
            "teacher.endpoint=http://127.0.0.1:9/v1",
            "teacher.name=t",
            "teacher.serve.max_requests_per_minute=30",
        ],
    )
    spec = teacher_spec(cfg, cfg.teacher, "teacher")
    assert spec.requests_per_minute == 30 and spec.tokens_per_minute == 0


def test_a_wait_past_the_deadline_raises_at_once_naming_it() -> None:
    """A day-long Retry-After against a call that may wait 5 minutes: no sleep at all, the
    wait it would take and that it is the server's; a wait within the deadline is slept."""
    clock = Clock()
    lim = EndpointLimiter(requests_per_minute=1, clock=clock, sleep=clock.sleep)
    lim.block(86400)

    async def call(deadline: float) -> None:
        await lim.acquire(1, deadline)

    with pytest.raises(PastDeadline) as e:
        asyncio.run(call(clock.now + 300))
    assert clock.now == 0.0 and e.value.blocked and e.value.wait_s == pytest.approx(86400)
    asyncio.run(call(clock.now + 90000))  # within its deadline: waited out
    assert clock.now == pytest.approx(86400)
    with pytest.raises(PastDeadline) as e:  # the client's own limit: 60 s, past a 10 s deadline
        asyncio.run(call(clock.now + 10))
    assert not e.value.blocked and e.value.wait_s == pytest.approx(60)


def test_max_wait_reaches_the_model_spec() -> None:
    from pipeline.config import load_config
    from stages.shared.models import teacher_spec

    cfg = load_config(
        None,
        [
            "teacher.endpoint=http://127.0.0.1:9/v1",
            "teacher.name=t",
            "teacher.serve.max_wait_s=30",
        ],
    )
    assert teacher_spec(cfg, cfg.teacher, "teacher").max_wait_s == 30.0
