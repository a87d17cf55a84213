"""Acceptance: how often a teacher would accept a student's drafted tokens (speculative
decoding), and the KL between them, from log-probabilities on text the student drafted (as
speculative decoding drafts: the student writes, the teacher checks each of its tokens given the
same prefix). stages/eval/draft_estimate.py gathers the log-probabilities (eval.draft).

Per position t of a drafted text, with the teacher's distribution p_t and the student's q_t
there, the chance the teacher accepts the student's token is:

  greedy          a_t = 1 if the student's token (its argmax, drafting greedily) is the
                  teacher's argmax, else 0: exact from the top 1 of each
  sampling at T   a_t = sum_x min(p_t^T(x), q_t^T(x)) (Leviathan et al., 2023: speculative
                  sampling accepts a token drawn from q with this probability); from full
                  distributions exactly, or from the top k of each as a lower bound: only
                  tokens in both top-k sets are summed, and each softened probability is
                  divided by an upper bound of its normalizer (the tail's mass is bounded by
                  what the top k leave out), so no term is ever above its true value

From the a_t of many texts: `accepted[j]`, the share of draft positions j = 1..8 whose first j
tokens are all accepted (the mean over every start in a text with j tokens left of the product
of a_t over those j), and `tokens_per_step[g] = 1 + sum_{j <= g} accepted[j]`, the expected
tokens per teacher step with draft length g (the accepted draft plus the teacher's own token).
A student identical to its teacher has every a_t = 1 and g + 1 tokens per step; one whose top
tokens are never the teacher's has 0 and 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from stages.shared.softlabels import FLOOR

if TYPE_CHECKING:
    import numpy as np

MAX_DRAFT = 8  # draft lengths reported: 1..8


def greedy_acceptance(teacher_top1: Sequence[int], drafted: Sequence[int]) -> list[float]:
    """Per position: 1.0 where the drafted (the student's greedy) token is the teacher's top."""
    if len(teacher_top1) != len(drafted):
        raise ValueError(f"{len(teacher_top1)} teacher positions for {len(drafted)} tokens")
    return [1.0 if int(t) == int(s) else 0.0 for t, s in zip(teacher_top1, drafted, strict=True)]


def softened_lower(top_lp: np.ndarray, temperature: float, vocab: int) -> np.ndarray:
    """Lower bounds of p^T(x) = p(x)^(1/T) / Z for each top-k token of each position ([n, k]
    logprobs, at T = 1), from an upper bound of Z = sum over the vocabulary of p^(1/T): the top
    k's own terms plus a bound on the tail's, whose mass is r = 1 - sum of the top k. At
    T <= 1 each tail token has p <= the k-th, so its terms sum to at most r * p_k^(1/T - 1);
    at T > 1, by Hoelder, to at most (V - k)^(1 - 1/T) * r^(1/T). At T = 1 it is exact.
    Padding (logprob <= FLOOR) is no top-k token: p_k is the smallest real one and k counts the
    real ones, so a row padded wider (a store pads every row to its k) gives the same bound."""
    import numpy as np

    live = top_lp > FLOOR
    p = np.where(live, np.exp(top_lp.astype(np.float64)), 0.0)
    inv = 1.0 / float(temperature)
    head = (p**inv).sum(-1)
    rest = np.clip(1.0 - p.sum(-1), 0.0, 1.0)
    if inv >= 1:
        # p_k: the smallest real top-k probability; 1 where nothing is known (every token may
        # be in the tail, each at most 1)
        tail = rest * np.where(live, p, 1.0).min(-1) ** (inv - 1)
    else:
        tail = np.maximum(vocab - live.sum(-1), 0) ** (1 - inv) * rest**inv
    return p**inv / (head + tail)[:, None]


def topk_acceptance(
    t_ids: np.ndarray,
    t_lp: np.ndarray,
    s_ids: np.ndarray,
    s_lp: np.ndarray,
    temperature: float,
    vocab: int,
) -> list[float]:
    """Per position, a lower bound of sum_x min(p^T(x), q^T(x)) from each model's top k ([n, k]
    ids and logprobs at T = 1; padding holds logprob <= FLOOR and counts for nothing)."""

    if t_ids.shape[0] != s_ids.shape[0]:
        raise ValueError(f"{t_ids.shape[0]} teacher positions for {s_ids.shape[0]} student ones")
    pt, ps = softened_lower(t_lp, temperature, vocab), softened_lower(s_lp, temperature, vocab)
    out = []
    for n in range(t_ids.shape[0]):
        mine = {
            int(i): float(v)
            for i, v, lp in zip(s_ids[n], ps[n], s_lp[n], strict=True)
            if lp > FLOOR
        }
        total = sum(
            min(float(v), mine[int(i)])
            for i, v, lp in zip(t_ids[n], pt[n], t_lp[n], strict=True)
            if lp > FLOOR and int(i) in mine
        )
        out.append(min(total, 1.0))
    return out


def topk_kl(
    t_ids: np.ndarray, t_lp: np.ndarray, s_ids: np.ndarray, s_lp: np.ndarray
) -> list[float]:
    """Per position, a lower bound of KL(p || q) in nats, the teacher's p against the student's
    q at T = 1, from each one's top k ([n, k] ids and logprobs; padding <= FLOOR counts for
    nothing). Grouping the vocabulary into the teacher's top-k tokens, each alone, and the rest
    as one block can only lower a KL (the log-sum inequality), and each term p log(p / q) falls
    as q grows, so q is taken at an upper bound: its own value in the student's top k, else the
    student's k-th (no token outside the top k is likelier); the rest block's q at most 1 minus
    the student's mass on the teacher's top k. A student identical to its teacher gets 0."""
    import numpy as np

    if t_ids.shape[0] != s_ids.shape[0]:
        raise ValueError(f"{t_ids.shape[0]} teacher positions for {s_ids.shape[0]} student ones")
    out = []
    for n in range(t_ids.shape[0]):
        live = s_lp[n] > FLOOR
        q_of = {
            int(i): float(np.exp(lp)) for i, lp in zip(s_ids[n][live], s_lp[n][live], strict=True)
        }
        q_kth = min(q_of.values(), default=1.0)
        total, p_top, q_top = 0.0, 0.0, 0.0
        for i, lp in zip(t_ids[n], t_lp[n], strict=True):
            if lp <= FLOOR:
                continue
            p = float(np.exp(lp))
            q = q_of.get(int(i))
            q_top += q or 0.0
            total += p * (lp - math.log(q if q is not None else q_kth))
            p_top += p
        rest_p, rest_q = max(0.0, 1.0 - p_top), max(0.0, 1.0 - q_top)
        if rest_p > 1e-12:
            total += rest_p * math.log(rest_p / max(rest_q, 1e-300))
        out.append(max(total, 0.0))
    return out


def full_kl(t_logits: Any, s_logits: Any) -> list[float]:
    """Per position, KL(p || q) in nats from full logits ([n, V] each): the exact value the
    top-k bound is below (tests)."""
    import numpy as np

    t = np.asarray(t_logits, np.float64)
    s = np.asarray(s_logits, np.float64)
    lp = t - t.max(-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
    lq = s - s.max(-1, keepdims=True)
    lq -= np.log(np.exp(lq).sum(-1, keepdims=True))
    return [float(x) for x in (np.exp(lp) * (lp - lq)).sum(-1)]


def full_acceptance(t_logits: Any, s_logits: Any, temperature: float) -> list[float]:
    """Per position, sum_x min(p^T(x), q^T(x)) from full logits ([n, V] each): the exact value
    the top-k bound is below (tests; a caller holding both models)."""
    import numpy as np

    t = np.asarray(t_logits, np.float64) / temperature
    s = np.asarray(s_logits, np.float64) / temperature
    p = np.exp(t - t.max(-1, keepdims=True))
    q = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    q /= q.sum(-1, keepdims=True)
    return [float(x) for x in np.minimum(p, q).sum(-1)]


def accepted_by_position(texts: Sequence[Sequence[float]], max_draft: int = MAX_DRAFT) -> dict:
    """{j: the mean over every start with j tokens left, in every text, of the product of the
    next j acceptances} for j = 1..max_draft; a j no text is long enough for is left out."""
    out = {}
    for j in range(1, max_draft + 1):
        runs = [math.prod(a[i : i + j]) for a in texts for i in range(len(a) - j + 1)]
        if runs:
            out[j] = sum(runs) / len(runs)
    return out


def tokens_per_step(accepted: dict[int, float]) -> dict[int, float]:
    """{g: 1 + sum_{j <= g} accepted[j]} for each draft length g every j up to it has."""
    out, total = {}, 1.0
    for g in sorted(accepted):
        if g != len(out) + 1:
            break
        total += accepted[g]
        out[g] = total
    return out


def summary(
    greedy: Sequence[Sequence[float]],
    sampled: Sequence[Sequence[float]],
    temperature: float,
    k: int,
) -> dict[str, Any]:
    """The report's figures for one student: per decoding, the mean acceptance, the
    acceptance by draft position and the expected tokens per teacher step by draft length."""
    out: dict[str, Any] = {"texts": len(greedy), "positions": sum(len(a) for a in greedy)}
    for name, texts in (("greedy", greedy), ("sampled", sampled)):
        flat = [x for a in texts for x in a]
        acc = accepted_by_position(texts)
        out[name] = {
            "acceptance": round(sum(flat) / len(flat), 4) if flat else None,
            # string keys: as metrics.json will hold them
            "accepted_by_position": {str(j): round(v, 4) for j, v in acc.items()},
            "tokens_per_step": {str(g): round(v, 4) for g, v in tokens_per_step(acc).items()},
        }
    out["sampled"].update({"temperature": temperature, "top_k": k, "bound": "lower"})
    return out
