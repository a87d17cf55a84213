"""One progress bar per long job: opened when the model answers, so its rate and ETA leave
start-up out; closed on every exit, so an error message starts a line of its own."""

from __future__ import annotations

import sys
import time
from typing import Any

ESTIMATE_AFTER_S = 20.0  # asking long enough that its rate is this machine's, not start-up's


class Progress:
    """`with Progress(total, unit, desc) as p:` then `p.start()` once ready, `p.done(tokens)`.

    Once it has measured ESTIMATE_AFTER_S seconds of asking, it says in one line the rate and
    the time the rest will take at it: the part of the startup check only a measurement can
    give (on a CPU that emulates bf16, a user learns in seconds that a run needs hours)."""

    def __init__(self, total: int, unit: str, desc: str):
        self.total, self.unit, self.desc = total, unit, desc
        self.bar: Any = None
        self.tokens = 0
        self.t0 = time.monotonic()
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
        elapsed = time.monotonic() - self.t0
        if not self.estimated and elapsed >= ESTIMATE_AFTER_S and self.bar.n < self.total:
            self.estimated = True
            self.bar.write(
                estimate_line(self.desc, self.unit, self.bar.n, self.total, self.tokens, elapsed),
                file=sys.stdout,
            )

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


def estimate_line(desc: str, unit: str, n: int, total: int, tokens: int, seconds: float) -> str:
    """`teacher: 352 tok/s here; the other 1,480 samples take about 3.4 min at that rate`."""
    left = (total - n) * seconds / max(n, 1)
    rate = f"{tokens / seconds:,.0f} tok/s here" if tokens else f"{n / seconds:,.1f} {unit}/s here"
    return (
        f"{desc}: {rate}; the other {total - n:,} {unit}s take about {duration(left)} at that rate"
    )


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
