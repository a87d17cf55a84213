"""Which samples generate asks for: a strategy (fixed or adaptive) per teacher, and how several
teachers share the questions (cascade or all).

Everything here is decided from the pool alone, round by round, so a rerun replays the same
decisions and asks only for what the pool lacks:

- fixed: one round of n samples per question (indices 0..n-1);
- adaptive: rounds of n, round r drawing indices rn..rn+n-1 (capped at max_samples) for each
  question that still lacks `target_verified` verified samples. Sample i is the sample a fixed
  run with n > i draws (same id, same seed), so the strategies share the pool;
- cascade: the teachers in order (cheapest first); a question reaches the next teacher only
  while the ones before left it short of `target_verified`; verified samples count across them;
- all: every teacher answers every question, each counting its own verified samples.

A sample counts toward a question's target when it is verified (stages/shared/verify.py: the
filter's truncated, format and correct checks) and is not an exact copy (filter's exact_dedup
normalization) of one the question already counts: a copy would be dropped by the filter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import Config, TeacherConfig
from pipeline.reasoning import Convention, inline_text
from stages.generate.samples import Planned
from stages.shared.verify import text_digest, verified


@dataclass
class Tally:
    """Verified, distinct samples per question so far."""

    convention: Convention
    count: Counter[str] = field(default_factory=Counter)
    # (question, text digest) of each distinct verified sample, flat: one set of small bytes,
    # not a set per question (a pool of a million questions would hold a million sets)
    seen: set[bytes] = field(default_factory=set)
    verified: set[str] = field(default_factory=set)  # ids of every verified sample, copies too

    def add(self, row: dict[str, Any]) -> None:
        if not verified(row, self.convention):
            return
        self.verified.add(row["id"])
        digest = text_digest(inline_text(self.convention.split(row), self.convention.tags))
        q = row["question_id"]
        key = q.encode("utf-8", "surrogatepass") + b"\0" + digest
        if key not in self.seen:
            self.seen.add(key)
            self.count[q] += 1


@dataclass
class TeacherPlan:
    """One teacher's samples, up to its cap, by question and index."""

    index: int
    label: str
    teacher: TeacherConfig
    identity: str
    samples: dict[str, list[Planned]]  # question id -> its samples, index 0 first


@dataclass
class Rounds:
    """One teacher's rounds over `questions`; `next()` gives the samples of the next round the
    pool lacks, walking through rounds the pool already holds whole."""

    plan: TeacherPlan
    questions: list[str]
    have: Mapping[str, dict]  # the pool by sample id: filled by the caller as answers arrive
    tally: Tally
    size: int  # samples per question per round
    cap: int  # samples per question at most
    target: int | None  # stop a question at this many counted samples; None: draw to the cap
    drawn: dict[str, int] = field(default_factory=dict)
    pending: list[Planned] = field(default_factory=list)
    used: list[Planned] = field(default_factory=list)  # every sample reached, round by round
    rounds: int = 0
    short: bool = False  # a round ended without all its samples: failures, asking stopped

    def __post_init__(self) -> None:
        self.drawn = {q: 0 for q in self.questions}

    def next(self) -> list[Planned]:
        while True:
            if self.pending:
                if any(p.request.id not in self.have for p in self.pending):
                    self.short = True  # the caller reports the failures; no round after them
                    return []
                for p in self.pending:
                    self.tally.add(self.have[p.request.id])
                self.pending = []
            active = [
                q
                for q, d in self.drawn.items()
                if d < self.cap and (self.target is None or self.tally.count[q] < self.target)
            ]
            if not active:
                return []
            for q in active:
                d = self.drawn[q]
                take = self.plan.samples[q][d : min(d + self.size, self.cap)]
                self.drawn[q] = d + len(take)
                self.pending += take
            self.used += self.pending
            self.rounds += 1
            missing = [p for p in self.pending if p.request.id not in self.have]
            if missing:
                return missing


def teacher_rounds(
    cfg: Config, plan: TeacherPlan, questions: list[str], have: Mapping[str, dict], tally: Tally
) -> Rounds:
    g = cfg.generate
    target = g.target_verified if g.strategy == "adaptive" else None  # fixed: draw n, always
    return Rounds(plan, questions, have, tally, g.n, cap(cfg), target)


def cap(cfg: Config) -> int:
    """Samples per question one teacher may draw under the strategy."""
    return cfg.generate.max_samples if cfg.generate.strategy == "adaptive" else cfg.generate.n


def sent_on(cfg: Config, questions: list[str], tally: Tally) -> list[str]:
    """The questions a cascade sends to its next teacher: those still short of the target."""
    return [q for q in questions if tally.count[q] < cfg.generate.target_verified]
