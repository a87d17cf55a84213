"""generate: the teacher writes rationale samples for every train question.

How many, and from which teacher, is stages/generate/strategy.py: n per question (strategy
fixed), or rounds of n until a question has generate.target_verified verified samples or
generate.max_samples (adaptive); with a `teachers:` list, in cascade (a question reaches the
next teacher only while it lacks the target) or all together. Every round of a teacher runs on
one model start, and every decision is replayed from the pool on a rerun, so an interrupted run
asks only for what the pool lacks. The manifest says per teacher what it was sent, what it
cost and what it bought (questions, samples, rounds, tokens, verified samples).

Samples are content-addressed (stages/generate/samples.py) and live in one append-only pool per
run, `runs/<run>/generate/pool.jsonl`, shared by every generate key: raising n or adding
questions asks the teacher only for what the pool lacks, and a damaged pool line is moved to
`pool.jsonl.quarantine` and asked again. The stage dir then gets the exact selection for its key,
written atomically. With `generate.logprobs: k` each sample's soft labels go to the binary store
`runs/<run>/generate/logprobs.bin` (stages/shared/softlabels.py) before its pool row, which names
the record by sha; a row whose record is missing or damaged is quarantined and asked again.
`--force` rebuilds that selection; the pool, and every sample in it, is kept,
so nothing already paid for is asked again (to draw new samples, change the sampling seed).
`--shard i/N` (or a Slurm array task) asks for one share of the questions into a pool file of
its own, and the plain run merges every shard's pool into the run's first
(stages/generate/shards.py).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import ChainMap
from collections.abc import Callable, Container, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.ask import settings_from
from pipeline.asklog import Asked, RecordLog, ask_into_log, failed
from pipeline.budget import Budget, Calls, chain_lines
from pipeline.cache import StageLock
from pipeline.calls import Completion, Failure, ServeError
from pipeline.config import Config, semantic
from pipeline.models import teacher_identity, teacher_key_config
from pipeline.prompts import template_bytes
from pipeline.reasoning import Convention
from pipeline.records import DataError, RowIndex, atomic_write_jsonl, good_rows
from pipeline.stage import KeyParts, RunContext
from pipeline.taskfacts import task_facts
from pipeline.tasks import load_task
from stages.generate.plan import estimate, pilot_samples, plan_totals, render
from stages.generate.poolsize import about_line, is_large
from stages.generate.report import (
    announce,
    asked_stats,
    merge_asked,
    run_stats,
    store_stats,
    summary,  # noqa: F401 - the stage's console summary
)
from stages.generate.samples import (
    Planned,
    Sampler,
    calls,
    check_sample,
    plan_samples,
    record,
)
from stages.generate.selected import Selected
from stages.generate.shards import (
    Shard,
    merge,
    shard_of,
    shard_pools,
    shard_progress,
    write_marker,
)
from stages.generate.strategy import (
    Rounds,
    TeacherPlan,
    cap,
    sent_on,
    tally,
    teacher_rounds,
)
from stages.shared.layout import ERRORS, POOL, POOL_LOCK, POOL_STORE, SAMPLES, shared_dir
from stages.shared.models import local_model, teacher_spec
from stages.shared.softlabels import Meta, Store, TokenLogprobs, ref_problem, vocab_hash
from stages.shared.spend import run_budget

NAME = "generate"
VERSION = 1
OUTPUTS = (SAMPLES, ERRORS)
UPSTREAM: tuple[str, ...] = ()
HELP = "the teachers write step-by-step samples per train question (vLLM)"


def key_parts(cfg: Config) -> KeyParts:
    task = task_facts(cfg.task, cfg.cache_dir)  # the file's hash, without reading its questions
    teachers = cfg.teacher_list()
    many = bool(cfg.teachers)  # a lone teacher keys as it always has
    return KeyParts(
        config={
            "task": semantic(cfg.task),
            "teacher": [teacher_key_config(t) for t in teachers]
            if many
            else teacher_key_config(cfg.teacher),
            "generate": semantic(cfg.generate),
        },
        extra={
            "teacher_identity": [teacher_identity(t, cfg.cache_dir) for t in teachers]
            if many
            else teacher_identity(cfg.teacher, cfg.cache_dir),
            "template": [template_bytes(t.template) for t in teachers]
            if many
            else template_bytes(cfg.teacher.template),
            "task_data": task.source_hash,
            # a small task's split, since validation's size rule bound (pipeline/tasks.py)
            **({"small_task": task.small} if task.small else {}),
        },
    )


def locks(cfg: Config, out: Path) -> list[Path]:
    """The pool is shared by every generate key of the run."""
    return [shared_dir(out) / POOL_LOCK]


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    """Merge the shards' samples into the pool, then ask the teachers for what it still lacks
    and write this key's selection; the runner holds the pool lock meanwhile."""
    started = time.monotonic()
    out = ctx.out
    shared = shared_dir(out)
    with _opened(cfg, shared / POOL, shared / POOL_STORE) as (log, store):
        merged = merge(shared, log, store)
        questions = [q.id for q in load_task(cfg.task).train]
        got = _ask_all(cfg, questions, log, store, out)
        _write_errors(out / ERRORS, got.failures)
        if got.failures:
            raise failed(
                "samples", got.failures, len(got.new), log.path, f", details in {out / ERRORS}"
            )
        # the selection streams from the pool into samples.jsonl, counted as it passes
        picked = Selected(got.new, {r.plan.label: r.tally.verified for r in got.done})
        atomic_write_jsonl(out / SAMPLES, picked.watch(_selection(got.done, log.rows, questions)))
    return run_stats(cfg, picked, got.asked, got.done, log.recovery()) | {
        "stage_seconds": round(time.monotonic() - started, 2),
        **({"merged_from_shards": merged} if merged else {}),
        **({"logprobs": store_stats(picked, store)} if store else {}),
    }


def pick_shard(flag: str | None) -> Shard | None:
    """`--shard i/N`, else a Slurm array task's own shard, else None (a plain run)."""
    return shard_of(flag, os.environ)


def shard(cfg: Config, out: Path, which: Shard) -> dict[str, Any]:
    """Ask for shard `which`'s share of the questions into its own pool file (stages/generate/
    shards.py), under its own lock; samples the run's pool holds already count as held. Writes
    the shard's marker once its share is whole; returns its stats."""
    started = time.monotonic()
    shared = shared_dir(out)
    with (
        StageLock(which.lock(shared)),
        _opened(cfg, which.pool(shared), which.store(shared)) as (log, store),
    ):
        log.rows.also = RowIndex.of(shared / POOL, check_sample)  # held: the merge keeps it
        questions = [q.id for q in load_task(cfg.task).train if which.owns(q.id)]
        got = _ask_all(cfg, questions, log, store, out)
    errors = shared / f"errors.{which.name}.jsonl"
    _write_errors(errors, got.failures)
    if got.failures:
        raise failed("samples", got.failures, len(got.new), log.path, f", details in {errors}")
    stats = {
        "shard": f"{which.index}/{which.count}",
        "questions": len(questions),
        "samples": sum(len(r.used) for r in got.done),
        "requested": len(got.new),
        "stage_seconds": round(time.monotonic() - started, 2),
    }
    write_marker(shared, which, stats)
    return stats


@contextlib.contextmanager
def _opened(cfg: Config, pool: Path, store_path: Path) -> Iterator[tuple[RecordLog, Store | None]]:
    """A pool log, recovered, and its soft-label store when generate keeps soft labels."""
    store = Store.open(store_path) if cfg.generate.logprobs else None

    def check(row: dict[str, Any]) -> str | None:
        return check_sample(row) or (ref_problem(row, store) if store else None)

    sync = store.sync if store else None
    with (
        contextlib.nullcontext() if store is None else store,
        RecordLog.open(pool, check, "samples", cfg.generate.fsync_every, sync) as log,
    ):
        yield log, store


@dataclass
class Generated:
    """What asking every teacher for `questions` did."""

    new: set[str] = field(default_factory=set)
    failures: list[Failure] = field(default_factory=list)
    asked: dict[str, Any] = field(default_factory=dict)
    done: list[Rounds] = field(default_factory=list)


def _ask_all(
    cfg: Config, questions: list[str], log: RecordLog, store: Store | None, out: Path
) -> Generated:
    """Every teacher's rounds over `questions`, asking only for what `log` lacks."""
    have = log.rows
    plans = teacher_plans(cfg, have)
    announce(cfg, plans, questions, have)
    convention = Convention.of(cfg.lead_teacher())
    got = Generated()
    budget = run_budget(cfg, (r["usage"] for r in have.values()))
    shared = tally(cfg, convention)
    cascade = cfg.generate.combine == "cascade"
    for plan in plans:
        sent = sent_on(cfg, questions, shared) if cascade and plan.index else questions
        rounds = teacher_rounds(
            cfg, plan, sent, have, shared if cascade else tally(cfg, convention)
        )
        first = rounds.next()
        if first:
            more = rounds.next
            asked = _ask_teacher(cfg, plan, first, log, out / "logs", store, budget, more)
            got.new.update(asked.new)
            got.failures += asked.failures
            got.asked = merge_asked(got.asked, asked_stats(asked))
        got.done.append(rounds)
        if got.failures or (budget and budget.held):
            break  # a question that failed here must not be passed on as unsolved
    if budget and budget.held and not got.failures:
        raise budget.reached(cfg.budget, "samples", len(got.new), log.path)
    return got


def _write_errors(path: Path, failures: list[Failure]) -> None:
    atomic_write_jsonl(
        path, ({"id": f.id, "reason": f.reason, "attempts": f.attempts} for f in failures)
    )


def teacher_plans(cfg: Config, held: Container[str] = ()) -> list[TeacherPlan]:
    """Each teacher's samples up to the strategy's cap, by question; those in `held` (the
    pool) without their prompts, which they will not be asked with."""
    out = []
    for i, (t, label) in enumerate(zip(cfg.teacher_list(), cfg.teacher_labels(), strict=True)):
        identity = teacher_identity(t, cfg.cache_dir)
        sampler = Sampler.of(cfg, identity, t)
        by_q: dict[str, list[Planned]] = {}
        for p in plan_samples(cfg, identity, t, cap(cfg), held, sampler):
            by_q.setdefault(p.question.id, []).append(p)
        out.append(TeacherPlan(i, label, t, identity, by_q, sampler))
    seen: dict[str, str] = {}
    for tp in out:
        first = next(iter(tp.samples.values()))[0].request.id if tp.samples else ""
        if first in seen:  # the same weights and the same prompts: the same samples
            raise DataError(
                f"teachers {seen[first]!r} and {tp.label!r} are the same model asked the same "
                "way, so their samples would be one sample; make them differ (model, template, "
                "fewshot, system) or list one"
            )
        seen[first] = tp.label
    return out


def _selection(
    done: list[Rounds], have: Mapping[str, dict], questions: list[str]
) -> Iterator[dict]:
    """The samples the strategy reached, by teacher, question and index, read from the pool one
    at a time; each row names its teacher by this config's label (the pool row keeps the label
    it was written under)."""
    order = {q: i for i, q in enumerate(questions)}
    for r in done:
        for p in sorted(r.used, key=lambda p: (order[p.question.id], p.index)):
            yield {**have[p.request.id], "teacher": r.plan.label}


def _soft_label_meta(cfg: Config) -> Meta:
    """k, temperature, mode and the teacher's vocabulary: the same for every sample."""
    t, g = cfg.lead_teacher(), cfg.generate
    tok_dir = local_model(t.model, cfg.cache_dir, key="teacher.model")
    mode = g.logprobs_mode
    return Meta(g.logprobs, g.sampling.temperature, mode, vocab_hash(tok_dir))


def _ask_teacher(
    cfg: Config,
    plan: TeacherPlan,
    first: list[Planned],
    log: RecordLog,
    log_dir: Path,
    store: Store | None = None,
    budget: Budget | None = None,
    more: Callable[[], list[Planned]] | None = None,
) -> Asked:
    """Ask one teacher for the missing samples of its first round, then of each next round
    `more` gives (one model start for all): each is appended to the pool as it arrives, its
    soft labels (with a store) to the store first."""
    g = cfg.generate
    meta = _soft_label_meta(cfg) if store else None

    def row(c: Completion) -> dict[str, Any]:
        ref = store.append(c.id, meta, soft_labels(c, meta.k)) if store and meta else None
        return record(plan.find(c.id), c, plan.label, plan.identity, ref)

    lone = len(cfg.teacher_list()) == 1
    spec = teacher_spec(
        cfg,
        plan.teacher,
        "teacher" if lone else f"teacher {plan.label}",
        max_logprobs=g.logprobs,
        logprobs_mode=f"{g.logprobs_mode}_logprobs",
    )
    return ask_into_log(
        spec,
        calls(first, g.samples_per_call),
        log,
        row,
        settings_from(g),
        log_dir,
        more=(lambda: calls(more(), g.samples_per_call)) if more else None,
        desc="teacher" if lone else plan.label,
        admit=budget.admit if budget else None,
    )


def soft_labels(c: Completion, k: int) -> TokenLogprobs:
    """A completion's soft labels, one per completion token, or a ServeError: an engine that
    sends text without them must not leave a sample that looks complete."""
    got = c.token_logprobs
    if got is None or len(got.get("ids", ())) != c.usage["completion_tokens"]:
        raise ServeError(
            f"the teacher sent sample {c.id} without logprobs for each of its tokens; does the "
            "endpoint allow top_logprobs (vLLM: --max-logprobs)?"
        )
    return TokenLogprobs.from_lists(got, k)


def cost_plan(cfg: Config, out: Path, pilot: int, later: list[Calls]) -> str:
    """`distill plan` (stages/generate/plan.py): ask each teacher for the pilot's samples the
    pool lacks, then estimate the run from the pool; the runner holds the pool lock. Nothing
    goes in the key dir: the plan is not the stage. `later`: the teacher calls the chain's
    later stages make at most (their `teacher_calls` hooks), set with generate's plan against
    the run's budget."""
    shared = shared_dir(out)
    questions = [q.id for q in load_task(cfg.task).train]
    plans = teacher_plans(cfg)
    shards = [RowIndex.of(path, check_sample) for _, path in shard_pools(shared)]
    piloted = 0
    with _opened(cfg, shared / POOL, shared / POOL_STORE) as (log, store):
        budget = run_budget(cfg, (r["usage"] for r in log.rows.values()))
        for tp in plans:
            want = pilot_samples(cfg, tp, questions, ChainMap(log.rows, *shards), pilot)
            if want:
                got = _ask_teacher(cfg, tp, want, log, shared / "plan-logs", store, budget)
                if got.failures:
                    raise failed("pilot samples", got.failures, len(got.new), log.path, "")
                piloted += len(got.new)
        have = ChainMap(log.rows, *shards)
        estimates = [estimate(cfg, tp, questions, have) for tp in plans]
        spent = run_budget(cfg, (r["usage"] for r in have.values()))
    text = task_facts(cfg.task, cfg.cache_dir).line() + "\n"  # the splits, up front
    text += render(cfg, estimates, len(questions), piloted)
    if budget and budget.held:  # the estimate stands on fewer samples than the pilot's
        text += f"\nbudget stopped the pilot: {budget.held} of its samples not asked"
    return "\n".join([text, *chain_lines(cfg.budget, later, plan_totals(estimates), spent)])


def progress(cfg: Config, out: Path) -> str:
    """How many of this key's samples the pool and the shards' pools hold, and each shard's
    state (running, done, stopped)."""
    shared = shared_dir(out)
    pools = [shared / POOL, *(path for _, path in shard_pools(shared))]
    if is_large(pools):  # reading it whole would take status tens of seconds
        return "; ".join([about_line(cfg, pools), *shard_progress(shared, quick=True)])
    have = {r["id"] for p in pools for r in good_rows(p, check_sample)}
    planned = [p for t in teacher_plans(cfg) for ps in t.samples.values() for p in ps]
    held = sum(p.request.id in have for p in planned)
    if cfg.generate.strategy == "fixed" and len(cfg.teacher_list()) == 1:
        line = f"{held} of {len(planned)} samples"
    else:
        line = f"{held} samples in the pool, of at most {len(planned)} the strategy may ask for"
    return "; ".join([line, *shard_progress(shared)])
