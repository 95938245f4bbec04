"""Preference losses as pure functions of per-sequence summed log-probabilities.

Every function takes batch tensors (one value a preference pair) and returns the per-example loss, so
callers choose the reduction. Notation: h = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l)),
the difference of DPO's implicit rewards (divided by beta) between the chosen and the rejected response.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"log-prob tensors must share one shape, got {shapes}")


def dpo_margin(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
               ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor) -> torch.Tensor:
    """h = (pc - rc) - (pr - rr): how much more the policy prefers y_w over y_l than the reference does."""
    _check_same_shape(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                      ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps)
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO (Rafailov et al. 2023): -log sigmoid(beta * h), per example."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    h = dpo_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return -F.logsigmoid(beta * h)


def _check_weights(weights: torch.Tensor, k: int | None = None) -> None:
    if weights.ndim != 1 or weights.numel() == 0:
        raise ValueError(f"weights must be a non-empty vector, got shape {tuple(weights.shape)}")
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"weights must be finite and non-negative, got {weights.tolist()}")
    if k is not None:
        if not 0 <= k < weights.numel():
            raise ValueError(f"objective_index {k} out of range for {weights.numel()} weights")
        if weights[k] <= 0:
            # MODPO divides by w_k: the objective being optimised must carry weight.
            raise ValueError(f"the optimised objective's weight w_{k} must be positive, got {weights[k].item()}")


def modpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
               ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float,
               weights: torch.Tensor, objective_index: int, margins: torch.Tensor) -> torch.Tensor:
    """MODPO (Zhou et al. 2024): -log sigmoid((beta / w_k) * h - (1 / w_k) * (w_-k . margins)), per example.

    The preference pairs are those of objective k; `margins` (B, K-1) holds the other objectives'
    reward differences r_j(x, y_w) - r_j(x, y_l), j != k, in the order of `weights` with k removed.
    The margin term shifts the target: when the other rewards already favour y_w, the policy's own
    implicit reward has to favour it less, which is how the fixed reward models steer the trade-off.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    weights = torch.as_tensor(weights, dtype=policy_chosen_logps.dtype, device=policy_chosen_logps.device)
    _check_weights(weights, objective_index)
    h = dpo_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    expected = (h.shape[0], weights.numel() - 1)
    if tuple(margins.shape) != expected:
        raise ValueError(f"margins must have shape (batch, K-1) = {expected}, got {tuple(margins.shape)}")
    other_weights = torch.cat([weights[:objective_index], weights[objective_index + 1:]])
    w_k = weights[objective_index]
    margin_term = margins.to(h.dtype) @ other_weights
    return -F.logsigmoid((beta / w_k) * h - margin_term / w_k)


def joint_dpo_loss(h_per_objective: torch.Tensor, weights: torch.Tensor, beta: float,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """Joint-loss DPO: -log sigmoid(sum_k beta * w_k * h_k), per prompt.

    h_per_objective (B, K) holds, for each prompt, the DPO margin of its preference pair under each
    objective (the pairs may differ between objectives). `mask` (B, K) marks which objectives have a pair
    for that prompt; a missing pair contributes nothing to the sum.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    weights = torch.as_tensor(weights, dtype=h_per_objective.dtype, device=h_per_objective.device)
    _check_weights(weights)
    if h_per_objective.ndim != 2 or h_per_objective.shape[1] != weights.numel():
        raise ValueError(f"h_per_objective must have shape (batch, {weights.numel()}), "
                         f"got {tuple(h_per_objective.shape)}")
    if mask is not None:
        if mask.shape != h_per_objective.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != h shape {tuple(h_per_objective.shape)}")
        h_per_objective = torch.where(mask.bool(), h_per_objective, torch.zeros_like(h_per_objective))
    return -F.logsigmoid(beta * (h_per_objective @ weights))


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Sum of log p(token) over the completion tokens of each sequence, shape (B,).

    `labels` are aligned with the input ids (as for a causal LM's `labels=`): position t of the logits
    predicts label t+1, and labels equal to `ignore_index` (prompt and padding) are skipped.
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on (B, T)")
    logits = logits[:, :-1, :]
    labels = labels[:, 1:]
    keep = labels != ignore_index
    safe_labels = torch.where(keep, labels, torch.zeros_like(labels))
    token_logps = torch.gather(logits.float().log_softmax(-1), 2, safe_labels.unsqueeze(-1)).squeeze(-1)
    return (token_logps * keep).sum(-1)
