"""`distill plan`: what generate will ask each teacher for and what it will cost, before it asks.

Per teacher, from the plan generate itself would follow (stages/generate/strategy.py):

- samples: fixed, n per question; adaptive, a range from every question stopping after its
  fewest rounds (each sample verified and distinct) to every question drawing max_samples; a
  cascade's later teachers, from no question reaching them to every question at its worst;
- held: the planned samples the pool (and the shards' pools) already holds, never asked again;
- tokens: the held samples' own usage, plus for each sample still to ask the mean prompt and
  completion tokens per sample of this teacher's held samples. The completion figure carries
  two standard errors of the mean over questions (samples of one question are not
  independent), with the share of those samples that verify;
- likely (adaptive; not a cascade's later teachers): the draws and the questions never solved to
  expect between the best and worst case, from each question's rate of counted samples in the pool
  (stages/generate/expected.py).

Where the pool holds samples of fewer than `pilot` of a teacher's questions, the pilot asks that
teacher for the first round of `pilot` questions spread evenly through the train split: samples
a fixed run asks for anyway (an adaptive or cascade run may not reach all of them), kept in
the pool, so the run never pays for them twice. Nothing else is asked.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.budget import usd
from pipeline.config import Config
from pipeline.reasoning import Convention
from stages.generate.expected import Expected, expected
from stages.generate.samples import Planned, prompt_tokens_of
from stages.generate.strategy import TeacherPlan, cap
from stages.shared.verify import verified


def pilot_questions(questions: list[str], pilot: int) -> list[str]:
    """`pilot` questions spread evenly through the list (all of them when it is shorter): a run
    of the first ones would tell only about the start of a file that may be sorted."""
    if pilot >= len(questions):
        return list(questions)
    return [questions[i * len(questions) // pilot] for i in range(pilot)]


def pilot_samples(
    cfg: Config, tp: TeacherPlan, questions: list[str], have: Mapping[str, dict], pilot: int
) -> list[Planned]:
    """The first round of the pilot's questions that the pool lacks; [] when the pool already
    holds this teacher's samples of `pilot` questions or more."""
    held_q = {
        p.question.id for ps in tp.samples.values() for p in ps[: cap(cfg)] if p.request.id in have
    }
    if len(held_q) >= min(pilot, len(questions)):
        return []
    first = [p for q in pilot_questions(questions, pilot) for p in tp.samples[q][: cfg.generate.n]]
    return [p for p in first if p.request.id not in have]


def _usage(row: dict[str, Any], convention: Convention) -> tuple[str, int, int, bool]:
    c = row["usage"]["completion_tokens"]
    return row["question_id"], c, prompt_tokens_of(row), verified(row, convention)


@dataclass
class Estimate:
    """One teacher's part of the plan; lo/hi are the strategy's best and worst case."""

    label: str
    samples: tuple[int, int]  # planned
    held: tuple[int, int]  # of those, in the pool
    prompt: tuple[float, float]  # expected tokens of the planned samples, held ones exact
    completion: tuple[float, float]
    completion_error: tuple[float, float]  # +- two standard errors, on the samples to ask
    basis: int  # held samples the means come from
    basis_questions: int
    completion_per_sample: float  # their means
    prompt_per_sample: float
    verified_share: float | None  # of the basis samples
    expected: Expected | None = None  # adaptive: the likely draws (stages/generate/expected.py)


def estimate(
    cfg: Config, tp: TeacherPlan, questions: list[str], have: Mapping[str, dict]
) -> Estimate:
    """Teacher `tp`'s planned samples, held and expected tokens (module doc)."""
    g = cfg.generate
    most = cap(cfg)
    fewest = (
        min(most, math.ceil(g.target_verified / g.n) * g.n) if g.strategy == "adaptive" else most
    )
    later = g.combine == "cascade" and tp.index > 0  # reached only by questions left short
    per_q = {"lo": 0 if later else fewest, "hi": most}
    # each held sample's question, completion and prompt tokens and verdict: a tuple per row,
    # read from the pool once, not the rows
    convention = Convention.of(tp.teacher)
    used = {
        p.request.id: _usage(have[p.request.id], convention)
        for ps in tp.samples.values()
        for p in ps[:most]
        if p.request.id in have
    }
    by_q: dict[str, list[int]] = {}
    for q, c, _, _ in used.values():
        by_q.setdefault(q, []).append(c)
    mean_c = statistics.fmean(u[1] for u in used.values()) if used else 0.0
    mean_p = statistics.fmean(u[2] for u in used.values()) if used else 0.0
    q_means = [statistics.fmean(xs) for xs in by_q.values()]
    se = statistics.stdev(q_means) / math.sqrt(len(q_means)) if len(q_means) > 1 else math.inf
    out: dict[str, list[float]] = {
        k: [] for k in ("samples", "held", "prompt", "completion", "err")
    }
    for case in ("lo", "hi"):
        planned = [p for q in questions for p in tp.samples[q][: per_q[case]]]
        held = [used[p.request.id] for p in planned if p.request.id in used]
        ask = len(planned) - len(held)
        out["samples"].append(len(planned))
        out["held"].append(len(held))
        out["prompt"].append(sum(u[2] for u in held) + ask * mean_p)
        out["completion"].append(sum(u[1] for u in held) + ask * mean_c)
        out["err"].append(2 * se * ask if ask else 0.0)
    return Estimate(
        tp.label,
        *(_pair(out[k]) for k in ("samples", "held", "prompt", "completion", "err")),
        basis=len(used),
        basis_questions=len(by_q),
        completion_per_sample=mean_c,
        prompt_per_sample=mean_p,
        verified_share=sum(u[3] for u in used.values()) / len(used) if used else None,
        expected=None if later else expected(cfg, tp, questions, have),
    )


def _pair(xs: list[float]) -> tuple:
    return xs[0], xs[1]


def render(cfg: Config, estimates: list[Estimate], questions: int, piloted: int) -> str:
    """The plan as the console shows it; a range where the strategy leaves one."""
    g = cfg.generate
    how = (
        f"adaptive (rounds of {g.n}, until {g.target_verified} verified or {g.max_samples})"
        if g.strategy == "adaptive"
        else f"fixed (n={g.n})"
    )
    lines = [
        f"plan: {questions:,} questions, {how}"
        + (f", teachers in {g.combine}" if len(estimates) > 1 else "")
        + (f"; the pilot asked {piloted} samples now, kept in the pool" if piloted else "")
    ]
    totals = [[0.0, 0.0], [0.0, 0.0]]  # prompt, completion: lo, hi
    known = True
    for e in estimates:
        ask = (e.samples[0] - e.held[0], e.samples[1] - e.held[1])
        head = f"teacher {e.label}: {_span(e.samples)} samples, {_span(e.held)} in the pool, "
        head += f"{_span(ask)} to ask"
        if not e.basis:
            known = False
            lines.append(f"{head}; no estimate: the pool holds none of its samples (--pilot N)")
            continue
        share = e.verified_share or 0.0
        lines.append(
            f"{head}\n  expected completion tokens {_span(e.completion)}"
            f" ({_error(e.completion_error)}), prompt tokens {_span(e.prompt)}"
            f"\n  from {e.basis:,} samples of {e.basis_questions:,} questions in the pool: "
            f"{e.completion_per_sample:,.1f} completion and {e.prompt_per_sample:,.1f} prompt "
            f"tokens per sample, {100 * share:.0f}% verified"
        )
        if e.expected:
            lines.append(_likely(e, e.expected))
        for t, part in zip(totals, (e.prompt, e.completion), strict=True):
            t[0] += part[0]
            t[1] += part[1]
    if known and len(estimates) > 1:
        lines.append(
            f"all teachers: completion tokens {_span(tuple(totals[1]))}, prompt tokens "
            f"{_span(tuple(totals[0]))}"
        )
    if known:
        lo = usd(cfg.budget, int(totals[0][0]), int(totals[1][0]))
        hi = usd(cfg.budget, int(totals[0][1]), int(totals[1][1]))
        if lo is not None and hi is not None:
            lines.append(f"cost at budget's prices: {_span((lo, hi), '${:,.2f}')}")
    return "\n".join(lines)


def _likely(e: Estimate, x: Expected) -> str:
    ask = max(0.0, x.samples - e.held[1])
    return (
        f"  likely: about {x.samples:,.0f} samples ({ask:,.0f} to ask, about "
        f"{ask * e.completion_per_sample:,.0f} completion tokens) and {x.unsolved:,.1f} "
        f"question(s) never solved, if each question's samples count (verified, not a copy) at "
        f"its rate in the pool ({x.basis_questions:,} questions; the others at their mean)"
    )


def plan_totals(
    estimates: list[Estimate],
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Every teacher's prompt and completion tokens (low, high); None when one is unknown."""
    if any(not e.basis for e in estimates):
        return None
    return (
        (sum(e.prompt[0] for e in estimates), sum(e.prompt[1] for e in estimates)),
        (sum(e.completion[0] for e in estimates), sum(e.completion[1] for e in estimates)),
    )


def _error(pair: tuple[float, float]) -> str:
    if math.isinf(pair[1]):
        return "spread unknown: the pool's samples are of one question"
    return f"+- {_span(pair)} on those to ask"


def _span(pair: tuple, fmt: str = "{:,.0f}") -> str:
    lo, hi = pair
    return fmt.format(lo) if round(lo) == round(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"
