"""EditGRPO policy loss: PPO-clip with a per-token off-policy treatment of edited tokens, KL
estimators and aggregation modes (EDITGRPO.md sections 2.6 and 4).

Shapes: B sequences (prompts x group members, flattened), T completion tokens (padded width).
Per-token tensors are (B, T); advantages are (B,), one per sequence (outcome reward).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .masks import TOKEN_TREATMENTS, check_choice, masked_mean, masked_sum, split_token_masks

# Registry of KL estimators (Schulman, "Approximating KL Divergence", 2020,
# http://joschu.net/blog/kl-approx.html); tokens are sampled from pi_theta, r = pi_ref / pi_theta.
KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3")

# Registry of loss aggregations. "dr_grpo": sum / (B * max_completion_length), a constant normaliser
# (Liu et al. 2025, Dr. GRPO; TRL loss_type="dr_grpo"); "token_mean": sum / number of loss tokens
# (DAPO; verl loss_agg_mode="token-mean"); "sequence_mean": mean over sequences of per-sequence
# token means (the original GRPO; verl "seq-mean-token-mean").
AGGREGATIONS: tuple[str, ...] = ("dr_grpo", "token_mean", "sequence_mean")

__all__ = [
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "TOKEN_TREATMENTS",
    "aggregate",
    "kl_penalty",
    "off_policy_shaping",
    "policy_loss",
]


def kl_penalty(logp: Tensor, ref_logp: Tensor, estimator: str = "k3", clamp: float | None = None) -> Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from log-probs of the sampled tokens.

    Args:
        logp: (B, T) log pi_theta of the tokens.
        ref_logp: (B, T) log pi_ref of the same tokens.
        estimator: ``"k1"`` = logp - ref_logp (unbiased, can be negative);
            ``"k2"`` = 0.5 * (logp - ref_logp)^2 (biased, >= 0);
            ``"k3"`` = exp(ref_logp - logp) - (ref_logp - logp) - 1 (unbiased, >= 0; the GRPO
            paper's estimator, TRL's ``per_token_kl`` and verl's "low_var_kl").
        clamp: None, or c > 0: the estimate is clamped to [-c, c], so a token far off the reference
            adds at most c and no gradient (the authors' release, verl/EasyR1 ``kl_penalty``
            ``low_var_kl``, clamps k3 to [-10, 10]). For k3 the log-ratio is first bounded to
            [-(c + 2), log(2c + 2)], where k3 already exceeds c (k3(-(c+2)) = c + 1 + e^-(c+2);
            k3(log(2c+2)) = 2c + 1 - log(2c + 2) > c since e^(c+1) > 2c + 2): the values are
            those of the plain clamp, but exp cannot overflow to inf, whose zero-gradient branch
            would otherwise backpropagate 0 * inf = NaN.

    Returns:
        (B, T) KL estimate; masking is the caller's.
    """
    check_choice("KL estimator", estimator, KL_ESTIMATORS)
    if clamp is not None and not clamp > 0:
        raise ValueError(f"the KL clamp must be > 0 or None, got {clamp}")
    if estimator == "k1":
        kl = logp - ref_logp
    elif estimator == "k2":
        kl = 0.5 * (logp - ref_logp) ** 2
    else:
        log_r = ref_logp - logp  # log(pi_ref / pi_theta)
        if clamp is not None:
            log_r = torch.clamp(log_r, -(clamp + 2.0), math.log(2.0 * clamp + 2.0))
        kl = torch.exp(log_r) - log_r - 1.0
    return kl if clamp is None else torch.clamp(kl, -clamp, clamp)


def off_policy_shaping(logp: Tensor, gamma: float) -> Tensor:
    """LUFFY's policy shaping f(p) = p / (p + gamma) of the off-policy ratio p = pi_theta / 1
    (Yan et al. 2025, "Learning to Reason under Off-Policy Guidance", section 3.2). Its gradient
    w.r.t. log p is f'(p) * p = gamma * p / (p + gamma)^2, which, unlike p itself, does not vanish
    for tokens the policy finds unlikely. Shape preserved."""
    p = torch.exp(logp)
    return p / (p + gamma)


def aggregate(
    per_token: Tensor, mask: Tensor, aggregation: str, max_completion_length: int | None = None
) -> Tensor:
    """Reduce a (B, T) per-token loss over ``mask`` (B, T) bool to a scalar.

    - ``dr_grpo``: sum / (B * max_completion_length); the normaliser does not depend on the mask.
    - ``token_mean``: sum / number of masked tokens (1 if none).
    - ``sequence_mean``: mean, over the sequences with at least one masked token, of each one's
      token mean (sequences left with no loss token, e.g. fully inserted under ``mask``, are not
      counted; 0 if there are none).
    """
    check_choice("aggregation", aggregation, AGGREGATIONS)
    if aggregation == "token_mean":
        return masked_mean(per_token, mask)
    if aggregation == "sequence_mean":
        per_sequence = masked_mean(per_token, mask, dim=1)  # (B, T) -> (B,)
        return masked_mean(per_sequence, mask.any(dim=1))
    if max_completion_length is None or max_completion_length < per_token.shape[1]:
        raise ValueError(
            f"aggregation 'dr_grpo' needs max_completion_length >= the padded width T = "
            f"{per_token.shape[1]}, got {max_completion_length}"
        )
    return masked_sum(per_token, mask) / (per_token.shape[0] * max_completion_length)


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    completion_mask: Tensor,
    inserted_mask: Tensor,
    *,
    treatment: str = "on_policy",
    clip_eps_low: float = 0.2,
    clip_eps_high: float = 0.2,
    gamma: float = 0.1,
    ref_logp: Tensor | None = None,
    kl_beta: float = 0.0,
    kl_estimator: str = "k3",
    kl_clamp: float | None = None,
    aggregation: str = "dr_grpo",
    max_completion_length: int | None = None,
    token_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The EditGRPO loss of one micro-batch.

    Args:
        logp: (B, T) log pi_theta of the completion tokens (carries the gradient).
        old_logp: (B, T) log-probs of the behaviour policy (detached here: a constant of the
            objective). Ignored on off-policy tokens, whose behaviour probability is 1.
        advantages: (B,) one advantage per sequence.
        completion_mask: (B, T) bool, real completion tokens.
        inserted_mask: (B, T) bool, tokens inside reference spans inserted by an edit.
        treatment: how inserted tokens enter the loss (EDITGRPO.md section 4):
            ``on_policy`` like sampled tokens; ``off_policy`` with the LUFFY-shaped, unclipped
            objective f(pi_theta) * A; ``mask`` not at all.
        clip_eps_low, clip_eps_high: PPO clip range [1 - low, 1 + high] (DAPO's decoupled clip).
        gamma: LUFFY's shaping constant.
        ref_logp: (B, T) reference-model log-probs, detached here; needed when ``kl_beta > 0``.
        kl_beta: weight of the per-token KL penalty.
        kl_estimator: one of ``KL_ESTIMATORS``.
        kl_clamp: None or c > 0, the per-token KL estimate clamped to [-c, c] (``kl_penalty``).
        aggregation: one of ``AGGREGATIONS``.
        max_completion_length: the generation limit, needed by ``dr_grpo``.
        token_weights: optional (B, T) or (B, 1) detached multiplier of the policy-gradient term,
            e.g. TRL's truncated importance weight pi_train / pi_sampler of tokens a vLLM engine
            sampled (GRPOTrainer ``importance_sampling_ratio``); the KL term is not weighted.

    Per-token loss on the loss mask (the completion mask, less inserted tokens under ``mask``):
        on-policy:  -min(r * A, clip(r, 1 - low, 1 + high) * A),  r = exp(logp - old_logp)
        off-policy: -f(p) * A,  p = exp(logp),  f(p) = p / (p + gamma)
        plus kl_beta * KL(logp, ref_logp) on every loss token (off-policy ones included).
    Under ``mask`` the removed tokens are out of every normaliser except ``dr_grpo``'s, which is
    the constant B * max_completion_length by design: the kept tokens then get exactly the
    gradient they get under ``on_policy``, and masking only takes the inserted tokens' terms away.

    Returns:
        ``(loss, metrics)``: a 0-dim loss and 0-dim detached metrics: ``clip_frac`` (on-policy
        tokens whose clipped term is active: r > 1 + high with A > 0, or r < 1 - low with A < 0,
        as TRL counts them), ``clip_frac_low``, ``clip_frac_high``, ``ratio_mean`` (on-policy
        tokens), ``kl_mean`` (loss tokens; 0 without ``ref_logp``), ``inserted_frac`` (inserted
        tokens / completion tokens), ``off_policy_prob_mean`` (mean p on off-policy tokens),
        ``pg_loss`` and ``kl_loss`` (the two parts of ``loss``).
    """
    check_choice("KL estimator", kl_estimator, KL_ESTIMATORS)
    check_choice("aggregation", aggregation, AGGREGATIONS)
    if logp.dim() != 2 or old_logp.shape != logp.shape:
        raise ValueError(
            f"logp {tuple(logp.shape)} and old_logp {tuple(old_logp.shape)} must share one (B, T) shape"
        )
    if completion_mask.shape != logp.shape:
        raise ValueError(
            f"completion_mask {tuple(completion_mask.shape)} must be (B, T) = {tuple(logp.shape)}"
        )
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages {tuple(advantages.shape)} must be (B,) = ({logp.shape[0]},)")
    if kl_beta > 0 and ref_logp is None:
        raise ValueError("kl_beta > 0 needs ref_logp")
    if ref_logp is not None and ref_logp.shape != logp.shape:
        raise ValueError(f"ref_logp {tuple(ref_logp.shape)} must be (B, T) = {tuple(logp.shape)}")

    loss_mask, on_mask, off_mask = split_token_masks(completion_mask, inserted_mask, treatment)
    adv = advantages.detach().to(logp.dtype)[:, None]  # (B,) -> (B, 1), broadcast over tokens

    # On-policy: PPO-clip (verl core_algos.compute_policy_loss, TRL GRPOTrainer._compute_loss).
    log_ratio = logp - old_logp.detach()
    # Off-policy positions get log-ratio 0 here, so a huge logp - old_logp there cannot overflow.
    ratio = torch.exp(torch.where(on_mask, log_ratio, torch.zeros_like(log_ratio)))  # (B, T)
    clipped = torch.clamp(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high)
    on_loss = -torch.minimum(ratio * adv, clipped * adv)  # (B, T)
    # Off-policy: behaviour probability 1, shaped and unclipped (LUFFY).
    off_loss = -off_policy_shaping(logp, gamma) * adv  # (B, T)
    pg_per_token = torch.where(off_mask, off_loss, on_loss)  # (B, T)
    if token_weights is not None:
        pg_per_token = pg_per_token * token_weights.detach().to(pg_per_token.dtype)  # (B, T) or (B, 1)

    pg_loss = aggregate(pg_per_token, loss_mask, aggregation, max_completion_length)
    if ref_logp is not None:
        kl = kl_penalty(logp, ref_logp.detach(), kl_estimator, kl_clamp)  # (B, T)
        kl_loss = aggregate(kl, loss_mask, aggregation, max_completion_length)
        kl_mean = masked_mean(kl.detach(), loss_mask)
    else:
        kl_loss = kl_mean = logp.new_zeros(())
    loss = pg_loss + kl_beta * kl_loss

    with torch.no_grad():
        low = on_mask & (ratio < 1.0 - clip_eps_low) & (adv < 0)
        high = on_mask & (ratio > 1.0 + clip_eps_high) & (adv > 0)
        n_on = on_mask.sum().clamp(min=1)
        completion = completion_mask.bool()
        metrics = {
            "clip_frac": (low | high).sum() / n_on,
            "clip_frac_low": low.sum() / n_on,
            "clip_frac_high": high.sum() / n_on,
            "ratio_mean": masked_mean(ratio, on_mask),
            "kl_mean": kl_mean.detach(),
            "inserted_frac": (inserted_mask.bool() & completion).sum() / completion.sum().clamp(min=1),
            "off_policy_prob_mean": masked_mean(torch.exp(logp), off_mask),
            "pg_loss": pg_loss.detach(),
            "kl_loss": kl_loss.detach(),
        }
    return loss, metrics
