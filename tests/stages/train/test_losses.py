"""The loss library (stages/train/losses/) against the code it replaced (issue 44): objective kd's
divergence (stages/train/kd.py) and objective features' logit term (stages/train/features.py)
were two implementations of one divergence, with three floors for minus infinity. The old code
is copied here verbatim as the reference; the library must give the same numbers on random
inputs: kd's to the bit, features' to the bit but for JSD at a beta other than 1/2, where the
two old implementations already differed by rounding (features took log(float32(beta)) in
float32, kd float32(log(beta)) from Python's double), and the library keeps kd's."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from stages.shared.softlabels import FLOOR
from stages.train.losses.divergence import PADDING, kd_sum, logit_term

torch = pytest.importorskip("torch")

# --- the old code, verbatim (stages/train/kd.py and stages/train/features.py at 75a6d78) -------

OLD_PAD_FLOOR = -5.0e3
OLD_FILL = -1.0e4


def old_log1mexp(x):
    safe = x.clamp(max=-1e-6)
    out = torch.where(
        safe > -math.log(2), torch.log(-torch.expm1(safe)), torch.log1p(-torch.exp(safe))
    )
    return torch.where(x > -1e-6, torch.full_like(out, OLD_FILL), out.clamp(min=OLD_FILL))


def old_support_logprobs(student_logits, top_ids, top_logp, temperature, tail):
    t = float(temperature)
    valid = top_logp > OLD_PAD_FLOOR
    if tail == "renormalize":
        teacher = (top_logp.float() / t).masked_fill(~valid, OLD_FILL).log_softmax(-1)
        student = (student_logits.float() / t).gather(-1, top_ids)
        return teacher, student.masked_fill(~valid, OLD_FILL).log_softmax(-1), valid
    top = student_logits.float().log_softmax(-1).gather(-1, top_ids).masked_fill(~valid, OLD_FILL)
    student_rest = old_log1mexp(top.logsumexp(-1, keepdim=True))
    teacher_top = top_logp.float().masked_fill(~valid, OLD_FILL)
    teacher_rest = old_log1mexp(teacher_top.logsumexp(-1, keepdim=True))
    teacher = (torch.cat([teacher_top, teacher_rest], -1) / t).log_softmax(-1)
    student = (torch.cat([top, student_rest], -1) / t).log_softmax(-1)
    ones = torch.ones_like(valid[:, :1])
    return teacher, student, torch.cat([valid, ones], -1)


def old_kl(logp, logq, valid):
    terms = logp.exp() * (logp - logq)
    return torch.where(valid, terms, torch.zeros_like(terms)).sum(-1)


def old_divergence(teacher, student, valid, kind, beta=0.5):
    if kind == "forward":
        return old_kl(teacher, student, valid)
    if kind == "reverse":
        return old_kl(student, teacher, valid)
    both = torch.stack([teacher + math.log(beta), student + math.log1p(-beta)])
    mix = both.logsumexp(0)
    return beta * old_kl(teacher, mix, valid) + (1 - beta) * old_kl(student, mix, valid)


def old_kd_sum(student_logits, top_ids, top_logp, kd):
    teacher, student, valid = old_support_logprobs(
        student_logits, top_ids, top_logp, kd.temperature, kd.tail
    )
    d = old_divergence(teacher, student, valid, kd.divergence, kd.jsd_beta)
    return d.sum() * kd.temperature**2


def old_logit_term(s_logits, t_logp, temperature, divergence, jsd_beta):
    t = float(temperature)
    s = (s_logits.float() / t).log_softmax(-1)
    p = t_logp
    if divergence == "forward":
        d = (p.exp() * (p - s)).sum(-1)
    elif divergence == "reverse":
        d = (s.exp() * (s - p)).sum(-1)
    else:
        b = float(jsd_beta)
        m = torch.logsumexp(
            torch.stack([p + torch.log(torch.tensor(b)), s + torch.log(torch.tensor(1 - b))]), 0
        )
        d = b * (p.exp() * (p - m)).sum(-1) + (1 - b) * (s.exp() * (s - m)).sum(-1)
    return t * t * d.sum()


# --- the library against it ---------------------------------------------------------------------

KINDS = ("forward", "reverse", "jsd")


def test_one_floor_and_the_padding_line_is_where_kd_drew_it() -> None:
    assert FLOOR == OLD_FILL == -1.0e4
    assert PADDING == OLD_PAD_FLOOR


def _topk_batch(gen: torch.Generator, n: int, vocab: int, k: int):
    """Student logits and a teacher's top k as the store holds them (float16 values), with
    padding at FLOOR, a few -inf underflows stored as FLOOR, and values just either side of
    the padding line."""
    logits = torch.randn(n, vocab, generator=gen) * 3
    teacher = (torch.randn(n, vocab, generator=gen) * 3).log_softmax(-1)
    top_lp, top_ids = teacher.topk(k, -1)
    top_lp = top_lp.half().float()
    pad = torch.rand(n, k, generator=gen) < 0.2
    pad[:, 0] = False  # a position has its top 1
    top_lp = top_lp.masked_fill(pad, FLOOR)
    top_lp[0, -1] = PADDING - 1.0  # padding by the line
    top_lp[1, -1] = PADDING + 1.0  # a (very unlikely) real value above it
    return logits.requires_grad_(), top_ids, top_lp


@pytest.mark.parametrize("seed", range(6))
def test_kd_loss_equals_the_old_kd_loss_to_the_bit(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for tail in ("renormalize", "bucket"):
        for kind in KINDS:
            for temperature in (1.0, 2.0, 0.7):
                beta = float(torch.rand(1, generator=gen)) * 0.9 + 0.05
                kd = SimpleNamespace(
                    temperature=temperature, tail=tail, divergence=kind, jsd_beta=beta
                )
                logits, ids, lp = _topk_batch(gen, 7, 50, 6)
                new = kd_sum(logits, ids, lp, kd)
                (g_new,) = torch.autograd.grad(new, logits)
                old = old_kd_sum(logits, ids, lp, kd)
                (g_old,) = torch.autograd.grad(old, logits)
                assert torch.equal(new, old), (tail, kind, temperature)
                assert torch.equal(g_new, g_old), (tail, kind, temperature)


@pytest.mark.parametrize("seed", range(6))
def test_logit_term_equals_the_old_features_term(seed: int) -> None:
    """To the bit for forward, reverse and JSD at beta 1/2 (the default); JSD at another beta to
    float32 rounding (the constants' last bit, see the module's docstring)."""
    gen = torch.Generator().manual_seed(seed)
    for kind in KINDS:
        for temperature in (1.0, 2.0):
            for beta in (0.5, float(torch.rand(1, generator=gen)) * 0.9 + 0.05):
                s = (torch.randn(9, 64, generator=gen) * 2).requires_grad_()
                t_logp = (torch.randn(9, 64, generator=gen) * 2 / temperature).log_softmax(-1)
                new = logit_term(s, t_logp, temperature, kind, beta)
                (g_new,) = torch.autograd.grad(new, s)
                old = old_logit_term(s, t_logp, temperature, kind, beta)
                (g_old,) = torch.autograd.grad(old, s)
                if kind != "jsd" or beta == 0.5:
                    assert torch.equal(new, old) and torch.equal(g_new, g_old), (kind, beta)
                else:
                    assert torch.allclose(new, old, rtol=1e-5, atol=1e-6), (kind, beta)
                    assert torch.allclose(g_new, g_old, rtol=1e-4, atol=1e-6), (kind, beta)
