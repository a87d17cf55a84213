"""The terms of objective features' loss, with the teacher in the training loop (in memory, no
gradient, the student's vocabulary). Over the N trained (completion) tokens of a batch:

    loss = alpha * T^2 * sum_t D(p_t^T, q_t^T) / N + (1 - alpha) * sum_t CE_t / N    (logits)
         + hidden * mean over the layer map of H(proj(s_i), t_j)                    (hidden states)
         + attention * mean over the layer map of A(s_i, t_j)                       (attention)
         + relation * (RKD distance + 2 * RKD angle)                                (relations)

`logits`: as objective kd (alpha, T, the divergence D of stages/train/losses/divergence.py,
`logit_term`), on the teacher's full distribution at every trained position: the student and
the teacher see the same ids. `hidden states`: student layer i's output against teacher layer
j's, at the trained positions; H is the mean squared error per element, or the mean of
1 - cosine; where the widths differ, proj is a linear map
learned with the student (and dropped from the saved model), else the identity. `attention`:
the head-averaged attention maps (so the head counts may differ) of the trained query positions
over the keys they attend to, mean squared error per entry. `relations` (Park et al., RKD):
each sample's representation is its last hidden state averaged over its trained positions; the
distance term compares the batch's pairwise distances, each side divided by its mean, under a
smooth L1; the angle term compares the cosines of the angles every triple of samples makes. A
student identical to its teacher scores 0 on every term but cross-entropy. Several teachers
(train.features.teacher as a list): the logit term is against their weighted mixture
(fused_logprobs); the other terms are the first teacher's.
"""

from __future__ import annotations

from typing import Any


def fused_logprobs(t_logits: list, weights: list[float], temperature: float):
    """The teachers' distribution at temperature T as log-probabilities: one teacher's
    log-softmax(z / T), or several teachers' weighted mean of probabilities (a mixture:
    log sum_i w_i softmax(z_i / T)), the weights summing to 1."""
    import math

    import torch

    t = float(temperature)
    logps = [(z.float() / t).log_softmax(-1) for z in t_logits]
    if len(logps) == 1:
        return logps[0]
    return torch.logsumexp(
        torch.stack([lp + math.log(w) for lp, w in zip(logps, weights, strict=True) if w > 0]), 0
    )


def hidden_term(s_hidden, t_hidden, kind: str):
    """Per trained position, [n, d] each (the student's already projected): mean squared error
    per element, or mean of 1 - cosine."""
    import torch.nn.functional as F

    s, t = s_hidden.float(), t_hidden.float()
    if kind == "mse":
        return F.mse_loss(s, t)
    return (1 - F.cosine_similarity(s, t, dim=-1)).mean()


def attention_term(s_att, t_att, rows, keys):
    """[b, heads, q, k] maps each; `rows` [b, q] the trained query positions, `keys` [b, k] the
    attended ones: the head-averaged maps compared entry by entry on those."""
    s, t = s_att.float().mean(1), t_att.float().mean(1)
    mask = (rows[:, :, None] & keys[:, None, :]).float()
    return (((s - t) ** 2) * mask).sum() / mask.sum().clamp(min=1)


def pooled(hidden, rows):
    """Each sample's last hidden state averaged over its trained positions: [b, d]."""
    w = rows.float()[..., None]
    return (hidden.float() * w).sum(1) / w.sum(1).clamp(min=1)


def relation_term(s_pooled, t_pooled):
    """RKD: distance + 2 * angle (the paper's weights) between a batch's representations."""
    import torch
    import torch.nn.functional as F

    def distances(x: Any) -> Any:
        d = torch.cdist(x, x)
        off = d[~torch.eye(len(x), dtype=torch.bool, device=x.device)]
        return d / off.mean().clamp(min=1e-12)

    def angles(x: Any) -> Any:
        e = F.normalize(x[None, :, :] - x[:, None, :], p=2, dim=-1)  # e[j, i] = x_i - x_j
        return torch.bmm(e, e.transpose(1, 2))  # [j, i, k]: cos of the angle at x_j

    if len(s_pooled) < 2:
        return s_pooled.sum() * 0
    dist = F.smooth_l1_loss(distances(s_pooled.float()), distances(t_pooled.float()))
    if len(s_pooled) < 3:
        return dist
    ang = F.smooth_l1_loss(angles(s_pooled.float()), angles(t_pooled.float()))
    return dist + 2 * ang
