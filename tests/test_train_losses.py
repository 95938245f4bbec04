"""Preference losses: hand-computed values, reductions to DPO, gradient signs, input validation."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
from scipy.special import expit  # noqa: E402

from theraloop.train import dpo_loss, dpo_margin, joint_dpo_loss, modpo_loss, sequence_logps  # noqa: E402


def _pairs(batch: int = 5, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [-torch.rand(batch, generator=generator, dtype=torch.float64) * 20 for _ in range(4)]


def test_dpo_loss_matches_a_hand_computed_value():
    # h = (-1 - -1.5) - (-2 - -1.5) = 0.5 + 0.5 = 1; loss = -log sigmoid(0.1 * 1) = log(1 + e^-0.1)
    loss = dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5]), 0.1)
    assert loss.item() == pytest.approx(0.6443966600735709, abs=1e-7)
    assert loss.item() == pytest.approx(-math.log(expit(0.1)), abs=1e-7)


def test_modpo_loss_matches_hand_computed_values():
    one = torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5])  # h = 1
    weights = torch.tensor([0.5, 0.3, 0.2])
    margins = torch.tensor([[1.0, -2.0]])
    # k = 0: (0.1 / 0.5) * 1 - (0.3 * 1 + 0.2 * -2) / 0.5 = 0.2 + 0.2 = 0.4
    assert modpo_loss(*one, 0.1, weights, 0, margins).item() == pytest.approx(math.log1p(math.exp(-0.4)), abs=1e-6)
    # k = 1: other weights (0.5, 0.2): (0.1 / 0.3) * 1 - (0.5 - 0.4) / 0.3 = 0  ->  log 2
    assert modpo_loss(*one, 0.1, weights, 1, margins).item() == pytest.approx(math.log(2), abs=1e-6)


def test_modpo_equals_dpo_with_zero_margins_and_unit_weight():
    pc, pr, rc, rr = _pairs()
    expected = dpo_loss(pc, pr, rc, rr, 0.3)
    for k, weights in [(0, [1.0, 0.0]), (1, [0.0, 1.0])]:
        got = modpo_loss(pc, pr, rc, rr, 0.3, torch.tensor(weights, dtype=torch.float64), k,
                         torch.zeros(5, 1, dtype=torch.float64))
        torch.testing.assert_close(got, expected)
    # Zero-weight objectives are ignored whatever their margins.
    got = modpo_loss(pc, pr, rc, rr, 0.3, torch.tensor([1.0, 0.0], dtype=torch.float64), 0,
                     torch.randn(5, 1, dtype=torch.float64))
    torch.testing.assert_close(got, expected)


def test_joint_loss_with_one_objective_is_dpo():
    pc, pr, rc, rr = _pairs(seed=1)
    h = dpo_margin(pc, pr, rc, rr).unsqueeze(1)
    torch.testing.assert_close(joint_dpo_loss(h, torch.tensor([1.0], dtype=torch.float64), 0.2),
                               dpo_loss(pc, pr, rc, rr, 0.2))


def test_joint_loss_hand_value_and_mask():
    h = torch.tensor([[1.0, -1.0]])
    # beta * (0.7 * 1 + 0.3 * -1) = 0.5 * 0.4 = 0.2
    loss = joint_dpo_loss(h, torch.tensor([0.7, 0.3]), 0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.2)), abs=1e-6)
    masked = joint_dpo_loss(h, torch.tensor([0.7, 0.3]), 0.5, mask=torch.tensor([[True, False]]))
    assert masked.item() == pytest.approx(math.log1p(math.exp(-0.35)), abs=1e-6)


def _grads(loss_fn, *inputs: torch.Tensor) -> list[torch.Tensor]:
    inputs = [tensor.clone().requires_grad_(True) for tensor in inputs]
    loss_fn(*inputs).sum().backward()
    return [tensor.grad for tensor in inputs]


def test_gradient_signs():
    pc, pr, rc, rr = _pairs(seed=2)
    # DPO: raising the chosen log-prob lowers the loss, raising the rejected one raises it; the
    # reference enters with the opposite sign.
    g_pc, g_pr, g_rc, g_rr = _grads(lambda *t: dpo_loss(*t, 0.1), pc, pr, rc, rr)
    assert (g_pc < 0).all() and (g_pr > 0).all() and (g_rc > 0).all() and (g_rr < 0).all()

    # MODPO: the loss's logit falls by w_j / w_k per unit of margin_j, so a larger margin for a weighted
    # other objective raises the loss (those rewards already explain the preference, so the policy's
    # own margin must do more); a zero-weight objective's margin has no effect.
    weights = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    margins = torch.randn(5, 2, dtype=torch.float64)
    g_pc, g_pr, g_margins = _grads(lambda a, b, m: modpo_loss(a, b, rc, rr, 0.1, weights, 0, m), pc, pr, margins)
    assert (g_pc < 0).all() and (g_pr > 0).all()
    assert (g_margins[:, 0] > 0).all() and (g_margins[:, 1] == 0).all()

    # Joint: each objective's margin lowers the loss in proportion to its weight.
    h = torch.randn(5, 2, dtype=torch.float64)
    (g_h,) = _grads(lambda t: joint_dpo_loss(t, torch.tensor([0.8, 0.2], dtype=torch.float64), 0.1), h)
    assert (g_h < 0).all()
    torch.testing.assert_close(g_h[:, 0] / g_h[:, 1], torch.full((5,), 4.0, dtype=torch.float64))


def test_modpo_gradient_matches_finite_differences():
    pc, pr, rc, rr = _pairs(seed=3)
    weights = torch.tensor([0.6, 0.4], dtype=torch.float64)
    margins = torch.randn(5, 1, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, m: modpo_loss(a, pr, rc, rr, 0.1, weights, 0, m),
                                    (pc.clone().requires_grad_(True), margins.clone().requires_grad_(True)))


@pytest.mark.parametrize("weights, k, margins_shape, message", [
    ([0.0, 1.0], 0, (5, 1), "must be positive"),
    ([-0.5, 1.5], 1, (5, 1), "non-negative"),
    ([0.5, 0.5], 2, (5, 1), "out of range"),
    ([0.5, 0.5], 0, (5, 2), "margins must have shape"),
    ([[0.5, 0.5]], 0, (5, 1), "non-empty vector"),
])
def test_modpo_rejects_invalid_weights_and_shapes(weights, k, margins_shape, message):
    pc, pr, rc, rr = _pairs()
    with pytest.raises(ValueError, match=message):
        modpo_loss(pc, pr, rc, rr, 0.1, torch.tensor(weights, dtype=torch.float64), k,
                   torch.zeros(margins_shape, dtype=torch.float64))


def test_shape_mismatches_and_bad_beta_raise():
    pc, pr, rc, rr = _pairs()
    with pytest.raises(ValueError, match="share one shape"):
        dpo_loss(pc, pr[:3], rc, rr, 0.1)
    with pytest.raises(ValueError, match="beta must be positive"):
        dpo_loss(pc, pr, rc, rr, 0.0)
    with pytest.raises(ValueError, match=r"shape \(batch, 2\)"):
        joint_dpo_loss(torch.zeros(5, 3), torch.tensor([0.5, 0.5]), 0.1)


def test_sequence_logps_sums_completion_tokens_like_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 11, generator=generator)
    input_ids = torch.randint(0, 11, (2, 6), generator=generator)
    labels = input_ids.clone()
    labels[0, :3] = -100  # prompt
    labels[1, :2] = -100
    labels[1, 5] = -100  # padding
    expected = torch.stack([
        -torch.nn.functional.cross_entropy(logits[i, :-1], labels[i, 1:], ignore_index=-100, reduction="sum")
        for i in range(2)])
    torch.testing.assert_close(sequence_logps(logits, labels), expected)
    # Hand check of one token: row 1 keeps only positions 2..4, predicted by logits at 1..3.
    manual = sum(logits[1, t - 1].log_softmax(-1)[input_ids[1, t]] for t in (2, 3, 4))
    assert sequence_logps(logits, labels)[1].item() == pytest.approx(manual.item(), abs=1e-5)
