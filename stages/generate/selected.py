"""Running sums over the selection as it streams from the pool into samples.jsonl: what the
manifest reports (samples, tokens, truncation, each teacher's cost and verified samples, soft
labels' size) without holding the rows. A pool of a million samples costs its counters and the
question ids, not a million dicts."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from stages.generate.samples import prompt_tokens_of


@dataclass
class Sums:
    """Counters over some of the selection's rows (all of them, or one teacher's)."""

    samples: int = 0
    requested: int = 0  # asked in this run (the rest came from the pool)
    prompt: int = 0
    new_prompt: int = 0
    completion: int = 0
    new_completion: int = 0
    truncated: int = 0
    verified: int = 0
    questions: set[str] = field(default_factory=set)
    questions_verified: set[str] = field(default_factory=set)

    def add(self, row: dict[str, Any], new: bool, verified: bool) -> None:
        prompt, completion = prompt_tokens_of(row), row["usage"]["completion_tokens"]
        self.samples += 1
        self.requested += new
        self.prompt += prompt
        self.completion += completion
        self.new_prompt += prompt if new else 0
        self.new_completion += completion if new else 0
        self.truncated += row["finish_reason"] == "length"
        self.questions.add(row["question_id"])
        if verified:
            self.verified += 1
            self.questions_verified.add(row["question_id"])


@dataclass
class Selected:
    """The sums of the rows `watch` passes on: over all of them and by teacher label."""

    new: set[str]  # ids asked in this run
    verified: dict[str, set[str]]  # teacher label -> ids its tally verified
    total: Sums = field(default_factory=Sums)
    by_teacher: dict[str, Sums] = field(default_factory=dict)
    logprob_tokens: int = 0
    logprob_bytes: int = 0
    logprob_k: int = 0

    def watch(self, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Each row, unchanged, counted as it passes."""
        for row in rows:
            label, new = row["teacher"], row["id"] in self.new
            self.total.add(row, new, False)
            mine = self.verified.get(label, set())
            self.by_teacher.setdefault(label, Sums()).add(row, new, row["id"] in mine)
            if row.get("logprobs"):
                lp = row["logprobs"]
                self.logprob_tokens += lp["tokens"]
                self.logprob_bytes += lp["bytes"]
                self.logprob_k = self.logprob_k or lp["k"]
            yield row
