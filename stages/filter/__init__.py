"""filter: teacher samples -> the student's training set, with a reason for every drop.

The checks are in stages/filter/checks.py, deduplication in stages/filter/dedup.py. Outputs:
`kept.jsonl` (TRL conversational prompt-completion rows, the prompt being the student's zero-shot
one), `README.md` (its dataset card, in the Hub's form: `datasets.load_dataset(<stage dir>)` loads
kept.jsonl by it), `rejected.jsonl` (each sample with its reason) and `report.json` (counts per
reason, histograms, contamination matches, per teacher what came in and was kept, every question's
pass rate). Every kept row carries its question's pass rate, verified / sampled, over all teachers
and per teacher (filter.min_pass_rate / max_pass_rate drop questions by it: too_hard, too_easy).
With soft labels (generate.logprobs), `kept.logprobs.bin` holds the kept samples' records, each
kept row naming its own by sha, so the dataset is whole without the generate pool.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.config import Config, semantic
from pipeline.prompts import template_bytes
from pipeline.reasoning import Convention
from pipeline.records import (
    DataError,
    atomic_open,
    atomic_write_text,
    read_jsonl,
    schema_problem,
    sha256_file,
)
from pipeline.stage import KeyParts, RunContext
from pipeline.taskfacts import task_facts
from pipeline.tasks import Question, load_task
from stages.filter.checks import to_sft_row
from stages.filter.hub import export  # noqa: F401 - the stage's part of `distill export`
from stages.filter.passes import Decided, Outcome, decide, outcomes
from stages.filter.report import Tally, rates_of, write_report
from stages.filter.report import report as build_report
from stages.shared.advice import advice_lines
from stages.shared.cards import dataset_card
from stages.shared.layout import (
    CARD,
    KEPT,
    KEPT_STORE,
    POOL_STORE,
    REJECTED,
    REPORT,
    SAMPLES,
    shared_dir,
)
from stages.shared.softlabels import Store, copy_records

NAME = "filter"
VERSION = 2  # 2: kept rows carry their question's pass rates; README.md, the dataset card
OUTPUTS = (KEPT, REJECTED, REPORT, CARD, KEPT_STORE)
UPSTREAM = ("generate",)
HELP = "verify, deduplicate, decontaminate and score samples into kept.jsonl"

# What the checks read from a sample (generate writes more).
SAMPLE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "question_id": str,
    "completion": str,
    "gold": str,
}


def key_parts(cfg: Config) -> KeyParts:
    task = task_facts(cfg.task, cfg.cache_dir)  # without reading its questions
    return KeyParts(
        config={"filter": semantic(cfg.filter), "student_template": cfg.student_template},
        extra={
            "student_template": template_bytes(cfg.student_template),
            "eval_set": task.source_hash + ":" + str(task.sizes["eval"]),
        },
    )


def _read_samples(path: Path) -> Iterator[dict]:
    for i, r in enumerate(read_jsonl(path), 1):
        problem = schema_problem(r, SAMPLE_FIELDS)
        if problem:
            raise DataError(f"{path}:{i}: {problem}; was it written by generate?")
        yield r


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    t0 = time.monotonic()
    out, gen_dir = ctx.out, ctx.inputs["generate"]
    src = gen_dir / SAMPLES
    task = load_task(cfg.task)
    questions = {q.id: q for q in task.train}
    reasoning = Convention.of(cfg.lead_teacher())

    def samples() -> Iterator[dict]:
        return _read_samples(src)

    decided = decide(samples, cfg.filter, questions, task.eval, reasoning, bounds=True)
    tally, soft = Tally(), []
    with atomic_open(out / KEPT) as kept, atomic_open(out / REJECTED) as rejected:
        for o in outcomes(samples, decided):
            tally.add(o)
            if o.reason is not None:
                rejected.write(json.dumps(o.rejected(), ensure_ascii=False) + "\n")
                continue
            row = _kept_row(o, questions, decided, cfg, reasoning, src)
            kept.write(json.dumps(row, ensure_ascii=False) + "\n")
            if "logprobs" in row:
                soft.append((row["logprobs"]["sha"], row["sample_id"], row["logprobs"]["tokens"]))
    soft_stats = _kept_soft_labels(soft, shared_dir(gen_dir) / POOL_STORE, out / KEPT_STORE)
    report = build_report(cfg, task, decided, tally)
    write_report(out / REPORT, report, decided)
    atomic_write_text(out / CARD, _card(cfg, report, tally, ctx, task, decided.identities))
    traces = {"reasoning": report["reasoning"]} if "reasoning" in report else {}
    return {k: report[k] for k in ("input", "kept", "rejected", "reasons", "truncated_seen")} | {
        "tokens": report["tokens"],
        "questions_with_kept": report["questions_with_kept"],
        "teachers": report["teachers"],
        "pass_rate": {k: v for k, v in report["pass_rate"].items() if k != "per_question"},
        "seconds": round(time.monotonic() - t0, 2),
        "advice": report["advice"],
        **traces,
        **({"logprobs": soft_stats} if soft_stats else {}),
    }


def _kept_row(
    o: Outcome,
    questions: dict[str, Question],
    d: Decided,
    cfg: Config,
    reasoning: Convention,
    src: Path,
) -> dict[str, Any]:
    """A kept sample as kept.jsonl holds it: the student's prompt, the completion, its scores
    and its question's pass rates."""
    r = o.row
    q = questions.get(r["question_id"])
    if q is None:
        raise DataError(f"{src}: question '{r['question_id']}' is not in the task's train split")
    return to_sft_row(r, q, o.scores, cfg, reasoning.split(r)) | {
        "pass_rate": d.overall_of(r["question_id"]),
        "pass_rate_by_teacher": rates_of(d, r["question_id"]),
    }


def _card(cfg: Config, report: dict, tally: Tally, ctx: RunContext, task: Any, idents: dict) -> str:
    """The dataset card (stages/shared/cards.py): what a user of kept.jsonl must know."""
    gen = ctx.manifests.get("generate", {})
    sizes = task.sizes()
    rows_sha = sha256_file(ctx.out / KEPT)
    tokens = sorted(tally.kept_tokens)
    return dataset_card(cfg, report, tokens, gen, ctx.keys(NAME), sizes, idents, rows_sha)


def _kept_soft_labels(
    kept: list[tuple[str, str, int]], pool_store: Path, dest: Path
) -> dict[str, Any]:
    """Copy the kept samples' soft-label records (sha, sample id, tokens) next to kept.jsonl;
    {} without soft labels."""
    dest.unlink(missing_ok=True)
    if not kept:
        return {}
    store = Store.open(pool_store)
    lost = [sid for sha, sid, _ in kept if not store.has(sha)]
    if lost:
        raise DataError(
            f"{pool_store}: the soft labels of {len(lost)} kept samples (first: {lost[0]}) are "
            "missing or damaged; rerun generate (it asks for them again), then filter"
        )
    size = copy_records(store, [sha for sha, _, _ in kept], dest)
    tokens = sum(n for _, _, n in kept)
    return {
        "samples": len(kept),
        "tokens": tokens,
        "bytes": size,
        "bytes_per_token": round(size / tokens, 2),
    }


def progress(cfg: Config, out: Path) -> str:
    return "started, not finished (filtering is redone whole: ~1.2 s per 1,000 samples on 2 cores)"


def summary(stats: dict[str, Any], out: Path) -> str:
    n = max(1, stats.get("input", 0))
    lines = [
        f"kept {stats.get('kept', 0):,} of {stats.get('input', 0):,} ({100 * stats.get('kept', 0) / n:.1f}%)"
    ]
    for reason, c in (stats.get("reasons") or {}).items():
        lines.append(f"  dropped: {reason:<18} {c:>7,}  {100 * c / n:5.1f}%")
    lines.append(f"questions with a kept sample: {stats.get('questions_with_kept', 0):,}")
    tok = stats.get("tokens")
    if tok and tok["completion"]:
        per = tok["completion_per_kept"]
        lines.append(
            f"teacher tokens: {tok['completion']:,} completion, "
            f"{100 * tok['completion_on_dropped'] / tok['completion']:.1f}% of them on dropped "
            f"samples; {per if per is not None else '-'} per kept sample "
            f"(prompt: {tok['prompt']:,}, {tok['prompt_per_kept'] or '-'} per kept)"
        )
    pr = stats.get("pass_rate") or {}
    if pr.get("mean") is not None:
        lines.append(
            f"pass rate: mean {100 * pr['mean']:.1f}%; questions never solved "
            f"{pr['never_solved']:,}, always solved {pr['always_solved']:,}"
        )
    teachers = stats.get("teachers") or {}
    if len(teachers) > 1:
        for t, v in teachers.items():
            lines.append(
                f"  teacher {t}: {v['kept']:,} kept of {v['samples']:,} "
                f"({v['verified']:,} verified)"
            )
    if stats.get("reasoning"):
        r = stats["reasoning"]
        where = ", ".join(f"{k} {v:,}" for k, v in r["source"].items() if k != "none")
        lines.append(
            f"samples with a trace: {r['with_trace']:,} ({where}); never closed: {r['unclosed']:,}"
        )
    lines.append(f"training set: {out / KEPT}")
    return "\n".join(lines + advice_lines(stats.get("advice", [])))
