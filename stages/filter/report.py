"""filter's report.json, counted as pass two streams the samples by (stages/filter/passes.py):
counts per reason, histograms, contamination matches, per teacher what came in and was kept,
the teacher's tokens on kept and dropped samples, and every question's pass rate. What it holds
per sample is a few numbers."""

from __future__ import annotations

import json
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.reasoning import Convention
from pipeline.records import atomic_open
from pipeline.tasks import Task
from stages.filter.passes import Decided, Outcome, rate
from stages.shared.advice import filter_advice

PER_QUESTION = "\u0000per_question\u0000"  # where write_report puts the questions' rates
SCORED = ("tokens", "repetition", "reasoning_words", "answer_words")  # histograms of scores
MATCHES = 100  # contamination matches listed in the report


def _tokens() -> dict[str, int]:
    return dict.fromkeys(("prompt", "completion", "prompt_on_dropped", "completion_on_dropped"), 0)


@dataclass
class Tally:
    """The report's counts, one sample at a time."""

    reasons: Counter = field(default_factory=Counter)
    kept_per_question: Counter = field(default_factory=Counter)
    kept_per_teacher: Counter = field(default_factory=Counter)
    truncated_seen: int = 0
    matches: list[dict] = field(default_factory=list)
    scored: dict[str, array] = field(default_factory=lambda: {k: array("d") for k in SCORED})
    kept_tokens: array = field(default_factory=lambda: array("q"))  # for the dataset card
    tokens: dict[str, dict[str, int]] = field(default_factory=dict)  # by teacher

    def add(self, o: Outcome) -> None:
        s, r = o.scores, o.row
        self.truncated_seen += bool(s.get("truncated"))
        for k in SCORED:
            if k in s:
                self.scored[k].append(s[k])
        t = r.get("teacher", "")
        spent = self.tokens.setdefault(t, _tokens())
        for part in ("prompt", "completion"):
            n = int((r.get("usage") or {}).get(f"{part}_tokens") or 0)
            spent[part] += n
            if o.reason is not None:
                spent[f"{part}_on_dropped"] += n
        if o.reason is None:
            self.kept_per_question[r["question_id"]] += 1
            self.kept_per_teacher[t] += 1
            self.kept_tokens.append(int(s.get("tokens", 0)))
            return
        self.reasons[o.reason] += 1
        if o.reason == "contaminated" and len(self.matches) < MATCHES:
            self.matches.append(
                {
                    "id": r["id"],
                    "match": o.detail.get("match"),
                    "eval_question": o.detail.get("eval_question"),
                }
            )

    @property
    def kept(self) -> int:
        return sum(self.kept_per_teacher.values())


def report(cfg: Config, task: Task, d: Decided, tally: Tally) -> dict[str, Any]:
    """report.json, from the passes' decisions and pass two's counts."""
    kept, rows = tally.kept, len(d.ids)
    out: dict[str, Any] = {
        "input": rows,
        "kept": kept,
        "rejected": sum(tally.reasons.values()),
        "reasons": dict(tally.reasons.most_common()),
        "checks": list(cfg.filter.checks),
        "truncated_seen": tally.truncated_seen,
        "questions_with_kept": len(tally.kept_per_question),
        "questions_total": len(d.counts),
        "splits": task.sizes(),
        "histograms": {
            "tokens": histogram(tally.scored["tokens"]),
            "repetition": histogram(tally.scored["repetition"]),
            "kept_per_question": dict(sorted(Counter(tally.kept_per_question.values()).items())),
        },
        "contamination_matches": tally.matches,
        # eval n-grams the train questions share (the task's template), set aside, and the
        # samples whose only overlap with eval was such text: kept, counted here
        "decontamination": {
            "contaminated": tally.reasons.get("contaminated", 0),
            "template_ngrams": d.template.get("ngrams", 0),
            "template_only_samples": d.template.get("samples", 0),
        },
    }
    out["teachers"] = _teacher_report(d, tally)
    out["tokens"] = token_report(_sum_tokens(tally.tokens.values()), kept)
    for t, v in out["teachers"].items():
        v["tokens"] = token_report(tally.tokens.get(t, _tokens()), v["kept"])
    out["pass_rate"] = _pass_rate_report([d.overall_of(q) for q in d.counts])
    out["advice"] = filter_advice(cfg, out)
    if d.traces["with_trace"]:  # a teacher without traces gets the report it always had
        out["reasoning"] = {
            "mode": Convention.of(cfg.lead_teacher()).mode,
            "with_trace": d.traces["with_trace"],
            "unclosed": d.traces["unclosed"],
            "source": {
                k.removeprefix("source:"): v
                for k, v in d.traces.most_common()
                if k.startswith("source:")
            },
        }
    for part in ("reasoning_words", "answer_words"):
        if tally.scored[part]:
            out["histograms"][part] = histogram(tally.scored[part])
    if out["kept"] + out["rejected"] != out["input"]:
        raise RuntimeError("filter lost or doubled a record")  # a bug, never a user's mistake
    return out


def histogram(values: Any, bins: int = 10) -> dict[str, Any]:
    if not values:
        return {"edges": [], "counts": []}
    lo, hi = min(values), max(values)
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    return {"edges": [round(lo + i * width, 4) for i in range(bins + 1)], "counts": counts}


def _teacher_report(d: Decided, tally: Tally) -> dict[str, dict[str, Any]]:
    """Per teacher: samples in, verified, kept, and the questions it solved at least once."""
    names = d.teachers  # in the order they first came
    sums = [[0, 0, 0, 0] for _ in names]  # samples, verified, questions, questions solved
    for c in d.counts.values():
        for k in range(0, len(c), 3):
            s = sums[c[k]]
            s[0] += c[k + 2]
            s[1] += c[k + 1]
            s[2] += 1
            s[3] += c[k + 1] > 0
    return {
        t: {
            "samples": s[0],
            "verified": s[1],
            "kept": tally.kept_per_teacher[t],
            "questions": s[2],
            "questions_solved": s[3],
        }
        for t, s in zip(names, sums, strict=True)
    }


def _sum_tokens(parts: Any) -> dict[str, int]:
    total = _tokens()
    for p in parts:
        for k, v in p.items():
            total[k] += v
    return total


def token_report(spent: dict[str, int], kept: int) -> dict[str, Any]:
    """What the teacher's tokens bought: all of them, those spent on samples the filter dropped,
    and the tokens per kept sample (what one training row cost, the dropped ones included)."""
    out: dict[str, Any] = {}
    for part in ("prompt", "completion"):
        out[part] = spent[part]
        out[f"{part}_on_dropped"] = spent[f"{part}_on_dropped"]
        out[f"{part}_per_kept"] = round(spent[part] / kept, 1) if kept else None
    return out


def _pass_rate_report(values: list[float]) -> dict[str, Any]:
    """How hard the questions were for the teachers: every question's rate, and their spread.
    With generate.strategy adaptive a rate is the one observed, which the stopping rule tilts
    (a question stops after its successes)."""
    return {
        "mean": round(sum(values) / len(values), 4) if values else None,
        "never_solved": sum(v == 0 for v in values),
        "always_solved": sum(v == 1 for v in values),
        "histogram": histogram(values, 5),
        "per_question": PER_QUESTION,  # written by write_report, one question at a time
    }


def write_report(path: Path, report: dict[str, Any], d: Decided) -> None:
    """report.json as atomic_write_json writes it (indented, keys sorted), with every
    question's rates streamed in where `report` holds PER_QUESTION: a million questions' rates
    as one dict, then one string, cost more than the filter's passes."""
    text = json.dumps(report, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    head, tail = text.split(json.dumps(PER_QUESTION))
    line = head[head.rindex("\n") + 1 :]
    indent = line[: len(line) - len(line.lstrip(" "))]  # the per_question key's
    inner = indent + "  "
    with atomic_open(path) as f:
        f.write(head + "{")
        for n, q in enumerate(sorted(d.counts)):
            value = {t: {"verified": v[0], "sampled": v[1]} for t, v in d.by_teacher(q).items()}
            body = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
            key = json.dumps(q, ensure_ascii=False)
            f.write(
                ("," if n else "") + "\n" + inner + key + ": " + body.replace("\n", "\n" + inner)
            )
        f.write(("\n" + indent + "}" if d.counts else "}") + tail)


def rates_of(d: Decided, question: str) -> dict[str, float]:
    """A question's pass rate per teacher, as its kept rows carry it."""
    return {t: rate(*v) for t, v in d.by_teacher(question).items()}
