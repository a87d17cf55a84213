"""eval: serve each model under test on the held-out split and measure what the student learned.

Models (cfg.eval.models): `teacher` (its template + few-shot examples, a local model or the
external endpoints), `base` (the untrained student, zero-shot student template), `student` (the
distilled one, inputs["train"]/model) and `student_answer_only` (the ablation,
inputs["train_answer_only"]/model; skipped when that input is absent). Each is served with the
same vLLM code as generate, one at a time, greedy by default.

Every completion is appended to predictions.jsonl as it arrives (id = model label + question id),
so an interrupted eval resumes with only what is missing. A completion is also reused from a
sibling eval dir (another key of this run) when its request is byte-identical: same model weights,
same rendered prompt, same sampling, so a new student does not re-evaluate teacher and base.
Scores are recomputed from the texts on every run, then metrics.json, report.md, accuracy.png.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import Config, semantic
from pipeline.llm import (
    Completion,
    Failure,
    Request,
    TeacherError,
    generate_http,
    generate_offline,
    managed_servers,
    sigterm_as_interrupt,
)
from pipeline.metrics import paired_mcnemar, summarize
from pipeline.models import (
    ModelError,
    has_chat_template,
    identity_of,
    model_identity,
    resolve_model,
)
from pipeline.records import (
    AppendLog,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    canonical_json,
    read_jsonl_tolerant,
    recover_log,
    schema_problem,
    sha256_text,
)
from pipeline.tasks import (
    Question,
    fewshot_examples,
    load_task,
    render_messages,
    template_bytes,
)
from stages.generate import _served_name, teacher_identity

NAME = "eval"
VERSION = 1
OUTPUTS = ["predictions.jsonl", "metrics.json", "report.md", "accuracy.png"]
PREDICTIONS = "predictions.jsonl"

MODELS = ("teacher", "base", "student", "student_answer_only")
# Which upstream input holds each trained model (as <input>/model).
TRAINED_INPUT = {"student": "train", "student_answer_only": "train_answer_only"}
# McNemar pairs reported when both models were evaluated.
PAIRS = (("student", "base"), ("student", "student_answer_only"), ("student", "teacher"))


def model_labels(cfg: Config) -> list[str]:
    """eval.models without repeats (the config guarantees known, non-empty names)."""
    return list(dict.fromkeys(cfg.eval.models))


def key_parts(cfg: Config) -> dict[str, Any]:
    labels = model_labels(cfg)
    task = load_task(cfg.task)
    return {
        "config": {
            "task": semantic(cfg.task),
            "teacher": semantic(cfg.teacher, exclude=("model",)),
            "eval": semantic(cfg.eval),
            "student_template": cfg.student_template,
        },
        "extra": {
            "teacher_identity": teacher_identity(cfg) if "teacher" in labels else "",
            "base_identity": identity_of(cfg.train.student, cfg.cache_dir, key="train.student")
            if "base" in labels
            else "",
            "teacher_template": template_bytes(cfg.teacher.template),
            "student_template": template_bytes(cfg.student_template),
            "task_data": task.source_hash,
        },
    }


# --- planning ------------------------------------------------------------------------------------


@dataclass
class ModelUnderTest:
    label: str
    identity: str
    model_dir: Path | None  # None: the teacher at external endpoints
    urls: list[str] = field(default_factory=list)
    served_name: str = ""
    server_args: list[str] = field(default_factory=list)
    requests: list[tuple[Request, Question]] = field(default_factory=list)


def sampling_dict(cfg: Config) -> dict[str, Any]:
    s = dataclasses.asdict(cfg.eval.sampling)
    out = {k: s[k] for k in ("temperature", "top_p", "max_tokens", "seed")}
    if s["stop"]:
        out["stop"] = list(s["stop"])
    return out


def models_under_test(
    cfg: Config, inputs: dict[str, Path]
) -> tuple[list[ModelUnderTest], list[str]]:
    """What to serve for each label, with a clear error before any server starts."""
    muts: list[ModelUnderTest] = []
    skipped: list[str] = []
    t = cfg.teacher
    for label in model_labels(cfg):
        if label == "teacher":
            urls = t.urls()
            model_dir = None if urls else resolve_model(t.model, cfg.cache_dir, key="teacher.model")
            name = t.name or (model_dir.name if model_dir else "")
            muts.append(ModelUnderTest(label, teacher_identity(cfg), model_dir, urls, name))
        elif label == "base":
            model_dir = resolve_model(cfg.train.student, cfg.cache_dir, key="train.student")
            args = []
            if not has_chat_template(model_dir) and cfg.train.chat_template:
                args = ["--chat-template", str(Path(cfg.train.chat_template).expanduser())]
            muts.append(
                ModelUnderTest(
                    label,
                    identity_of(cfg.train.student, cfg.cache_dir, key="train.student"),
                    model_dir,
                    [],
                    label,
                    server_args=args,
                )
            )
        else:
            key = TRAINED_INPUT[label]
            if key not in inputs:
                if label == "student":
                    raise ModelError(f"eval needs the '{key}' stage output to test the student")
                print(f"eval: no '{key}' input, skipping {label}", file=sys.stderr, flush=True)
                skipped.append(label)
                continue
            model_dir = Path(inputs[key]) / "model"
            if not (model_dir / "config.json").is_file():
                raise ModelError(
                    f"{label}: {model_dir} is not a model dir (no config.json); "
                    f"did the {key} stage finish?"
                )
            muts.append(ModelUnderTest(label, model_identity(model_dir), model_dir, [], label))
    return muts, skipped


def plan_requests(cfg: Config, muts: list[ModelUnderTest], questions: list[Question]) -> None:
    task = load_task(cfg.task)
    teacher = any(m.label == "teacher" for m in muts)
    shots = fewshot_examples(task, cfg.teacher.fewshot) if teacher else []
    sampling = sampling_dict(cfg)
    for m in muts:
        m.requests = []
        for q in questions:
            if m.label == "teacher":
                messages = render_messages(
                    cfg.teacher.template,
                    q,
                    fewshot=shots,
                    system=cfg.teacher.system,
                    fewshot_style=cfg.teacher.fewshot_style,
                )
            else:
                messages = render_messages(cfg.student_template, q)
            m.requests.append((Request([f"{m.label}:{q.id}"], messages, dict(sampling)), q))


def request_sha(identity: str, req: Request) -> str:
    return sha256_text(canonical_json([identity, req.messages, req.sampling]))[:32]


def _row(m: ModelUnderTest, req: Request, q: Question, comp: Completion) -> dict[str, Any]:
    return {
        "id": req.id,
        "model": m.label,
        "question_id": q.id,
        "model_identity": m.identity,
        "request_sha": request_sha(m.identity, req),
        "messages": req.messages,
        "completion": comp.text,
        "finish_reason": comp.finish_reason,
        "usage": comp.usage,
        "sampling": req.sampling,
        "gold": q.answer,
        "answer_type": q.answer_type,
        "choices": list(q.choices),
        "endpoint": comp.endpoint,
    }


PREDICTION_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "model": str,
    "question_id": str,
    "request_sha": str,
    "completion": str,
    "usage": dict,
    "gold": str,
    "answer_type": str,
}


def check_prediction(row: dict[str, Any]) -> str | None:
    return schema_problem(row, PREDICTION_FIELDS)


def _sibling_rows(out: Path) -> dict[str, dict[str, Any]]:
    """Finished completions in other eval dirs of this run, by request hash."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(out.parent.glob(f"*/{PREDICTIONS}")):
        if path.parent.resolve() == out.resolve():
            continue
        for r in read_jsonl_tolerant(path, check_prediction).rows:
            if r.get("request_sha") and "completion" in r:
                found.setdefault(r["request_sha"], r)
    return found


# --- scoring -------------------------------------------------------------------------------------

_SCORE_FIELDS = ("pred", "correct", "formatted")


def score_rows(rows: list[dict[str, Any]]) -> None:
    """Add pred / correct / formatted to each row from its text (always recomputed)."""
    from pipeline.answers import extract_answer, has_answer_line, is_correct

    for r in rows:
        text = r.get("completion") or ""
        pred = extract_answer(text, r["answer_type"])
        r["pred"] = pred
        r["correct"] = bool(
            pred is not None
            and is_correct(pred, r["gold"], r["answer_type"], r.get("choices") or None)
        )
        r["formatted"] = bool(has_answer_line(text))


def same_answer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two models gave the same final answer (checked like a gold answer, so 7 == 7.0)."""
    from pipeline.answers import is_correct

    if a.get("pred") is None or b.get("pred") is None:
        return False
    return bool(is_correct(a["pred"], b["pred"], a["answer_type"], a.get("choices") or None))


# --- run -----------------------------------------------------------------------------------------


def run(cfg: Config, inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    started = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task = load_task(cfg.task)
    questions = task.eval  # never empty: load_task refuses an empty split
    muts, skipped = models_under_test(cfg, inputs)
    api_key = cfg.teacher.api_key() if any(m.urls for m in muts) else ""
    plan_requests(cfg, muts, questions)

    pred_path = out / PREDICTIONS
    prior = recover_log(pred_path, check_prediction)
    note = prior.message(pred_path, pred_path.with_name(PREDICTIONS + ".quarantine"), "answers")
    if note:
        print(note, file=sys.stderr, flush=True)
    have: dict[str, dict[str, Any]] = {}
    for r in prior.rows:
        have[r["id"]] = r
    planned = [(m, req, q) for m in muts for req, q in m.requests]
    # A row counts only if it answers exactly this request (same weights, prompt, sampling).
    missing = [
        (m, req, q)
        for m, req, q in planned
        if have.get(req.id, {}).get("request_sha") != request_sha(m.identity, req)
    ]
    reused = len(planned) - len(missing)
    failures: list[Failure] = []
    gen_seconds = 0.0
    from_siblings = 0
    new_tokens = 0
    with AppendLog(pred_path, fsync_every=16) as log:
        if missing:
            siblings = _sibling_rows(out)
            still: list[tuple[ModelUnderTest, Request, Question]] = []
            for m, req, q in missing:
                src = siblings.get(request_sha(m.identity, req))
                if src is None:
                    still.append((m, req, q))
                    continue
                row = {**src, "id": req.id, "model": m.label, "question_id": q.id}
                for k in _SCORE_FIELDS:
                    row.pop(k, None)
                log.write(row)
                have[req.id] = row
                from_siblings += 1
            missing = still
        print(
            f"eval: {len(questions)} held-out questions x {len(muts)} model(s) "
            f"({', '.join(m.label for m in muts)}); {reused} already here, "
            f"{from_siblings} reused from other eval keys, {len(missing)} to request",
            flush=True,
        )
        with sigterm_as_interrupt():
            for m in muts:
                todo = [(req, q) for mm, req, q in missing if mm is m]
                if not todo:
                    continue
                seconds, tokens = _request_model(cfg, m, todo, log, have, failures, out, api_key)
                gen_seconds += seconds
                new_tokens += tokens
    if failures:
        raise TeacherError(
            f"eval: {len(failures)} of {len(missing)} requests failed after retries "
            f"(first: {failures[0].id}: {failures[0].reason}); finished predictions are kept "
            f"in {pred_path}; rerun to request only what is missing"
        )

    rows = [dict(have[req.id]) for _, req, _ in planned]
    score_rows(rows)
    atomic_write_jsonl(pred_path, rows)

    labels = [m.label for m in muts]
    per_model = summarize(rows, same_answer=same_answer)
    per_model = {lab: per_model[lab] for lab in labels if lab in per_model}
    tests = {}
    for a, b in PAIRS:
        res = paired_mcnemar(rows, a, b)
        if res is not None:
            tests[f"{a}_vs_{b}"] = res
    metrics = {
        "task": task.name,
        "questions": len(questions),
        "models": labels,
        "skipped": skipped,
        "sampling": sampling_dict(cfg),
        "per_model": per_model,
        "mcnemar": tests,
        "model_identity": {m.label: m.identity for m in muts},
    }
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "report.md", render_report(metrics))
    plot_accuracy(metrics, out / "accuracy.png")
    print_table(metrics)

    return {
        "questions": len(questions),
        "models": labels,
        "skipped": skipped,
        "predictions": len(rows),
        "requested": len(missing),
        "reused": reused,
        "reused_from_other_keys": from_siblings,
        "torn_lines_dropped": int(prior.torn_tail is not None),
        "damaged_lines_quarantined": len(prior.quarantined) + len(prior.duplicates),
        "new_completion_tokens": new_tokens,
        "generation_seconds": round(gen_seconds, 2),
        "tokens_per_second": round(new_tokens / gen_seconds, 1) if gen_seconds else None,
        "accuracy": {lab: round(v["accuracy"], 4) for lab, v in per_model.items()},
        "per_model": {
            lab: {k: (round(x, 4) if isinstance(x, float) else x) for k, x in v.items()}
            for lab, v in per_model.items()
        },
        "mcnemar": tests,
        "stage_seconds": round(time.monotonic() - started, 2),
    }


def _request_model(
    cfg: Config,
    m: ModelUnderTest,
    todo: list[tuple[Request, Question]],
    log: AppendLog,
    have: dict[str, dict[str, Any]],
    failures: list[Failure],
    out: Path,
    api_key: str,
) -> tuple[float, int]:
    """Serve one model, send its missing requests, stop it. Returns (seconds, new tokens)."""
    from tqdm import tqdm

    t = cfg.teacher
    by_id = {req.id: (req, q) for req, q in todo}
    bar: Any = None  # opened once the model is up, so its rate is the model's
    tokens = 0

    def open_bar() -> None:
        nonlocal bar
        bar = tqdm(total=len(todo), unit="q", desc=m.label, dynamic_ncols=True, file=sys.stderr)

    def on_done(c: Completion) -> None:
        nonlocal tokens
        req, q = by_id[c.id]
        row = _row(m, req, q, c)
        log.write(row)
        have[c.id] = row
        tokens += c.usage.get("completion_tokens", 0)
        bar.update(1)

    def on_fail(f: Failure) -> None:
        failures.append(f)
        bar.update(1)

    requests = [req for req, _ in todo]
    try:
        if t.engine == "offline":
            assert m.model_dir is not None
            open_bar()
            t0 = time.monotonic()
            generate_offline(
                m.model_dir,
                requests,
                on_done,
                dtype=t.dtype,
                max_model_len=t.max_model_len,
                seed=cfg.eval.sampling.seed,
                chunk=cfg.generate.offline_chunk,
            )
            seconds = time.monotonic() - t0
            gc.collect()  # let the engine go before the next model loads
        else:
            with contextlib.ExitStack() as stack:
                urls, name = m.urls, m.served_name
                if urls:
                    name = name or _served_name(urls, api_key)
                else:
                    assert m.model_dir is not None
                    tcfg = t
                    if m.server_args:
                        tcfg = dataclasses.replace(t, server_args=[*t.server_args, *m.server_args])
                    urls = stack.enter_context(
                        managed_servers(m.model_dir, name, out / "logs" / m.label, tcfg)
                    )
                open_bar()
                t0 = time.monotonic()
                generate_http(
                    urls,
                    name,
                    requests,
                    on_done,
                    on_fail,
                    concurrency=cfg.eval.concurrency,
                    retries=cfg.generate.retries,
                    backoff_s=cfg.generate.backoff_s,
                    timeout_s=cfg.generate.request_timeout_s,
                    api_key=api_key if m.urls else "",
                )
                seconds = time.monotonic() - t0
        log.sync()
    finally:
        if bar is not None:
            bar.close()
    return seconds, tokens


# --- report --------------------------------------------------------------------------------------

COLUMNS = (
    "model",
    "accuracy [95% CI]",
    "format %",
    "truncated %",
    "mean tokens",
    "agreement w/ teacher",
    "similarity w/ teacher",
)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def table_rows(metrics: dict[str, Any]) -> list[list[str]]:
    rows = []
    for label, m in metrics["per_model"].items():
        rows.append(
            [
                label,
                f"{100 * m['accuracy']:.1f}% [{100 * m['ci_low']:.1f}, {100 * m['ci_high']:.1f}]"
                f" ({m['correct']}/{m['n']})",
                _pct(m["format_rate"]),
                _pct(m["truncation_rate"]),
                f"{m['mean_completion_tokens']:.1f}",
                _pct(m["agreement"]),
                "-" if m["similarity"] is None else f"{m['similarity']:.3f}",
            ]
        )
    return rows


def mcnemar_lines(metrics: dict[str, Any]) -> list[str]:
    lines = []
    for t in metrics["mcnemar"].values():
        lines.append(
            f"McNemar {t['a']} vs {t['b']}: {t['b10']} right only for {t['a']}, "
            f"{t['b01']} right only for {t['b']}, exact p = {t['p_value']:.4g} "
            f"(n = {t['n']})"
        )
    return lines


def render_report(metrics: dict[str, Any]) -> str:
    lines = [
        f"# Eval: {metrics['task']}",
        "",
        f"Held-out questions: {metrics['questions']} (held out before generation, never used for training). "
        f"Sampling: temperature {metrics['sampling']['temperature']}, "
        f"max_tokens {metrics['sampling']['max_tokens']}.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(metrics)]
    lines.append("")
    lines.append(
        "Accuracy with a Wilson 95% interval. Format: completions with an `Answer:` line. "
        "Agreement: share of questions where the model's extracted answer equals the teacher's; "
        "similarity: mean ROUGE-L F1 with the teacher's text."
    )
    if metrics["mcnemar"]:
        lines.append("")
        lines += [f"- {x}" for x in mcnemar_lines(metrics)]
    if metrics.get("skipped"):
        lines += ["", f"Skipped (no input): {', '.join(metrics['skipped'])}."]
    lines += ["", "![accuracy](accuracy.png)", ""]
    return "\n".join(lines)


def plot_accuracy(metrics: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(metrics["per_model"])
    acc = [metrics["per_model"][k]["accuracy"] for k in labels]
    lo = [a - metrics["per_model"][k]["ci_low"] for k, a in zip(labels, acc, strict=True)]
    hi = [metrics["per_model"][k]["ci_high"] - a for k, a in zip(labels, acc, strict=True)]
    fig, ax = plt.subplots(figsize=(1.6 * max(3, len(labels)) + 1, 4), dpi=100)
    colors = ["#4c72b0", "#8c8c8c", "#55a868", "#c44e52"]
    bars = ax.bar(
        labels,
        [100 * a for a in acc],
        yerr=[[100 * x for x in lo], [100 * x for x in hi]],
        capsize=6,
        color=[colors[MODELS.index(k) % len(colors)] if k in MODELS else "#999" for k in labels],
    )
    for b, a, top in zip(bars, acc, hi, strict=True):
        ax.annotate(
            f"{100 * a:.1f}%",
            (b.get_x() + b.get_width() / 2, 100 * (a + top)),  # above the error bar
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{metrics['task']}: {metrics['questions']} held-out questions (95% Wilson CI)")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)


def print_table(metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    t = Table(
        title=f"eval: {metrics['task']}, {metrics['questions']} held-out questions",
        title_justify="left",
    )
    for c in ("model", "accuracy [95% CI]", "format%", "trunc%", "tokens", "agree%", "sim"):
        t.add_column(c)
    for r in table_rows(metrics):
        t.add_row(*(Text(x) for x in r))  # '[95% CI]' and model names are text, not markup
    console = Console(highlight=False)
    console.print(t)
    for line in mcnemar_lines(metrics):
        console.print(Text(line))


def progress(cfg: Config, out: Path) -> str:
    """For `distill status`: predictions already made for this key."""
    n = len(load_task(cfg.task).eval) * len(model_labels(cfg))
    have = {r["id"] for r in read_jsonl_tolerant(Path(out) / PREDICTIONS, check_prediction).rows}
    return f"{len(have)} of up to {n} predictions"
