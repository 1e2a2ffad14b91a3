"""Posterior predictive mixtures and forecasts against direct computations."""

import numpy as np
import pytest
import torch
from scipy import stats

from bayes_moe.data.windows import VOL_FEATURES
from bayes_moe.kernels.hmm import hmm_propagate
from bayes_moe.models.distributions import index_batch, rescale


def test_mixture_density_is_the_average_over_draws_regimes_and_experts(small_fit):
    mixture = small_fit.predictive(start=small_fit.data.origin_dates[-5])
    y = np.array([[-1.3], [0.2], [0.0], [2.5], [0.4]])[: len(mixture.dates)]
    z = (y - mixture.loc) / mixture.scale
    K = mixture.log_weights.shape[2]
    assert K == 2 and (mixture.log_scale[:, 1] > 0).all()
    # Direct: (1/S) sum_s sum_k sum_m w_skm p_m^(k)(z | theta_s) / scale, where p_m^(k) is
    # the expert's predictive with its scale times exp(lambda_k), one origin at a time.
    for n in range(len(mixture.dates)):
        total = 0.0
        for s in range(mixture.n_draws):
            for k in range(K):
                for m, expert in enumerate(mixture.experts):
                    d = rescale(index_batch(expert, (s, n)), mixture.log_scale[s, k])
                    w = mixture.log_weights[s, n, k, m].exp().item()
                    total += w * d.log_prob(torch.as_tensor(z[n])).exp().item()
        expected = np.log(total / mixture.n_draws / mixture.scale[0])
        assert mixture.log_prob(y)[n] == pytest.approx(expected, rel=1e-10)


def test_mixture_moments_match_its_samples(small_fit):
    mixture = small_fit.predictive(start=small_fit.data.origin_dates[-3])
    samples = mixture.sample(200_000, seed=0)  # (n_samples, 3, 1)
    np.testing.assert_allclose(samples.mean(0), mixture.mean, atol=0.02)
    np.testing.assert_allclose(samples.var(0), mixture.variance, rtol=0.05)


def test_density_integrates_to_one(small_fit):
    # Trapezoid rule over a wide, fine grid of the exact mixture density.
    forecast = small_fit.forecast(num_samples=10)
    grid = np.linspace(-25, 25, 2001)
    density = np.exp([forecast.log_prob(g) for g in grid])
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=2e-3)


def test_forecast_regimes_are_filtered_probabilities_propagated_one_step(small_fit):
    post = small_fit.posterior
    forecast = small_fit.forecast(num_samples=10)
    # The transition into the forecast day's regime responds to the transition features
    # at the last close: Pi_T[i, j] ~ Pi[i, j] exp(beta_j' x_T), recomputed from the draws.
    gate = small_fit.model.gate
    inputs = small_fit.data.inputs
    columns = [VOL_FEATURES.index(f) for f in gate.transition_features]
    x_last = inputs.vol[inputs.origins[-1], 0, columns]
    coef = small_fit.draws["gate/transition_coef"]  # (S, K - 1, V_x)
    beta = torch.cat([torch.zeros_like(coef[:, :1]), coef], dim=1)
    trans = small_fit.draws["gate/transition"] * torch.exp(beta @ x_last)[:, None, :]
    trans = trans / trans.sum(-1, keepdim=True)
    torch.testing.assert_close(post.log_trans_last.exp(), trans)
    expected = hmm_propagate(post.log_filtered[:, -1], trans.log(), 1).exp()
    np.testing.assert_allclose(forecast.regime_probs["mean"], expected.mean(0).numpy(), rtol=1e-10)
    np.testing.assert_allclose(forecast.regime_probs["mean"].sum(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(forecast.expert_weights.sum(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(
        small_fit.regime_forecast(1)["mean"], forecast.regime_probs["mean"], rtol=1e-12
    )


def test_forecast_summaries_are_consistent(small_fit):
    forecast = small_fit.forecast(num_samples=20_000, seed=1)
    samples = forecast.samples
    assert samples.shape == (20_000,)
    q = forecast.quantiles([0.05, 0.5, 0.95])
    np.testing.assert_allclose(q.to_numpy(), np.quantile(samples, [0.05, 0.5, 0.95]))
    lo, hi = forecast.interval(0.9)
    assert lo == pytest.approx(q.loc[0.05]) and hi == pytest.approx(q.loc[0.95])
    assert forecast.mean == pytest.approx(samples.mean(), abs=4 * samples.std() / 140)
    frame = forecast.to_frame()
    assert frame.loc["ret", "mean"] == pytest.approx(forecast.mean)
    # A heavy-tailed predictive: sample kurtosis above the Normal's 3.
    assert stats.kurtosis(samples, fisher=False) > 3.0
    # Same seed, same samples; the global torch RNG is left as it was.
    state = torch.random.get_rng_state()
    np.testing.assert_array_equal(samples, small_fit.forecast(num_samples=20_000, seed=1).samples)
    assert torch.equal(state, torch.random.get_rng_state())


def test_forecast_rejects_bad_arguments(small_fit):
    with pytest.raises(ValueError, match="horizon=1"):
        small_fit.forecast(horizon=5)
    with pytest.raises(ValueError, match="num_samples"):
        small_fit.forecast(num_samples=0)
    forecast = small_fit.forecast(num_samples=10)
    with pytest.raises(ValueError, match="prob"):
        forecast.interval(1.5)
    with pytest.raises(ValueError, match="quantile"):
        forecast.quantiles([1.2])
