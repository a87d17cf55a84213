"""budget: one cap on the teacher tokens a run spends, kept before each call is sent.

Every teacher call of the run is admitted by it: generate's samples, on-policy's teacher scores,
eval's teacher answers (identity probes included) and its draft scores. What the run has spent
is what its logs record (stages/shared/spend.py): generate's pool (every sample's usage,
whichever key asked for it) and the `spend.jsonl` ledger beside each of the other logs, so a
rerun with a higher cap continues where the last one stopped and nothing is asked twice. A call
is admitted only if the spend plus the most that every admitted call may cost (its prompt plus
max_tokens for each sample; pipeline/ratelimit.py estimates the prompt) stays within each cap;
the first call that could cross it closes the budget, so a stage stops at a call boundary, in
plan order, and never spends past the cap. The stage then ends with BudgetReached (exit code 3)
after keeping everything asked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline.calls import Request
from pipeline.config.generate import BudgetConfig
from pipeline.errors import BudgetReached
from pipeline.ratelimit import prompt_tokens


@dataclass
class Budget:
    completion_cap: int  # -1 = none
    prompt_cap: int
    completion: int = 0  # spent (the logs) plus reserved (admitted calls), at most
    prompt: int = 0
    held: int = 0  # samples not asked
    closed: bool = False

    @classmethod
    def of(cls, section: BudgetConfig, usages: Iterable[dict]) -> Budget:
        """The budget of `section`, with the spend of `usages` (each a call's usage: its
        prompt_tokens and completion_tokens) already counted."""
        b = cls(section.completion_tokens, section.prompt_tokens)
        for usage in usages:
            b.completion += int(usage.get("completion_tokens") or 0)
            b.prompt += int(usage.get("prompt_tokens") or 0)
        return b

    def admit(
        self, reqs: list[Request], charged: Callable[[Request], bool] | None = None
    ) -> list[Request]:
        """The calls the budget pays for, in order, up to the first it cannot; a call
        `charged` says is not the teacher's (eval's base, served with it) always passes."""
        out = []
        for r in reqs:
            if charged is not None and not charged(r):
                out.append(r)
                continue
            # as the logs record it: a call's prompt with each of its samples
            prompt = prompt_tokens(r.messages, r.prompt_ids) * max(1, r.n)
            completion = int(r.sampling.get("max_tokens") or 0) * max(1, r.n)
            over = (0 < self.completion_cap < self.completion + completion) or (
                0 < self.prompt_cap < self.prompt + prompt
            )
            if self.closed or over:
                self.closed = True
                self.held += r.n
                continue
            self.completion += completion
            self.prompt += prompt
            out.append(r)
        return out

    def reached(self, section: BudgetConfig, what: str, new: int, path: Path) -> BudgetReached:
        """The one line for a stage the budget stopped: what the run spent, what was kept
        where, what was left unasked, and how to go on."""
        spent = [
            f"{self.completion:,} completion"
            + (f" of {self.completion_cap:,}" if self.completion_cap > 0 else ""),
            f"{self.prompt:,} prompt" + (f" of {self.prompt_cap:,}" if self.prompt_cap > 0 else ""),
        ]
        cost = usd(section, self.prompt, self.completion)
        money = f" (${cost:,.2f})" if cost and cost >= 1 else f" (${cost:.4f})" if cost else ""
        return BudgetReached(
            f"budget reached: the run's teacher calls spent or committed at most "
            f"{' and '.join(spent)} tokens{money}; {new} new {what} asked and kept in {path}, "
            f"{self.held} not asked; raise budget.completion_tokens or budget.prompt_tokens to "
            "continue where this stopped"
        )


@dataclass(frozen=True)
class Calls:
    """Teacher calls a later stage of the chain makes at most (`distill plan`): a stage's
    `teacher_calls` hook (pipeline/runner.py cost_plan)."""

    what: str
    calls: int
    prompt: int  # tokens at most over all the calls, the prompts estimated as the budget does
    completion: int


def chain_lines(
    section: BudgetConfig,
    later: list[Calls],
    generate: tuple[tuple[float, float], tuple[float, float]] | None,
    spent: Budget | None,
) -> list[str]:
    """`distill plan`'s lines for the chain after generate: each later stage's teacher calls at
    most, what the run spent so far, and whether generate's plan (`generate`: prompt and
    completion tokens, low and high) with them fits each cap of the run's budget."""
    lines = [
        f"{c.what}: at most {c.calls:,} teacher calls, {c.prompt:,} prompt and "
        f"{c.completion:,} completion tokens"
        for c in later
    ]
    if not later:
        lines.append("no later stage of the chain calls the teacher")
    if spent is not None:
        lines.append(
            f"the run's teacher calls spent so far (pool and ledgers): {spent.prompt:,} prompt "
            f"and {spent.completion:,} completion tokens"
        )
    if generate is None:
        return lines
    for part, cap, (lo, hi), more in (
        ("completion", section.completion_tokens, generate[1], sum(c.completion for c in later)),
        ("prompt", section.prompt_tokens, generate[0], sum(c.prompt for c in later)),
    ):
        if cap > 0:
            worst = hi + more
            verdict = "fits" if worst <= cap else "may stop at it" if lo <= cap else "stops at it"
            span = f"{lo:,.0f}" if round(lo) == round(hi) else f"{lo:,.0f}-{hi:,.0f}"
            lines.append(
                f"budget.{part}_tokens {cap:,}: the whole chain (generate {span}, later at most "
                f"{more:,}) {verdict}"
            )
    return lines


def usd(section: BudgetConfig, prompt: int, completion: int) -> float | None:
    """What `prompt` and `completion` tokens cost at budget's prices; None unpriced."""
    if not (section.usd_per_million_prompt or section.usd_per_million_completion):
        return None
    return (
        prompt * section.usd_per_million_prompt + completion * section.usd_per_million_completion
    ) / 1e6
