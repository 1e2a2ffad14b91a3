"""The regime report and diagnostics against hand computations from the draws."""

import numpy as np
import pytest
import torch

from bayes_moe.inference.posterior import expected_stay, occupancy_average, regime_moments


def test_occupancy_average_and_expected_stay_closed_forms():
    # sum_n p_nk v_nk / sum_n p_nk, and 1 / (1 - P_kk), by hand.
    probs = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.0, 1.0]], dtype=torch.float64)
    values = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]], dtype=torch.float64)
    expected = [(0.9 * 1 + 0.5 * 2) / 1.4, (0.1 * 10 + 0.5 * 20 + 30) / 1.6]
    np.testing.assert_allclose(occupancy_average(probs, values).numpy(), expected)
    trans = torch.tensor([[0.95, 0.05], [0.2, 0.8]], dtype=torch.float64)
    np.testing.assert_allclose(expected_stay(trans.log()).numpy(), [20.0, 5.0])


def test_regime_moments_stretch_the_variances_by_the_levels():
    # mu_k = sum_m g mu_m; var_k = sum_m g (e^{2 lambda_k} s_m^2 + mu_m^2) - mu_k^2.
    g = torch.tensor([[[0.3, 0.7], [0.6, 0.4]]], dtype=torch.float64)  # (N=1, K=2, M=2)
    mu = torch.tensor([[0.1, -0.2]], dtype=torch.float64)
    var = torch.tensor([[1.0, 4.0]], dtype=torch.float64)
    lam = torch.tensor([0.0, 0.5], dtype=torch.float64)
    m, v = regime_moments(g.log(), lam, mu, var)
    for k in range(2):
        mk = (g[0, k] * mu[0]).sum()
        second = (g[0, k] * (torch.exp(2 * lam[k]) * var[0] + mu[0] ** 2)).sum()
        assert m[0, k].item() == pytest.approx(mk.item())
        assert v[0, k].item() == pytest.approx((second - mk**2).item())


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
    log_g = post.log_mix_weights[:, :n_obs] - post.log_causal_regime[:, :n_obs, :, None]
    _, var_k = regime_moments(log_g, post.log_regime_scale, means, variances)
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
