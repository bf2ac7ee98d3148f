"""GRPO / ADRPO algorithm core against hand-computed numbers: advantages, dynamic sampling,
the clipped ratio loss (clip-higher, dual clip, sample weights), KL estimators, aggregation
modes over ragged masks, entropy, the combined loss and its gradient, minibatches."""

from __future__ import annotations

import math

import pytest
import torch

from mnemoray.rl.advantages import drop_and_refill, group_advantages, group_index, zero_variance_groups
from mnemoray.rl.aggregation import aggregate_loss, masked_mean, masked_sum
from mnemoray.rl.kl import kl_estimate
from mnemoray.rl.losses import GRPOLossConfig, grpo_loss, masked_entropy, policy_loss, token_entropy
from mnemoray.rl.minibatches import minibatches

F64 = torch.float64


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def close(actual, expected, tol: float = 1e-9) -> None:
    assert torch.allclose(torch.as_tensor(actual, dtype=F64), t(expected), atol=tol, rtol=0), (actual, expected)


# ---------------------------------------------------------------- advantages

REWARDS = [1.0, 2.0, 3.0, 5.0, 5.0, 5.0, 0.0, 0.0, 3.0]  # groups of 3: spread, flat, skewed


def test_group_advantages_divide_by_the_unbiased_group_std():
    out = group_advantages(t(REWARDS), group_size=3, eps=0.0)
    # group 1: mean 2, unbiased std sqrt(2/2) = 1 (the biased std sqrt(2/3) would give ±1.2247)
    # group 2: all 5 -> zero variance -> 0
    # group 3: mean 1, deviations (-1, -1, 2), unbiased std sqrt(6/2) = sqrt(3)
    s3 = math.sqrt(3.0)
    close(out.advantages, [-1, 0, 1, 0, 0, 0, -1 / s3, -1 / s3, 2 / s3])
    close(out.group_mean, [2, 2, 2, 5, 5, 5, 1, 1, 1])
    close(out.group_std, [1, 1, 1, 0, 0, 0, s3, s3, s3])
    assert out.zero_variance_groups == 1 and out.groups == 3


def test_group_advantages_add_eps_to_the_std():
    out = group_advantages(t(REWARDS), group_size=3, eps=0.5)
    close(out.advantages[:3], [-1 / 1.5, 0, 1 / 1.5])


def test_dr_grpo_advantages_are_not_divided():
    out = group_advantages(t(REWARDS), group_size=3, scale="none")
    close(out.advantages, [-1, 0, 1, 0, 0, 0, -1, -1, 2])


def test_zero_variance_groups_get_exactly_zero_even_with_rounding_in_the_mean():
    out = group_advantages(t([0.1, 0.1, 0.1, 0.7, 0.7, 0.7]), group_size=3, eps=1e-12)
    assert out.advantages.tolist() == [0.0] * 6
    assert out.zero_variance_groups == 2


def test_group_ids_need_not_be_contiguous():
    rewards = t([1.0, 0.0, 3.0, 0.0])
    ids = ["q2", "q1", "q2", "q1"]
    assert group_index(4, group_ids=ids).tolist() == [0, 1, 0, 1]
    out = group_advantages(rewards, group_ids=ids, eps=0.0)
    close(out.advantages, [-1 / math.sqrt(2), 0, 1 / math.sqrt(2), 0])
    assert zero_variance_groups(rewards, group_ids=ids) == [1]


def test_single_rollout_groups_carry_no_signal():
    out = group_advantages([0.3, 0.9], group_size=1)
    assert out.advantages.tolist() == [0.0, 0.0] and out.zero_variance_groups == 2


def test_zero_variance_tolerance():
    assert zero_variance_groups([1.0, 1.05, 2.0, 3.0], group_size=2) == []
    assert zero_variance_groups([1.0, 1.05, 2.0, 3.0], group_size=2, atol=0.1) == [0]


def test_group_arguments_are_checked():
    with pytest.raises(ValueError, match="exactly one"):
        group_advantages([1.0, 2.0], group_size=2, group_ids=[0, 0])
    with pytest.raises(ValueError, match="whole groups"):
        group_advantages([1.0, 2.0, 3.0], group_size=2)
    with pytest.raises(ValueError, match="scale"):
        group_advantages([1.0, 2.0], group_size=2, scale="mad")


def test_dynamic_sampling_refills_dropped_groups_from_the_pool():
    batch = [1, 0, 1, 1, 0, 0, 0, 1]  # groups 0..3: informative, flat, flat, informative
    pool = [1, 1, 0, 1, 1, 0]  # groups 4..6: flat, informative, informative
    out = drop_and_refill(batch, pool, group_size=2)
    assert out.groups == [0, 3, 5, 6]
    assert out.indices == [0, 1, 6, 7, 10, 11, 12, 13]
    assert (out.dropped, out.refilled, out.shortfall) == (2, 2, 0)
    assert len(out.indices) == len(batch)  # the batch keeps its size
    joined = batch + pool
    assert all(joined[i] != joined[i + 1] for i in out.indices[::2])


def test_dynamic_sampling_reports_the_shortfall_when_the_pool_runs_out():
    out = drop_and_refill([1, 0, 1, 1, 0, 0, 0, 1], [1, 1, 0, 1], group_size=2)
    assert out.groups == [0, 3, 5] and out.indices == [0, 1, 6, 7, 10, 11]
    assert (out.dropped, out.refilled, out.shortfall) == (2, 1, 1)


def test_dynamic_sampling_keeps_an_informative_batch_as_it_is():
    out = drop_and_refill([1, 0, 0, 1], [0, 1], group_size=2)
    assert out.indices == [0, 1, 2, 3] and (out.dropped, out.refilled, out.shortfall) == (0, 0, 0)


# ---------------------------------------------------------------- policy loss

def ratio_case(ratios, advantages, mask=None, **kwargs):
    r = t(ratios)
    logp = torch.log(r)
    return policy_loss(logp, torch.zeros_like(logp), t(advantages), t(mask) if mask else torch.ones_like(r),
                       **kwargs)


def test_symmetric_clip_bounds_positive_and_negative_advantages():
    # A = +1: ratio 1.5 clipped to 1.2 -> -1.2; ratio 0.5 unclipped -> -0.5 (lower clip inactive for A > 0)
    # A = -1: ratio 0.5 clipped to 0.8 -> 0.8;  ratio 1.5 unclipped -> 1.5 (upper clip inactive for A < 0)
    out = ratio_case([[1.5, 0.5], [0.5, 1.5]], [1.0, -1.0], eps_low=0.2)
    close(out.per_token, [[-1.2, -0.5], [0.8, 1.5]])
    assert out.metrics["clip_frac_high"] == pytest.approx(0.25)
    assert out.metrics["clip_frac_low"] == pytest.approx(0.25)


def test_clip_higher_lets_positive_advantages_grow_further():
    sym = ratio_case([[1.25, 1.5]], [1.0], eps_low=0.2)
    high = ratio_case([[1.25, 1.5]], [1.0], eps_low=0.2, eps_high=0.28)
    close(sym.per_token, [[-1.2, -1.2]])
    close(high.per_token, [[-1.25, -1.28]])
    assert sym.metrics["clip_frac_high"] == 1.0 and high.metrics["clip_frac_high"] == 0.5
    low = ratio_case([[0.75]], [-2.0], eps_low=0.2, eps_high=0.28)  # the lower bound stays at 1 - eps_low
    close(low.per_token, [[1.6]])


def test_dual_clip_bounds_the_loss_of_negative_advantages():
    plain = ratio_case([[5.0, 2.0]], [-1.0], eps_low=0.2)
    dual = ratio_case([[5.0, 2.0]], [-1.0], eps_low=0.2, dual_clip=3.0)
    close(plain.per_token, [[5.0, 2.0]])
    close(dual.per_token, [[3.0, 2.0]])  # -c * A = 3 caps ratio 5; ratio 2 < c is untouched
    assert dual.metrics["dual_clip_frac"] == 0.5
    positive = ratio_case([[5.0]], [1.0], eps_low=0.2, dual_clip=3.0)  # dual clip never touches A > 0
    close(positive.per_token, [[-1.2]])
    with pytest.raises(ValueError, match="dual_clip"):
        ratio_case([[1.0]], [1.0], dual_clip=1.0)


@pytest.mark.parametrize("ratio,advantage,unweighted,dual", [
    (1.5, 1.0, -1.28, None),  # clipped at 1 + eps_high
    (1.25, 1.0, -1.25, None),  # not clipped
    (0.5, -1.0, 0.8, None),  # clipped at 1 - eps_low
    (5.0, -1.0, 3.0, 3.0),  # dual clip bound
])
def test_sample_weights_scale_the_loss_in_every_branch(ratio, advantage, unweighted, dual):
    kwargs = {"eps_low": 0.2, "eps_high": 0.28, "dual_clip": dual}
    base = ratio_case([[ratio]], [advantage], **kwargs)
    weighted = ratio_case([[ratio]], [advantage], weights=t([2.5]), **kwargs)
    close(base.per_token, [[unweighted]])
    close(weighted.per_token, [[2.5 * unweighted]])
    assert weighted.metrics == base.metrics  # weights never change which branch is taken


def test_sample_weights_are_per_sequence_and_must_not_be_negative():
    out = ratio_case([[1.5, 1.0], [1.0, 1.0]], [1.0, 1.0], weights=t([4.0, 1.0]), eps_low=0.2)
    close(out.per_token, [[-4.8, -4.0], [-1.0, -1.0]])
    with pytest.raises(ValueError, match="weights"):
        ratio_case([[1.0]], [1.0], weights=t([-1.0]))


def test_clip_metrics_count_only_valid_tokens():
    # row 0 (A=+1): 1.5 clipped high, 1.25 inside, 0.1 masked; row 1 (A=-1): 0.5 clipped low, 1.5, 5 (dual)
    out = ratio_case([[1.5, 1.25, 0.1], [0.5, 1.5, 5.0]], [1.0, -1.0], mask=[[1, 1, 0], [1, 1, 1]],
                     eps_low=0.2, eps_high=0.28, dual_clip=3.0)
    close(out.per_token, [[-1.28, -1.25, -0.1], [0.8, 1.5, 3.0]])
    m = out.metrics
    assert (m["clip_frac_high"], m["clip_frac_low"], m["dual_clip_frac"]) == pytest.approx((0.2, 0.2, 0.2))
    assert (m["ratio_min"], m["ratio_max"]) == pytest.approx((0.5, 5.0))
    assert m["ratio_mean"] == pytest.approx((1.5 + 1.25 + 0.5 + 1.5 + 5.0) / 5)
    expected_kl = sum(r - 1 - math.log(r) for r in (1.5, 1.25, 0.5, 1.5, 5.0)) / 5
    assert m["approx_kl"] == pytest.approx(expected_kl)


# ---------------------------------------------------------------- KL

def test_kl_estimators_and_their_signs():
    logp, ref = t([-1.0, -2.0, -0.7]), t([-1.5, -1.0, -0.7])  # log ratio (policy - ref) = 0.5, -1, 0
    close(kl_estimate(logp, ref, "k1"), [0.5, -1.0, 0.0])  # positive where the policy likes the token more
    close(kl_estimate(logp, ref, "k2"), [0.125, 0.5, 0.0])
    close(kl_estimate(logp, ref, "k3"), [math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1 - 1, 0.0])  # 0.10653, 0.71828
    close(kl_estimate(logp, ref, "k3", coef=0.1), [0.1 * (math.exp(-0.5) - 0.5), 0.1 * (math.e - 2), 0.0])
    assert bool((kl_estimate(t([-3.0, 0.0]), t([0.0, -3.0]), "k3") >= 0).all())
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(logp, ref, "k4")


# ---------------------------------------------------------------- aggregation

PAD = 100.0  # values under a 0 mask must never count
LOSS = t([[1, 2, 3, 4], [5, 6, PAD, PAD], [7, PAD, PAD, PAD]])
MASK = t([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])


def test_token_mean_weighs_every_valid_token_alike():
    close(aggregate_loss(LOSS, MASK, "token-mean"), 28 / 7)


def test_seq_mean_token_mean_weighs_every_sequence_alike():
    close(aggregate_loss(LOSS, MASK, "seq-mean-token-mean"), (2.5 + 5.5 + 7) / 3)


def test_seq_mean_token_sum_norm_divides_by_a_constant():
    close(aggregate_loss(LOSS, MASK, "seq-mean-token-sum-norm"), (10 / 4 + 11 / 4 + 7 / 4) / 3)  # norm = width 4
    close(aggregate_loss(LOSS, MASK, "seq-mean-token-sum-norm", norm=10), (1.0 + 1.1 + 0.7) / 3)


def test_an_empty_sequence_counts_only_in_the_sum_norm_mode():
    loss = torch.cat([LOSS, t([[9, 9, 9, 9]])])
    mask = torch.cat([MASK, t([[0, 0, 0, 0]])])
    close(aggregate_loss(loss, mask, "token-mean"), 4.0)
    close(aggregate_loss(loss, mask, "seq-mean-token-mean"), 5.0)
    close(aggregate_loss(loss, mask, "seq-mean-token-sum-norm"), 28 / 4 / 4)


def test_an_all_empty_mask_gives_zero_and_still_backpropagates():
    loss = t([[1.0, 2.0]]).requires_grad_()
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"):
        out = aggregate_loss(loss, t([[0, 0]]), mode)
        assert out.item() == 0.0
        out.backward()
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate_loss(LOSS, MASK, "seq-sum")


def test_masked_mean_and_sum():
    close(masked_sum(LOSS, MASK), 28.0)
    close(masked_sum(LOSS, MASK, dim=-1), [10, 11, 7])
    close(masked_mean(LOSS, MASK, dim=-1), [2.5, 5.5, 7])


# ---------------------------------------------------------------- entropy

def test_token_entropy_from_logits():
    uniform = torch.zeros(4, dtype=F64)
    skewed = torch.log(t([0.5, 0.25, 0.25, 1e-300])) + 10.0  # shift-invariant; a ~0 probability adds ~0
    close(token_entropy(torch.stack([uniform, skewed])), [math.log(4), 1.5 * math.log(2)], tol=1e-6)
    logits = torch.stack([uniform, skewed]).unsqueeze(0)  # [1, 2, 4]
    close(masked_entropy(logits, t([[0, 1]])), 1.5 * math.log(2), tol=1e-6)


# ---------------------------------------------------------------- combined loss

def test_grpo_loss_adds_the_kl_penalty_and_its_gradient_matches_by_hand():
    logp = t([[-1.0, -2.0]]).requires_grad_()
    old = t([[-1.0, -2.0]])  # ratio 1: nothing clipped
    ref = t([[-1.5, -1.0]])  # log ratio to the reference 0.5, -1
    cfg = GRPOLossConfig(kl_coef=0.1, kl_estimator="k3", agg="token-mean")
    out = grpo_loss(logp, old, t([1.0]), t([[1, 1]]), cfg, ref_logp=ref)
    k3 = [math.exp(-0.5) + 0.5 - 1, math.e - 2]
    expected = ((-1 + 0.1 * k3[0]) + (-1 + 0.1 * k3[1])) / 2
    assert out.loss.item() == pytest.approx(expected)
    assert out.metrics["loss"] == pytest.approx(expected)
    assert out.metrics["pg_loss"] == pytest.approx(-1.0)
    assert out.metrics["kl"] == pytest.approx(sum(k3) / 2)
    out.loss.backward()
    # d/dlogp: policy -A * ratio / 2 = -0.5; KL 0.1 * (1 - exp(ref - logp)) / 2
    close(logp.grad, [[-0.5 + 0.05 * (1 - math.exp(-0.5)), -0.5 + 0.05 * (1 - math.e)]])


def test_grpo_loss_aggregation_weights_and_entropy():
    r = t([[1.5, 1.0, 1.0], [1.0, 1.0, 1.0]])
    logp = torch.log(r)
    mask = t([[1, 1, 0], [1, 1, 1]])
    cfg = GRPOLossConfig(eps_low=0.2, agg="seq-mean-token-mean")
    logits = torch.zeros(2, 3, 4, dtype=F64)
    out = grpo_loss(logp, torch.zeros_like(logp), t([1.0, -1.0]), mask, cfg, weights=t([2.0, 1.0]), logits=logits)
    # row 0: weight 2, A = 1: tokens -2.4 (clipped), -2.0 -> mean -2.2; row 1: A = -1: 1, 1, 1 -> mean 1
    assert out.loss.item() == pytest.approx((-2.2 + 1.0) / 2)
    assert out.metrics["entropy"] == pytest.approx(math.log(4))
    assert out.metrics["clip_frac_high"] == pytest.approx(1 / 5)
    assert "kl" not in out.metrics


def test_grpo_loss_reports_kl_without_penalising_when_the_coefficient_is_zero():
    logp, ref = t([[-1.0]]), t([[-1.5]])
    out = grpo_loss(logp, logp, t([1.0]), t([[1]]), GRPOLossConfig(kl_estimator="k1"), ref_logp=ref)
    assert out.loss.item() == pytest.approx(-1.0) and out.metrics["kl"] == pytest.approx(0.5)


def test_grpo_loss_config_is_checked():
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(t([[0.0]]), t([[0.0]]), t([1.0]), t([[1]]), GRPOLossConfig(kl_coef=0.01))
    for bad in ({"eps_low": 1.0}, {"dual_clip": 0.9}, {"kl_coef": -1.0}, {"kl_estimator": "k9"}, {"agg": "sum"}):
        with pytest.raises(ValueError):
            GRPOLossConfig(**bad)


# ---------------------------------------------------------------- minibatches

def test_minibatches_cover_every_sample_once_per_epoch():
    batches = list(minibatches(10, 4, epochs=3, seed=7))
    assert [len(b) for b in batches] == [4, 4, 2] * 3
    epochs = [sum(batches[i:i + 3], []) for i in (0, 3, 6)]
    assert all(sorted(e) == list(range(10)) for e in epochs)
    assert epochs[0] != epochs[1]  # a fresh order per epoch


def test_minibatches_are_deterministic_for_a_seed():
    assert list(minibatches(50, 8, epochs=2, seed=3)) == list(minibatches(50, 8, epochs=2, seed=3))
    assert list(minibatches(50, 8, epochs=1, seed=3)) != list(minibatches(50, 8, epochs=1, seed=4))
    assert list(minibatches(0, 4, epochs=2)) == []
    with pytest.raises(ValueError):
        list(minibatches(4, 0))
