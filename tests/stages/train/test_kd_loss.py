"""The soft-label loss against brute force: full-vocabulary KL, the temperature formula, and the
three divergences written out from their definitions."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from pipeline.config import KDConfig
from stages.train.losses.divergence import kd_sum
from stages.train.losses.trainers import KDCollator

V = 37


def _case(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, V, generator=g) * 2, torch.randn(n, V, generator=g) * 2


def _top(teacher_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What generate stores: the raw (T=1) logprobs of the teacher's top k, by rank."""
    lp = teacher_logits.log_softmax(-1)
    top_lp, top_ids = lp.topk(k, -1)
    return top_ids, top_lp


def _kl(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    return (p_log.exp() * (p_log - q_log)).sum()


@pytest.mark.parametrize("tail", ["renormalize", "bucket"])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_k_equal_to_the_vocabulary_is_the_full_kl(tail: str, temperature: float) -> None:
    student, teacher = _case()
    top_ids, top_lp = _top(teacher, V)
    got = kd_sum(student, top_ids, top_lp, KDConfig(temperature=temperature, tail=tail))
    t = temperature
    want = t**2 * _kl((teacher / t).log_softmax(-1), (student / t).log_softmax(-1))
    assert got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-5)


def test_temperature_and_renormalization_follow_the_formula() -> None:
    """k < V: T^2 * sum_i p_i log(p_i / q_i), p and q softmax(logits / T) over the top k."""
    student, teacher = _case(n=3, seed=1)
    k, t = 5, 3.0
    top_ids, top_lp = _top(teacher, k)
    got = kd_sum(student, top_ids, top_lp, KDConfig(temperature=t, tail="renormalize"))
    want = 0.0
    for row in range(3):
        ids = top_ids[row].tolist()
        p = [math.exp(top_lp[row, i].item() / t) for i in range(k)]
        q = [math.exp(student[row, j].item() / t) for j in ids]
        p = [x / sum(p) for x in p]
        q = [x / sum(q) for x in q]
        want += t * t * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_the_bucket_holds_the_rest_of_each_distribution_at_t1() -> None:
    student, teacher = _case(n=4, seed=2)
    k = 4
    top_ids, top_lp = _top(teacher, k)
    got = kd_sum(student, top_ids, top_lp, KDConfig(tail="bucket"))
    want = 0.0
    for row in range(4):
        p = teacher[row].softmax(-1)
        q = student[row].softmax(-1)
        ids = top_ids[row]
        p_sup = torch.cat([p[ids], (1 - p[ids].sum()).reshape(1)])
        q_sup = torch.cat([q[ids], (1 - q[ids].sum()).reshape(1)])
        want += (p_sup * (p_sup.log() - q_sup.log())).sum().item()
    assert got.item() == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("kind", ["reverse", "jsd"])
def test_reverse_kl_and_jsd_from_their_definitions(kind: str) -> None:
    student, teacher = _case(n=5, seed=3)
    top_ids, top_lp = _top(teacher, V)
    got = kd_sum(student, top_ids, top_lp, KDConfig(divergence=kind, jsd_beta=0.3))
    p, q = teacher.log_softmax(-1), student.log_softmax(-1)
    if kind == "reverse":
        want = _kl(q, p)
    else:
        m = (0.3 * p.exp() + 0.7 * q.exp()).log()
        want = 0.3 * _kl(p, m) + 0.7 * _kl(q, m)
    assert got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6)


def test_padding_in_a_short_top_k_is_ignored_and_gradients_stay_finite() -> None:
    """A server may send fewer than k alternatives: the store pads with -1e4; the padded
    entries change nothing, and no nan reaches the gradient (reverse KL and the bucket)."""
    student, teacher = _case(n=2, seed=4)
    top_ids, top_lp = _top(teacher, 3)
    pad_ids = torch.cat([top_ids, torch.zeros(2, 2, dtype=torch.long)], -1)
    pad_lp = torch.cat([top_lp, torch.full((2, 2), -1.0e4)], -1)
    for cfg in (KDConfig(divergence="reverse"), KDConfig(tail="bucket"), KDConfig()):
        s = student.clone().requires_grad_()
        padded = kd_sum(s, pad_ids, pad_lp, cfg)
        padded.backward()
        assert torch.isfinite(s.grad).all()
        assert padded.item() == pytest.approx(kd_sum(student, top_ids, top_lp, cfg).item())


def test_the_divergence_is_zero_when_the_student_is_the_teacher() -> None:
    _, teacher = _case()
    top_ids, top_lp = _top(teacher, 8)
    for cfg in (KDConfig(), KDConfig(tail="bucket"), KDConfig(divergence="jsd")):
        cfg = replace(cfg, temperature=2.0)
        assert abs(kd_sum(teacher, top_ids, top_lp, cfg).item()) < 1e-5


def test_collator_lays_kd_index_out_as_input_ids() -> None:
    def inner(examples):  # TRL's layouts, padded right or one padding-free row
        ids = [torch.tensor(e["input_ids"]) for e in examples]
        if len(examples) > 2:
            return {"input_ids": torch.cat(ids)[None]}
        return {"input_ids": torch.nn.utils.rnn.pad_sequence(ids, batch_first=True)}

    rows = [
        {"input_ids": [1, 2, 3], "kd_index": [-1, 0, 1]},
        {"input_ids": [4, 5], "kd_index": [-1, 2]},
        {"input_ids": [6], "kd_index": [3]},
    ]
    padded = KDCollator(inner)(rows[:2])["kd_index"]
    assert padded.tolist() == [[-1, 0, 1], [-1, 2, -1]]
    packed = KDCollator(inner)(rows)["kd_index"]
    assert packed.tolist() == [[-1, 0, 1, -1, 2, 3]]
