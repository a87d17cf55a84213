"""The student as a draft for its teacher (stages/eval/acceptance.py), on known cases: a student
identical to its teacher is always accepted and gives draft length + 1 tokens per step, one
whose top tokens are never the teacher's gives 0 and 1, and the top-k estimate is never above
the full-distribution value, on random and on real tiny models' distributions, at any
temperature (and equals it when k is the whole vocabulary at T = 1)."""

from __future__ import annotations

import numpy as np
import pytest

from stages.eval.acceptance import (
    accepted_by_position,
    full_acceptance,
    full_kl,
    greedy_acceptance,
    summary,
    tokens_per_step,
    topk_acceptance,
    topk_kl,
)


def _topk(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    top = logits.max(-1, keepdims=True)
    lp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))  # log-softmax
    ids = np.argsort(-lp, -1)[:, :k]
    return ids, np.take_along_axis(lp, ids, -1)


def test_an_identical_student_is_always_accepted() -> None:
    rng = np.random.default_rng(0)
    texts = [list(rng.integers(0, 50, 20)) for _ in range(3)]
    greedy = [greedy_acceptance(t, t) for t in texts]
    logits = rng.normal(size=(20, 50)) * 3
    ids, lp = _topk(logits, 5)
    sampled = [topk_acceptance(ids, lp, ids, lp, 1.0, 50)] * 3
    s = summary(greedy, sampled, 1.0, 5)
    assert s["greedy"]["acceptance"] == 1.0
    assert s["greedy"]["tokens_per_step"] == {str(g): g + 1.0 for g in range(1, 9)}
    assert full_acceptance(logits, logits, 0.7) == pytest.approx([1.0] * 20)
    all_ids, all_lp = _topk(logits, 50)
    assert topk_acceptance(all_ids, all_lp, all_ids, all_lp, 1.0, 50) == pytest.approx([1.0] * 20)


def test_a_student_never_on_the_teachers_top_token_is_never_accepted() -> None:
    teacher = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    greedy = [greedy_acceptance(teacher, [t + 100 for t in teacher])]
    assert accepted_by_position(greedy) == {j: 0.0 for j in range(1, 9)}
    assert tokens_per_step(accepted_by_position(greedy)) == {g: 1.0 for g in range(1, 9)}
    t_ids, s_ids = np.array([[1, 2]]), np.array([[3, 4]])  # disjoint top k: nothing to share
    assert topk_acceptance(t_ids, np.log([[0.6, 0.4]]), s_ids, np.log([[0.5, 0.5]]), 1.0, 9) == [0]


def test_acceptance_by_position_is_the_mean_product_of_its_run() -> None:
    a = [1.0, 0.5, 1.0, 0.0]
    got = accepted_by_position([a], max_draft=3)
    assert got == {1: 2.5 / 4, 2: (0.5 + 0.5 + 0.0) / 3, 3: (0.5 + 0.0) / 2}
    assert tokens_per_step(got) == {
        1: 1 + 2.5 / 4,
        2: 1 + 2.5 / 4 + 1 / 3,
        3: 1 + 2.5 / 4 + 1 / 3 + 0.25,
    }


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("k", [1, 3, 10, 49])
def test_the_topk_estimate_is_never_above_the_full_value(temperature: float, k: int) -> None:
    rng = np.random.default_rng(k)
    t = rng.normal(size=(40, 50)) * rng.uniform(0.5, 4, size=(40, 1))
    s = t + rng.normal(size=(40, 50)) * rng.uniform(0, 3, size=(40, 1))  # near, to far
    full = full_acceptance(t, s, temperature)
    low = topk_acceptance(*_topk(t, k), *_topk(s, k), temperature, 50)
    assert all(lo <= f + 1e-9 for lo, f in zip(low, full, strict=True))
    assert sum(low) > 0  # a bound that is not trivially 0


def test_the_bound_holds_on_real_tiny_models(tiny_model, tmp_path) -> None:
    import torch
    from tiny_model import build_tiny_model
    from transformers import AutoModelForCausalLM

    tiny_teacher = build_tiny_model(tmp_path / "t", layers=3, seed=3)  # other weights, one vocab

    ids = torch.arange(3, 40)[None]
    with torch.no_grad():
        s = AutoModelForCausalLM.from_pretrained(tiny_model).eval()(ids).logits[0].double()
        t = AutoModelForCausalLM.from_pretrained(tiny_teacher).eval()(ids).logits[0].double()
    vocab = s.shape[-1]
    for temperature in (0.7, 1.0, 1.3):
        full = full_acceptance(t.numpy(), s.numpy(), temperature)
        low = topk_acceptance(*_topk(t.numpy(), 5), *_topk(s.numpy(), 5), temperature, vocab)
        assert all(lo <= f + 1e-9 for lo, f in zip(low, full, strict=True))
    exact = topk_acceptance(*_topk(t.numpy(), vocab), *_topk(s.numpy(), vocab), 1.0, vocab)
    assert exact == pytest.approx(full_acceptance(t.numpy(), s.numpy(), 1.0), abs=1e-9)


@pytest.mark.parametrize("k", [1, 3, 10, 50])
def test_the_topk_kl_is_a_lower_bound_zero_for_a_copy_and_exact_over_the_vocabulary(k: int) -> None:
    """KL(teacher || student) per token on the teacher's text: from the top k of each, never
    above the full value, 0 for a student identical to its teacher, the full value at k = V,
    and well above 0 for a student far from it."""
    rng = np.random.default_rng(100 + k)
    t = rng.normal(size=(40, 50)) * rng.uniform(0.5, 4, size=(40, 1))
    s = t + rng.normal(size=(40, 50)) * rng.uniform(0, 3, size=(40, 1))
    full = full_kl(t, s)
    low = topk_kl(*_topk(t, k), *_topk(s, k))
    assert all(0 <= lo <= f + 1e-9 for lo, f in zip(low, full, strict=True))
    assert topk_kl(*_topk(t, k), *_topk(t, k)) == pytest.approx([0.0] * 40, abs=1e-9)
    if k == 50:
        assert low == pytest.approx(full, abs=1e-9)
    if k >= 3:
        assert np.mean(low) > 0.1 * np.mean(full)  # not trivially 0


@pytest.mark.parametrize("seed", range(5))
def test_padding_at_the_one_floor_gives_the_same_estimates(seed: int) -> None:
    """Score rows padded at FLOOR (at -1e9 by _padded as drafting.py had it at 75a6d78, read
    from git): every figure is the same, to the bit, on ragged rows with vLLM's -9999 for an
    underflow and the offline engine's -inf (a student's -9999 is left out: topk_kl takes
    log(0) of it, under either padding)."""
    from typing import Any

    from conftest import functions_at

    from stages.eval.draft_estimate import _padded, _top1

    _old_padded = functions_at("75a6d78", "stages/eval/drafting.py", "_padded", Any=Any)["_padded"]

    rng = np.random.default_rng(seed)

    def row(underflows: tuple[float, ...]) -> dict:
        ids, lps = [], []
        for _ in range(12):
            k = int(rng.integers(1, 6))
            lp = sorted((np.log(rng.dirichlet(np.ones(40)))[:k]).tolist(), reverse=True)
            if k > 2 and rng.random() < 0.3:
                lp[-1] = underflows[int(rng.integers(len(underflows)))]
            ids.append([int(i) for i in rng.choice(40, k, replace=False)])
            lps.append(lp)
        return {"top_ids": ids, "top_logprobs": lps}

    for _ in range(20):
        t, s = row((-9999.0, float("-inf"))), row((float("-inf"),))
        new_t, new_s, old_t, old_s = _padded(t), _padded(s), _old_padded(t), _old_padded(s)
        assert _top1(*new_t) == _top1(*old_t)
        for temperature in (0.7, 1.0, 1.5):
            got = topk_acceptance(*new_t, *new_s, temperature, 40)
            assert got == topk_acceptance(*old_t, *old_s, temperature, 40)
        assert topk_kl(*new_t, *new_s) == topk_kl(*old_t, *old_s)
