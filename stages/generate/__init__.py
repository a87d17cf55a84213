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
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.ask import AskSettings, ModelSpec, ask, spec_from
from pipeline.calls import Completion, Failure, Request, ServeError
from pipeline.config import Config, TeacherConfig, semantic
from pipeline.models import teacher_identity, teacher_key_config
from pipeline.progress import Progress
from pipeline.reasoning import Convention
from pipeline.records import (
    AppendLog,
    DataError,
    atomic_write_jsonl,
    read_jsonl_tolerant,
    recover_log,
)
from pipeline.stage import ExtraInput, KeyParts
from pipeline.tasks import load_task, template_bytes
from stages.generate.samples import Planned, calls, check_sample, plan_samples, record
from stages.generate.strategy import (
    Rounds,
    Tally,
    TeacherPlan,
    cap,
    sent_on,
    teacher_rounds,
    teacher_stats,
)
from stages.shared.models import local_model
from stages.shared.softlabels import POOL_STORE, Meta, Store, TokenLogprobs, ref_problem, vocab_hash

NAME = "generate"
VERSION = 1
OUTPUTS = ("samples.jsonl", "errors.jsonl")
UPSTREAM: tuple[str, ...] = ()
HELP = "the teachers write step-by-step samples per train question (vLLM)"
POOL = "pool.jsonl"
POOL_LOCK = ".pool.lock"


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


def extra_inputs(cfg: Config) -> list[ExtraInput]:
    return []


def locks(cfg: Config, out: Path) -> list[Path]:
    """The pool is shared by every generate key of the run."""
    return [out.parent / POOL_LOCK]


def run(cfg: Config, inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """Ask the teachers for what the pool lacks; the runner holds the pool lock meanwhile."""
    started = time.monotonic()
    pool_path = out.parent / POOL
    store = Store.open(out.parent / POOL_STORE) if cfg.generate.logprobs else None

    def check(row: dict[str, Any]) -> str | None:
        return check_sample(row) or (ref_problem(row, store) if store else None)

    prior = recover_log(pool_path, check)
    note = prior.message(pool_path, pool_path.with_name(POOL + ".quarantine"), "samples")
    if note:
        print(note, file=sys.stderr, flush=True)
    have = {r["id"]: r for r in prior.rows}
    plans = teacher_plans(cfg)
    questions = [q.id for q in load_task(cfg.task).train]
    _announce(cfg, plans, questions, have)
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
            got = _ask_teacher(cfg, plan, rounds, first, have, pool_path, out, failures, store)
            new.update(got.pop("new"))
            asked = _merge_asked(asked, got)
        done.append(rounds)
        if failures:
            break  # a question that failed here must not be passed on as unsolved
    _fail_on(failures, len(new), pool_path, out)
    rows = _selection(done, have, questions)
    atomic_write_jsonl(out / "samples.jsonl", rows)
    return _stats(cfg, rows, new, asked, done, have, prior) | {
        "stage_seconds": round(time.monotonic() - started, 2),
        **({"logprobs": _store_stats(rows, store)} if store else {}),
    }


def _fail_on(failures: list[Failure], answered: int, pool_path: Path, out: Path) -> None:
    atomic_write_jsonl(
        out / "errors.jsonl",
        ({"id": f.id, "reason": f.reason, "attempts": f.attempts} for f in failures),
    )
    if failures:
        raise ServeError(
            f"{len(failures)} of {answered + len(failures)} samples failed after retries "
            f"(first: {failures[0].reason}); finished samples are kept in {pool_path}, "
            f"details in {out / 'errors.jsonl'}; rerun to request only what is missing"
        )


def _stats(
    cfg: Config,
    rows: list[dict],
    new: set[str],
    asked: dict[str, Any],
    done: list[Rounds],
    have: dict[str, dict],
    prior: Any,
) -> dict[str, Any]:
    new_tokens = sum(r["usage"]["completion_tokens"] for r in rows if r["id"] in new)
    gen_seconds = asked.pop("seconds", 0.0)
    teachers = {r.plan.label: teacher_stats(r, have, new) for r in done}
    return {
        "questions": len({r["question_id"] for r in rows}),
        "samples": len(rows),
        "requested": len(new),
        "reused": len(rows) - len(new),
        "torn_lines_dropped": int(prior.torn_tail is not None),
        "damaged_lines_quarantined": len(prior.quarantined) + len(prior.duplicates),
        "completion_tokens": sum(r["usage"]["completion_tokens"] for r in rows),
        "new_completion_tokens": new_tokens,
        "generation_seconds": round(gen_seconds, 2),
        "tokens_per_second": round(new_tokens / gen_seconds, 1) if gen_seconds else None,
        "truncation_rate": round(sum(r["finish_reason"] == "length" for r in rows) / len(rows), 4),
        "strategy": cfg.generate.strategy,
        "teachers": teachers,
        "questions_verified": len({q for r in done for q, c in r.tally.count.items() if c}),
        **asked,
    }


def teacher_plans(cfg: Config) -> list[TeacherPlan]:
    """Each teacher's samples up to the strategy's cap, by question."""
    out = []
    for i, (t, label) in enumerate(zip(cfg.teacher_list(), cfg.teacher_labels(), strict=True)):
        identity = teacher_identity(t, cfg.cache_dir)
        by_q: dict[str, list[Planned]] = {}
        for p in plan_samples(cfg, identity, t, cap(cfg)):
            by_q.setdefault(p[1].id, []).append(p)
        out.append(TeacherPlan(i, label, t, identity, by_q))
    seen: dict[str, str] = {}
    for tp in out:
        first = next(iter(tp.samples.values()))[0][0].id if tp.samples else ""
        if first in seen:  # the same weights and the same prompts: the same samples
            raise DataError(
                f"teachers {seen[first]!r} and {tp.label!r} are the same model asked the same "
                "way, so their samples would be one sample; make them differ (model, template, "
                "fewshot, system) or list one"
            )
        seen[first] = tp.label
    return out


def _announce(
    cfg: Config, plans: list[TeacherPlan], questions: list[str], have: dict[str, dict]
) -> None:
    g = cfg.generate
    if g.strategy == "fixed" and len(plans) == 1:
        planned = [p for ps in plans[0].samples.values() for p in ps]
        held = sum(p[0].id in have for p in planned)
        print(
            f"generate: {len(planned)} samples for {len(questions)} questions (n={g.n}); "
            f"{held} already in the pool, {len(planned) - held} to request",
            flush=True,
        )
        return
    how = (
        f"adaptive (rounds of {g.n}, until {g.target_verified} verified or {g.max_samples} samples)"
        if g.strategy == "adaptive"
        else f"fixed (n={g.n})"
    )
    who = ", ".join(p.label for p in plans)
    many = f"; teachers ({g.combine}): {who}" if len(plans) > 1 else ""
    print(
        f"generate: {len(questions)} questions, {how}{many}; the pool holds {len(have)} samples",
        flush=True,
    )


def _selection(done: list[Rounds], have: dict[str, dict], questions: list[str]) -> list[dict]:
    """The samples the strategy reached, by teacher, question and index; each row names its
    teacher by this config's label (the pool row keeps the label it was written under)."""
    order = {q: i for i, q in enumerate(questions)}
    rows = []
    for r in done:
        for p in sorted(r.used, key=lambda p: (order[p[1].id], p[2])):
            rows.append({**have[p[0].id], "teacher": r.plan.label})
    return rows


def _merge_asked(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two teachers' asking stats as one: seconds, retries and failovers add up."""
    if not a:
        return b
    out = {**a, **b}
    for k in ("seconds", "retries", "failovers"):
        if k in a or k in b:
            out[k] = a.get(k, 0) + b.get(k, 0)
    out["endpoints"] = {**a.get("endpoints", {}), **b.get("endpoints", {})}
    return out


def _teacher_spec(cfg: Config, t: TeacherConfig, label: str) -> ModelSpec:
    g = cfg.generate
    urls = t.urls()
    model_dir = None if urls else local_model(t.model, cfg.cache_dir, key="teacher.model")
    return spec_from(
        t.serve,
        "teacher" if len(cfg.teacher_list()) == 1 else f"teacher {label}",
        model_dir,
        urls=tuple(urls),
        served_name=t.name,
        api_key_env=t.api_key_env,
        max_logprobs=g.logprobs,
        logprobs_mode=f"{g.logprobs_mode}_logprobs",
    )


def _store_stats(rows: list[dict], store: Store) -> dict[str, Any]:
    """What this key's soft labels cost: bytes per completion token is the figure to watch."""
    tokens = sum(r["logprobs"]["tokens"] for r in rows)
    size = sum(r["logprobs"]["bytes"] for r in rows)
    return {
        "k": rows[0]["logprobs"]["k"] if rows else 0,
        "tokens": tokens,
        "bytes": size,
        "bytes_per_token": round(size / tokens, 2) if tokens else None,
        "store_bytes": store.end,
        "damaged_bytes_skipped": store.damaged_bytes,
    }


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
    have: dict[str, dict],
    pool_path: Path,
    out: Path,
    failures: list[Failure],
    store: Store | None = None,
) -> dict[str, Any]:
    """Ask one teacher for the missing samples of its first round, then of each next round
    (one model start for all): each is appended to the pool (and `have`) as it arrives, its
    soft labels (with a store) to the store first. Long: the three callbacks share the log,
    the store and the progress bar that the `with` holds open."""
    g = cfg.generate
    meta = _soft_label_meta(cfg) if store else None
    settings = AskSettings(
        concurrency=g.concurrency,
        retries=g.retries,
        backoff_s=g.backoff_s,
        timeout_s=g.request_timeout_s,
    )
    by_id = {p[0].id: p for ps in plan.samples.values() for p in ps}
    new: list[str] = []
    desc = "teacher" if len(cfg.teacher_list()) == 1 else plan.label
    with (
        contextlib.nullcontext() if store is None else store,
        AppendLog(pool_path, g.fsync_every, store.sync if store else None) as log,
        Progress(len(first), "sample", desc) as bar,
    ):

        def on_done(c: Completion) -> None:
            ref = None
            if store is not None and meta is not None:
                ref = store.append(c.id, meta, soft_labels(c, meta.k))
            row = record(by_id[c.id], c, plan.label, plan.identity, ref)
            log.write(row)
            have[c.id] = row
            new.append(c.id)
            bar.done(c.usage["completion_tokens"])

        def on_fail(f: Failure) -> None:
            failures.append(f)
            bar.done()

        def more() -> list[Request]:
            log.sync()  # a round's answers are on disk before the next round is decided
            nxt = rounds.next()
            bar.grow(len(nxt))
            return calls(nxt, g.samples_per_call)

        stats = ask(
            _teacher_spec(cfg, plan.teacher, plan.label),
            calls(first, g.samples_per_call),
            on_done,
            on_fail,
            settings,
            out / "logs",
            on_ready=bar.start,
            more=more,
        )
    return {**stats.as_dict(), "seconds": stats.seconds, "new": new}


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
    have = {r["id"] for r in read_jsonl_tolerant(out.parent / POOL, check_sample).rows}
    planned = [p for t in teacher_plans(cfg) for ps in t.samples.values() for p in ps]
    held = sum(p[0].id in have for p in planned)
    if cfg.generate.strategy == "fixed" and len(cfg.teacher_list()) == 1:
        return f"{held} of {len(planned)} samples"
    return f"{held} samples in the pool, of at most {len(planned)} the strategy may ask for"


def summary(stats: dict[str, Any], out: Path) -> str:
    tps = stats.get("tokens_per_second")
    lines = [
        f"questions          {stats.get('questions', 0):,}",
        f"samples            {stats.get('samples', 0):,} ({stats.get('requested', 0):,} "
        f"requested, {stats.get('reused', 0):,} reused)",
        f"completion tokens  {stats.get('completion_tokens', 0):,}",
        f"teacher tok/s      {f'{tps:,.0f}' if tps else '- (nothing generated)'}",
        f"truncation rate    {100 * stats.get('truncation_rate', 0):.1f}%",
    ]
    many = stats.get("teachers") or {}
    if len(many) > 1 or stats.get("strategy") == "adaptive":
        for label, t in many.items():
            per = t["tokens_per_verified"]
            lines.append(
                f"teacher {label}: {t['questions_sent']:,} questions, {t['samples']:,} samples "
                f"in {t['rounds']} round(s), {t['completion_tokens']:,} tokens, "
                f"{t['verified']:,} verified ({per if per is not None else '-'} tokens each)"
            )
        lines.append(f"questions with a verified sample: {stats.get('questions_verified', 0):,}")
    soft = stats.get("logprobs")
    if soft:
        lines.append(
            f"soft labels        top-{soft['k']}, {soft['bytes_per_token']} bytes/token "
            f"({soft['bytes'] / 1e6:.1f} MB)"
        )
    if stats.get("damaged_lines_quarantined"):
        lines.append(
            f"damaged pool lines moved to quarantine: {stats['damaged_lines_quarantined']}"
        )
    for url, e in (stats.get("endpoints") or {}).items():  # redacted URLs
        lines.append(f"endpoint {url}: {e['served']} served, {e['failures']} failures")
    lines.append(f"samples file       {out / 'samples.jsonl'}")
    return "\n".join(lines)
