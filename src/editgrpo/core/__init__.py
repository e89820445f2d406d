"""Pure tensor math of EditGRPO: group advantages, the policy loss with its per-token treatment of
edited tokens, KL estimators and aggregation modes. Imports only torch (ARCHITECTURE.md)."""

from __future__ import annotations

from .advantages import ADVANTAGE_SCALES, group_advantages
from .losses import AGGREGATIONS, KL_ESTIMATORS, aggregate, kl_penalty, off_policy_shaping, policy_loss
from .masks import TOKEN_TREATMENTS, masked_mean, masked_sum, split_token_masks

__all__ = [
    "ADVANTAGE_SCALES",
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "TOKEN_TREATMENTS",
    "aggregate",
    "group_advantages",
    "kl_penalty",
    "masked_mean",
    "masked_sum",
    "off_policy_shaping",
    "policy_loss",
    "split_token_masks",
]
