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
    softened_lower,
    summary,
    tokens_per_step,
    topk_acceptance,
    topk_kl,
)
from stages.shared.softlabels import FLOOR


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


def _ragged(rng: np.random.Generator, underflows: tuple[float, ...]) -> dict:
    """12 positions of 1-5 top tokens over a 40-token vocabulary, some ending in an underflow
    (vLLM's -9999, the offline engine's -inf), as a score's lists."""
    ids, lps = [], []
    for _ in range(12):
        k = int(rng.integers(1, 6))
        lp = sorted((np.log(rng.dirichlet(np.ones(40)))[:k]).tolist(), reverse=True)
        if k > 2 and rng.random() < 0.3:
            lp[-1] = underflows[int(rng.integers(len(underflows)))]
        ids.append([int(i) for i in rng.choice(40, k, replace=False)])
        lps.append(lp)
    return {"ids": [0] * 12, "logprobs": [0.0] * 12, "top_ids": ids, "top_logprobs": lps}


def _padded_to(lists: dict, width: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.zeros((len(lists["top_ids"]), width), np.int64)
    lp = np.full(ids.shape, FLOOR, np.float64)
    for n, (a, b) in enumerate(zip(lists["top_ids"], lists["top_logprobs"], strict=True)):
        ids[n, : len(a)], lp[n, : len(b)] = a, b
    return ids, lp


@pytest.mark.parametrize("seed", range(5))
def test_padding_counts_for_nothing_however_wide(seed: int) -> None:
    """A row padded wider at FLOOR gives the same estimates: padding is no top-k token, so
    neither the smallest top-k probability (T < 1) nor k (T > 1) sees it. Before, a padded
    position's bound took p_k = 0 and its tail vanished: no lower bound at all."""
    rng = np.random.default_rng(seed)
    t, s = _ragged(rng, (-9999.0, float("-inf"))), _ragged(rng, (float("-inf"),))
    narrow = [_padded_to(x, max(len(r) for r in x["top_ids"])) for x in (t, s)]
    wide = [_padded_to(x, 9) for x in (t, s)]
    for temperature in (0.7, 1.0, 1.5):
        width = narrow[0][1].shape[1]
        got = softened_lower(wide[0][1], temperature, 40)[:, :width]
        np.testing.assert_allclose(got, softened_lower(narrow[0][1], temperature, 40), rtol=1e-12)
        got = topk_acceptance(*wide[0], *wide[1], temperature, 40)
        assert got == pytest.approx(topk_acceptance(*narrow[0], *narrow[1], temperature, 40))
    assert topk_kl(*wide[0], *wide[1]) == pytest.approx(topk_kl(*narrow[0], *narrow[1]))


@pytest.mark.parametrize("seed", range(5))
def test_scores_read_from_the_store_give_the_inline_estimates(seed: int, tmp_path) -> None:
    """Draft scores live in the soft-label store (float16, every row padded to k at FLOOR), no
    longer inline in draft_scores.jsonl: on ragged rows with -inf underflows, every estimate read
    back from the store is the one the inline lists give, to float16's rounding; the greedy top
    1 exactly. (vLLM's -9999, its JSON for -inf, rounds to FLOOR in float16: padding, as -inf
    is; a real score that low leaves no mass to the tail, where either reading gives 0.)"""
    from stages.eval.draft_estimate import NO_SCORES, _top1, top_k
    from stages.shared.softlabels import Meta, Store, TokenLogprobs

    rng = np.random.default_rng(seed)
    store, meta = Store.open(tmp_path / "scores.bin"), Meta(5, 1.0, "raw", "v")
    with store:
        for n in range(20):
            t, s = _ragged(rng, (float("-inf"),)), _ragged(rng, (float("-inf"),))
            stored = [
                top_k(store, {"logprobs": store.append(f"{n}{w}", meta, x)})
                for w, x in enumerate(
                    TokenLogprobs.from_lists({**NO_SCORES, **r}, 5) for r in (t, s)
                )
            ]
            inline = [_padded_to(x, 5) for x in (t, s)]
            assert _top1(*stored[0]) == _top1(*inline[0])
            for temperature in (0.7, 1.0, 1.5):
                got = topk_acceptance(*stored[0], *stored[1], temperature, 40)
                want = topk_acceptance(*inline[0], *inline[1], temperature, 40)
                assert got == pytest.approx(want, rel=5e-3, abs=5e-3)
            got, want = topk_kl(*stored[0], *stored[1]), topk_kl(*inline[0], *inline[1])
            assert got == pytest.approx(want, rel=1e-2, abs=1e-2)
