"""The endpoint picking and failover policy, by hand: no server, no clock."""

from __future__ import annotations

from pipeline.balance import Balancer, Endpoint


def _bal(n: int = 3, dead_after: int = 3) -> Balancer:
    return Balancer([Endpoint(f"http://h{i}/v1", f"h{i}") for i in range(n)], dead_after=dead_after)


def test_least_busy_live_endpoint_gets_the_call() -> None:
    b = _bal()
    a, c, d = b.endpoints
    b.started(a, 4)
    b.started(c, 1)
    assert b.pick() is d  # nothing in flight there
    b.started(d, 2)
    assert b.pick() is c  # 1 < 2 < 4 samples in flight
    b.succeeded(c, 1, tokens=10)
    b.succeeded(d, 2, tokens=20)
    assert b.pick() is c  # equal (0) in flight: the one that served fewer
    assert (c.served, c.tokens, d.served, d.tokens) == (1, 10, 2, 20)


def test_a_retry_avoids_the_endpoint_that_failed_it() -> None:
    b = _bal(2)
    a, c = b.endpoints
    assert b.pick(avoid=a) is c
    assert b.pick(avoid=c) is a
    solo = _bal(1)
    assert solo.pick(avoid=solo.endpoints[0]) is solo.endpoints[0]  # nowhere else to go


def test_consecutive_failures_take_an_endpoint_out_of_rotation() -> None:
    b = _bal(2, dead_after=3)
    a, c = b.endpoints
    for _ in range(2):
        b.started(a, 1)
        assert not b.failed(a, 1, retryable=True)
    b.started(a, 1)
    b.succeeded(a, 1, tokens=0)  # a success resets the count
    for i in range(3):
        b.started(a, 1)
        assert b.failed(a, 1, retryable=True) == (i == 2)
    assert not a.alive and b.failovers == 1 and b.removed == [a]
    assert b.pick() is c and b.pick(avoid=c) is c  # the dead one is never picked again
    assert a.outstanding == 0 and a.failures == 5 and b.retries == 5


def test_the_last_live_endpoint_is_never_taken_out() -> None:
    b = _bal(2, dead_after=1)
    a, c = b.endpoints
    assert b.failed(a, 1, retryable=True)  # a leaves: c is still there
    for _ in range(10):
        assert not b.failed(c, 1, retryable=True)
    assert c.alive and b.pick() is c


def test_non_retryable_failures_neither_retry_nor_fail_over() -> None:
    b = _bal(2, dead_after=1)
    a, _ = b.endpoints
    assert not b.failed(a, 1, retryable=False)
    assert a.alive and b.retries == 0 and a.failures == 1 and a.consecutive_failures == 0


def test_no_live_endpoint_gives_none_and_stats_use_redacted_labels() -> None:
    b = Balancer([Endpoint("http://u:pw@h/v1", "http://u:***@h/v1")], dead_after=1)
    b.endpoints[0].alive = False
    assert b.pick() is None
    assert list(b.stats()) == ["http://u:***@h/v1"]
