"""generate: the teacher writes n rationale samples per train question.

Samples are content-addressed (stages/generate/samples.py) and live in one append-only pool per
run, `runs/<run>/generate/pool.jsonl`, shared by every generate key: raising n or adding
questions asks the teacher only for what the pool lacks, and a damaged pool line is moved to
`pool.jsonl.quarantine` and asked again. The stage dir then gets the exact selection for its key,
written atomically. `--force` rebuilds that selection; the pool, and every sample in it, is kept,
so nothing already paid for is asked again (to draw new samples, change the sampling seed).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from pipeline.ask import AskSettings, ask, spec_from
from pipeline.calls import Completion, Failure, ServeError
from pipeline.config import Config, semantic
from pipeline.models import teacher_identity, teacher_key_config
from pipeline.progress import Progress
from pipeline.records import AppendLog, atomic_write_jsonl, read_jsonl_tolerant, recover_log
from pipeline.stage import ExtraInput, KeyParts
from pipeline.tasks import load_task, template_bytes
from stages.generate.samples import Planned, calls, check_sample, plan_samples, record
from stages.shared.models import local_model

NAME = "generate"
VERSION = 1
OUTPUTS = ("samples.jsonl", "errors.jsonl")
UPSTREAM: tuple[str, ...] = ()
HELP = "the teacher writes n step-by-step samples per train question (vLLM)"
POOL = "pool.jsonl"
POOL_LOCK = ".pool.lock"


def key_parts(cfg: Config) -> KeyParts:
    task = load_task(cfg.task)
    return KeyParts(
        config={
            "task": semantic(cfg.task),
            "teacher": teacher_key_config(cfg.teacher),
            "generate": semantic(cfg.generate),
        },
        extra={
            "teacher_identity": teacher_identity(cfg.teacher, cfg.cache_dir),
            "template": template_bytes(cfg.teacher.template),
            "task_data": task.source_hash,
        },
    )


def extra_inputs(cfg: Config) -> list[ExtraInput]:
    return []


def locks(cfg: Config, out: Path) -> list[Path]:
    """The pool is shared by every generate key of the run."""
    return [out.parent / POOL_LOCK]


def run(cfg: Config, inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """Ask the teacher for what the pool lacks; the runner holds the pool lock meanwhile."""
    started = time.monotonic()
    identity = teacher_identity(cfg.teacher, cfg.cache_dir)
    planned = plan_samples(cfg, identity)
    pool_path = out.parent / POOL
    prior = recover_log(pool_path, check_sample)
    note = prior.message(pool_path, pool_path.with_name(POOL + ".quarantine"), "samples")
    if note:
        print(note, file=sys.stderr, flush=True)
    have = {r["id"]: r for r in prior.rows}
    missing = [p for p in planned if p[0].id not in have]
    print(
        f"generate: {len(planned)} samples for {len({p[1].id for p in planned})} questions "
        f"(n={cfg.generate.n}); {len(planned) - len(missing)} already in the pool, "
        f"{len(missing)} to request",
        flush=True,
    )
    failures: list[Failure] = []
    asked: dict[str, Any] = {}
    if missing:
        asked = _ask_teacher(cfg, missing, have, pool_path, identity, out, failures)
    atomic_write_jsonl(
        out / "errors.jsonl",
        ({"id": f.id, "reason": f.reason, "attempts": f.attempts} for f in failures),
    )
    if failures:
        raise ServeError(
            f"{len(failures)} of {len(missing)} samples failed after retries "
            f"(first: {failures[0].reason}); finished samples are kept in {pool_path}, "
            f"details in {out / 'errors.jsonl'}; rerun to request only what is missing"
        )
    rows = [have[p[0].id] for p in planned]
    atomic_write_jsonl(out / "samples.jsonl", rows)
    new_tokens = sum(have[p[0].id]["usage"]["completion_tokens"] for p in missing)
    gen_seconds = asked.pop("seconds", 0.0)
    return {
        "questions": len({r["question_id"] for r in rows}),
        "samples": len(rows),
        "requested": len(missing),
        "reused": len(planned) - len(missing),
        "torn_lines_dropped": int(prior.torn_tail is not None),
        "damaged_lines_quarantined": len(prior.quarantined) + len(prior.duplicates),
        "completion_tokens": sum(r["usage"]["completion_tokens"] for r in rows),
        "new_completion_tokens": new_tokens,
        "generation_seconds": round(gen_seconds, 2),
        "tokens_per_second": round(new_tokens / gen_seconds, 1) if gen_seconds else None,
        "truncation_rate": round(sum(r["finish_reason"] == "length" for r in rows) / len(rows), 4),
        "stage_seconds": round(time.monotonic() - started, 2),
        **asked,
    }


def _ask_teacher(
    cfg: Config,
    missing: list[Planned],
    have: dict[str, dict],
    pool_path: Path,
    identity: str,
    out: Path,
    failures: list[Failure],
) -> dict[str, Any]:
    """Ask for the missing samples; each is appended to the pool (and `have`) as it arrives."""
    t, g = cfg.teacher, cfg.generate
    urls = t.urls()
    model_dir = None if urls else local_model(t.model, cfg.cache_dir, key="teacher.model")
    spec = spec_from(
        t.serve,
        "teacher",
        model_dir,
        urls=tuple(urls),
        served_name=t.name,
        api_key_env=t.api_key_env,
    )
    settings = AskSettings(
        concurrency=g.concurrency,
        retries=g.retries,
        backoff_s=g.backoff_s,
        timeout_s=g.request_timeout_s,
    )
    by_id = {p[0].id: p for p in missing}
    with (
        AppendLog(pool_path, fsync_every=g.fsync_every) as log,
        Progress(len(missing), "sample", "teacher") as bar,
    ):

        def on_done(c: Completion) -> None:
            row = record(by_id[c.id], c, cfg, identity)
            log.write(row)
            have[c.id] = row
            bar.done(c.usage["completion_tokens"])

        def on_fail(f: Failure) -> None:
            failures.append(f)
            bar.done()

        stats = ask(
            spec,
            calls(missing, g.samples_per_call),
            on_done,
            on_fail,
            settings,
            out / "logs",
            on_ready=bar.start,
        )
    return {**stats.as_dict(), "seconds": stats.seconds}


def progress(cfg: Config, out: Path) -> str:
    """How many of this key's samples the pool already holds."""
    planned = plan_samples(cfg, teacher_identity(cfg.teacher, cfg.cache_dir))
    have = {r["id"] for r in read_jsonl_tolerant(out.parent / POOL, check_sample).rows}
    return f"{sum(p[0].id in have for p in planned)} of {len(planned)} samples"


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
    if stats.get("damaged_lines_quarantined"):
        lines.append(
            f"damaged pool lines moved to quarantine: {stats['damaged_lines_quarantined']}"
        )
    for url, e in (stats.get("endpoints") or {}).items():  # redacted URLs
        lines.append(f"endpoint {url}: {e['served']} served, {e['failures']} failures")
    lines.append(f"samples file       {out / 'samples.jsonl'}")
    return "\n".join(lines)
