"""The `generate:` section: how many samples the teachers write and how they are asked, and
`SamplingConfig`, the decoding of a model's requests (generate.sampling and eval.sampling)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.fields import ConfigError, check_fields, knob, runtime


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = knob(0.7, doc="sampling temperature; 0 = greedy", ge=0, le=100)
    top_p: float = knob(1.0, doc="nucleus sampling mass", gt=0, le=1)
    max_tokens: int = knob(256, doc="completion tokens at most", ge=1)
    seed: int = knob(1234, doc="base seed: requests are seeded from it, so samples repeat", ge=0)
    stop: list[str] = knob(factory=list, doc="strings that end a completion (not included)")

    def __post_init__(self) -> None:
        check_fields(self)
        for i, s in enumerate(self.stop):
            if not s:
                raise ConfigError("an empty stop string would stop at once", f"stop[{i}]")


@dataclass(frozen=True)
class BudgetConfig:
    """`budget:`, a cap on the tokens every teacher call of a run spends: generate, on-policy
    scoring, eval's teacher answers and draft scores (pipeline/budget.py). Runtime: raising it
    continues where it stopped."""

    completion_tokens: int = runtime(
        -1, doc="completion tokens the run's teacher calls may spend at most; -1 = no cap", ge=-1
    )
    prompt_tokens: int = runtime(
        -1, doc="prompt tokens the run's teacher calls may spend at most; -1 = no cap", ge=-1
    )
    usd_per_million_completion: float = runtime(
        0.0, doc="price of a million completion tokens, to say the budget in money", ge=0
    )
    usd_per_million_prompt: float = runtime(
        0.0, doc="price of a million prompt tokens, to say the budget in money", ge=0
    )

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("completion_tokens", "prompt_tokens"):
            if getattr(self, name) == 0:
                raise ConfigError("0 buys nothing; give a positive cap, or -1 for none", name)
        if (self.usd_per_million_completion or self.usd_per_million_prompt) and not self.active:
            raise ConfigError(
                "a price without a cap: set budget.completion_tokens or prompt_tokens",
                "usd_per_million_completion",
            )

    @property
    def active(self) -> bool:
        return self.completion_tokens > 0 or self.prompt_tokens > 0


@dataclass(frozen=True)
class GenerateConfig:
    n: int = knob(4, doc="samples per question and teacher (strategy adaptive: per round)", ge=1)
    strategy: Literal["fixed", "adaptive"] = knob(
        "fixed",
        doc="fixed: n samples per question; adaptive: rounds of n, a question stops once it has "
        "target_verified verified samples or max_samples of them (sample i is the same sample "
        "either way: the two share the pool)",
        key_when_set=True,
    )
    target_verified: int = knob(
        2,
        doc="adaptive and cascade: verified samples a question needs (correct, by the filter's "
        "answer checks, and not a copy of one it has)",
        ge=1,
        key_when_set=True,
    )
    max_samples: int = knob(
        16,
        doc="adaptive: the most samples one teacher draws for a question",
        ge=1,
        key_when_set=True,
    )
    reheat: float = knob(
        0.0,
        doc="adaptive: a question whose round drew a repeat (a text it drew before, or a "
        "verified near copy) asks its next rounds this much hotter, at most 3 steps (0 = off)",
        ge=0,
        le=2,
        key_when_set=True,
    )
    combine: Literal["cascade", "all"] = knob(
        "cascade",
        doc="with teachers: cascade = in order, a question goes to the next teacher only while it "
        "lacks target_verified verified samples; all = every teacher answers every question",
        key_when_set=True,
    )
    sampling: SamplingConfig = knob(factory=SamplingConfig, doc="the teacher's sampling")
    concurrency: int = runtime(
        512,
        doc="samples in flight across all endpoints, or queued in the offline engine; about "
        "twice the batch (256 sequences on CPU) so a finished sequence's place is taken at once",
        ge=1,
    )
    samples_per_call: int = runtime(
        0,
        doc="cap on a call's samples (the API's n); 0 = all of a question's; 1 if n>1 fails",
        ge=0,
    )
    retries: int = runtime(5, doc="attempts per call on transient errors (1 = no retry)", ge=1)
    backoff_s: float = runtime(0.5, doc="first retry delay; doubles each attempt", ge=0)
    request_timeout_s: float = runtime(
        900.0, doc="per call, queueing in the server included; a full CPU batch answers late", gt=0
    )
    fsync_every: int = runtime(32, doc="records appended between fsyncs", ge=1)
    logprobs: int = knob(
        0,
        doc="soft labels: keep the teacher's top-k logprobs for every completion token (k; "
        "0 = off), in a binary store beside the pool (train.objective: kd learns from them)",
        key_when_set=True,
        ge=0,
        le=4096,
    )
    logprobs_mode: Literal["raw", "processed"] = knob(
        "raw",
        doc="raw: the teacher's distribution at temperature 1 (vLLM raw_logprobs); processed: "
        "after the sampling temperature and top_p. The engines distill starts are set to it; "
        "for endpoints, say what their --logprobs-mode is",
        key_when_set=True,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.strategy == "adaptive" and self.max_samples < self.n:
            raise ConfigError(
                f"{self.max_samples} is below generate.n ({self.n}), the round size; raise it "
                "or lower n",
                "max_samples",
            )
        if self.sampling.temperature == 0 and self.n > 1:
            raise ConfigError(
                f"{self.n} samples at temperature 0 (greedy) would be one text {self.n} times, "
                "and vLLM refuses them: set generate.n: 1 (with strategy adaptive and reheat: "
                "greedy first, hotter after a repeat) or raise the temperature",
                "sampling.temperature",
            )
        if self.reheat and self.logprobs and self.logprobs_mode == "processed":
            raise ConfigError(
                "soft labels after the sampling temperature carry one temperature, and reheat "
                "asks some samples hotter: use logprobs_mode raw (temperature 1) or no reheat",
                "reheat",
            )
        if self.reheat and self.strategy != "adaptive":
            raise ConfigError(
                "reheat raises the temperature of later rounds; only strategy adaptive has them",
                "reheat",
            )
