"""The regime report and diagnostics against hand computations from the draws."""

import numpy as np
import pytest
import torch

from bayes_moe.inference.posterior import expected_stay, occupancy_average
from bayes_moe.kernels.hmm import causal_regime, hmm_filter


def test_occupancy_average_and_expected_stay_closed_forms():
    # sum_n p_nk v_nk / sum_n p_nk, and 1 / (1 - P_kk), by hand.
    probs = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.0, 1.0]], dtype=torch.float64)
    values = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]], dtype=torch.float64)
    expected = [(0.9 * 1 + 0.5 * 2) / 1.4, (0.1 * 10 + 0.5 * 20 + 30) / 1.6]
    np.testing.assert_allclose(occupancy_average(probs, values).numpy(), expected)
    trans = torch.tensor([[0.95, 0.05], [0.2, 0.8]], dtype=torch.float64)
    np.testing.assert_allclose(expected_stay(trans.log()).numpy(), [20.0, 5.0])


def test_labels_are_ordered_by_volatility_level_in_every_draw(small_fit):
    reg = small_fit.regimes()
    assert (np.diff(reg.level_draws, axis=1) > 0).all() and (reg.level_draws[:, 0] == 1).all()
    assert reg.volatility["mean"].is_monotonic_increasing


def test_summary_columns_are_the_posterior_draws_summarized(small_fit):
    reg = small_fit.regimes()
    table = reg.summary()
    assert list(table.index) == [0, 1]
    for name, draws in {
        "volatility": reg.volatility_draws,
        "volatility_level": reg.level_draws,
        "mean_return": reg.mean_draws,
        "expected_duration": reg.duration_draws,
    }.items():
        np.testing.assert_allclose(table[name], draws.mean(0))
        np.testing.assert_allclose(table[f"{name}_q3"], np.quantile(draws, 0.03, axis=0))
        np.testing.assert_allclose(table[f"{name}_q97"], np.quantile(draws, 0.97, axis=0))
    # Share of days as the most probable filtered regime, per draw, then averaged.
    best = reg.filtered_draws.argmax(-1)
    share = np.stack([(best == k).mean(1) for k in range(2)], axis=1)
    np.testing.assert_allclose(table["share_of_days"], share.mean(0))
    np.testing.assert_allclose(table["share_of_days"].sum(), 1.0)
    # The top experts are the regime's largest posterior mean gate weights.
    weights = reg.expert_weights
    for k in range(2):
        assert table.loc[k, "expert_1"] == weights.loc[k].idxmax()
        assert table.loc[k, "expert_1_weight"] == pytest.approx(weights.loc[k].max())
        assert table.loc[k, "expert_1_weight"] >= table.loc[k, "expert_2_weight"]


def test_volatility_is_the_occupancy_weighted_predictive_sd(small_fit):
    # Recompute regime 1's volatility in data units from the smoothed probabilities and
    # the regime's predictive variance of every draw and day.
    post = small_fit.posterior
    n_obs = small_fit.data.n_observed
    scale = small_fit.data.preprocessor.target_scale[0]
    from bayes_moe.models.distributions import mean_and_variance

    moments = [mean_and_variance(d) for d in post.experts]
    means = torch.stack([m[..., 0] for m, _ in moments], -1)[:, :n_obs]
    variances = torch.stack([v[..., 0] for _, v in moments], -1)[:, :n_obs]
    g = (post.log_mix_weights[:, :n_obs] - post.log_causal_regime[:, :n_obs, :, None]).exp()
    stretch = (2 * post.log_regime_scale).exp()[:, None, :, None]  # e^{2 lambda_k}
    mu_k = (g * means.unsqueeze(-2)).sum(-1)
    second = (g * (stretch * variances.unsqueeze(-2) + means.square().unsqueeze(-2))).sum(-1)
    var_k = second - mu_k.square()
    p = post.log_smoothed.exp()
    by_hand = ((p * var_k).sum(1) / p.sum(1)).sqrt() * scale
    np.testing.assert_allclose(small_fit.regimes().volatility_draws, by_hand.numpy(), rtol=1e-8)


def test_diagnostics_are_consistent_with_the_tables(small_fit):
    reg = small_fit.regimes()
    diag = reg.diagnostics()
    vol = reg.volatility["mean"].to_numpy()
    assert diag["volatility_ratio"] == pytest.approx(vol[-1] / vol[0])
    assert diag["mean_max_filtered"] == pytest.approx(reg.filtered.max(axis=1).mean())
    best = reg.most_probable.to_numpy()
    assert diag["share_of_days"][1] == pytest.approx((best == 1).mean())
    switches = np.count_nonzero(np.diff(best))
    assert diag["switches_per_year"] == pytest.approx(switches * 252 / len(best))


@pytest.mark.parametrize("time_varying", [False, True])
@pytest.mark.parametrize("horizon", [1, 3])
def test_causal_regime_is_the_filter_propagated_h_steps(time_varying, horizon):
    # Oracle: numpy, p(z_{n-h} | y_{1:n-h}) P_{n-h+1} ... P_n from the filtered
    # probabilities, the initial distribution for the first h origins. At h = 1 the
    # shortcut through the filter's predicted probabilities must give the same.
    gen = torch.Generator().manual_seed(horizon)
    S, N, K = 2, 9, 3
    n_obs = N - horizon
    log_init = torch.randn(S, K, generator=gen, dtype=torch.float64).log_softmax(-1)
    shape = (S, N, K, K) if time_varying else (S, 1, K, K)
    step_trans = torch.randn(shape, generator=gen, dtype=torch.float64).log_softmax(-1)
    log_emit = torch.randn(S, n_obs, K, generator=gen, dtype=torch.float64)
    hmm_trans = step_trans[:, :n_obs] if time_varying else step_trans[:, 0]
    filt = hmm_filter(log_init, hmm_trans, log_emit, time_varying=time_varying)
    got = causal_regime(log_init, filt.log_filtered, step_trans, horizon)
    trans = step_trans.expand(S, N, K, K).exp().numpy()
    for s in range(S):
        for n in range(N):
            p = (
                np.exp(log_init[s].numpy())
                if n < horizon
                else np.exp(filt.log_filtered[s, n - horizon].numpy())
            )
            for m in range(max(n - horizon + 1, 1), n + 1):
                p = p @ trans[s, m]
            np.testing.assert_allclose(np.exp(got[s, n].numpy()), p, rtol=1e-12)
    if horizon == 1:
        fast = causal_regime(log_init, filt.log_filtered, step_trans, 1, filt.log_predicted)
        torch.testing.assert_close(fast, got, rtol=1e-12, atol=1e-14)
