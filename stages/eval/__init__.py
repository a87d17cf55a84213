"""eval: ask each model under test on the held-out split and measure what the student learned.

Models (eval.models): `teacher` (its template and worked examples; served as teacher.serve says,
or asked at teacher.endpoint), `base` (the untrained student, zero-shot student template),
`student` (the distilled one, inputs["train"]/model) and `student_answer_only` (the ablation:
this stage declares it as an extra input, the train stage again on answer-only completions).
Students are served as eval.serve says, one at a time, greedy by default.

Predictions are collected by stages/eval/predictions.py, scored and summarised by
stages/eval/metrics.py, and written up by stages/eval/report.py: metrics.json, report.md,
accuracy.png, and cards/<student>/README.md, each evaluated student's model card with its
scores (`distill export` ships it). Scores are recomputed from the texts on every run.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

from pipeline.asklog import RecordLog, failed
from pipeline.calls import sampling_dict
from pipeline.config import Config, semantic
from pipeline.models import identity_of, teacher_identity, teacher_key_config
from pipeline.prompts import template_bytes
from pipeline.reasoning import Convention
from pipeline.records import (
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    read_jsonl_tolerant,
)
from pipeline.stage import ExportContext, ExtraInput, KeyParts, RunContext
from pipeline.taskfacts import task_facts
from pipeline.tasks import load_task
from stages.eval.draft_estimate import estimate as estimate_drafts
from stages.eval.draft_measure import measure as measure_drafts
from stages.eval.identity import IDENTITY, identity_lines, judge, probe_questions
from stages.eval.metrics import paired_mcnemar, same_answer, score_rows, summarize
from stages.eval.predictions import (
    TRAINED_INPUT,
    Todo,
    answers,
    ask_models,
    check_prediction,
    models_under_test,
    plan_requests,
    reuse_siblings,
    teacher_calls,  # noqa: F401  the stage's hook for `distill plan`
)
from stages.eval.report import (
    draft_lines,
    mcnemar_lines,
    plot_accuracy,
    render_report,
    speculative_lines,
    table_rows,
    trace_lines,
)
from stages.shared.cards import parse, render, with_metrics
from stages.shared.layout import ACCURACY_PLOT, CARD, CARDS, METRICS, MODEL, PREDICTIONS, REPORT_MD
from stages.shared.spend import SPEND, charging, spent

NAME = "eval"
VERSION = 2  # 2: cards/<student>/README.md, each evaluated student's card with its scores
OUTPUTS = (PREDICTIONS, METRICS, REPORT_MD, ACCURACY_PLOT, CARDS)
UPSTREAM = ("filter", "train")
HELP = "measure teacher, base and distilled student on the held-out split"
# McNemar pairs reported when both models were evaluated.
PAIRS = (
    ("student", "base"),
    ("student", "student_answer_only"),
    ("student", "student_full"),
    ("student", "teacher"),
)


def model_labels(cfg: Config) -> list[str]:
    """eval.models without repeats (the config guarantees known, non-empty names)."""
    return list(dict.fromkeys(cfg.eval.models))


def key_parts(cfg: Config) -> KeyParts:
    labels = model_labels(cfg)
    task = task_facts(cfg.task, cfg.cache_dir)  # without reading its questions
    base = identity_of(cfg.train.student, cfg.cache_dir, key="train.student")
    return KeyParts(
        config={
            "task": semantic(cfg.task),
            "teacher": teacher_key_config(cfg.lead_teacher()),
            "eval": semantic(cfg.eval),
            "student_template": cfg.student_template,
        },
        extra={
            "teacher_identity": teacher_identity(cfg.lead_teacher(), cfg.cache_dir)
            if "teacher" in labels
            else "",
            "base_identity": base if "base" in labels else "",
            "teacher_template": template_bytes(cfg.lead_teacher().template),
            "student_template": template_bytes(cfg.student_template),
            "task_data": task.source_hash,
            # 2: the draft estimate also scores the teacher's answers (the KL); draft off keeps
            # the keys it had
            **({"draft_version": 2} if cfg.eval.draft else {}),
        },
    )


def extra_inputs(cfg: Config) -> list[ExtraInput]:
    """The answer-only ablation: the same student trained on 'Answer: X' from the same data
    (with SFT: an answer the student writes alone has no teacher distributions). The full-size
    student: the train stage `trained` names (the one a cut student came from)."""
    out = []
    if "student_answer_only" in cfg.eval.models:
        train = dataclasses.replace(cfg.train, answer_only=True, objective="sft")
        variant = dataclasses.replace(cfg, train=train)
        out.append(ExtraInput(TRAINED_INPUT["student_answer_only"], "train", variant))
    if "student_full" in cfg.eval.models:
        full = dataclasses.replace(cfg, train=cfg.train.full_size())
        out.append(ExtraInput(TRAINED_INPUT["student_full"], "train", full))
    return out


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    started = time.monotonic()
    out, inputs = ctx.out, ctx.inputs
    questions = load_task(cfg.task).eval  # never empty: load_task refuses an empty split
    muts = models_under_test(cfg, model_labels(cfg), inputs)
    plan_requests(cfg, muts, questions, probe_questions() if cfg.eval.identity else [])
    every, counts = _predictions(cfg, muts, out)
    rows = [r for r in every if r["answer_type"] != IDENTITY]  # the graded ones
    score_rows(rows, Convention.of(cfg.lead_teacher()))
    atomic_write_jsonl(out / PREDICTIONS, every)  # the probes' answers too, ungraded
    metrics = _metrics(cfg, [m.label for m in muts], rows, len(questions), muts)
    if cfg.eval.draft:
        metrics["draft"] = estimate_drafts(cfg, muts, rows, out)
    if cfg.eval.speculative:
        metrics["speculative"] = measure_drafts(cfg, muts, out)
    if cfg.eval.identity:
        probed = [r for r in every if r["answer_type"] == IDENTITY]
        metrics["identity"] = judge(probed, cfg.eval.identity_names)
    atomic_write_json(out / METRICS, metrics)
    atomic_write_text(out / REPORT_MD, render_report(metrics))
    plot_accuracy(metrics, out / ACCURACY_PLOT)
    _student_cards(metrics, inputs, out)
    per_model = metrics["per_model"]
    seconds, new_tokens = counts.pop("seconds"), counts["new_completion_tokens"]
    return {
        "questions": len(questions),
        "models": metrics["models"],
        "predictions": len(every),
        **counts,
        "generation_seconds": round(seconds, 2),
        "tokens_per_second": round(new_tokens / seconds, 1) if seconds else None,
        "accuracy": {lab: round(v["accuracy"], 4) for lab, v in per_model.items()},
        "per_model": {
            lab: {k: (round(x, 4) if isinstance(x, float) else x) for k, x in v.items()}
            for lab, v in per_model.items()
        },
        "mcnemar": metrics["mcnemar"],
        # what this key's teacher calls (answers, probes, draft scores) spent: its ledger
        "teacher_spend": spent(out / SPEND),
        "stage_seconds": round(time.monotonic() - started, 2),
    }


def _student_cards(metrics: dict[str, Any], inputs: dict[str, Path], out: Path) -> None:
    """Each evaluated student's model card with what was measured, in cards/<label>/: the
    train stage's own card stays as its manifest recorded it."""
    shutil.rmtree(out / CARDS, ignore_errors=True)
    for label, name in TRAINED_INPUT.items():
        src = Path(inputs.get(name, "")) / MODEL / CARD
        if label in metrics["per_model"] and name in inputs and src.is_file():
            dest = out / CARDS / label / CARD
            dest.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(dest, with_metrics(src.read_text(), label, metrics))


def _predictions(cfg: Config, muts: list, out: Path) -> tuple[list[dict], dict[str, Any]]:
    """Every planned prediction: from this dir, from sibling eval dirs, or asked now."""
    pred_path = out / PREDICTIONS
    planned = [Todo(m, req, q) for m in muts for req, q in m.requests]
    with (
        RecordLog.open(pred_path, check_prediction, "answers", fsync_every=16) as log,
        charging(cfg, out) as charge,
    ):
        have = log.rows
        todo = [t for t in planned if not answers(have.get(t.request.id), t.model, t.request)]
        missing = reuse_siblings(todo, out, log)
        probes = sum(t.question.answer_type == IDENTITY for t in planned) // max(1, len(muts))
        print(
            f"eval: {len(planned) // max(1, len(muts)) - probes} held-out questions"
            f"{f' and {probes} identity probes' if probes else ''} x {len(muts)} "
            f"model(s) ({', '.join(m.label for m in muts)}); {len(planned) - len(todo)} already "
            f"here, {len(todo) - len(missing)} reused from other eval keys and runs, {len(missing)} to ask",
            flush=True,
        )
        asked = ask_models(cfg, missing, out, log, charge)
    if asked.failures:
        raise failed("requests", asked.failures, len(asked.new), pred_path)
    charge.stop("answers", len(asked.new), pred_path)
    counts = {
        "requested": len(missing),
        "reused": len(planned) - len(todo),
        "reused_from_other_keys": len(todo) - len(missing),
        **log.recovery(),
        "new_completion_tokens": asked.tokens,
        "seconds": asked.stats.seconds if asked.stats else 0.0,
        # the dtype each model asked now was served in (pipeline/hardware.py)
        **({"served_dtype": asked.stats.dtypes} if asked.stats and asked.stats.dtypes else {}),
    }
    return [dict(have[t.request.id]) for t in planned], counts


def _metrics(cfg: Config, labels: list[str], rows: list[dict], n: int, muts: list) -> dict:
    per_model = summarize(rows, same_answer=same_answer)
    tests = {}
    for a, b in PAIRS:
        res = paired_mcnemar(rows, a, b)
        if res is not None:
            tests[f"{a}_vs_{b}"] = res
    return {
        "task": load_task(cfg.task).name,
        "questions": n,
        "splits": load_task(cfg.task).sizes(),
        "models": labels,
        "sampling": sampling_dict(cfg.eval.sampling, keep_empty_stop=False),
        "per_model": {lab: per_model[lab] for lab in labels if lab in per_model},
        "mcnemar": tests,
        "model_identity": {m.label: m.identity for m in muts},
    }


def ends_chain(cfg: Config) -> bool:
    """Every config's chain ends here (`distill run`'s target): `distill status` lists it."""
    return True


def progress(cfg: Config, out: Path) -> str:
    """Predictions already made for this key."""
    probes = len(probe_questions()) if cfg.eval.identity else 0
    n = (len(load_task(cfg.task).eval) + probes) * len(model_labels(cfg))
    have = {r["id"] for r in read_jsonl_tolerant(Path(out) / PREDICTIONS, check_prediction).rows}
    return f"{len(have)} of up to {n} predictions"


def export(ctx: ExportContext) -> str:
    """eval's part of `distill export`: the student's card with its scores replaces train's;
    pushed, the model-index names the model by the repo it goes to."""
    card = ctx.dir / CARDS / "student" / CARD
    if ctx.manifest is None or not card.is_file():
        return "the student is not evaluated for this config: its card has no scores"
    meta, body = parse(card.read_text())
    for entry in meta.get("model-index") or []:
        entry["name"] = ctx.push or entry.get("name")
    atomic_write_text(ctx.dest / MODEL / CARD, render(meta, body))
    return ""


def summary(stats: dict[str, Any], out: Path) -> str:
    """The accuracy table and the McNemar lines, as report.md has them."""
    import json

    metrics_path = out / METRICS
    if not metrics_path.is_file():
        return ""
    metrics = json.loads(metrics_path.read_text())
    head = ("model", "accuracy [95% CI]", "format%", "trunc%", "tokens", "agree%", "sim")
    rows = [list(head), *table_rows(metrics)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [f"eval: {metrics['task']}, {metrics['questions']} held-out questions"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(
        [
            *lines,
            *mcnemar_lines(metrics),
            *trace_lines(metrics),
            *draft_lines(metrics),
            *(f"measured as a draft: {x}" for x in speculative_lines(metrics)),
            *(f"identity: {x}" for x in identity_lines(metrics)),
        ]
    )
