"""How generate groups missing samples into API calls (no server needed)."""

from __future__ import annotations

from pipeline.calls import Request
from pipeline.tasks import Question
from stages.generate.samples import calls


def _q(qid: str) -> Question:
    return Question(id=qid, question=f"{qid}?", answer="1")


def _sample(q: Question, i: int, base: int) -> tuple[Request, Question, int]:
    msgs = [{"role": "user", "content": q.question}]
    return Request([f"{q.id}-{i}"], msgs, {"temperature": 0.7, "seed": base + i}), q, i


def test_runs_of_consecutive_indices_become_one_call_seeded_by_their_first() -> None:
    a, b = _q("a"), _q("b")
    missing = [_sample(a, i, 100) for i in (0, 1, 3)] + [_sample(b, i, 500) for i in (2, 3)]
    got = calls(missing, 0)
    assert [(c.ids, c.sampling["seed"]) for c in got] == [
        (["a-0", "a-1"], 100),
        (["a-3"], 103),  # a gap starts a new call, seeded for its own first sample
        (["b-2", "b-3"], 502),
    ]


def test_cap_on_samples_per_call() -> None:
    a = _q("a")
    got = calls([_sample(a, i, 0) for i in range(5)], 2)
    assert [c.ids for c in got] == [["a-0", "a-1"], ["a-2", "a-3"], ["a-4"]]
    assert [c.sampling["seed"] for c in got] == [0, 2, 4]
    assert all(c.n == 1 for c in calls([_sample(a, i, 0) for i in range(3)], 1))
