"""Advice in plain words: at most three concrete suggestions where a stage's numbers call for
them, each naming the knob and the figure that set it off. generate's, filter's and train's
stats keep them (`advice`), their summaries print them last and the dataset card ends with
filter's. The thresholds are ours and stated here; they say where a change is worth trying,
not that it will help."""

from __future__ import annotations

from typing import Any

from pipeline.config import Config
from stages.shared.intervals import noise

COPIES = 0.20  # of the samples dropped as exact or near copies of their question's others
NEVER_SOLVED = 0.20  # of the questions, no sample of which verified
TRUNCATED = 0.10  # of the samples, cut at max_tokens
MOST = 3


def _truncated(cfg: Config, share: float) -> str:
    return (
        f"{share:.0%} of the samples were cut at generate.sampling.max_tokens "
        f"({cfg.generate.sampling.max_tokens}): raise it, or their answers are lost"
    )


def generate_advice(cfg: Config, truncation_rate: float) -> list[str]:
    """What generate's own numbers say: its truncation."""
    return [_truncated(cfg, truncation_rate)] if truncation_rate >= TRUNCATED else []


def filter_advice(cfg: Config, report: dict[str, Any]) -> list[str]:
    """What filter's report says of the teacher's samples (stages/filter/report.py)."""
    n, reasons, out = report["input"], report["reasons"], []
    copies = reasons.get("exact_duplicate", 0) + reasons.get("near_duplicate", 0)
    if n and copies / n >= COPIES:
        out.append(
            f"{copies / n:.0%} of the samples copied another of their question: raise "
            f"generate.sampling.temperature ({cfg.generate.sampling.temperature}) or stop "
            "sampling a question once it is solved (generate.strategy=adaptive)"
        )
    questions, never = report["questions_total"], report["pass_rate"]["never_solved"]
    if questions and never / questions >= NEVER_SOLVED:
        out.append(
            f"{never:,} of {questions:,} questions were never solved: more samples per question "
            f"(generate.n, {cfg.generate.n} now) or a stronger teacher (teacher.model)"
        )
    cut = report.get("truncated_seen", 0)
    if n and cut / n >= TRUNCATED:
        out.append(_truncated(cfg, cut / n))
    return out[:MOST]


def train_advice(cfg: Config, validation: list[dict[str, Any]], units: int = 0) -> list[str]:
    """A student still improving at its last validation: more epochs may pay (under epochs:
    auto, only when it ran out of train.max_epochs). With `units`, what the validation split
    resolves (stages/train/epochs.py: units_of), a rise within noise says nothing."""
    if len(validation) < 2 or cfg.train.max_steps > 0:
        return []
    last, before = validation[-1]["accuracy"], validation[-2]["accuracy"]
    if last <= before or last < max(v["accuracy"] for v in validation):
        return []
    if units and last - before <= noise(before, units):
        return []
    t = cfg.train
    if t.epochs == "auto" and validation[-1]["epoch"] < t.max_epochs:
        return []  # the rule stopped it: the rise was within noise
    knob = (
        f"train.max_epochs, {t.max_epochs}" if t.epochs == "auto" else f"train.epochs, {t.epochs:g}"
    )
    return [
        f"the student was still improving at its last validation ({before:.1%} -> "
        f"{last:.1%}): more epochs may pay ({knob} now)"
    ]


def advice_lines(advice: list[str]) -> list[str]:
    """The summary's closing lines."""
    return [f"advice: {a}" for a in advice]
