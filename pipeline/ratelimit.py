"""Client-side rate limits for one endpoint, and the server's own Retry-After.

A paid or shared endpoint sets quotas: requests per minute and tokens per minute. The client
keeps under them itself rather than learning them from 429s: each call first waits in
`EndpointLimiter.acquire` until, counting it, no 60-second window holds more than
`requests_per_minute` calls or `tokens_per_minute` tokens (its prompt plus the completion it
may write). A sliding window, not a refilling bucket: a bucket that starts full lets twice its
rate through in the first minute, a window never does. A call larger than the token limit on
its own goes when the window is empty. When a server answers 429 or 503 with Retry-After
(seconds, or an HTTP date), `block` holds every call to that endpoint until then. A call
waits only up to its deadline (serve.max_wait_s): a wait that would end past it raises
`PastDeadline` at once rather than sleeping through it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

WINDOW_S = 60.0


class PastDeadline(Exception):
    """A call would have to wait `wait_s` seconds, which ends past its deadline; `blocked`: the
    wait is the server's Retry-After, not the client's own limits."""

    def __init__(self, wait_s: float, blocked: bool):
        super().__init__(f"would wait {wait_s:.0f} s")
        self.wait_s, self.blocked = wait_s, blocked


def retry_after_seconds(value: str | None, now_epoch: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date); None when
    absent or unreadable. A date in the past is 0."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        seconds = when - (time.time() if now_epoch is None else now_epoch)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def prompt_tokens(messages: list[dict] | None, prompt_ids: list[int] | None) -> int:
    """A call's prompt in tokens before it is sent: its ids, or about 4 characters a token of
    its messages."""
    if prompt_ids is not None:
        return len(prompt_ids)
    return math.ceil(sum(len(str(m.get("content") or "")) for m in messages or []) / 4)


def expected_tokens(
    messages: list[dict] | None, prompt_ids: list[int] | None, sampling: dict, n: int
) -> int:
    """What a call may cost in tokens before it is sent: its prompt plus max_tokens for each
    of its n samples."""
    return prompt_tokens(messages, prompt_ids) + int(sampling.get("max_tokens") or 0) * max(1, n)


@dataclass
class EndpointLimiter:
    """One endpoint's limits (0 = none) and its Retry-After block."""

    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    blocked_until: float = 0.0
    waited_s: float = 0.0  # time calls spent waiting here, summed
    _sent: deque = field(default_factory=deque)  # (time, tokens) of calls in the window
    _lock: asyncio.Lock | None = None

    @property
    def active(self) -> bool:
        return bool(self.requests_per_minute or self.tokens_per_minute)

    def block(self, seconds: float) -> None:
        """No call to this endpoint before `seconds` from now (a server's Retry-After)."""
        self.blocked_until = max(self.blocked_until, self.clock() + seconds)

    def _ready_at(self, tokens: int) -> float:
        """The earliest time a call of `tokens` fits: the block, and both windows."""
        now = self.clock()
        while self._sent and self._sent[0][0] <= now - WINDOW_S:
            self._sent.popleft()
        at = max(now, self.blocked_until)
        rpm, tpm = self.requests_per_minute, self.tokens_per_minute
        if rpm and len(self._sent) >= rpm:
            at = max(at, self._sent[len(self._sent) - rpm][0] + WINDOW_S)
        if tpm and self._sent:
            total, need = sum(t for _, t in self._sent), tokens
            if total + need > tpm:
                # drop the oldest calls until this one fits, or the window is empty
                for when, t in self._sent:
                    total -= t
                    at = max(at, when + WINDOW_S)
                    if total + need <= tpm:
                        break
        return at

    async def acquire(self, tokens: int, deadline: float = math.inf) -> None:
        """Wait until a call of `tokens` fits, then count it; PastDeadline, at once, when that
        would be after `deadline` (on `clock`). Callers go one at a time, in the order they
        came."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            while True:
                at = self._ready_at(tokens)
                wait = at - self.clock()
                if wait <= 0:
                    break
                if at > deadline:
                    raise PastDeadline(wait, self.blocked_until >= at)
                self.waited_s += wait
                await self.sleep(wait)
            if self.active:
                self._sent.append((self.clock(), tokens))
