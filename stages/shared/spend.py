"""What a run's teacher calls spent, and the ledgers that record it (pipeline/budget.py).

generate's pool records each sample's usage itself. Every other teacher call (on-policy's
teacher scores, eval's teacher answers and identity probes, its draft scores) is recorded,
once answered and logged, as a row of the `spend.jsonl` ledger beside the log that holds its
answer:

    {"id": "<request id>", "prompt_tokens": 171, "completion_tokens": 1}

The run's spend is the pool's (every `pool*.jsonl` under generate/, each sample once) plus
every ledger under the run dir, so `budget` is one cap over the whole run, whichever key or
stage asked. A call asked again (its answer lost to a kill) is a second ledger row with a `#n`
suffix: it was paid twice. A kill between an answer and its ledger row leaves that one call
uncounted, as a kill loses a call in flight anyway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from pipeline.asklog import RecordLog
from pipeline.budget import Budget
from pipeline.calls import Completion, Request
from pipeline.config import Config
from pipeline.records import good_rows
from pipeline.runner import run_dir

SPEND = "spend.jsonl"
Paid = Callable[[Completion], None]


def check_spend(row: dict[str, Any]) -> str | None:
    for name in ("prompt_tokens", "completion_tokens"):
        if not isinstance(row.get(name), int):
            return f"field {name!r} is not an integer"
    return None


def ledger_usages(run: Path) -> Iterator[dict[str, Any]]:
    """Every ledger row of the run: what its teacher calls beyond generate spent."""
    for path in sorted(run.rglob(SPEND)):
        yield from good_rows(path, check_spend)


def pool_usages(run: Path) -> Iterator[dict[str, Any]]:
    """The usage of every sample in the run's pool and shard pools, each sample once."""
    seen: set[str] = set()
    for path in sorted((run / "generate").glob("pool*.jsonl")):
        for row in good_rows(path):
            if row["id"] not in seen and isinstance(row.get("usage"), dict):
                seen.add(row["id"])
                yield row["usage"]


def run_budget(cfg: Config, pool: Iterable[dict[str, Any]] | None = None) -> Budget | None:
    """The run's budget with everything its teacher calls spent; `pool`: the usage of the
    pool's samples when the caller holds the pool open (generate). None without a cap."""
    if not cfg.budget.active:
        return None
    run = run_dir(cfg)
    return Budget.of(
        cfg.budget, chain(pool_usages(run) if pool is None else pool, ledger_usages(run))
    )


def spent(path: Path) -> dict[str, int]:
    """What the calls of one ledger spent: a stage's spend, for its manifest."""
    out = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
    for row in good_rows(path, check_spend):
        out["calls"] += 1
        out["prompt_tokens"] += row["prompt_tokens"]
        out["completion_tokens"] += row["completion_tokens"]
    return out


@contextlib.contextmanager
def ledger(where: Path, fsync_every: int = 16) -> Iterator[Paid]:
    """The ledger in `where`, open: call the yielded function with each teacher answer once it
    is logged. The caller holds the lock of the log beside it."""
    with RecordLog.open(where / SPEND, check_spend, "spend rows", fsync_every) as log:

        def paid(c: Completion) -> None:
            rid, n = c.id, 1
            while rid in log.rows:  # asked again: paid again
                rid, n = f"{c.id}#{n}", n + 1
            usage = c.usage
            log.write(
                {
                    "id": rid,
                    "prompt_tokens": int(usage.get("prompt_tokens") or 0),
                    "completion_tokens": int(usage.get("completion_tokens") or 0),
                }
            )

        yield paid


@dataclass
class Charge:
    """One stage's teacher calls under the run's budget, as every paying stage asks: `admit`
    picks what may be sent (ask_into_log's admit; the budget is read from the run's logs when
    a call first needs it), `paid` records each answer in the ledger, and `stop` ends the stage
    with BudgetReached where the budget held a call back."""

    cfg: Config
    paid: Paid
    budget: Budget | None = None
    _read: bool = False

    def admit(
        self, reqs: list[Request], charged: Callable[[Request], bool] | None = None
    ) -> list[Request]:
        if not reqs or not self.cfg.budget.active:
            return reqs
        if not self._read:
            self.budget, self._read = run_budget(self.cfg), True
        assert self.budget is not None  # an active budget
        return self.budget.admit(reqs, charged)

    def stop(self, what: str, new: int, path: Path) -> None:
        """Raise BudgetReached when the budget held back any call: `new` answers of `what`
        were asked and kept in `path`."""
        if self.budget is not None and self.budget.held:
            raise self.budget.reached(self.cfg.budget, what, new, path)


@contextlib.contextmanager
def charging(cfg: Config, where: Path) -> Iterator[Charge]:
    """The ledger in `where`, open, with the run's budget: a paying stage's asking."""
    with ledger(where) as paid:
        yield Charge(cfg, paid)
