"""The loss library (stages/train/losses/) against the code it replaced (issue 44): objective kd's
divergence (stages/train/kd.py) and objective features' logit term (stages/train/features.py)
were two implementations of one divergence, with three floors for minus infinity. The old
functions are read from git as commit BASE had them and must give the same numbers on random
inputs: kd's to the bit, features' to the bit but for JSD at a beta other than 1/2, where the
two old implementations already differed by rounding (features took log(float32(beta)) in
float32, kd float32(log(beta)) from Python's double), and the library keeps kd's."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import functions_at

from stages.shared.softlabels import FLOOR
from stages.train.losses.divergence import PADDING, kd_sum, logit_term

torch = pytest.importorskip("torch")

BASE = "75a6d78"  # the last commit with stages/train/kd.py and features.py's logit_term


@pytest.fixture(scope="module")
def old() -> SimpleNamespace:
    names = ("PAD_FLOOR", "FILL", "log1mexp", "support_logprobs", "_kl", "divergence", "kd_sum")
    kd = functions_at(BASE, "stages/train/kd.py", *names, math=math, Any=Any)
    fx = functions_at(BASE, "stages/train/features.py", "logit_term")
    return SimpleNamespace(
        pad_floor=kd["PAD_FLOOR"], fill=kd["FILL"], kd_sum=kd["kd_sum"], logit_term=fx["logit_term"]
    )


KINDS = ("forward", "reverse", "jsd")


def test_one_floor_and_the_padding_line_is_where_kd_drew_it(old: SimpleNamespace) -> None:
    assert FLOOR == old.fill == -1.0e4
    assert PADDING == old.pad_floor


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
def test_kd_loss_equals_the_old_kd_loss_to_the_bit(old: SimpleNamespace, seed: int) -> None:
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
                was = old.kd_sum(logits, ids, lp, kd)
                (g_old,) = torch.autograd.grad(was, logits)
                assert torch.equal(new, was), (tail, kind, temperature)
                assert torch.equal(g_new, g_old), (tail, kind, temperature)


@pytest.mark.parametrize("seed", range(6))
def test_logit_term_equals_the_old_features_term(old: SimpleNamespace, seed: int) -> None:
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
                was = old.logit_term(s, t_logp, temperature, kind, beta)
                (g_old,) = torch.autograd.grad(was, s)
                if kind != "jsd" or beta == 0.5:
                    assert torch.equal(new, was) and torch.equal(g_new, g_old), (kind, beta)
                else:
                    assert torch.allclose(new, was, rtol=1e-5, atol=1e-6), (kind, beta)
                    assert torch.allclose(g_new, g_old, rtol=1e-4, atol=1e-6), (kind, beta)
