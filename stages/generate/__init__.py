"""generate: the teacher writes n rationale samples per train question.

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
from pipeline.calls import Completion, Failure, ServeError
from pipeline.config import Config, semantic
from pipeline.models import teacher_identity, teacher_key_config
from pipeline.progress import Progress
from pipeline.records import AppendLog, atomic_write_jsonl, read_jsonl_tolerant, recover_log
from pipeline.stage import ExtraInput, KeyParts
from pipeline.tasks import load_task, template_bytes
from stages.generate.samples import Planned, calls, check_sample, plan_samples, record
from stages.shared.models import local_model
from stages.shared.softlabels import POOL_STORE, Meta, Store, TokenLogprobs, ref_problem, vocab_hash

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
    store = Store.open(out.parent / POOL_STORE) if cfg.generate.logprobs else None

    def check(row: dict[str, Any]) -> str | None:
        return check_sample(row) or (ref_problem(row, store) if store else None)

    prior = recover_log(pool_path, check)
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
        asked = _ask_teacher(cfg, missing, have, pool_path, identity, out, failures, store)
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
        **({"logprobs": _store_stats(rows, store)} if store else {}),
    }


def _teacher_spec(cfg: Config) -> ModelSpec:
    t, g = cfg.teacher, cfg.generate
    urls = t.urls()
    model_dir = None if urls else local_model(t.model, cfg.cache_dir, key="teacher.model")
    return spec_from(
        t.serve,
        "teacher",
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
    t, g = cfg.teacher, cfg.generate
    tok_dir = local_model(t.model, cfg.cache_dir, key="teacher.model")
    mode = g.logprobs_mode
    return Meta(g.logprobs, g.sampling.temperature, mode, vocab_hash(tok_dir))


def _ask_teacher(
    cfg: Config,
    missing: list[Planned],
    have: dict[str, dict],
    pool_path: Path,
    identity: str,
    out: Path,
    failures: list[Failure],
    store: Store | None = None,
) -> dict[str, Any]:
    """Ask for the missing samples; each is appended to the pool (and `have`) as it arrives,
    its soft labels (with a store) to the store first."""
    g = cfg.generate
    meta = _soft_label_meta(cfg) if store else None
    settings = AskSettings(
        concurrency=g.concurrency,
        retries=g.retries,
        backoff_s=g.backoff_s,
        timeout_s=g.request_timeout_s,
    )
    by_id = {p[0].id: p for p in missing}
    with (
        contextlib.nullcontext() if store is None else store,
        AppendLog(pool_path, g.fsync_every, store.sync if store else None) as log,
        Progress(len(missing), "sample", "teacher") as bar,
    ):

        def on_done(c: Completion) -> None:
            ref = None
            if store is not None and meta is not None:
                ref = store.append(c.id, meta, soft_labels(c, meta.k))
            row = record(by_id[c.id], c, cfg, identity, ref)
            log.write(row)
            have[c.id] = row
            bar.done(c.usage["completion_tokens"])

        def on_fail(f: Failure) -> None:
            failures.append(f)
            bar.done()

        stats = ask(
            _teacher_spec(cfg),
            calls(missing, g.samples_per_call),
            on_done,
            on_fail,
            settings,
            out / "logs",
            on_ready=bar.start,
        )
    return {**stats.as_dict(), "seconds": stats.seconds}


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
