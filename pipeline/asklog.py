"""Asking a model into a log: the one path every stage that asks a model takes.

    with RecordLog.open(path, check, "samples") as log:     # recovered, rows held by id
        asked = ask_into_log(spec, requests, log, row, settings, log_dir)
        if asked.failures:
            raise failed("samples", asked.failures, len(asked.new), path)

`RecordLog.open` makes an append-only JSONL log safe to append to again (a torn last line is
dropped, damaged lines and repeated ids go to `<log>.quarantine`, one note on stderr says so)
and holds every row's place by id. `ask_into_log` sends only the requests the log does not answer yet,
appends `row(completion)` for each answer as it arrives (durable before the next round is
decided), and returns what happened as a value: the new ids, the failures, the tokens and the
serving stats. A stage supplies a ModelSpec, its requests and a row builder; the serving,
retries, failover, progress bar and recovery are this module's and pipeline/ask.py's.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.applog import AppendLog, Recovered, recover_log
from pipeline.ask import AskSettings, AskStats, ModelSpec, ask
from pipeline.calls import Completion, Failure, Request, ServeError
from pipeline.progress import Progress
from pipeline.records import Check, RowIndex

RowBuilder = Callable[[Completion], dict[str, Any]]
# Whether a row the log holds answers this request (default: any row with its id does).
Current = Callable[[Request, dict[str, Any]], bool]


@dataclass
class RecordLog:
    """An append-only JSONL log, recovered, with every row it holds by id: `rows` holds each
    id's byte offset and reads a row from the file when asked (pipeline/records.py RowIndex),
    so a log of a million rows is not a million dicts in memory."""

    path: Path
    rows: RowIndex
    recovered: Recovered
    _log: AppendLog

    @classmethod
    @contextlib.contextmanager
    def open(
        cls,
        path: Path,
        check: Check | None,
        what: str,
        fsync_every: int = 32,
        before_sync: Callable[[], None] | None = None,
    ) -> Iterator[RecordLog]:
        """Recover `path` (rows failing `check` are quarantined; `what` names the rows in the
        note), then hold it open for appending. `before_sync` makes durable first what rows
        refer to (a soft-label store). The caller holds the log's lock."""
        prior = recover_log(path, check)
        note = prior.message(path, path.with_name(path.name + ".quarantine"), what)
        if note:
            print(note, file=sys.stderr, flush=True)
        with AppendLog(path, fsync_every, before_sync) as log:
            yield cls(path, RowIndex(path, prior.offsets, log.flush), prior, log)

    def write(self, row: dict[str, Any]) -> None:
        self.rows.offsets[row["id"]] = self._log.write(row)

    def sync(self) -> None:
        self._log.sync()

    def recovery(self) -> dict[str, int]:
        """What opening it repaired, for a stage's stats."""
        r = self.recovered
        return {
            "torn_lines_dropped": int(r.torn_tail is not None),
            "damaged_lines_quarantined": len(r.quarantined) + len(r.duplicates),
        }


@dataclass
class Asked:
    """What one `ask_into_log` did."""

    new: list[str] = field(default_factory=list)  # ids answered and logged now, in order
    failures: list[Failure] = field(default_factory=list)  # after every retry
    tokens: int = 0  # completion tokens of the new rows
    requested: int = 0  # requests sent (rounds included)
    stats: AskStats | None = None  # serving: engine, seconds asking, retries, endpoints


def ask_into_log(
    spec: ModelSpec,
    requests: list[Request],
    log: RecordLog,
    row: RowBuilder,
    settings: AskSettings,
    log_dir: Path,
    *,
    current: Current | None = None,
    more: Callable[[], list[Request]] | None = None,
    unit: str = "sample",
    desc: str = "",
    admit: Callable[[list[Request]], list[Request]] | None = None,
    paid: Callable[[Completion], None] | None = None,
) -> Asked:
    """Ask `spec` for every request the log does not answer yet; log `row(c)` for each answer.

    `more`, called once a round is answered and on disk, gives the next round for the same
    started model ([] ends it). A request counts as answered when the log holds a row for each
    of its ids (and `current(request, row)` accepts it: eval's rows must answer exactly this
    prompt and these weights). `admit` picks what of the missing may be sent (a budget),
    `paid` records each answer once logged (a ledger: stages/shared/spend.py). A row builder
    that raises stops the asking; a failure after every retry is a Failure in the result."""
    out = Asked()

    def missing(reqs: list[Request]) -> list[Request]:
        def held(req: Request, i: str) -> bool:
            got = log.rows.get(i)
            return got is not None and (current is None or current(req, got))

        todo = [r for r in reqs if not all(held(r, i) for i in r.ids)]
        return admit(todo) if admit is not None else todo

    todo = missing(requests)
    out.requested = len(todo)
    with Progress(sum(r.n for r in todo), unit, desc or spec.label) as bar:

        def on_done(c: Completion) -> None:
            log.write(row(c))
            (paid or _free)(c)
            out.new.append(c.id)
            out.tokens += (tokens := c.usage.get("completion_tokens", 0))
            bar.done(tokens)

        def on_fail(f: Failure) -> None:
            out.failures.append(f)
            bar.done()

        def next_round() -> list[Request]:
            log.sync()  # a round's answers are on disk before the next round is decided
            nxt = missing(more()) if more is not None else []
            out.requested += len(nxt)
            bar.grow(sum(r.n for r in nxt))
            return nxt

        if todo:  # nothing missing: no model is started
            rounds = next_round if more is not None else None
            out.stats = ask(spec, todo, on_done, on_fail, settings, log_dir, bar.start, rounds)
    log.sync()
    return out


def _free(c: Completion) -> None:
    """An answer no ledger records: a call of the run's own engines."""


def failed(
    what: str, failures: list[Failure], answered: int, path: Path, more: str = ""
) -> ServeError:
    """The one message for requests that failed after their retries: how many, the first
    reason, where the finished ones are kept, and that a rerun asks only for the rest."""
    first = failures[0]
    return ServeError(
        f"{len(failures)} of {answered + len(failures)} {what} failed after retries (first: "
        f"{first.id}: {first.reason}); finished {what} are kept in {path}{more}; rerun to "
        "request only what is missing"
    )
