"""The asking parts of an on-policy round: the student's rollouts, and the teacher's scores of
exactly the tokens the student wrote.

Rollouts. The student, served by vLLM through the one ask path, samples at temperature 1 (the
policy itself, so vLLM's raw logprobs are the sampling distribution's), with the logprob of
each token it wrote (`logprobs: 1`: the sampled token and the top 1). A rollout row keeps the
token ids and logprobs as vLLM returned them: nothing is re-tokenized, so the update trains on
the very tokens that were sampled, and the importance ratio compares like with like. A rollout's
id is content-addressed over the student's identity, its prompt, the sampling and the sample's
index, as generate's samples are: the same student asked the same way is the same rollout.

Scores. The teacher reads its own prompt for the question (its template and its context, which
may hold what the student never sees) followed by the student's completion, and vLLM's prompt
logprobs give, for each completion token, the teacher's logprob of it and the teacher's top k
there (pipeline/calls.py `score_request`). With one vocabulary the completion is the student's
ids themselves; across vocabularies it is the teacher's tokenization of the student's text,
aligned back by character spans (stages/train/objectives/onpolicy/align.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.calls import Completion, Request, ServeError, score_request
from pipeline.records import canonical_json, schema_problem, sha256_text
from pipeline.tasks import Question

SEEDS = "seed=base+i"
ROLLOUT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "question_id": str,
    "index": int,
    "messages": list,
    "completion": str,
    "completion_ids": list,
    "logprobs": list,
    "finish_reason": str,
}


@dataclass(frozen=True)
class Rollout:
    """One sample to have from the student: its request, question and index."""

    request: Request
    question: Question
    index: int


def rollout_plan(
    questions: list[Question],
    messages: list[list[dict[str, str]]],
    identity: str,
    n: int,
    max_tokens: int,
    seed: int,
    stop: list[str],
) -> list[Rollout]:
    """n rollouts per question (its student `messages`), each with its id and its own seed."""
    sampling: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0, "max_tokens": max_tokens}
    sampling |= {"logprobs": 1, **({"stop": list(stop)} if stop else {})}
    out = []
    for q, msgs in zip(questions, messages, strict=True):
        head = [identity, msgs, sampling, seed]
        base = int(sha256_text(canonical_json(head))[:8], 16) & 0x3FFFFFFF
        for i in range(n):
            rid = sha256_text(canonical_json([*head, i, SEEDS]))[:32]
            out.append(Rollout(Request([rid], msgs, {**sampling, "seed": base + i}), q, i))
    return out


def rollout_row(r: Rollout, c: Completion) -> dict[str, Any]:
    """The kept rollout: the text and, token by token, the ids and logprobs vLLM sampled."""
    got = c.token_logprobs
    tokens = c.usage.get("completion_tokens", -1)
    if got is None or len(got.get("ids", ())) != tokens:
        raise ServeError(
            f"the student sent rollout {c.id} without a logprob for each of its tokens; a vLLM "
            "engine started by distill always sends them"
        )
    return {
        "id": c.id,
        "question_id": r.question.id,
        "index": r.index,
        "messages": r.request.messages,
        "completion": c.text,
        "completion_ids": [int(i) for i in got["ids"]],
        "logprobs": [float(x) for x in got["logprobs"]],
        "finish_reason": c.finish_reason,
    }


def check_rollout(row: dict[str, Any]) -> str | None:
    problem = schema_problem(row, ROLLOUT_FIELDS)
    if problem is None and len(row["completion_ids"]) != len(row["logprobs"]):
        problem = "fields 'completion_ids' and 'logprobs' differ in length"
    return problem


def same_vocab_score(sid: str, teacher_prompt: list[int], row: dict[str, Any], k: int) -> Request:
    """Score the student's own ids after the teacher's prompt (one vocabulary)."""
    return score_request(sid, teacher_prompt + list(row["completion_ids"]), len(teacher_prompt), k)


def score_id(rollout_id: str, teacher: str, prompt: list[int], k: int) -> str:
    """A score's id: the rollout it scores, the teacher's identity, its prompt and k."""
    return sha256_text(canonical_json([rollout_id, teacher, prompt, k]))[:32]


def advantages(row: dict[str, Any], teacher_logprobs: list[float]) -> list[float]:
    """Per student token (one vocabulary): the teacher's logprob minus the rollout's."""
    own = row["logprobs"]
    if len(teacher_logprobs) != len(own):
        raise ValueError(f"{len(teacher_logprobs)} teacher scores for {len(own)} tokens")
    return [t - s for t, s in zip(teacher_logprobs, own, strict=True)]
