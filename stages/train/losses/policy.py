"""The on-policy update's loss: per-token reverse KL to the teacher as an advantage, with an
importance-sampling correction against the rollout's own log-probabilities.

For each token y_t the student sampled (from the rollout engine, at log-probability
`rollout_t`) the teacher's log-probability of that same token is `teacher_t`, and the
advantage is A_t = teacher_t - rollout_t: the negative of the per-token reverse-KL estimate
log q(y_t) - log p(y_t), q the student, p the teacher. The loss over a batch is

    L = -sum_t exp(new_t - rollout_t) * A_t  /  N

with new_t the log-probability of y_t under the weights being trained and N the batch's
scored tokens. Its gradient at the rollout weights is -sum_t A_t grad new_t / N: the
policy-gradient of the expected sum of A_t with no discounting, which is the gradient of the
sequence's reverse KL KL(q || p) when q is the policy that sampled. The ratio corrects for
the weights having moved within a round, and for the sampler's numbers (vLLM, bfloat16)
differing from the trainer's. A_t is data (computed once, when the teacher scored), never
differentiated. A student equal to its teacher has A_t = 0 and no gradient.
torch is imported by the function.
"""

from __future__ import annotations

from typing import Any


def importance_sampled_loss(new: Any, rollout: Any, advantage: Any, mask: Any) -> Any:
    """Sum over the masked tokens of -exp(new - rollout) * advantage (divide by the token
    count outside, as the Trainer's loss does). All [B, T]; `mask` is 1 on scored tokens."""
    import torch

    ratio = torch.exp(new - rollout.detach())
    return -(ratio * advantage.detach() * mask).sum()


def reverse_kl_estimate(advantages: list[float]) -> float:
    """The mean over a sample's tokens of log q(y_t) - log p(y_t) = -A_t: the per-token reverse
    KL estimate rounds report (unbiased for KL(q || p) per token on q's own samples)."""
    return -sum(advantages) / len(advantages) if advantages else 0.0
