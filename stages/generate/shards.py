"""Shards of generate for Slurm job arrays: each task asks for a fixed share of the questions
into its own pool file; a plain `distill generate` afterwards merges them by union.

    distill generate --shard 0/3     # or, with no flag, SLURM_ARRAY_TASK_ID/_COUNT/_MIN
    distill generate --shard 1/3     # at the same time, on other nodes of a shared filesystem
    distill generate --shard 2/3
    distill generate                 # merges every shard's samples, asks for what none wrote

Shard i of N (0-based) takes the train questions whose sha256(id) mod N is i, so the share does
not depend on the question order, the task's size or which machine asks. It writes, beside the
run's pool (`runs/<run>/generate/`): `pool.shard-i-of-N.jsonl`, its soft labels in
`logprobs.shard-i-of-N.bin`, its lock `.pool.shard-i-of-N.lock` (held while it runs, so shards
never wait on each other nor on the run's pool lock) and, once every sample of its share is
written, `shard-i-of-N.json`. Samples are content-addressed, so a sample is the same sample
whichever shard wrote it: the merge appends to the run's pool each shard row it lacks (soft-label
record first), and refuses while any shard still holds its lock. A shard killed or preempted
keeps what it wrote; its rerun (a requeued task) asks only for the rest, and a merge before
that rerun asks the rest itself.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.asklog import RecordLog
from pipeline.cache import held_by
from pipeline.errors import UserError
from pipeline.records import atomic_write_json, good_rows
from stages.generate.poolsize import estimate_rows
from stages.generate.samples import check_sample
from stages.shared.layout import POOL, POOL_LOCK, POOL_STORE, of_shard
from stages.shared.softlabels import Store, ref_problem

_SHARD = re.compile(r"^(\d+)/(\d+)$")
# a shard's pool file (of_shard(POOL, shard name)), its index and count captured
_POOL_NAME = re.compile(re.escape(of_shard(POOL, "@")).replace("@", r"shard-(\d+)-of-(\d+)"))


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int

    @property
    def name(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def owns(self, question_id: str) -> bool:
        h = int(hashlib.sha256(question_id.encode()).hexdigest()[:16], 16)
        return h % self.count == self.index

    def pool(self, shared: Path) -> Path:
        return shared / of_shard(POOL, self.name)

    def store(self, shared: Path) -> Path:
        return shared / of_shard(POOL_STORE, self.name)

    def lock(self, shared: Path) -> Path:
        return shared / of_shard(POOL_LOCK, self.name)

    def marker(self, shared: Path) -> Path:
        return shared / f"{self.name}.json"


def parse_shard(text: str, where: str = "--shard") -> Shard:
    """`i/N` with 0 <= i < N, or one clear line (UserError) saying what is wrong."""
    m = _SHARD.match(text.strip())
    if not m:
        raise UserError(f"{where} {text!r}: expected I/N, e.g. 0/4 (shard I of N, from 0)")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1:
        raise UserError(f"{where} {text!r}: N must be at least 1")
    if i >= n:
        raise UserError(f"{where} {text!r}: I counts from 0, so it must be below N ({n})")
    return Shard(i, n)


def shard_of(flag: str | None, env: Mapping[str, str]) -> Shard | None:
    """The shard this run takes: `--shard`, else a Slurm array task's own, else None."""
    if flag is not None:
        return parse_shard(flag)
    task = env.get("SLURM_ARRAY_TASK_ID")
    if task is None:
        return None
    count, low = env.get("SLURM_ARRAY_TASK_COUNT"), env.get("SLURM_ARRAY_TASK_MIN", "0")
    if count is None or not (task.isdigit() and count.isdigit() and low.isdigit()):
        raise UserError(
            f"SLURM_ARRAY_TASK_ID={task} with SLURM_ARRAY_TASK_COUNT={count} and "
            f"SLURM_ARRAY_TASK_MIN={low}: cannot tell the shard; pass --shard I/N"
        )
    return parse_shard(f"{int(task) - int(low)}/{count}", "the Slurm array task")


def shard_pools(shared: Path) -> list[tuple[Shard, Path]]:
    """Every shard pool file beside the run's pool, by shard."""
    found = []
    for p in sorted(shared.glob(of_shard(POOL, "shard-*-of-*"))):
        m = _POOL_NAME.fullmatch(p.name)
        if m and int(m.group(1)) < int(m.group(2)):
            found.append((Shard(int(m.group(1)), int(m.group(2))), p))
    return sorted(found, key=lambda sp: (sp[0].count, sp[0].index))


def merge(shared: Path, log: RecordLog, store: Store | None) -> int:
    """Append to the run's pool (`log`, its lock held) every shard row it lacks, each row's
    soft-label record first; returns the rows added. Refuses while a shard runs: its pool is
    still growing, and what it writes after a merge would wait for the next one."""
    pools = shard_pools(shared)
    for s, _ in pools:
        holder = held_by(s.lock(shared))
        if holder:
            raise UserError(
                f"generate shard {s.index}/{s.count} is still running ({holder}, lock "
                f"{s.lock(shared)}); merge once every shard has ended"
            )
    added = 0
    for s, path in pools:
        src = Store.open(s.store(shared)) if store is not None else None

        def check(row: dict[str, Any], src: Store | None = src) -> str | None:
            return check_sample(row) or (ref_problem(row, src) if src else None)

        for row in good_rows(path, check):
            if row["id"] in log.rows:
                continue
            if store is not None and src is not None and row.get("logprobs"):
                store.take(src, row["logprobs"]["sha"])
            log.write(row)
            added += 1
    return added


def shard_progress(shared: Path, quick: bool = False) -> list[str]:
    """One line per shard for `distill status`: samples written (each good row counted, or
    `quick`: estimated from the file's size, stages/generate/poolsize.py), done, running or
    stopped."""
    lines = []
    for s, path in shard_pools(shared):
        rows = (
            f"about {estimate_rows(path):,}"
            if quick
            else f"{sum(1 for _ in good_rows(path, check_sample)):,}"
        )
        holder = held_by(s.lock(shared))
        if holder:
            state = f"running ({holder})"
        elif s.marker(shared).is_file():
            state = "done"
        else:
            state = "stopped before its end"  # rerun it, or the merge asks the rest
        lines.append(f"shard {s.index}/{s.count}: {rows} samples, {state}")
    return lines


def write_marker(shared: Path, shard: Shard, stats: dict[str, Any]) -> None:
    atomic_write_json(shard.marker(shared), stats)
