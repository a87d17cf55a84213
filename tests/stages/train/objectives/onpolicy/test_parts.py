"""The asking parts of an on-policy round against a real vLLM engine
(stages/train/objectives/onpolicy/parts.py): the student's rollouts come back with the ids and
logprobs it sampled, and a teacher identical to the student, scoring those very ids after the same
prompt, gives every token an advantage of zero (float32; tolerance 2e-3, the engine's sampler
against its own prefill)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.ask import AskSettings, ModelSpec, ask
from pipeline.calls import Request, prompt_ids
from pipeline.prompts import render_messages
from pipeline.tasks import Question
from stages.train.objectives.onpolicy.parts import (
    advantages,
    check_rollout,
    rollout_plan,
    rollout_row,
    same_vocab_score,
    score_id,
)

pytestmark = pytest.mark.slow

QUESTIONS = [
    Question("q1", "Tom has 3 apples and buys 4 more. How many apples does he have now?", "7"),
    Question("q2", "Sara had 9 pens and gave away 2. How many are left?", "7"),
]


def test_a_teacher_equal_to_the_student_gives_zero_advantage(tiny_teacher: Path, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_teacher)
    messages = [render_messages("student_zeroshot.j2", q) for q in QUESTIONS]
    plan = rollout_plan(QUESTIONS, messages, "tiny", n=2, max_tokens=24, seed=1, stop=[])
    assert len({r.request.id for r in plan}) == 4
    again = rollout_plan(QUESTIONS, messages, "tiny", n=3, max_tokens=24, seed=1, stop=[])
    assert [r.request.id for r in again][:2] == [r.request.id for r in plan][:2]  # n grows only
    by_id = {r.request.id: r for r in plan}
    rows: dict[str, dict] = {}
    scores: dict[str, dict] = {}
    asked_scores: list[Request] = []

    def on_done(c) -> None:
        if c.prompt_logprobs is not None:
            scores[c.id] = c.prompt_logprobs
        else:
            rows[c.id] = rollout_row(by_id[c.id], c)

    def score_round() -> list[Request]:
        if asked_scores:
            return []
        for row in rows.values():
            prompt = prompt_ids(tok, row["messages"])
            sid = score_id(row["id"], "tiny", prompt, 3)
            asked_scores.append(same_vocab_score(sid, prompt, row, 3))
        return asked_scores

    spec = ModelSpec("student", tiny_teacher, engine="offline", dtype="float32", max_logprobs=3)
    settings = AskSettings(concurrency=8, retries=1)
    ask(spec, [r.request for r in plan], on_done, pytest.fail, settings, tmp_path, more=score_round)

    assert len(rows) == 4 and len(scores) == 4
    for req in asked_scores:
        row = rows[
            next(
                i
                for i in rows
                if req.prompt_ids[-len(rows[i]["completion_ids"]) :] == rows[i]["completion_ids"]
            )
        ]
        assert check_rollout(row) is None and row["completion_ids"]
        got = scores[req.id]
        assert got["ids"] == row["completion_ids"]  # the sampled ids, scored as they are
        adv = advantages(row, got["logprobs"])
        assert max(abs(a) for a in adv) < 2e-3, adv
        assert all(len(top) == 3 for top in got["top_ids"])


def test_a_rollout_without_its_logprobs_is_refused() -> None:
    from pipeline.calls import Completion, ServeError

    (r,) = rollout_plan(QUESTIONS[:1], [[{"role": "user", "content": "x"}]], "m", 1, 8, 0, [])
    c = Completion(r.request.id, "7", "stop", {"completion_tokens": 2}, "offline")
    with pytest.raises(ServeError, match="without a logprob"):
        rollout_row(r, c)
