"""`distill plan`'s expectation for adaptive sampling: how many samples the rounds will likely
draw and how many questions will end with no verified sample, between the plan's best and worst
case (stages/generate/plan.py).

The model: each draw of a question counts (verified, not a copy of one it counts: the tally of
stages/generate/strategy.py) with that question's rate in the pool, smoothed as (counted + 1/2)
/ (drawn + 1) so a question the pilot saw fail once is not taken as hopeless; questions the pool
holds none of take the mixture of the others. Draws are independent within a question and
rounds stop at the target or the cap, as the strategy does. Reheat is left out: it only raises
the rate of questions that repeat, so the expectation leans high on samples when it is on.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.config import Config
from pipeline.reasoning import Convention
from stages.generate.strategy import TeacherPlan, cap, tally


@dataclass(frozen=True)
class Expected:
    samples: float  # the rounds' draws over every question, held ones included
    unsolved: float  # questions expected to end with no verified sample
    basis_questions: int  # questions whose rate came from the pool


def expected_draws(p: float, n: int, target: int, most: int) -> tuple[float, float]:
    """One question's expected draws, and the chance it ends with none counted, when each draw
    counts with probability `p`: rounds of `n`, stopping at `target` counted or `most` drawn."""
    active = {0: 1.0}  # counted so far -> probability, among the outcomes still drawing
    draws, drawn = 0.0, 0
    while drawn < most and active:
        k = min(n, most - drawn)
        draws += k * sum(active.values())
        after: dict[int, float] = {}
        for c, pr in active.items():
            for j in range(k + 1):
                after[c + j] = after.get(c + j, 0.0) + pr * math.comb(k, j) * p**j * (1 - p) ** (
                    k - j
                )
        drawn += k
        active = {c: pr for c, pr in after.items() if c < target}
    return draws, active.get(0, 0.0)


def expected(
    cfg: Config, tp: TeacherPlan, questions: list[str], have: Mapping[str, dict]
) -> Expected | None:
    """Teacher `tp`'s expected draws and unsolved questions under adaptive sampling, from the
    samples the pool holds (module doc); None for a fixed strategy or an empty basis."""
    g = cfg.generate
    if g.strategy != "adaptive":
        return None
    t = tally(cfg, Convention.of(tp.teacher))
    drawn: dict[str, int] = {}
    for q in questions:
        for p in tp.samples[q][: cap(cfg)]:
            row = have.get(p.request.id)
            if row is None:
                break  # the rounds draw in index order: a gap ends what the pool says
            t.add(row)
            drawn[q] = drawn.get(q, 0) + 1
    if not drawn:
        return None
    one = {
        q: expected_draws((t.count[q] + 0.5) / (d + 1), g.n, g.target_verified, cap(cfg))
        for q, d in drawn.items()
    }
    rest = len(questions) - len(one)
    mix = (
        statistics.fmean(x[0] for x in one.values()),
        statistics.fmean(x[1] for x in one.values()),
    )
    return Expected(
        sum(x[0] for x in one.values()) + rest * mix[0],
        sum(x[1] for x in one.values()) + rest * mix[1],
        len(one),
    )
