"""What the report shows, read from a run's stage dirs into plain dataclasses.

`resolve` finds the stage dirs of a config exactly as `distill status` does (it calls it), so the
report never shows a key the chain would not use. `collect` reads only those dirs: each section is
read on its own and a stage that is not complete, or a file that cannot be read, leaves that
section empty with a note, never an exception (a report is written after every run, also of
runs that stopped half-way)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.htmlreport.samples import Samples, cut, jsonl, last_user, read_samples
from pipeline.report import epochs_auto_text

MAIN = ("generate", "filter", "train", "eval")  # the stages whose outputs have a section


@dataclass
class StageInfo:
    """One row of the chain table: a stage of the config's chains as `distill status` sees it."""

    label: str  # "train", or "train_answer_only/train" for a step of an extra chain
    state: str  # complete | partial | missing | stale | corrupt | error
    key: str = ""
    dir: Path | None = None
    seconds: float | None = None
    ended: str = ""
    rows: dict[str, int] = field(default_factory=dict)
    note: str = ""
    stats: dict[str, Any] = field(default_factory=dict)  # the manifest's stats, when complete


@dataclass
class TeacherFunnel:
    name: str
    samples: int
    verified: int
    kept: int
    reasons: dict[str, int]  # counted from rejected.jsonl: report.json has no per-teacher reasons


@dataclass
class Funnel:
    input: int
    kept: int
    rejected: int
    reasons: dict[str, int]  # most common first, as report.json keeps them
    teachers: list[TeacherFunnel]
    questions_total: int = 0
    questions_with_kept: int = 0
    advice: list[str] = field(default_factory=list)


@dataclass
class Curve:
    name: str
    points: list[tuple[float, float]]


@dataclass
class Training:
    x: str  # "step", or "round" for on-policy training
    curves: list[Curve]  # the training loss (and on-policy's reverse KL)
    validation: list[tuple[float, float]]  # (step, accuracy)
    selected: float | None
    why: str  # in words: which step the stage kept, and by which rule
    facts: list[tuple[str, str]]  # a few of train_stats.json, for a table


@dataclass
class ModelRow:
    name: str
    accuracy: float
    ci_low: float | None
    ci_high: float | None
    correct: int
    n: int
    format_rate: float | None
    truncation_rate: float | None
    mean_tokens: float | None
    agreement: float | None
    similarity: float | None


@dataclass
class McNemar:
    pair: str
    a: str
    b: str
    a_only: int  # b10: right for a only
    b_only: int  # b01: right for b only
    n: int
    p_value: float


@dataclass
class Disagreement:
    """One eval question two models answered differently, with both answers."""

    qid: str
    gold: str
    question: str
    right_pred: str  # the model that was right
    right_text: str
    wrong_pred: str
    wrong_text: str


@dataclass
class EvalData:
    task: str
    models: list[ModelRow]
    mcnemar: list[McNemar]
    # (right model, wrong model) -> questions: teacher right & student wrong, and the reverse
    disagreements: dict[tuple[str, str], list[Disagreement]]
    # report.md's sections for what eval measured beyond accuracy, when it did: (heading, lines)
    extras: list[tuple[str, list[str]]] = field(default_factory=list)


@dataclass
class RunData:
    run: str
    stages: list[StageInfo]
    splits: dict[str, int]
    funnel: Funnel | None = None
    samples: Samples | None = None
    training: Training | None = None
    eval: EvalData | None = None
    notes: dict[str, str] = field(default_factory=dict)  # section -> why it is empty


def resolve(cfg: Config) -> list[StageInfo]:
    """Every stage of the config's chains, with its dir and state: `distill status`'s rows."""
    from pipeline.cache import read_manifest
    from pipeline.status import status

    out = []
    for s in status(cfg):
        info = StageInfo(s.name, s.state, s.key, Path(s.dir) if s.dir else None)
        info.seconds, info.ended, info.rows, info.note = s.seconds, s.ended, s.rows, s.note
        if s.state == "complete" and info.dir is not None:
            info.stats = (read_manifest(info.dir) or {}).get("stats") or {}
        out.append(info)
    return out


def splits_of(cfg: Config) -> dict[str, int]:
    """The task's split sizes, from the kept task facts (a task that cannot be read: none)."""
    from pipeline.taskfacts import task_facts

    try:
        return dict(task_facts(cfg.task, cfg.cache_dir).sizes)
    except Exception:  # the report of a run whose task file moved still shows the rest
        return {}


def collect(run: str, stages: list[StageInfo], splits: dict[str, int]) -> RunData:
    """Read every section of the main chain's complete stages (a note for each one not read)."""
    data = RunData(run, stages, splits)
    done = {s.label: s.dir for s in stages if s.state == "complete" and s.dir is not None}
    readers: dict[str, tuple[str, Callable[[Path], Any]]] = {
        "funnel": ("filter", read_funnel),
        "samples": ("filter", read_samples),
        "training": ("train", read_training),
        "eval": ("eval", read_eval),
    }
    for section, (stage, reader) in readers.items():
        d = done.get(stage)
        if d is None:
            state = next((s.state for s in stages if s.label == stage), "missing")
            data.notes[section] = f"{stage} not run ({state})"
            continue
        try:
            setattr(data, section, reader(d))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            # A damaged file costs its own section only: the rest of the report is still useful.
            data.notes[section] = f"could not read {stage} at {d}: {type(e).__name__}: {e}"
    if not data.splits and data.funnel is not None:
        data.splits = _read_json(done["filter"] / "report.json").get("splits", {})
    return data


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def read_funnel(d: Path) -> Funnel:
    """filter's report.json: samples in, dropped per reason, kept; per teacher."""
    r = _read_json(d / "report.json")
    per_teacher: dict[str, dict[str, int]] = {}
    if len(r.get("teachers") or {}) > 1:  # only then is a per-teacher split worth a read
        for row in jsonl(d / "rejected.jsonl"):
            t = per_teacher.setdefault(str(row.get("teacher", "")), {})
            t[str(row.get("reason"))] = t.get(str(row.get("reason")), 0) + 1
    teachers = [
        TeacherFunnel(
            name,
            int(t.get("samples", 0)),
            int(t.get("verified", 0)),
            int(t.get("kept", 0)),
            per_teacher.get(name, {}),
        )
        for name, t in (r.get("teachers") or {}).items()
    ]
    return Funnel(
        int(r["input"]),
        int(r["kept"]),
        int(r["rejected"]),
        {str(k): int(v) for k, v in (r.get("reasons") or {}).items()},
        teachers,
        int(r.get("questions_total", 0)),
        int(r.get("questions_with_kept", 0)),
        [str(a) for a in r.get("advice") or []],
    )


def read_training(d: Path) -> Training:
    """train_log.jsonl, validation.jsonl and train_stats.json: the curves and the choice."""
    log = list(jsonl(d / "train_log.jsonl"))
    stats = _read_json(d / "train_stats.json") if (d / "train_stats.json").is_file() else {}
    rounds = any("round" in r for r in log)
    x = "round" if rounds else "step"
    names = ("loss", "reverse_kl") if rounds else ("loss",)
    curves = [
        Curve(n, [(float(r[x]), float(r[n])) for r in log if r.get(n) is not None and x in r])
        for n in names
    ]
    val = [
        (float(r["step"]), float(r["accuracy"]))
        for r in jsonl(d / "validation.jsonl")
        if r.get("accuracy") is not None and "step" in r
    ]
    selected = stats.get("selected_step")
    facts = [
        (k, _fact(stats[k]))
        for k in ("objective", "examples", "epochs", "steps", "tokens", "final_loss", "lora")
        if k in stats
    ]
    return Training(
        x,
        [c for c in curves if c.points],
        val,
        None if selected is None else float(selected),
        _why(stats, x, val),
        facts,
    )


def _fact(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _why(stats: dict[str, Any], x: str, val: list[tuple[float, float]]) -> str:
    """Which model the stage kept, and by which rule (train.select)."""
    sel, rule = stats.get("selected_step"), stats.get("select", "")
    if sel is None or not val:
        return f"no validation measured: the stage's model is the last {x}'s"
    acc = stats.get("selected_validation_accuracy")
    acc_text = f"validation accuracy {acc:.3f}" if isinstance(acc, (int, float)) else "unmeasured"
    if rule == "best":
        why = (
            f"select: best — {x} {sel} has the highest validation accuracy of the "
            f"{len(val)} measured ({acc_text}; the earliest of equals)"
        )
    else:
        why = f"select: {rule or 'last'} — the last {x}, {sel} ({acc_text})"
    auto = stats.get("epochs_auto")
    if isinstance(auto, dict):  # train.epochs: auto (stages/train/epochs.py): how many, and why
        why += "; " + epochs_auto_text(auto)
    return why


def read_eval(d: Path) -> EvalData:
    """metrics.json's table and McNemar tests; from predictions.jsonl, the questions on which
    the teacher and the student disagree on correctness, both answers side by side."""
    m = _read_json(d / "metrics.json")
    per = m.get("per_model") or {}
    models = [_model_row(name, per[name]) for name in m.get("models") or per if name in per]
    tests = [
        McNemar(pair, v["a"], v["b"], int(v["b10"]), int(v["b01"]), int(v["n"]), v["p_value"])
        for pair, v in (m.get("mcnemar") or {}).items()
    ]
    names = [r.name for r in models]
    pairs = [("teacher", "student"), ("student", "teacher")]
    pairs = [p for p in pairs if set(p) <= set(names)]
    extras = _extras(d / "report.md")
    return EvalData(str(m.get("task", "")), models, tests, _disagreements(d, pairs), extras)


# The headings eval's report.md gives its optional parts (stages/eval/report.py: render_report).
EXTRAS = ("Reasoning traces", "As a speculative-decoding draft", "Identity")


def _extras(path: Path) -> list[tuple[str, list[str]]]:
    """The draft, identity and reasoning-trace parts of eval's report.md, as eval wrote them:
    read from its text rather than recomputed from metrics.json, so the two never disagree."""
    if not path.is_file():
        return []
    out: list[tuple[str, list[str]]] = []
    for line in path.read_text().splitlines():
        if line.startswith(EXTRAS):
            out.append((line, []))
        elif out and line.startswith("- "):
            out[-1][1].append(line[2:])
    return out


def _model_row(name: str, v: dict[str, Any]) -> ModelRow:
    return ModelRow(
        name,
        float(v["accuracy"]),
        v.get("ci_low"),
        v.get("ci_high"),
        int(v.get("correct", 0)),
        int(v.get("n", 0)),
        v.get("format_rate"),
        v.get("truncation_rate"),
        v.get("mean_completion_tokens"),
        v.get("agreement"),
        v.get("similarity"),
    )


def _disagreements(
    d: Path, pairs: list[tuple[str, str]]
) -> dict[tuple[str, str], list[Disagreement]]:
    """For each (right, wrong) pair: the questions the first model got right, the second not."""
    wanted = {name for p in pairs for name in p}
    by_model: dict[str, dict[str, dict[str, Any]]] = {n: {} for n in wanted}
    for row in jsonl(d / "predictions.jsonl"):
        name = row.get("model")
        if name in wanted:  # keep only what the table shows: eval sets can be large
            by_model[name][str(row.get("question_id"))] = {
                "correct": bool(row.get("correct")),
                "pred": str(row.get("pred") or ""),
                "text": cut(str(row.get("completion") or "")),
                "gold": str(row.get("gold") or ""),
                "question": cut(last_user(row.get("messages"))),
            }
    out: dict[tuple[str, str], list[Disagreement]] = {}
    for right, wrong in pairs:
        a, b = by_model[right], by_model[wrong]
        out[(right, wrong)] = [
            Disagreement(
                q,
                a[q]["gold"],
                b[q]["question"],
                a[q]["pred"],
                a[q]["text"],
                b[q]["pred"],
                b[q]["text"],
            )
            for q in sorted(a)
            if q in b and a[q]["correct"] and not b[q]["correct"]
        ]
    return out
