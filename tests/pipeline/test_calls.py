"""What is sent to a model and what comes back (pipeline/calls.py), on its own: a request's ids,
a scoring request, the soft-label lists read from prompt logprobs, and the sampling dict whose
form is in every cached key. (A scoring request against a real engine: test_scoring.py.)"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pipeline.calls import Request, sampling_dict, score_request, scored_lists


def test_a_request_is_one_call_for_its_ids() -> None:
    r = Request(["a", "b", "c"], [{"role": "user", "content": "q"}], {"seed": 1})
    assert (r.id, r.n) == ("a", 3)


def test_a_scoring_request_reads_the_ids_as_given() -> None:
    r = score_request("s", [1, 2, 3, 4], 2, 5)
    assert (r.ids, r.messages, r.prompt_ids) == (["s"], [], [1, 2, 3, 4])
    assert r.sampling == {
        "temperature": 0.0,
        "max_tokens": 1,
        "prompt_logprobs": 5,
        "score_from": 2,
    }
    for bad in (0, 4):  # nothing before the first scored position, or nothing to score
        with pytest.raises(ValueError, match="outside 1..3"):
            score_request("s", [1, 2, 3, 4], bad, 5)


def test_scored_lists_keep_the_top_k_by_rank_and_the_own_token() -> None:
    per_position = [None, {7: (-0.1, 1), 8: (-2.5, 2), 9: (-3.0, 3)}, {9: (-4.0, 5), 2: (-0.2, 1)}]
    got = scored_lists([1, 7, 9], per_position, 1, 2)
    assert got == {
        "ids": [7, 9],
        "logprobs": [-0.1, -4.0],  # the own token's, in the top k or not
        "top_ids": [[7, 8], [2]],
        "top_logprobs": [[-0.1, -2.5], [-0.2]],
    }


@dataclass
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 64
    seed: int = 3
    stop: list[str] = field(default_factory=list)


def test_the_sampling_dict_keeps_each_stages_form() -> None:
    """generate sends `stop` even when empty, eval only when set: both forms are hashed into
    cached keys, so each stays as it was."""
    base = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 64, "seed": 3}
    assert sampling_dict(Sampling(), keep_empty_stop=True) == base | {"stop": []}
    assert sampling_dict(Sampling(), keep_empty_stop=False) == base
    assert sampling_dict(Sampling(stop=["\n\n"]), keep_empty_stop=False) == base | {
        "stop": ["\n\n"]
    }
    soft = sampling_dict(Sampling(), keep_empty_stop=False, logprobs=20)
    assert soft == base | {"logprobs": 20}
    processed = sampling_dict(
        Sampling(), keep_empty_stop=False, logprobs=5, logprobs_mode="processed"
    )
    assert processed == base | {"logprobs": 5, "logprobs_mode": "processed"}
