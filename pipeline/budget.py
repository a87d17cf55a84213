"""generate.budget: a cap on the teacher tokens a run spends, kept before a call is sent.

What the run has spent is what its pool holds (every sample's usage, whichever key asked for
it), so a rerun with a higher cap continues where the last one stopped. A call is admitted
only if the spend plus the most that every admitted call may cost (its prompt plus max_tokens
for each sample; pipeline/ratelimit.py estimates the prompt) stays within each cap; the first
call that could cross it closes the budget, so the run stops at a sample boundary, in plan
order, and never spends past the cap. generate then ends with BudgetReached (exit code 3).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.calls import Request
from pipeline.config.generate import BudgetConfig
from pipeline.ratelimit import prompt_tokens


@dataclass
class Budget:
    completion_cap: int  # -1 = none
    prompt_cap: int
    completion: int = 0  # spent (the pool) plus reserved (admitted calls), at most
    prompt: int = 0
    held: int = 0  # samples not asked
    closed: bool = False

    @classmethod
    def of(cls, section: BudgetConfig, pool_rows: Iterable[dict]) -> Budget:
        """The budget of generate.budget, with what the pool's samples spent."""
        b = cls(section.completion_tokens, section.prompt_tokens)
        for row in pool_rows:
            usage = row.get("usage") or {}
            b.completion += int(usage.get("completion_tokens") or 0)
            b.prompt += int(usage.get("prompt_tokens") or 0)
        return b

    def admit(self, reqs: list[Request]) -> list[Request]:
        """The calls the budget pays for, in order, up to the first it cannot."""
        out = []
        for r in reqs:
            # as the pool records it: a call's prompt with each of its samples
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


def usd(section: BudgetConfig, prompt: int, completion: int) -> float | None:
    """What `prompt` and `completion` tokens cost at generate.budget's prices; None unpriced."""
    if not (section.usd_per_million_prompt or section.usd_per_million_completion):
        return None
    return (
        prompt * section.usd_per_million_prompt + completion * section.usd_per_million_completion
    ) / 1e6
