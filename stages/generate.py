"""generate: the teacher writes n rationale samples per train question.

Samples are content-addressed and live in one append-only pool per run, shared by every
generate key: raising n or adding questions asks the teacher only for what the pool lacks.
The stage dir then gets the exact selection for its key, written atomically.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.config import Config, semantic
from pipeline.llm import (
    Completion,
    Failure,
    Request,
    TeacherError,
    check_endpoint,
    generate_http,
    generate_offline,
    managed_servers,
    sigterm_as_interrupt,
)
from pipeline.models import identity_of, resolve_model
from pipeline.records import (
    AppendLog,
    DataError,
    atomic_write_jsonl,
    canonical_json,
    read_jsonl_tolerant,
    recover_log,
    schema_problem,
    sha256_text,
)
from pipeline.tasks import Question, fewshot_examples, load_task, render_messages, template_bytes

NAME = "generate"
VERSION = 1
OUTPUTS = ["samples.jsonl", "errors.jsonl"]
POOL = "pool.jsonl"
POOL_LOCK = ".pool.lock"
SEEDS = "seed=base+i"  # in sample ids: samples seeded another way are other samples
# What a pool row must hold to be reused; a row without it is damage, moved to quarantine.
SAMPLE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "question_id": str,
    "sample_index": int,
    "messages": list,
    "completion": str,
    "finish_reason": str,
    "usage": dict,
    "gold": str,
}


def check_sample(row: dict[str, Any]) -> str | None:
    problem = schema_problem(row, SAMPLE_FIELDS)
    if problem is None and not isinstance(row["usage"].get("completion_tokens"), int):
        problem = "field 'usage' has no integer 'completion_tokens'"
    return problem


def locks(cfg: Config, out: Path) -> list[Path]:
    """Locks the runner takes with the stage's own, before it changes anything: the pool is
    shared by every generate key of the run."""
    return [out.parent / POOL_LOCK]


def teacher_identity(cfg: Config) -> str:
    """What the teacher is, for keys and sample ids: weights for local models, else its name."""
    if cfg.teacher.urls():
        return f"endpoint-model:{cfg.teacher.name or cfg.teacher.model}"
    return identity_of(cfg.teacher.model, cfg.cache_dir, key="teacher.model")


def key_parts(cfg: Config) -> dict[str, Any]:
    task = load_task(cfg.task)
    return {
        "config": {
            "task": semantic(cfg.task),
            "teacher": semantic(cfg.teacher, exclude=("model",)),
            "generate": semantic(cfg.generate),
        },
        "extra": {
            "teacher_identity": teacher_identity(cfg),
            "template": template_bytes(cfg.teacher.template),
            "task_data": task.source_hash,
        },
    }


def sampling_dict(cfg: Config) -> dict[str, Any]:
    s = asdict(cfg.generate.sampling)
    return {k: s[k] for k in ("temperature", "top_p", "max_tokens", "seed", "stop")}


def plan_requests(cfg: Config, identity: str) -> list[tuple[Request, Question, int]]:
    task = load_task(cfg.task)
    shots = fewshot_examples(task, cfg.teacher.fewshot)
    sampling = sampling_dict(cfg)
    out = []
    asked_by: dict[str, str] = {}
    for q in task.train:
        messages = render_messages(
            cfg.teacher.template,
            q,
            fewshot=shots,
            system=cfg.teacher.system,
            fewshot_style=cfg.teacher.fewshot_style,
        )
        # Sample i is seeded base + i, as vLLM seeds the k-th sample of an n-sample call
        # seed + k: a call for samples i..j is one request with seed base + i, and every sample
        # stays repeatable alone, however calls are grouped.
        base = int(sha256_text(canonical_json([identity, messages, sampling]))[:8], 16)
        base &= 0x3FFFFFFF  # room for + i within a signed 32-bit seed
        other = asked_by.setdefault(canonical_json(messages), q.id)
        if other != q.id:  # their samples would share ids: one question would be lost
            raise DataError(
                f"questions '{other}' and '{q.id}' give the teacher the same prompt; "
                "make them differ or remove one"
            )
        for i in range(cfg.generate.n):
            sid = sha256_text(canonical_json([identity, messages, sampling, i, SEEDS]))[:32]
            req_sampling = {**sampling, "seed": base + i}
            if not req_sampling["stop"]:
                del req_sampling["stop"]
            out.append((Request([sid], messages, req_sampling), q, i))
    return out


def calls(missing: list[tuple[Request, Question, int]], per_call: int) -> list[Request]:
    """The API calls for these samples: each run of consecutive sample indices of a question
    becomes one call for up to `per_call` samples (0: no cap), seeded with its first sample.

    Fewer, larger calls spare the server a prompt render, a tokenization and an HTTP exchange
    per sample; vLLM's prefix cache already shares the prompt's prefill.
    """
    out: list[Request] = []
    prev: tuple[str, int] | None = None
    for r, q, i in missing:
        last = out[-1] if out else None
        if last is not None and prev == (q.id, i - 1) and (per_call <= 0 or last.n < per_call):
            last.ids.append(r.id)
        else:
            out.append(Request([r.id], r.messages, dict(r.sampling)))
        prev = (q.id, i)
    return out


def _served_name(urls: list[str], api_key: str = "") -> str:
    """The model name to ask for when teacher.name is not set: what the endpoint serves."""
    errors = []
    for u in urls:
        try:
            served = check_endpoint(u, api_key=api_key)
        except TeacherError as e:
            errors.append(str(e))
            continue
        if served:
            return served[0]
    raise TeacherError(
        "; ".join(errors) or "no model served at the teacher endpoints; set teacher.name"
    )


def _record(
    req: Request, q: Question, index: int, comp: Completion, cfg: Config, identity: str
) -> dict:
    return {
        "id": req.id,
        "question_id": q.id,
        "sample_index": index,
        "teacher": cfg.teacher.name or cfg.teacher.model,
        "teacher_identity": identity,
        "messages": req.messages,
        "completion": comp.text,
        "finish_reason": comp.finish_reason,
        "usage": comp.usage,
        "sampling": req.sampling,
        "prompt_sha": sha256_text(canonical_json(req.messages)),
        "gold": q.answer,
        "answer_type": q.answer_type,
        "choices": list(q.choices),
        "endpoint": comp.endpoint,
    }


def run(cfg: Config, inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """The runner holds the pool lock (`locks`) while this runs."""
    started = time.monotonic()
    t = cfg.teacher
    urls = t.urls()
    model_dir: Path | None = None
    if not urls:
        model_dir = resolve_model(t.model, cfg.cache_dir, key="teacher.model")
    api_key = t.api_key()  # a missing key fails here, before any server starts
    identity = teacher_identity(cfg)
    planned = plan_requests(cfg, identity)
    pool_path = out.parent / POOL

    prior = recover_log(pool_path, check_sample)
    note = prior.message(pool_path, pool_path.with_name(POOL + ".quarantine"), "samples")
    if note:
        print(note, file=sys.stderr, flush=True)
    have = {r["id"]: r for r in prior.rows}
    missing = [(r, q, i) for r, q, i in planned if r.id not in have]
    reused = len(planned) - len(missing)
    print(
        f"generate: {len(planned)} samples for {len(load_task(cfg.task).train)} questions "
        f"(n={cfg.generate.n}); {reused} already in the pool, {len(missing)} to request",
        flush=True,
    )
    failures: list[Failure] = []
    client_stats: dict[str, Any] = {}
    if missing:
        client_stats = _request_missing(
            cfg, missing, have, pool_path, identity, model_dir, urls, api_key, out, failures
        )
    atomic_write_jsonl(
        out / "errors.jsonl",
        ({"id": f.id, "reason": f.reason, "attempts": f.attempts} for f in failures),
    )
    if failures:
        raise TeacherError(
            f"{len(failures)} of {len(missing)} samples failed after retries "
            f"(first: {failures[0].reason}); finished samples are kept in {pool_path}, "
            f"details in {out / 'errors.jsonl'}; rerun to request only what is missing"
        )
    rows = [have[r.id] for r, _, _ in planned]
    atomic_write_jsonl(out / "samples.jsonl", rows)

    seconds = time.monotonic() - started
    comp_tokens = sum(r["usage"]["completion_tokens"] for r in rows)
    new_tokens = sum(have[r.id]["usage"]["completion_tokens"] for r, _, _ in missing)
    truncated = sum(r["finish_reason"] == "length" for r in rows)
    gen_seconds = client_stats.pop("seconds", 0.0)
    return {
        "questions": len({r["question_id"] for r in rows}),
        "samples": len(rows),
        "requested": len(missing),
        "reused": reused,
        "torn_lines_dropped": int(prior.torn_tail is not None),
        "damaged_lines_quarantined": len(prior.quarantined) + len(prior.duplicates),
        "completion_tokens": comp_tokens,
        "new_completion_tokens": new_tokens,
        "generation_seconds": round(gen_seconds, 2),
        "tokens_per_second": round(new_tokens / gen_seconds, 1) if gen_seconds else None,
        "truncation_rate": round(truncated / len(rows), 4) if rows else 0.0,
        "stage_seconds": round(seconds, 2),
        **client_stats,
    }


def _request_missing(
    cfg: Config,
    missing: list[tuple[Request, Question, int]],
    have: dict[str, dict],
    pool_path: Path,
    identity: str,
    model_dir: Path | None,
    urls: list[str],
    api_key: str,
    out: Path,
    failures: list[Failure],
) -> dict[str, Any]:
    from tqdm import tqdm

    g = cfg.generate
    by_id = {r.id: (r, q, i) for r, q, i in missing}
    bar = tqdm(
        total=len(missing), unit="sample", desc="teacher", dynamic_ncols=True, file=sys.stderr
    )
    tokens = 0
    try:
        with AppendLog(pool_path, fsync_every=g.fsync_every) as log:

            def on_done(c: Completion) -> None:
                nonlocal tokens
                req, q, i = by_id[c.id]
                row = _record(req, q, i, c, cfg, identity)
                log.write(row)
                have[c.id] = row
                tokens += c.usage["completion_tokens"]
                bar.update(1)
                if bar.n % 16 == 0:
                    rate = tokens / max(1e-9, time.monotonic() - t0)
                    bar.set_postfix_str(f"{rate:,.0f} tok/s")

            def on_fail(f: Failure) -> None:
                failures.append(f)
                bar.update(1)

            requests = calls(missing, g.samples_per_call)
            t = cfg.teacher
            with sigterm_as_interrupt():
                if t.engine == "offline":
                    assert model_dir is not None

                    def engine_ready() -> None:
                        nonlocal t0
                        t0 = time.monotonic()  # engine start-up excluded, as for the server

                    t0 = time.monotonic()
                    generate_offline(
                        model_dir,
                        requests,
                        on_done,
                        dtype=t.dtype,
                        max_model_len=t.max_model_len,
                        seed=g.sampling.seed,
                        chunk=g.offline_chunk,
                        on_ready=engine_ready,
                    )
                    stats: dict[str, Any] = {"engine": "offline"}
                    seconds = time.monotonic() - t0
                else:
                    with contextlib.ExitStack() as stack:
                        if urls:
                            name = t.name or _served_name(urls, api_key)
                        else:
                            assert model_dir is not None
                            name = t.name or model_dir.name
                            urls = stack.enter_context(
                                managed_servers(model_dir, name, out / "logs", cfg.teacher)
                            )
                        t0 = time.monotonic()
                        cs = generate_http(
                            urls,
                            name,
                            requests,
                            on_done,
                            on_fail,
                            concurrency=g.concurrency,
                            retries=g.retries,
                            backoff_s=g.backoff_s,
                            timeout_s=g.request_timeout_s,
                            api_key=api_key,
                        )
                        seconds = time.monotonic() - t0
                    stats = {
                        "engine": "server",
                        "retries": cs.retries,
                        "failovers": cs.failovers,
                        "endpoints": cs.endpoints,
                    }
    finally:
        bar.close()  # before any error line, so it starts a line of its own
    stats["seconds"] = seconds
    return stats


def progress(cfg: Config, out: Path) -> str:
    """For `distill status`: how many of this key's samples the pool already holds."""
    planned = plan_requests(cfg, teacher_identity(cfg))
    have = {r["id"] for r in read_jsonl_tolerant(out.parent / POOL, check_sample).rows}
    return f"{sum(r.id in have for r, _, _ in planned)} of {len(planned)} samples"
