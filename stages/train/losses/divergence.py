"""One divergence between a teacher's and a student's next-token distributions, at a temperature,
on the teacher's top k (with its tail) or on the full vocabulary: the soft-label loss of
objective kd (Hinton et al.), the logit term of objective features, and on-policy's topk loss.

    loss = (alpha * T^2 * sum_t D(p_t, q_t) + (1 - alpha) * sum_t CE_t) / N

over the N trained completion tokens of a batch (the Trainer's token count, as for SFT). The
sum over D runs over the tokens that have a teacher distribution: the teacher's own tokens of
the completion; the few tokens the student's chat template adds after it (its turn end, a
newline) have cross-entropy only. alpha = 0 is the SFT loss, to the bit.

p_t and q_t are the teacher's and the student's distributions at temperature T, compared on a
support of the teacher's top k (`tail: renormalize`: both renormalized there), or on the top k
plus one bucket holding the rest of each distribution (`tail: bucket`). With k = the vocabulary
both are the full distributions. The teacher's values are its raw logprobs (temperature 1).
The bucket is formed at T = 1 on both sides and then softened as if it were one token: exact
at T = 1; at other T it is the divergence between the two coarsened distributions. D is forward KL
KL(p || q), reverse KL KL(q || p), or JSD_beta = beta KL(p || m) + (1 - beta) KL(q || m),
m = beta p + (1 - beta) q. `logit_term` is the same divergence on the full vocabulary (objective
features: the teacher in memory, the same ids). torch is imported by the functions that need it.

One floor stands for minus infinity everywhere: stages/shared/softlabels.py's FLOOR, what the
soft-label store writes for an underflow and for padding.
"""

from __future__ import annotations

import math
from typing import Any

from stages.shared.softlabels import FLOOR

# A stored logprob at or below half the floor is padding: the store writes FLOOR there, and
# halfway leaves room for any rounding of it (the line kd has always drawn, -5e3).
PADDING = FLOOR / 2


def log1mexp(x):
    """log(1 - exp(x)) for x <= 0, stable at both ends; FLOOR where the rest is below 1e-6 (a
    top k that holds the whole distribution, up to rounding)."""
    import torch

    safe = x.clamp(max=-1e-6)
    out = torch.where(
        safe > -math.log(2), torch.log(-torch.expm1(safe)), torch.log1p(-torch.exp(safe))
    )
    return torch.where(x > -1e-6, torch.full_like(out, FLOOR), out.clamp(min=FLOOR))


def support_logprobs(student_logits, top_ids, top_logp, temperature: float, tail: str):
    """(teacher, student, valid): log-probabilities at temperature T on the compared support,
    [n, k] or [n, k+1] with the bucket, and which entries are real (not padding)."""
    import torch

    t = float(temperature)
    # masked entries get the finite floor, not -inf: torch.where's unused branch would carry a
    # nan gradient through -inf - (-inf)
    valid = top_logp > PADDING
    if tail == "renormalize":
        teacher = (top_logp.float() / t).masked_fill(~valid, FLOOR).log_softmax(-1)
        student = (student_logits.float() / t).gather(-1, top_ids)
        return teacher, student.masked_fill(~valid, FLOOR).log_softmax(-1), valid
    # Both sides coarsened the same way at T=1 (top k + the rest as one category), then
    # softened: exact at T=1, and zero when the student is the teacher at any T.
    top = student_logits.float().log_softmax(-1).gather(-1, top_ids).masked_fill(~valid, FLOOR)
    student_rest = log1mexp(top.logsumexp(-1, keepdim=True))
    teacher_top = top_logp.float().masked_fill(~valid, FLOOR)
    teacher_rest = log1mexp(teacher_top.logsumexp(-1, keepdim=True))
    teacher = (torch.cat([teacher_top, teacher_rest], -1) / t).log_softmax(-1)
    student = (torch.cat([top, student_rest], -1) / t).log_softmax(-1)
    ones = torch.ones_like(valid[:, :1])
    return teacher, student, torch.cat([valid, ones], -1)


def _kl(logp, logq, valid):
    """sum_i p_i (log p_i - log q_i), over the valid entries where a mask is given (0 * log 0
    is 0)."""
    import torch

    terms = logp.exp() * (logp - logq)
    if valid is not None:
        terms = torch.where(valid, terms, torch.zeros_like(terms))
    return terms.sum(-1)


def divergence(teacher, student, valid, kind: str, beta: float = 0.5):
    """Per position: forward KL, reverse KL or JSD_beta between two distributions given as
    log-probabilities; `valid` masks padded entries of a top-k support (None: every entry)."""
    import torch

    if kind == "forward":
        return _kl(teacher, student, valid)
    if kind == "reverse":
        return _kl(student, teacher, valid)
    both = torch.stack([teacher + math.log(beta), student + math.log1p(-beta)])
    mix = both.logsumexp(0)
    return beta * _kl(teacher, mix, valid) + (1 - beta) * _kl(student, mix, valid)


def kd_sum(student_logits, top_ids, top_logp, kd: Any):
    """T^2 * sum of D over these positions (train.kd's divergence, tail and temperature)."""
    teacher, student, valid = support_logprobs(
        student_logits, top_ids, top_logp, kd.temperature, kd.tail
    )
    d = divergence(teacher, student, valid, kd.divergence, kd.jsd_beta)
    return d.sum() * kd.temperature**2


def logit_term(s_logits, t_logp, temperature: float, divergence_kind: str, jsd_beta: float):
    """T^2 * sum over positions of D(teacher^T, student^T) on the full vocabulary; `t_logp` the
    teacher's log-probabilities at T (stages/train/losses/features.py, fused_logprobs)."""
    t = float(temperature)
    s = (s_logits.float() / t).log_softmax(-1)
    return t * t * divergence(t_logp, s, None, divergence_kind, float(jsd_beta)).sum()
