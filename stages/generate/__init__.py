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
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from pipeline.ask import settings_from
from pipeline.asklog import Asked, RecordLog, ask_into_log, failed
from pipeline.calls import Completion, Failure, ServeError
from pipeline.config import Config, semantic
from pipeline.models import teacher_identity, teacher_key_config
from pipeline.prompts import template_bytes
from pipeline.reasoning import Convention
from pipeline.records import DataError, atomic_write_jsonl, read_jsonl_tolerant
from pipeline.stage import KeyParts, RunContext
from pipeline.tasks import load_task
from stages.generate.report import (
    announce,
    asked_stats,
    merge_asked,
    run_stats,
    store_stats,
    summary,  # noqa: F401 - the stage's console summary
)
from stages.generate.samples import Planned, calls, check_sample, plan_samples, record
from stages.generate.strategy import (
    Rounds,
    Tally,
    TeacherPlan,
    cap,
    sent_on,
    teacher_rounds,
)
from stages.shared.layout import ERRORS, POOL, POOL_LOCK, SAMPLES, shared_dir
from stages.shared.models import local_model, teacher_spec
from stages.shared.softlabels import POOL_STORE, Meta, Store, TokenLogprobs, ref_problem, vocab_hash

NAME = "generate"
VERSION = 1
OUTPUTS = (SAMPLES, ERRORS)
UPSTREAM: tuple[str, ...] = ()
HELP = "the teachers write step-by-step samples per train question (vLLM)"


def key_parts(cfg: Config) -> KeyParts:
    task = load_task(cfg.task)
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
        },
    )


def locks(cfg: Config, out: Path) -> list[Path]:
    """The pool is shared by every generate key of the run."""
    return [shared_dir(out) / POOL_LOCK]


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    """Ask the teachers for what the pool lacks; the runner holds the pool lock meanwhile."""
    started = time.monotonic()
    out = ctx.out
    pool_path = shared_dir(out) / POOL
    store = Store.open(shared_dir(out) / POOL_STORE) if cfg.generate.logprobs else None

    def check(row: dict[str, Any]) -> str | None:
        return check_sample(row) or (ref_problem(row, store) if store else None)

    sync = store.sync if store else None
    with (
        contextlib.nullcontext() if store is None else store,
        RecordLog.open(pool_path, check, "samples", cfg.generate.fsync_every, sync) as log,
    ):
        have = log.rows
        plans = teacher_plans(cfg)
        questions = [q.id for q in load_task(cfg.task).train]
        announce(cfg, plans, questions, have)
        convention = Convention.of(cfg.lead_teacher())
        failures: list[Failure] = []
        new: set[str] = set()
        asked: dict[str, Any] = {}
        done: list[Rounds] = []
        shared = Tally(convention)
        cascade = cfg.generate.combine == "cascade"
        for plan in plans:
            sent = sent_on(cfg, questions, shared) if cascade and plan.index else questions
            rounds = teacher_rounds(cfg, plan, sent, have, shared if cascade else Tally(convention))
            first = rounds.next()
            if first:
                got = _ask_teacher(cfg, plan, rounds, first, log, out, store)
                new.update(got.new)
                failures += got.failures
                asked = merge_asked(asked, asked_stats(got))
            done.append(rounds)
            if failures:
                break  # a question that failed here must not be passed on as unsolved
    atomic_write_jsonl(
        out / ERRORS,
        ({"id": f.id, "reason": f.reason, "attempts": f.attempts} for f in failures),
    )
    if failures:
        raise failed("samples", failures, len(new), pool_path, f", details in {out / ERRORS}")
    rows = _selection(done, have, questions)
    atomic_write_jsonl(out / SAMPLES, rows)
    return run_stats(cfg, rows, new, asked, done, have, log.recovery()) | {
        "stage_seconds": round(time.monotonic() - started, 2),
        **({"logprobs": store_stats(rows, store)} if store else {}),
    }


def teacher_plans(cfg: Config) -> list[TeacherPlan]:
    """Each teacher's samples up to the strategy's cap, by question."""
    out = []
    for i, (t, label) in enumerate(zip(cfg.teacher_list(), cfg.teacher_labels(), strict=True)):
        identity = teacher_identity(t, cfg.cache_dir)
        by_q: dict[str, list[Planned]] = {}
        for p in plan_samples(cfg, identity, t, cap(cfg)):
            by_q.setdefault(p.question.id, []).append(p)
        out.append(TeacherPlan(i, label, t, identity, by_q))
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


def _selection(done: list[Rounds], have: dict[str, dict], questions: list[str]) -> list[dict]:
    """The samples the strategy reached, by teacher, question and index; each row names its
    teacher by this config's label (the pool row keeps the label it was written under)."""
    order = {q: i for i, q in enumerate(questions)}
    rows = []
    for r in done:
        for p in sorted(r.used, key=lambda p: (order[p.question.id], p.index)):
            rows.append({**have[p.request.id], "teacher": r.plan.label})
    return rows


def _soft_label_meta(cfg: Config) -> Meta:
    """k, temperature, mode and the teacher's vocabulary: the same for every sample."""
    t, g = cfg.lead_teacher(), cfg.generate
    tok_dir = local_model(t.model, cfg.cache_dir, key="teacher.model")
    mode = g.logprobs_mode
    return Meta(g.logprobs, g.sampling.temperature, mode, vocab_hash(tok_dir))


def _ask_teacher(
    cfg: Config,
    plan: TeacherPlan,
    rounds: Rounds,
    first: list[Planned],
    log: RecordLog,
    out: Path,
    store: Store | None = None,
) -> Asked:
    """Ask one teacher for the missing samples of its first round, then of each next round
    (one model start for all): each is appended to the pool as it arrives, its soft labels
    (with a store) to the store first."""
    g = cfg.generate
    meta = _soft_label_meta(cfg) if store else None
    by_id = {p.request.id: p for ps in plan.samples.values() for p in ps}

    def row(c: Completion) -> dict[str, Any]:
        ref = store.append(c.id, meta, soft_labels(c, meta.k)) if store and meta else None
        return record(by_id[c.id], c, plan.label, plan.identity, ref)

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
        out / "logs",
        more=lambda: calls(rounds.next(), g.samples_per_call),
        desc="teacher" if lone else plan.label,
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


def progress(cfg: Config, out: Path) -> str:
    """How many of this key's samples the pool already holds."""
    have = {r["id"] for r in read_jsonl_tolerant(shared_dir(out) / POOL, check_sample).rows}
    planned = [p for t in teacher_plans(cfg) for ps in t.samples.values() for p in ps]
    held = sum(p.request.id in have for p in planned)
    if cfg.generate.strategy == "fixed" and len(cfg.teacher_list()) == 1:
        return f"{held} of {len(planned)} samples"
    return f"{held} samples in the pool, of at most {len(planned)} the strategy may ask for"
