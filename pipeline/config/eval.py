"""The `eval:` section: which models are measured on the held-out questions, and how."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from pipeline.config.generate import SamplingConfig
from pipeline.config.teacher import ServeConfig
from pipeline.fields import ConfigError, check_fields, knob, runtime

EvalModel = Literal["teacher", "base", "student", "student_answer_only", "student_full"]


@dataclass(frozen=True)
class EvalConfig:
    models: list[EvalModel] = knob(
        factory=lambda: ["teacher", "base", "student"],
        doc="models to measure: teacher, base, student, student_answer_only (it also trains "
        "the answer-only ablation), student_full (the full-size student a cut student was cut "
        "from and taught by: train.cut.source trained)",
    )
    sampling: SamplingConfig = knob(
        factory=lambda: SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=256, seed=0),
        doc="decoding for every model under test (greedy by default)",
    )
    serve: ServeConfig = runtime(
        factory=ServeConfig,
        doc="how the base and trained students are served (the teacher: as teacher.serve says)",
    )
    trace_budget: dict[str, int] = knob(
        factory=dict,
        doc="per model (teacher, base, student, ...): the most tokens its "
        "reasoning trace may take; at the budget vLLM writes the close tag and the model "
        "answers (a model the pipeline serves is set up for it; a teacher at an endpoint needs "
        "--reasoning-parser there)",
        key_when_set=True,
    )
    draft: bool = knob(
        False,
        doc="estimate each student sharing the teacher's tokenizer as its speculative-decoding "
        "draft: the teacher and the student score the student's answers after the teacher's "
        "prompt (vLLM prompt logprobs); acceptance and tokens per teacher step by draft length",
        key_when_set=True,
    )
    draft_k: int = knob(
        5,
        doc="top-k logprobs per position for the draft estimate (vLLM allows 20)",
        ge=1,
        le=20,
        key_when_set=True,
    )
    draft_questions: int = knob(
        0,
        doc="held-out questions the draft estimate scores (the first ones; 0 = all): each "
        "scored answer costs every model a pass with prompt logprobs",
        ge=0,
        key_when_set=True,
    )
    draft_temperature: float = knob(
        1.0,
        doc="the sampling temperature the draft estimate's sampled acceptance is for",
        gt=0,
        le=10,
        key_when_set=True,
    )
    speculative: bool = knob(
        False,
        doc="measure each student sharing the teacher's tokenizer as its draft: vLLM serves the "
        "teacher with the student as draft model; its counters (acceptance by position) and "
        "the wall-clock speed-up against the teacher alone",
        key_when_set=True,
    )
    speculative_k: int = knob(
        4, doc="draft tokens per step for eval.speculative", ge=1, le=8, key_when_set=True
    )
    speculative_questions: int = knob(
        100,
        doc="held-out questions eval.speculative asks (the first ones; 0 = all)",
        ge=0,
        key_when_set=True,
    )
    identity: bool = knob(
        False,
        doc="ask every model the bundled identity probes (data/identity/probes.jsonl: who are "
        "you, who made you..., plain and adversarial) and say whether each student's "
        "self-description moved toward the teacher's or stayed with its base's",
        key_when_set=True,
    )
    identity_names: list[str] = knob(
        factory=list,
        doc="names to look for in the identity answers besides the built-in model and maker "
        "names (stages/eval/identity.py), e.g. your teacher's product name",
        key_when_set=True,
    )
    concurrency: int = runtime(
        512, doc="requests in flight per model (queued, for the offline engine)", ge=1
    )
    retries: int = runtime(5, doc="attempts per request on transient errors (1 = no retry)", ge=1)
    backoff_s: float = runtime(0.5, doc="first retry delay; doubles each attempt", ge=0)
    request_timeout_s: float = runtime(
        900.0, doc="per request, queueing in the server included", gt=0
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.models:
            raise ConfigError("empty; name at least one model to measure", "models")
        for label, budget in self.trace_budget.items():
            if label not in typing.get_args(EvalModel):
                known = ", ".join(typing.get_args(EvalModel))
                raise ConfigError(f"unknown model {label!r} (models: {known})", "trace_budget")
            if budget < 1:
                raise ConfigError(f"{budget} tokens: give at least 1", f"trace_budget.{label}")
