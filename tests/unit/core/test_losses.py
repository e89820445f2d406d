"""Policy loss: KL estimators, PPO clipping, aggregation normalisers on a ragged mask, the gradient
facts of the three token treatments (EDITGRPO.md section 4), and equivalence with a per-token
Python loop."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from editgrpo.core import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    TOKEN_TREATMENTS,
    aggregate,
    kl_penalty,
    policy_loss,
    split_token_masks,
)

LN = math.log

# ---------------------------------------------------------------------------------------------
# KL estimators
# ---------------------------------------------------------------------------------------------


def test_kl_estimators_on_known_values() -> None:
    logp, ref = torch.tensor([[LN(0.5)]]), torch.tensor([[LN(0.25)]])
    # k1 = ln 0.5 - ln 0.25 = ln 2 = 0.693147
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(LN(2.0))
    # k2 = 0.5 * (ln 2)^2 = 0.240227
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5 * LN(2.0) ** 2)
    # k3: log r = ln 0.25 - ln 0.5 = -ln 2; exp(-ln 2) + ln 2 - 1 = 0.5 + 0.693147 - 1 = 0.193147
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 + LN(2.0) - 1.0)


def test_kl_estimators_are_zero_at_equality_and_k2_k3_nonnegative() -> None:
    gen = torch.Generator().manual_seed(0)
    logp = -torch.rand(4, 7, generator=gen, dtype=torch.float64) * 5
    for estimator in KL_ESTIMATORS:
        assert torch.equal(kl_penalty(logp, logp, estimator), torch.zeros_like(logp))
    ref = -torch.rand(4, 7, generator=gen, dtype=torch.float64) * 5
    assert (kl_penalty(logp, ref, "k3") >= 0).all()
    assert (kl_penalty(logp, ref, "k2") >= 0).all()
    assert (kl_penalty(logp, ref, "k1") < 0).any()  # k1 alone can go negative


def test_k1_and_k3_are_unbiased_under_the_policy() -> None:
    # E_{x ~ p}[k3] = sum p (q/p) - sum p log(q/p) - 1 = 1 + KL(p||q) - 1 = KL(p||q), exactly.
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)
    true_kl = (p * (p / q).log()).sum()  # 0.5 ln 2.5 + 0.3 ln 1.5 + 0.2 ln(1/3) = 0.360544
    assert true_kl.item() == pytest.approx(0.5 * LN(2.5) + 0.3 * LN(1.5) + 0.2 * LN(1 / 3))
    for estimator in ("k1", "k3"):
        expected = (p * kl_penalty(p.log()[None], q.log()[None], estimator)[0]).sum()
        torch.testing.assert_close(expected, true_kl)


def test_kl_clamp_by_hand() -> None:
    # log r = ref - logp. k3 at log r = 3: e^3 - 3 - 1 = 16.0855 -> clamped to 10, no gradient;
    # at log r = -12: e^-12 + 12 - 1 = 11.000006 -> 10; at log r = 1: e - 2 = 0.718282 (kept,
    # gradient d k3 / d logp = 1 - e^(log r) = 1 - e = -1.718282).
    ref = torch.zeros(1, 3, dtype=torch.float64)
    logp = torch.tensor([[-3.0, 12.0, -1.0]], dtype=torch.float64, requires_grad=True)
    kl = kl_penalty(logp, ref, "k3", clamp=10.0)
    torch.testing.assert_close(kl, torch.tensor([[10.0, 10.0, math.e - 2.0]], dtype=torch.float64))
    kl.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 0.0, 1.0 - math.e]], dtype=torch.float64))
    # Unclamped, the same tokens keep their full values.
    free = kl_penalty(logp.detach(), ref, "k3")
    torch.testing.assert_close(
        free[0, :2], torch.tensor([math.exp(3) - 4.0, math.exp(-12) + 11.0], dtype=torch.float64)
    )
    # k1 is clamped on both sides: ln-ratio 15 -> 10, -15 -> -10.
    k1 = kl_penalty(torch.tensor([[15.0, -15.0]]), torch.zeros(1, 2), "k1", clamp=10.0)
    torch.testing.assert_close(k1, torch.tensor([[10.0, -10.0]]))


def test_kl_clamp_gives_finite_gradients_where_exp_overflows() -> None:
    # log r = 200 overflows exp in float32 (inf); the clamp's zero-gradient branch would then
    # backpropagate 0 * inf = NaN. The bounded log-ratio keeps it finite (and zero).
    logp = torch.tensor([[-200.0, 0.0]], requires_grad=True)
    kl = kl_penalty(logp, torch.zeros(1, 2), "k3", clamp=10.0)
    kl.sum().backward()
    assert torch.isfinite(logp.grad).all() and logp.grad[0, 0] == 0.0
    torch.testing.assert_close(kl, torch.tensor([[10.0, 0.0]]))
    with pytest.raises(ValueError, match="KL clamp must be > 0"):
        kl_penalty(logp, logp, "k3", clamp=0.0)


@pytest.mark.parametrize("clamp", [0.1, 1.0, 10.0, 50.0])
def test_kl_clamp_bounds_do_not_change_values(clamp: float) -> None:
    # The inner bound on the log-ratio only acts where k3 already exceeds the clamp.
    log_r = torch.linspace(-80.0, 30.0, 20001, dtype=torch.float64)
    plain = torch.clamp(torch.exp(log_r) - log_r - 1.0, -clamp, clamp)
    torch.testing.assert_close(
        kl_penalty(-log_r[None], torch.zeros(1, log_r.numel(), dtype=torch.float64), "k3", clamp)[0], plain
    )


def test_policy_loss_passes_the_kl_clamp() -> None:
    logp = torch.tensor([[-3.0, -1.0]], dtype=torch.float64)
    ref = torch.zeros_like(logp)
    mask = torch.ones(1, 2, dtype=torch.bool)
    args = dict(kl_beta=1.0, ref_logp=ref, aggregation="token_mean")
    _, clamped = policy_loss(
        logp, logp, torch.zeros(1, dtype=torch.float64), mask, ~mask, kl_clamp=10.0, **args
    )
    _, free = policy_loss(logp, logp, torch.zeros(1, dtype=torch.float64), mask, ~mask, **args)
    # token mean of [min(e^3 - 4, 10), e - 2] vs [e^3 - 4, e - 2]
    assert clamped["kl_loss"].item() == pytest.approx((10.0 + math.e - 2.0) / 2)
    assert free["kl_loss"].item() == pytest.approx((math.exp(3) - 4.0 + math.e - 2.0) / 2)


def test_unknown_estimator_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid names: k1, k2, k3"):
        kl_penalty(torch.zeros(1, 1), torch.zeros(1, 1), "k4")


# ---------------------------------------------------------------------------------------------
# PPO clipping, one token at a time (token_mean over one token = the token's loss)
# ---------------------------------------------------------------------------------------------


def _one_token(ratio: float, advantage: float, **kwargs):
    logp = torch.tensor([[LN(ratio)]], dtype=torch.float64, requires_grad=True)
    old = torch.zeros(1, 1, dtype=torch.float64)
    mask = torch.ones(1, 1, dtype=torch.bool)
    loss, metrics = policy_loss(
        logp,
        old,
        torch.tensor([advantage], dtype=torch.float64),
        mask,
        torch.zeros_like(mask),
        aggregation="token_mean",
        **kwargs,
    )
    loss.backward()
    return loss.item(), logp.grad.item(), metrics


@pytest.mark.parametrize(
    ("ratio", "advantage", "loss", "grad", "low", "high"),
    [
        # r = 1.5 > 1.2, A = +1: -min(1.5, 1.2) = -1.2, clipped, no gradient
        (1.5, 1.0, -1.2, 0.0, 0.0, 1.0),
        # r = 0.5 < 0.8, A = -1: -min(-0.5, -0.8) = 0.8, clipped, no gradient
        (0.5, -1.0, 0.8, 0.0, 1.0, 0.0),
        # r = 0.5, A = +1: -min(0.5, 0.8) = -0.5, unclipped; d/dlogp (-r A) = -r A = -0.5
        (0.5, 1.0, -0.5, -0.5, 0.0, 0.0),
        # r = 1.5, A = -1: -min(-1.5, -1.2) = 1.5, unclipped; d/dlogp = -r A = 1.5
        (1.5, -1.0, 1.5, 1.5, 0.0, 0.0),
        # r = 1.1 inside [0.8, 1.2], A = 2: -2.2, gradient -2.2
        (1.1, 2.0, -2.2, -2.2, 0.0, 0.0),
    ],
)
def test_ppo_clipping(
    ratio: float, advantage: float, loss: float, grad: float, low: float, high: float
) -> None:
    got_loss, got_grad, metrics = _one_token(ratio, advantage, clip_eps_low=0.2, clip_eps_high=0.2)
    assert got_loss == pytest.approx(loss)
    assert got_grad == pytest.approx(grad)
    assert metrics["clip_frac_low"].item() == low
    assert metrics["clip_frac_high"].item() == high
    assert metrics["clip_frac"].item() == low + high
    assert metrics["ratio_mean"].item() == pytest.approx(ratio)


def test_decoupled_clip_range() -> None:
    # eps_high 0.28 (DAPO's clip-higher): r = 1.25 with A = 1 is not clipped -> -1.25
    loss, grad, _ = _one_token(1.25, 1.0, clip_eps_low=0.2, clip_eps_high=0.28)
    assert (loss, grad) == (pytest.approx(-1.25), pytest.approx(-1.25))
    # ... but with eps_high 0.2 it is: -1.2, no gradient
    loss, grad, _ = _one_token(1.25, 1.0, clip_eps_low=0.2, clip_eps_high=0.2)
    assert (loss, grad) == (pytest.approx(-1.2), 0.0)


def test_kl_term_is_added_with_its_weight() -> None:
    # ratio 1, A = 0: the surrogate is 0; k3 at logp = ln 0.5, ref = ln 0.25 is 0.193147 (above);
    # loss = 0.1 * 0.193147; d k3 / d logp = 1 - exp(ref - logp) = 1 - 0.5 = 0.5 -> grad 0.05
    logp = torch.tensor([[LN(0.5)]], dtype=torch.float64, requires_grad=True)
    mask = torch.ones(1, 1, dtype=torch.bool)
    loss, metrics = policy_loss(
        logp,
        logp.detach(),
        torch.zeros(1, dtype=torch.float64),
        mask,
        torch.zeros_like(mask),
        ref_logp=torch.tensor([[LN(0.25)]], dtype=torch.float64),
        kl_beta=0.1,
        aggregation="token_mean",
    )
    loss.backward()
    assert loss.item() == pytest.approx(0.1 * (0.5 + LN(2.0) - 1.0))
    assert logp.grad.item() == pytest.approx(0.05)
    assert metrics["kl_mean"].item() == pytest.approx(0.5 + LN(2.0) - 1.0)


def test_token_weights_scale_the_policy_term_but_not_the_kl() -> None:
    # Two tokens, ratio 1, A = 2: each surrogate is -2; weights 0.5 and 1.5 (a vLLM importance
    # weight) give pg = (-1 - 3) / 2 = -2 under token_mean and gradients -1 and -3 per token.
    # The KL (ref = logp, so 0 with gradient 0) is untouched by the weights.
    logp = torch.tensor([[LN(0.5), LN(0.25)]], dtype=torch.float64, requires_grad=True)
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss, metrics = policy_loss(
        logp,
        logp.detach(),
        torch.tensor([2.0], dtype=torch.float64),
        mask,
        torch.zeros_like(mask),
        ref_logp=logp.detach(),
        kl_beta=0.5,
        aggregation="token_mean",
        token_weights=torch.tensor([[0.5, 1.5]], dtype=torch.float64),
    )
    loss.backward()
    assert loss.item() == pytest.approx(-2.0)
    assert logp.grad.tolist() == [[pytest.approx(-0.5), pytest.approx(-1.5)]]
    assert metrics["kl_loss"].item() == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------
# Aggregation normalisers on a ragged mask
# ---------------------------------------------------------------------------------------------

RAGGED = torch.tensor(
    [[True, True, True, True], [True, True, False, False], [True, False, False, False]]
)  # lengths 4, 2, 1


def test_aggregate_normalisers() -> None:
    nan = float("nan")
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, nan, 99.0], [7.0, nan, nan, nan]])
    # token_mean: (1 + 2 + 3 + 4 + 5 + 6 + 7) / 7 = 28 / 7 = 4; padding (NaN, 99) never leaks in
    assert aggregate(values, RAGGED, "token_mean").item() == pytest.approx(4.0)
    # sequence_mean: (10/4 + 11/2 + 7/1) / 3 = (2.5 + 5.5 + 7) / 3 = 5
    assert aggregate(values, RAGGED, "sequence_mean").item() == pytest.approx(5.0)
    # dr_grpo: 28 / (B * L) = 28 / (3 * 5) = 1.866667
    assert aggregate(values, RAGGED, "dr_grpo", 5).item() == pytest.approx(28 / 15)
    # an empty fourth sequence: not counted by sequence_mean, counted by dr_grpo's B
    values4 = torch.cat([values, torch.full((1, 4), 50.0)])
    mask4 = torch.cat([RAGGED, torch.zeros(1, 4, dtype=torch.bool)])
    assert aggregate(values4, mask4, "token_mean").item() == pytest.approx(4.0)
    assert aggregate(values4, mask4, "sequence_mean").item() == pytest.approx(5.0)
    assert aggregate(values4, mask4, "dr_grpo", 5).item() == pytest.approx(28 / 20)
    # nothing selected at all: 0, not NaN
    none = torch.zeros(3, 4, dtype=torch.bool)
    for aggregation in AGGREGATIONS:
        assert aggregate(values, none, aggregation, 4).item() == 0.0


def test_dr_grpo_needs_the_max_completion_length() -> None:
    with pytest.raises(ValueError, match="max_completion_length"):
        aggregate(torch.zeros(3, 4), RAGGED, "dr_grpo")
    with pytest.raises(ValueError, match="max_completion_length"):
        aggregate(torch.zeros(3, 4), RAGGED, "dr_grpo", 3)  # shorter than T = 4
    with pytest.raises(ValueError, match="valid names: dr_grpo, token_mean, sequence_mean"):
        aggregate(torch.zeros(3, 4), RAGGED, "sum")


def _ratio_one_loss(inserted: torch.Tensor, treatment: str, aggregation: str) -> float:
    logp = torch.full((3, 4), -1.0, dtype=torch.float64)
    adv = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    loss, _ = policy_loss(
        logp,
        logp,
        adv,
        RAGGED,
        inserted,
        treatment=treatment,
        aggregation=aggregation,
        max_completion_length=4,
    )
    return loss.item()


def test_policy_loss_normalisers_on_a_ragged_mask() -> None:
    # ratio 1 everywhere: each token's loss is -A of its sequence; A = [1, 2, 3], lengths [4, 2, 1]
    no_insert = torch.zeros(3, 4, dtype=torch.bool)
    # token_mean: -(4*1 + 2*2 + 1*3) / 7 = -11/7
    assert _ratio_one_loss(no_insert, "on_policy", "token_mean") == pytest.approx(-11 / 7)
    # sequence_mean: -(1 + 2 + 3) / 3 = -2
    assert _ratio_one_loss(no_insert, "on_policy", "sequence_mean") == pytest.approx(-2.0)
    # dr_grpo with L = 4: -11 / (3 * 4) = -11/12
    assert _ratio_one_loss(no_insert, "on_policy", "dr_grpo") == pytest.approx(-11 / 12)

    # `mask` drops tokens 2, 3 of sequence 0 from the loss and from the token normalisers:
    inserted = no_insert.clone()
    inserted[0, 2:] = True
    # token_mean: -(2*1 + 2*2 + 1*3) / 5 = -9/5
    assert _ratio_one_loss(inserted, "mask", "token_mean") == pytest.approx(-9 / 5)
    # sequence_mean: sequence 0's mean is still -1 -> -(1 + 2 + 3) / 3 = -2
    assert _ratio_one_loss(inserted, "mask", "sequence_mean") == pytest.approx(-2.0)
    # dr_grpo keeps its constant normaliser: -9 / 12
    assert _ratio_one_loss(inserted, "mask", "dr_grpo") == pytest.approx(-9 / 12)
    # a sequence left with no token is not counted by sequence_mean: -(1 + 2) / 2 = -1.5
    inserted[2, 0] = True
    assert _ratio_one_loss(inserted, "mask", "sequence_mean") == pytest.approx(-1.5)


# ---------------------------------------------------------------------------------------------
# Gradient facts of the token treatments (autograd)
# ---------------------------------------------------------------------------------------------


def _random_batch(seed: int, b: int = 4, t: int = 6):
    gen = torch.Generator().manual_seed(seed)
    logp = -torch.rand(b, t, generator=gen, dtype=torch.float64) * 3 - 0.05
    old = logp + 0.3 * torch.randn(b, t, generator=gen, dtype=torch.float64)
    ref = logp + 0.3 * torch.randn(b, t, generator=gen, dtype=torch.float64)
    adv = torch.randn(b, generator=gen, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (b,), generator=gen)
    completion = torch.arange(t)[None, :] < lengths[:, None]
    inserted = torch.rand(b, t, generator=gen) < 0.4
    return logp, old, ref, adv, completion, inserted


def _grad(logp, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = logp.clone().requires_grad_(True)
    loss, _ = policy_loss(leaf, *args, **kwargs)
    loss.backward()
    return loss.detach(), leaf.grad


KW = {"ref_logp": None, "kl_beta": 0.0, "max_completion_length": 8}


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_on_policy_edited_tokens_get_vanilla_grpo_gradients(aggregation: str) -> None:
    logp, old, ref, adv, completion, inserted = _random_batch(0)
    kw = {**KW, "ref_logp": ref, "kl_beta": 0.01, "aggregation": aggregation, "treatment": "on_policy"}
    loss_edit, grad_edit = _grad(logp, old, adv, completion, inserted, **kw)
    loss_plain, grad_plain = _grad(logp, old, adv, completion, torch.zeros_like(inserted), **kw)
    assert torch.equal(grad_edit, grad_plain)
    assert torch.equal(loss_edit, loss_plain)


@pytest.mark.parametrize("p", [0.5, 0.02, 0.9])
def test_off_policy_gradient_is_a_times_shaping_derivative(p: float) -> None:
    # One off-policy token, A = 2, gamma = 0.1, token_mean over one token (normaliser 1):
    # loss = -f(p) A, f(p) = p / (p + gamma); d loss / d log p = -A f'(p) p, f'(p) = gamma / (p + gamma)^2.
    # At p = 0.5: loss = -2 * 0.5 / 0.6 = -1.666667; grad = -2 * 0.1 * 0.5 / 0.36 = -0.277778.
    # old_logp = ln 0.01 would make an on-policy ratio of 50 (clipped to no gradient): it is ignored.
    a, gamma = 2.0, 0.1
    logp = torch.tensor([[LN(p)]], dtype=torch.float64)
    mask = torch.ones(1, 1, dtype=torch.bool)
    loss, grad = _grad(
        logp,
        torch.tensor([[LN(0.01)]], dtype=torch.float64),
        torch.tensor([a], dtype=torch.float64),
        mask,
        mask,
        treatment="off_policy",
        gamma=gamma,
        aggregation="token_mean",
    )
    assert loss.item() == pytest.approx(-a * p / (p + gamma))
    assert -grad.item() == pytest.approx(a * gamma / (p + gamma) ** 2 * p)
    if p == 0.5:
        assert loss.item() == pytest.approx(-1.666667, abs=1e-6)
        assert grad.item() == pytest.approx(-0.277778, abs=1e-6)


def test_off_policy_gradient_in_a_batch() -> None:
    # dr_grpo over a batch: the inserted tokens' gradient is -A f'(p) p / (B * L) exactly, and the
    # tokens the policy wrote keep their on-policy gradient.
    logp, old, _, adv, completion, inserted = _random_batch(1)
    adv = adv.abs() + 0.1  # A > 0
    kw = {**KW, "aggregation": "dr_grpo", "gamma": 0.1}
    _, grad = _grad(logp, old, adv, completion, inserted, treatment="off_policy", **kw)
    _, grad_on = _grad(logp, old, adv, completion, inserted, treatment="on_policy", **kw)
    off = inserted & completion
    p = logp.exp()
    expected = -(adv[:, None] * 0.1 / (p + 0.1) ** 2 * p) / (logp.shape[0] * 8)
    assert off.any() and (completion & ~off).any()
    torch.testing.assert_close(grad[off], expected.expand_as(p)[off])
    torch.testing.assert_close(grad[completion & ~off], grad_on[completion & ~off])
    assert torch.equal(grad[~completion], torch.zeros_like(grad[~completion]))


def test_off_policy_tokens_ignore_old_logp() -> None:
    logp, old, ref, adv, completion, inserted = _random_batch(2)
    moved = torch.where(inserted, old - 5.0, old)
    kw = {**KW, "ref_logp": ref, "kl_beta": 0.01, "aggregation": "token_mean", "treatment": "off_policy"}
    loss_a, grad_a = _grad(logp, old, adv, completion, inserted, **kw)
    loss_b, grad_b = _grad(logp, moved, adv, completion, inserted, **kw)
    assert torch.equal(loss_a, loss_b) and torch.equal(grad_a, grad_b)


def test_mask_gives_inserted_tokens_no_gradient() -> None:
    logp, old, ref, adv, completion, inserted = _random_batch(3)
    kw = {**KW, "ref_logp": ref, "kl_beta": 0.01, "aggregation": "dr_grpo"}
    _, grad = _grad(logp, old, adv, completion, inserted, treatment="mask", **kw)
    _, grad_on = _grad(logp, old, adv, completion, inserted, treatment="on_policy", **kw)
    assert (inserted & completion).any()
    assert torch.equal(grad[inserted], torch.zeros_like(grad[inserted]))
    # dr_grpo's constant normaliser: the kept tokens' gradient is unchanged by masking
    kept = completion & ~inserted
    torch.testing.assert_close(grad[kept], grad_on[kept])


def test_metrics_count_inserted_tokens_and_off_policy_probabilities() -> None:
    # completion lengths 4, 2, 1 (7 tokens), inserted: 2 of them (one is padding and not counted)
    inserted = torch.zeros(3, 4, dtype=torch.bool)
    inserted[0, 1] = inserted[1, 0] = inserted[2, 3] = True
    logp = torch.full((3, 4), LN(0.25), dtype=torch.float64)
    _, metrics = policy_loss(
        logp,
        logp,
        torch.ones(3, dtype=torch.float64),
        RAGGED,
        inserted,
        treatment="off_policy",
        aggregation="token_mean",
    )
    assert metrics["inserted_frac"].item() == pytest.approx(2 / 7)
    assert metrics["off_policy_prob_mean"].item() == pytest.approx(0.25)
    assert metrics["ratio_mean"].item() == pytest.approx(1.0)
    assert metrics["kl_mean"].item() == 0.0


def test_policy_loss_input_errors() -> None:
    z, m = torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="valid names: on_policy, off_policy, mask"):
        policy_loss(z, z, torch.zeros(2), m, m, treatment="luffy", aggregation="token_mean")
    with pytest.raises(ValueError, match="kl_beta > 0 needs ref_logp"):
        policy_loss(z, z, torch.zeros(2), m, m, kl_beta=0.1, aggregation="token_mean")
    with pytest.raises(ValueError, match=r"advantages \(3,\) must be \(B,\)"):
        policy_loss(z, z, torch.zeros(3), m, m, aggregation="token_mean")


# ---------------------------------------------------------------------------------------------
# Equivalence: vectorised loss vs a per-token Python loop
# ---------------------------------------------------------------------------------------------


def _slow_loss(
    logp, old, ref, adv, completion, inserted, *, treatment, lo, hi, gamma, beta, est, agg, max_len
):
    b_size, t_size = len(logp), len(logp[0])
    per_seq_sums, per_seq_counts = [], []
    for b in range(b_size):
        total, count = 0.0, 0
        for t in range(t_size):
            if not completion[b][t]:
                continue
            is_inserted = inserted[b][t]
            if treatment == "mask" and is_inserted:
                continue
            a = adv[b]
            if treatment == "off_policy" and is_inserted:
                p = math.exp(logp[b][t])
                pg = -(p / (p + gamma)) * a
            else:
                r = math.exp(logp[b][t] - old[b][t])
                pg = -min(r * a, min(max(r, 1 - lo), 1 + hi) * a)
            d = logp[b][t] - ref[b][t]
            kl = {"k1": d, "k2": 0.5 * d * d, "k3": math.exp(-d) + d - 1}[est]
            total += pg + beta * kl
            count += 1
        per_seq_sums.append(total)
        per_seq_counts.append(count)
    if agg == "dr_grpo":
        return sum(per_seq_sums) / (b_size * max_len)
    if agg == "token_mean":
        return sum(per_seq_sums) / max(sum(per_seq_counts), 1)
    means = [s / c for s, c in zip(per_seq_sums, per_seq_counts, strict=True) if c > 0]
    return sum(means) / len(means) if means else 0.0


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("treatment", "aggregation", "estimator"),
    list(itertools.product(TOKEN_TREATMENTS, AGGREGATIONS, KL_ESTIMATORS)),
)
def test_vectorised_loss_matches_per_token_loop(
    seed: int, treatment: str, aggregation: str, estimator: str
) -> None:
    logp, old, ref, adv, completion, inserted = _random_batch(seed, b=5, t=7)
    old = logp + 0.5 * torch.randn(
        logp.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    args = {
        "lo": 0.2,
        "hi": 0.28,
        "gamma": 0.1,
        "beta": 0.05,
        "est": estimator,
        "agg": aggregation,
        "max_len": 9,
    }
    loss, _ = policy_loss(
        logp,
        old,
        adv,
        completion,
        inserted,
        treatment=treatment,
        clip_eps_low=0.2,
        clip_eps_high=0.28,
        gamma=0.1,
        ref_logp=ref,
        kl_beta=0.05,
        kl_estimator=estimator,
        aggregation=aggregation,
        max_completion_length=9,
    )
    expected = _slow_loss(
        logp.tolist(),
        old.tolist(),
        ref.tolist(),
        adv.tolist(),
        completion.tolist(),
        inserted.tolist(),
        treatment=treatment,
        **args,
    )
    assert loss.item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_split_token_masks_partition_the_loss_mask() -> None:
    _, _, _, _, completion, inserted = _random_batch(5)
    for treatment in TOKEN_TREATMENTS:
        loss_mask, on, off = split_token_masks(completion, inserted, treatment)
        assert torch.equal(on | off, loss_mask) and not (on & off).any()
        assert not (loss_mask & ~completion).any()
    assert torch.equal(split_token_masks(completion, inserted, "mask")[0], completion & ~inserted)
    assert torch.equal(split_token_masks(completion, inserted, "off_policy")[2], completion & inserted)
