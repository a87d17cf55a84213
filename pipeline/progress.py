"""One progress bar per long job: opened when the model answers, so its rate and ETA leave
start-up out; closed on every exit, so an error message starts a line of its own."""

from __future__ import annotations

import sys
import time
from typing import Any

# Seconds of answers, counted from the first one, before the rate is said: a batch engine
# answers nothing while it fills its first batch, then steadily; the rate from the start
# would be a fraction of the steady one.
ESTIMATE_AFTER_S = 20.0


class Progress:
    """`with Progress(total, unit, desc) as p:` then `p.start()` once ready, `p.done(tokens)`.

    Once it has counted answers for ESTIMATE_AFTER_S seconds after the first, it says in one
    line the rate and the time the rest will take at it: the part of the startup check only a
    measurement can give (on a CPU that emulates bf16, a user learns in a minute that a run
    needs hours)."""

    def __init__(self, total: int, unit: str, desc: str):
        self.total, self.unit, self.desc = total, unit, desc
        self.bar: Any = None
        self.tokens = 0
        self.t0 = time.monotonic()
        self.first: tuple[float, int, int] | None = None  # when, done and tokens at the first
        self.estimated = False

    def start(self) -> None:
        from tqdm import tqdm

        self.t0 = time.monotonic()
        self.bar = tqdm(
            total=self.total, unit=self.unit, desc=self.desc, dynamic_ncols=True, file=sys.stderr
        )

    def done(self, tokens: int = 0) -> None:
        if self.bar is None:
            self.start()
        self.tokens += tokens
        self.bar.update(1)
        if self.bar.n % 16 == 0 and self.tokens:  # scoring writes no tokens: no rate to show
            rate = self.tokens / max(1e-9, time.monotonic() - self.t0)
            self.bar.set_postfix_str(f"{rate:,.0f} tok/s")
        self._estimate(time.monotonic())

    def _estimate(self, now: float) -> None:
        if self.first is None:
            self.first = (now, self.bar.n, self.tokens)
            return
        since, n0, tokens0 = self.first
        if self.estimated or now - since < ESTIMATE_AFTER_S or self.bar.n >= self.total:
            return
        self.estimated = True
        line = estimate_line(
            self.desc,
            self.unit,
            self.bar.n - n0,
            self.total - self.bar.n,
            self.tokens - tokens0,
            now - since,
        )
        self.bar.write(line, file=sys.stdout)

    def grow(self, more: int) -> None:
        """More to do than first known (the next round of adaptive sampling)."""
        self.total += more
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def estimate_line(desc: str, unit: str, n: int, left: int, tokens: int, seconds: float) -> str:
    """`teacher: 352 tok/s here; the other 1,480 samples take about 3.4 min at that rate`, from
    `n` answers (`tokens` tokens) in `seconds`, with `left` still to come."""
    rate = f"{tokens / seconds:,.0f} tok/s here" if tokens else f"{n / seconds:,.1f} {unit}/s here"
    units = unit if len(unit) <= 2 else unit + "s"  # q, not qs
    return (
        f"{desc}: {rate}; the other {left:,} {units} take about "
        f"{duration(left * seconds / max(n, 1))} at that rate"
    )


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
