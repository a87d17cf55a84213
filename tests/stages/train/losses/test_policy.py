"""The on-policy loss (stages/train/losses/policy.py): no advantage, no gradient; at the rollout
weights its gradient is the advantage-weighted score function; a step raises the probability
of tokens the teacher likes better than the student did and lowers the others."""

from __future__ import annotations

import pytest

from stages.train.losses.policy import importance_sampled_loss, reverse_kl_estimate

torch = pytest.importorskip("torch")


def _logprobs(logits, ids):
    return logits.log_softmax(-1).gather(-1, ids[..., None])[..., 0]


def test_zero_advantage_means_zero_loss_and_gradient() -> None:
    logits = torch.randn(2, 5, 11, requires_grad=True)
    ids = torch.randint(0, 11, (2, 5))
    new = _logprobs(logits, ids)
    loss = importance_sampled_loss(new, new.detach(), torch.zeros(2, 5), torch.ones(2, 5))
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert float(logits.grad.abs().max()) == 0.0


def test_gradient_at_the_rollout_weights_is_the_weighted_score_function() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7, requires_grad=True)
    ids = torch.randint(0, 7, (2, 4))
    adv = torch.randn(2, 4)
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 0, 0]])  # padding and prompt take no part
    new = _logprobs(logits, ids)
    (g,) = torch.autograd.grad(importance_sampled_loss(new, new.detach(), adv, mask), logits)
    (want,) = torch.autograd.grad(-(adv * mask * _logprobs(logits, ids)).sum(), logits)
    assert torch.allclose(g, want, atol=1e-6)
    assert float(g[1, 2:].abs().max()) == 0.0


def test_a_step_follows_the_sign_of_the_advantage() -> None:
    logits = torch.zeros(1, 2, 5, requires_grad=True)
    ids = torch.tensor([[1, 3]])
    rollout = _logprobs(logits, ids).detach()
    adv = torch.tensor([[2.0, -2.0]])  # the teacher likes token 1 here more, token 3 less
    importance_sampled_loss(_logprobs(logits, ids), rollout, adv, torch.ones(1, 2)).backward()
    with torch.no_grad():
        after = _logprobs(logits - 0.5 * logits.grad, ids)
    assert float(after[0, 0]) > float(rollout[0, 0])
    assert float(after[0, 1]) < float(rollout[0, 1])


def test_reverse_kl_estimate_is_the_mean_log_ratio() -> None:
    # student logprobs -1, -2; teacher -1.5, -1: advantages -0.5, +1
    assert reverse_kl_estimate([-0.5, 1.0]) == pytest.approx(((-1 + 1.5) + (-2 + 1.0)) / 2)
    assert reverse_kl_estimate([]) == 0.0
