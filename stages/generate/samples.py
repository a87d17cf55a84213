"""What generate asks for, and the sample records it keeps.

A sample's id is content-addressed: hash(teacher identity, rendered prompt, sampling without n,
sample index, seeding scheme). Sample i of a question is seeded base + i, where base is a hash of
the same things without the index; vLLM seeds the k-th sample of an n-sample call seed + k, so a
call for samples i..j is one request seeded base + i and every sample stays repeatable alone,
however calls are grouped and whichever engine (server or offline) writes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container
from dataclasses import dataclass
from typing import Any, NamedTuple

from pipeline.calls import Completion, Request, sampling_dict
from pipeline.config import Config, TeacherConfig
from pipeline.prompts import fewshot_examples, teacher_messages
from pipeline.records import DataError, canonical_json, schema_problem, sha256_text
from pipeline.tasks import Question, load_task

SEEDS = "seed=base+i"  # in sample ids: samples seeded another way are other samples
# What a pool row must hold to be reused; a row without it is damage, moved to quarantine.
SAMPLE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "question_id": str,
    "sample_index": int,
    "messages": list,
    "completion": str,
    "finish_reason": str,
    "usage": dict,
    "gold": str,
}


class Planned(NamedTuple):
    """One sample to have: the request for it alone, its question and its index there."""

    request: Request
    question: Question
    index: int


def prompt_tokens_of(row: dict[str, Any]) -> int:
    """A pool row's prompt tokens (rows from before they were counted have none: 0)."""
    return int(row["usage"].get("prompt_tokens") or 0)


def check_sample(row: dict[str, Any]) -> str | None:
    problem = schema_problem(row, SAMPLE_FIELDS)
    if problem is None and not isinstance(row["usage"].get("completion_tokens"), int):
        problem = "field 'usage' has no integer 'completion_tokens'"
    if problem is None and not isinstance(row.get("reasoning", ""), str):
        problem = "field 'reasoning' is not text"
    if problem is None and "logprobs" in row and not isinstance(row["logprobs"], dict):
        problem = "field 'logprobs' is not a soft-label reference"
    return problem


@dataclass(frozen=True)
class Sampler:
    """How one teacher is asked for any sample of any question: its prompts and its sampling.
    `planned` gives sample i of a question at the configured temperature, or hotter (adaptive
    sampling's reheat, stages/generate/strategy.py): a hotter sample is another sample, with its
    own id and seed, so a pool holds both without one passing for the other."""

    identity: str
    teacher: TeacherConfig
    shots: list
    sampling: dict[str, Any]

    @classmethod
    def of(cls, cfg: Config, identity: str, teacher: TeacherConfig | None = None) -> Sampler:
        teacher = teacher or cfg.teacher
        g = cfg.generate
        # With soft labels, their k and mode are part of the sampling: such a sample is another
        # sample (another id), one that carries its teacher distributions.
        sampling = sampling_dict(
            g.sampling, keep_empty_stop=True, logprobs=g.logprobs, logprobs_mode=g.logprobs_mode
        )
        return cls(
            identity, teacher, fewshot_examples(load_task(cfg.task), teacher.fewshot), sampling
        )

    def messages(self, q: Question) -> list[dict]:
        return teacher_messages(self.teacher, q, self.shots)

    def planned(
        self,
        q: Question,
        indices: range,
        held: Container[str] = (),
        messages: list[dict] | None = None,
        temperature: float | None = None,
    ) -> list[Planned]:
        """Samples `indices` of question `q`; those in `held` without their prompts (module
        doc of plan_samples)."""
        messages = messages if messages is not None else self.messages(q)
        sampling = self.sampling
        if temperature is not None and temperature != sampling["temperature"]:
            sampling = {**sampling, "temperature": round(temperature, 6)}
        base = int(sha256_text(canonical_json([self.identity, messages, sampling]))[:8], 16)
        base &= 0x3FFFFFFF  # room for + i within a signed 32-bit seed
        out = []
        for i in indices:
            sid = sha256_text(canonical_json([self.identity, messages, sampling, i, SEEDS]))[:32]
            if sid in held:
                out.append(Planned(Request([sid], [], self.sampling), q, i))
                continue
            req_sampling = {**sampling, "seed": base + i}
            req_sampling.pop("logprobs_mode", None)  # the engine's setting, not the request's
            if not req_sampling["stop"]:
                del req_sampling["stop"]
            out.append(Planned(Request([sid], messages, req_sampling), q, i))
        return out


def plan_samples(
    cfg: Config,
    identity: str,
    teacher: TeacherConfig | None = None,
    count: int = 0,
    held: Container[str] = (),
    sampler: Sampler | None = None,
) -> list[Planned]:
    """The first `count` samples (0: generate.n) of every question from `teacher` (default:
    the teacher), each with its id and its own seed: sample i is the same sample whatever the
    count, so a larger n, or another round of adaptive sampling, only adds samples.

    A sample in `held` (the pool) is never asked, so its request keeps its id only: no prompt
    or sampling per sample, which is most of what a plan of a million samples would hold.
    `sampler`: `teacher`'s, when the caller keeps one (Sampler.of otherwise)."""
    sampler = sampler or Sampler.of(cfg, identity, teacher)
    out = []
    asked_by: dict[bytes, str] = {}  # by the prompt's digest: a prompt is KBs, a digest 32 bytes
    for q in load_task(cfg.task).train:
        messages = sampler.messages(q)
        prompt = canonical_json(messages)
        other = asked_by.setdefault(hashlib.sha256(prompt.encode()).digest(), q.id)
        if other != q.id:  # their samples would share ids: one question would be lost
            raise DataError(
                f"questions '{other}' and '{q.id}' give the teacher the same prompt; "
                "make them differ or remove one"
            )
        out += sampler.planned(q, range(count or cfg.generate.n), held, messages)
    return out


def calls(missing: list[Planned], per_call: int) -> list[Request]:
    """The API calls for these samples: each run of consecutive sample indices of a question
    becomes one call for up to `per_call` samples (0: no cap), seeded with its first sample.

    Fewer, larger calls spare the server a prompt render, a tokenization and an HTTP exchange
    per sample; vLLM's prefix cache already shares the prompt's prefill.
    """
    out: list[Request] = []
    prev: tuple[str, int] | None = None
    for r, q, i in missing:
        last = out[-1] if out else None
        if last is not None and prev == (q.id, i - 1) and (per_call <= 0 or last.n < per_call):
            last.ids.append(r.id)
        else:
            out.append(Request([r.id], r.messages, dict(r.sampling)))
        prev = (q.id, i)
    return out


def record(
    planned: Planned,
    comp: Completion,
    label: str,
    identity: str,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The pool row for one finished sample from the teacher called `label`; `logprobs` is its
    soft-label record's reference (stages.shared.softlabels), written before this row."""
    req, q, index = planned
    return {
        "id": req.id,
        "question_id": q.id,
        "sample_index": index,
        "teacher": label,
        "teacher_identity": identity,
        "messages": req.messages,
        "completion": comp.text,
        "finish_reason": comp.finish_reason,
        "usage": comp.usage,
        "sampling": req.sampling,
        "prompt_sha": sha256_text(canonical_json(req.messages)),
        "gold": q.answer,
        "answer_type": q.answer_type,
        "choices": list(q.choices),
        "endpoint": comp.endpoint,
        # The trace a server sent in its own field, unchanged (an inline one stays in
        # `completion`): the teacher's text is `completion` and this, nothing dropped.
        **(
            {"reasoning": comp.reasoning, "reasoning_field": comp.reasoning_field}
            if comp.reasoning is not None
            else {}
        ),
        **({"logprobs": logprobs} if logprobs is not None else {}),
    }
