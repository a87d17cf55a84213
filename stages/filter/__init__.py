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

import time
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.config import Config, semantic
from pipeline.prompts import template_bytes
from pipeline.reasoning import Convention
from pipeline.records import (
    DataError,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    read_jsonl,
    schema_problem,
    sha256_file,
)
from pipeline.stage import KeyParts, RunContext
from pipeline.tasks import load_task
from stages.filter.checks import filter_records, to_sft_row
from stages.filter.hub import export  # noqa: F401 - the stage's part of `distill export`
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
from stages.shared.verify import verified

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
    task = load_task(cfg.task)
    return KeyParts(
        config={"filter": semantic(cfg.filter), "student_template": cfg.student_template},
        extra={
            "student_template": template_bytes(cfg.student_template),
            "eval_set": task.source_hash + ":" + str(len(task.eval)),
        },
    )


def _read_samples(path: Path) -> list[dict]:
    rows = []
    for i, r in enumerate(read_jsonl(path), 1):
        problem = schema_problem(r, SAMPLE_FIELDS)
        if problem:
            raise DataError(f"{path}:{i}: {problem}; was it written by generate?")
        rows.append(r)
    return rows


def _histogram(values: list[float], bins: int = 10) -> dict[str, Any]:
    if not values:
        return {"edges": [], "counts": []}
    lo, hi = min(values), max(values)
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    return {"edges": [round(lo + i * width, 4) for i in range(bins + 1)], "counts": counts}


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    t0 = time.monotonic()
    out, gen_dir = ctx.out, ctx.inputs["generate"]
    src = gen_dir / SAMPLES
    rows = _read_samples(src)
    task = load_task(cfg.task)
    questions = {q.id: q for q in task.train}
    reasoning = Convention.of(cfg.lead_teacher())
    rates = pass_rates(rows, reasoning)
    overall = {q: _rate(*map(sum, zip(*t.values(), strict=True))) for q, t in rates.items()}
    kept, rejected, scores = filter_records(
        rows, cfg.filter, questions, task.eval, reasoning, overall
    )
    missing_q = [r["question_id"] for r in kept if r["question_id"] not in questions]
    if missing_q:
        raise DataError(f"{src}: question '{missing_q[0]}' is not in the task's train split")
    sft = [
        to_sft_row(r, questions[r["question_id"]], scores[r["id"]], cfg, reasoning.split(r))
        | {
            "pass_rate": overall[r["question_id"]],
            "pass_rate_by_teacher": {t: _rate(*v) for t, v in rates[r["question_id"]].items()},
        }
        for r in kept
    ]
    atomic_write_jsonl(out / KEPT, sft)
    soft = _kept_soft_labels(sft, shared_dir(gen_dir) / POOL_STORE, out / KEPT_STORE)
    atomic_write_jsonl(out / REJECTED, rejected)
    report = _report(cfg, rows, kept, rejected, scores, sft, rates, overall, reasoning)
    atomic_write_json(out / REPORT, report)
    idents = {r.get("teacher", ""): r.get("teacher_identity", "?") for r in rows}
    atomic_write_text(out / CARD, _card(cfg, report, sft, ctx, task, idents))
    traces = {"reasoning": report["reasoning"]} if "reasoning" in report else {}
    return {k: report[k] for k in ("input", "kept", "rejected", "reasons", "truncated_seen")} | {
        "tokens": report["tokens"],
        "questions_with_kept": report["questions_with_kept"],
        "teachers": report["teachers"],
        "pass_rate": {k: v for k, v in report["pass_rate"].items() if k != "per_question"},
        "seconds": round(time.monotonic() - t0, 2),
        **traces,
        **({"logprobs": soft} if soft else {}),
    }


def _report(
    cfg: Config,
    rows: list[dict],
    kept: list[dict],
    rejected: list[dict],
    scores: dict[str, dict],
    sft: list[dict],
    rates: dict[str, dict[str, list[int]]],
    overall: dict[str, float],
    reasoning: Convention,
) -> dict[str, Any]:
    all_scores = list(scores.values())
    per_q = Counter(r["question_id"] for r in kept)
    report = {
        "input": len(rows),
        "kept": len(kept),
        "rejected": len(rejected),
        "reasons": dict(Counter(r["reason"] for r in rejected).most_common()),
        "checks": list(cfg.filter.checks),
        "truncated_seen": sum(bool(s.get("truncated")) for s in all_scores),
        "questions_with_kept": len(per_q),
        "questions_total": len({r["question_id"] for r in rows}),
        "splits": load_task(cfg.task).sizes(),
        "histograms": {
            "tokens": _histogram([s["tokens"] for s in all_scores if "tokens" in s]),
            "repetition": _histogram([s["repetition"] for s in all_scores if "repetition" in s]),
            "kept_per_question": dict(sorted(Counter(per_q.values()).items())),
        },
        "contamination_matches": [
            {"id": r["id"], "match": r.get("match"), "eval_question": r.get("eval_question")}
            for r in rejected
            if r["reason"] == "contaminated"
        ][:100],
    }
    report["teachers"] = _teacher_report(rows, sft, rates)
    kept_ids = {r["id"] for r in kept}
    report["tokens"] = token_report(rows, kept_ids)
    for t, v in report["teachers"].items():
        v["tokens"] = token_report([r for r in rows if r.get("teacher", "") == t], kept_ids)
    report["pass_rate"] = _pass_rate_report(overall, rates)
    traces = _reasoning_report(rows, reasoning)
    if traces["with_trace"]:  # a teacher without traces gets the report it always had
        report["reasoning"] = traces
    for part in ("reasoning_words", "answer_words"):
        values = [s[part] for s in all_scores if part in s]
        if values:
            report["histograms"][part] = _histogram(values)
    if report["kept"] + report["rejected"] != report["input"]:
        raise RuntimeError("filter lost or doubled a record")  # a bug, never a user's mistake
    return report


def _card(
    cfg: Config, report: dict, kept: list[dict], ctx: RunContext, task: Any, idents: dict
) -> str:
    """The dataset card (stages/shared/cards.py): what a user of kept.jsonl must know."""
    gen = ctx.manifests.get("generate", {})
    sizes = task.sizes()
    rows_sha = sha256_file(ctx.out / KEPT)
    return dataset_card(cfg, report, kept, gen, ctx.keys(NAME), sizes, idents, rows_sha)


def pass_rates(rows: list[dict], convention: Convention) -> dict[str, dict[str, list[int]]]:
    """question id -> teacher -> [verified, sampled]: verified as the filter's truncated, format
    and correct checks verify (stages/shared/verify.py), before any dedup or cap."""
    out: dict[str, dict[str, list[int]]] = {}
    for r in rows:
        counts = out.setdefault(r["question_id"], {}).setdefault(r.get("teacher", ""), [0, 0])
        counts[0] += verified(r, convention)
        counts[1] += 1
    return out


def _rate(good: int, sampled: int) -> float:
    return round(good / sampled, 4) if sampled else 0.0


def _teacher_report(
    rows: list[dict], kept: list[dict], rates: dict[str, dict[str, list[int]]]
) -> dict[str, dict[str, Any]]:
    """Per teacher: samples in, verified, kept, and the questions it solved at least once."""
    out: dict[str, dict[str, Any]] = {}
    for t in dict.fromkeys(r.get("teacher", "") for r in rows):
        mine = [v[t] for v in rates.values() if t in v]
        out[t] = {
            "samples": sum(v[1] for v in mine),
            "verified": sum(v[0] for v in mine),
            "kept": sum(r["teacher"] == t for r in kept),
            "questions": len(mine),
            "questions_solved": sum(v[0] > 0 for v in mine),
        }
    return out


def token_report(rows: list[dict], kept: set[str]) -> dict[str, Any]:
    """What the teacher's tokens bought: all of them, those spent on samples the filter dropped,
    and the tokens per kept sample (what one training row cost, the dropped ones included)."""
    n_kept = sum(r["id"] in kept for r in rows)
    out: dict[str, Any] = {}
    for part in ("prompt", "completion"):
        spent = [
            (int((r.get("usage") or {}).get(f"{part}_tokens") or 0), r["id"] in kept) for r in rows
        ]
        total = sum(n for n, _ in spent)
        out[part] = total
        out[f"{part}_on_dropped"] = sum(n for n, k in spent if not k)
        out[f"{part}_per_kept"] = round(total / n_kept, 1) if n_kept else None
    return out


def _pass_rate_report(
    overall: dict[str, float], rates: dict[str, dict[str, list[int]]]
) -> dict[str, Any]:
    """How hard the questions were for the teachers: every question's rate, and their spread.
    With generate.strategy adaptive a rate is the one observed, which the stopping rule tilts
    (a question stops after its successes)."""
    values = list(overall.values())
    return {
        "mean": round(sum(values) / len(values), 4) if values else None,
        "never_solved": sum(v == 0 for v in values),
        "always_solved": sum(v == 1 for v in values),
        "histogram": _histogram(values, 5),
        "per_question": {
            q: {t: {"verified": v[0], "sampled": v[1]} for t, v in ts.items()}
            for q, ts in rates.items()
        },
    }


def _kept_soft_labels(kept: list[dict], pool_store: Path, dest: Path) -> dict[str, Any]:
    """Copy the kept samples' soft-label records next to kept.jsonl; {} without soft labels."""
    dest.unlink(missing_ok=True)
    shas = [r["logprobs"]["sha"] for r in kept if "logprobs" in r]
    if not shas:
        return {}
    store = Store.open(pool_store)
    lost = [r["sample_id"] for r in kept if "logprobs" in r and not store.has(r["logprobs"]["sha"])]
    if lost:
        raise DataError(
            f"{pool_store}: the soft labels of {len(lost)} kept samples (first: {lost[0]}) are "
            "missing or damaged; rerun generate (it asks for them again), then filter"
        )
    size = copy_records(store, shas, dest)
    tokens = sum(r["logprobs"]["tokens"] for r in kept if "logprobs" in r)
    return {
        "samples": len(shas),
        "tokens": tokens,
        "bytes": size,
        "bytes_per_token": round(size / tokens, 2),
    }


def _reasoning_report(rows: list[dict], reasoning: Convention) -> dict[str, Any]:
    """How many samples came with a trace, from where, and how many never closed it."""
    parts = [reasoning.split(r) for r in rows]
    return {
        "mode": reasoning.mode,
        "with_trace": sum(p.reasoning is not None for p in parts),
        "unclosed": sum(p.truncated for p in parts),
        "source": dict(Counter(p.source for p in parts).most_common()),
    }


def progress(cfg: Config, out: Path) -> str:
    return "started, not finished (filtering is redone whole: it takes seconds)"


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
    return "\n".join(lines)
