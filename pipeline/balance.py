"""Which endpoint gets the next call, and when an endpoint leaves the rotation: a pure policy.

No I/O and no clock: the client tells the balancer what it started, what came back and what
failed, and asks it where to send the next call. That keeps the rules small enough to test by
hand (tests/pipeline/test_balance.py):

- the least busy live endpoint gets the call (outstanding samples, then fewest served), so a
  replica slowed by long outputs is asked less;
- a retry avoids the endpoint that just failed it, when another is alive;
- an endpoint that fails `dead_after` calls in a row leaves the rotation, unless it is the last
  live one (with nowhere else to go, pending calls should use their own retries, not all fail).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Endpoint:
    url: str  # as given, credentials included: used only to connect
    label: str  # the URL redacted: what records, stats and messages show
    outstanding: int = 0  # samples in flight
    alive: bool = True
    consecutive_failures: int = 0
    served: int = 0
    failures: int = 0
    tokens: int = 0


@dataclass
class Balancer:
    endpoints: list[Endpoint]
    dead_after: int = 3
    failovers: int = 0
    retries: int = 0
    removed: list[Endpoint] = field(default_factory=list)  # in the order they left

    def pick(self, avoid: Endpoint | None = None) -> Endpoint | None:
        """The endpoint for the next call; None when none is alive."""
        live = [e for e in self.endpoints if e.alive]
        pool = [e for e in live if e is not avoid] or live
        return min(pool, key=lambda e: (e.outstanding, e.served), default=None)

    def started(self, ep: Endpoint, samples: int) -> None:
        ep.outstanding += samples

    def succeeded(self, ep: Endpoint, samples: int, tokens: int) -> None:
        ep.outstanding -= samples
        ep.consecutive_failures = 0
        ep.served += samples
        ep.tokens += tokens

    def throttled(self, ep: Endpoint, samples: int) -> None:
        """A call the endpoint asked to retry later (Retry-After): a retry, not its fault."""
        ep.outstanding -= samples
        self.retries += 1

    def failed(self, ep: Endpoint, samples: int, *, retryable: bool) -> bool:
        """Record a failed call; True when this failure took `ep` out of the rotation."""
        ep.outstanding -= samples
        ep.failures += 1
        if not retryable:
            return False
        self.retries += 1
        ep.consecutive_failures += 1
        others = any(e.alive for e in self.endpoints if e is not ep)
        if ep.alive and others and ep.consecutive_failures >= self.dead_after:
            ep.alive = False
            self.failovers += 1
            self.removed.append(ep)
            return True
        return False

    def stats(self) -> dict[str, dict[str, Any]]:
        return {
            e.label: {
                "served": e.served,
                "failures": e.failures,
                "alive": e.alive,
                "tokens": e.tokens,
            }
            for e in self.endpoints
        }
