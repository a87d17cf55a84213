"""One progress bar per long job: opened when the model answers, so its rate and ETA leave
start-up out; closed on every exit, so an error message starts a line of its own."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """`with Progress(total, unit, desc) as p:` then `p.start()` once ready, `p.done(tokens)`."""

    def __init__(self, total: int, unit: str, desc: str):
        self.total, self.unit, self.desc = total, unit, desc
        self.bar: Any = None
        self.tokens = 0
        self.t0 = time.monotonic()

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
