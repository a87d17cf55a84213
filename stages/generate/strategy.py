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
filter's truncated, format and correct checks) and is not a copy of one the question already
counts: not an exact copy (filter's exact_dedup normalization) and, when the filter runs
near_dedup, not a near one (its shingles and threshold, Jaccard estimated on the MinHashes):
the filter would drop either. A verified sample that does not count is a copy.

Reheat (generate.reheat > 0, adaptive): a question whose round drew a repeat (a sample whose
text the question drew before, right or wrong, or a verified near copy) asks its next round that
much hotter (temperature + reheat per such round, at most REHEATS steps): a peaked distribution
gives the same rationale again at the same temperature. A hotter sample i is
another sample (own id and seed, stages/generate/samples.py: Sampler), decided from the pool
like the rest, so a replay asks for the same ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import Config, TeacherConfig
from pipeline.reasoning import Convention, inline_text
from stages.generate.samples import Planned, Sampler
from stages.shared.verify import shingles, text_digest, verified


@dataclass(frozen=True)
class Near:
    """The filter's near-duplicate measure (filter.near_threshold, shingle, num_perm)."""

    threshold: float
    shingle: int
    num_perm: int

    def signature(self, text: str) -> Any:
        """The text's MinHash (rensa's, seeded as the filter's), or None for a text with no
        shingle."""
        from rensa import RMinHash

        grams = shingles(text, self.shingle)
        if not grams:
            return None
        m = RMinHash(num_perm=self.num_perm, seed=0)
        m.update(grams)
        return m

    def close(self, a: Any, b: Any) -> bool:
        return a.jaccard(b) >= self.threshold  # the estimate the filter's near_dedup compares


@dataclass
class Tally:
    """Verified, distinct samples per question so far, and the copies among the verified."""

    convention: Convention
    near: Near | None = None  # None: only exact copies are copies
    target: int | None = None  # a question's signatures are kept only while it is short of it
    count: Counter[str] = field(default_factory=Counter)
    copies: Counter[str] = field(default_factory=Counter)
    # (question, text digest) of each distinct verified sample, flat: one set of small bytes,
    # not a set per question (a pool of a million questions would hold a million sets)
    seen: set[bytes] = field(default_factory=set)
    verified: set[str] = field(default_factory=set)  # ids of every verified sample, copies too
    # with reheat: (question, text digest) of every sample drawn, verified or not, and the
    # samples that repeat one (exactly, or a verified near copy): what makes a question hotter
    drawn: set[bytes] | None = None
    repeats: Counter[str] = field(default_factory=Counter)
    # near-duplicate signatures of the counted samples of questions short of the target: with
    # a target of 2, one per question at most, and none once it is reached
    signatures: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, row: dict[str, Any]) -> None:
        ok = verified(row, self.convention)
        if not ok and self.drawn is None:
            return  # without reheat an unverified sample changes nothing: its text is not read
        text = inline_text(self.convention.split(row), self.convention.tags)
        q = row["question_id"]
        key = q.encode("utf-8", "surrogatepass") + b"\0" + text_digest(text)
        again = self.drawn is not None and key in self.drawn
        if self.drawn is not None:
            self.drawn.add(key)
        if not ok:
            if again:
                self.repeats[q] += 1
            return
        self.verified.add(row["id"])
        if key in self.seen or self._near_copy(q, text):
            self.copies[q] += 1
            if self.drawn is not None:
                self.repeats[q] += 1
            return
        self.seen.add(key)
        self.count[q] += 1
        if self.target is not None and self.count[q] >= self.target:
            self.signatures.pop(q, None)

    def _near_copy(self, q: str, text: str) -> bool:
        """Whether `text` nearly copies one of `q`'s counted samples; when not, its signature is
        kept for the next (only while `q` is short of the target: after, nothing is decided)."""
        if self.near is None or self.target is None or self.count[q] >= self.target:
            return False
        sig = self.near.signature(text)
        if sig is None:
            return False
        mine = self.signatures.setdefault(q, [])
        if any(self.near.close(sig, other) for other in mine):
            return True
        mine.append(sig)
        return False


def tally(cfg: Config, convention: Convention) -> Tally:
    """The tally generate's strategy counts with: copies as the filter would find them."""
    f = cfg.filter
    near = Near(f.near_threshold, f.shingle, f.num_perm) if "near_dedup" in f.checks else None
    adaptive = cfg.generate.strategy == "adaptive"
    target = cfg.generate.target_verified if adaptive else None
    return Tally(
        convention, near, target, drawn=set() if adaptive and cfg.generate.reheat else None
    )


@dataclass
class TeacherPlan:
    """One teacher's samples, up to its cap, by question and index."""

    index: int
    label: str
    teacher: TeacherConfig
    identity: str
    samples: dict[str, list[Planned]]  # question id -> its samples, index 0 first
    sampler: Sampler | None = None  # for hotter samples (reheat); None: no reheat
    hot: dict[str, Planned] = field(default_factory=dict)  # the hotter samples planned, by id
    by_id: dict[str, Planned] = field(default_factory=dict, repr=False)  # filled when first used

    def find(self, sid: str) -> Planned:
        """A planned sample by id, hotter ones included."""
        if sid in self.hot:
            return self.hot[sid]
        if not self.by_id:
            self.by_id = {p.request.id: p for ps in self.samples.values() for p in ps}
        return self.by_id[sid]


REHEATS = 3  # reheat steps a question takes at most


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
    reheat: float = 0.0  # temperature added per round of a question that drew a repeat
    drawn: dict[str, int] = field(default_factory=dict)
    heat: dict[str, int] = field(default_factory=dict)  # reheat steps taken, by question
    repeats_before: dict[str, int] = field(default_factory=dict)  # at the pending round's start
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
                self._warm()
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
                take = self._take(q, range(d, min(d + self.size, self.cap)))
                self.drawn[q] = d + len(take)
                self.pending += take
            if self.reheat:  # a million questions' counts each round only when they decide
                self.repeats_before = {q: self.tally.repeats[q] for q in active}
            self.used += self.pending
            self.rounds += 1
            missing = [p for p in self.pending if p.request.id not in self.have]
            if missing:
                return missing

    def _warm(self) -> None:
        """A question whose round just consumed drew a repeat takes a reheat step."""
        for q, before in self.repeats_before.items():
            if self.tally.repeats[q] > before:
                self.heat[q] = min(REHEATS, self.heat.get(q, 0) + 1)

    def _take(self, q: str, indices: range) -> list[Planned]:
        steps = self.heat.get(q, 0)
        sampler = self.plan.sampler
        if not steps or sampler is None:
            return self.plan.samples[q][indices.start : indices.stop]
        question = self.plan.samples[q][0].question
        hot = sampler.planned(
            question,
            indices,
            self.have,
            temperature=sampler.sampling["temperature"] + steps * self.reheat,
        )
        self.plan.hot.update((p.request.id, p) for p in hot)
        return hot

    def hotter(self) -> int:
        """Samples this teacher's rounds reached above the configured temperature."""
        return sum(p.request.id in self.plan.hot for p in self.used)


def teacher_rounds(
    cfg: Config, plan: TeacherPlan, questions: list[str], have: Mapping[str, dict], tally: Tally
) -> Rounds:
    g = cfg.generate
    adaptive = g.strategy == "adaptive"
    target = g.target_verified if adaptive else None  # fixed: draw n, always
    return Rounds(plan, questions, have, tally, g.n, cap(cfg), target, g.reheat if adaptive else 0)


def cap(cfg: Config) -> int:
    """Samples per question one teacher may draw under the strategy."""
    return cfg.generate.max_samples if cfg.generate.strategy == "adaptive" else cfg.generate.n


def sent_on(cfg: Config, questions: list[str], tally: Tally) -> list[str]:
    """The questions a cascade sends to its next teacher: those still short of the target."""
    return [q for q in questions if tally.count[q] < cfg.generate.target_verified]
