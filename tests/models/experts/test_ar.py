"""The AR expert against statsmodels' ``AutoReg`` OLS and closed forms, on S&P 500 returns.

The expert works in standardized units :math:`z = (r - \\bar r) / s_r`. Lag
coefficients are scale-free; the intercept and noise scale map back to percentage
returns as :math:`c = \\bar r (1 - \\sum_i \\phi_i) + s_r c_z` and
:math:`\\sigma = s_r \\sigma_z`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pyro import poutine
from statsmodels.tsa.ar_model import AutoReg

import bayes_moe as bm
from bayes_moe.data.windows import prepare
from bayes_moe.models.experts import AR

NORMAL = {"family": "normal", "heteroscedastic": False}


@pytest.fixture(scope="module")
def returns():
    """S&P 500 daily percentage log returns, 1999-02-04 .. 2018-12-31 (arch.data)."""
    return bm.data.load_sp500()[["ret"]]


def test_posterior_mean_matches_autoreg_ols(fit_one_expert, returns):
    # Reference: statsmodels AutoReg(ret, lags=2, trend="c").fit() on the same 5007 days;
    # observed: const 0.0158, phi = (-0.0745, -0.0522), sigma 1.1986, se(phi) 0.0141.
    # With window = 2 the mixture scores exactly AutoReg's sample (rows 2..T-1), and the
    # N(0, 0.5^2) prior is negligible against 5007 observations, so the posterior mean is
    # the OLS estimate (observed |difference| < 0.003 for every coefficient).
    ref = AutoReg(returns["ret"].to_numpy(), lags=2, trend="c").fit()
    fit = fit_one_expert(returns, {"name": "ar", "order": 2, **NORMAL}, window=2, num_steps=250)
    assert fit.data.n_observed == ref.nobs

    pre = fit.data.preprocessor
    loc, scale = pre.loc[0], pre.scale[0]
    phi = fit.draws["ar/coef"][:, 0].numpy()  # (S, 2), lag 1 first
    c_std = fit.draws["ar/intercept"][:, 0].numpy()
    const = loc * (1 - phi.sum(-1)) + scale * c_std
    estimate = np.r_[const.mean(), phi.mean(0)]
    np.testing.assert_allclose(estimate, ref.params, atol=0.02)

    # Noise scale: the OLS residual standard deviation sqrt(ssr / nobs).
    sigma = scale * fit.draws["ar/scale"][:, 0].numpy()
    assert sigma.mean() == pytest.approx(np.sqrt(ref.sigma2), rel=0.01)
    # Posterior spread of the lag coefficients: the OLS standard errors (the regressors
    # are nearly orthogonal, so the mean-field guide loses little).
    np.testing.assert_allclose(phi.std(0), ref.bse[1:], rtol=0.25)


def test_order_zero_is_a_constant_mean_at_the_sample_mean(fit_one_expert, returns):
    # Reference: the maximum-likelihood Normal of the 5008 scored returns: sample mean
    # 0.0139, standard deviation 1.2032, standard error of the mean sd / sqrt(n) = 0.0170.
    # Under N(0, 1) / LogNormal(0, 1) priors the posterior sits on it; observed: mean
    # 0.0102 (0.2 standard errors away), scale 1.2008.
    fit = fit_one_expert(returns, {"name": "ar", "order": 0, **NORMAL}, window=1, num_steps=150)
    scored = returns["ret"].to_numpy()[1:]
    standard_error = scored.std() / np.sqrt(len(scored))
    predictive = fit.posterior.experts[0]
    mean = predictive.mean[..., 0]  # (S, N)
    assert mean.shape[-1] == fit.data.inputs.n_origins
    torch.testing.assert_close(mean, mean[:, :1].expand_as(mean), rtol=0, atol=0)

    pre = fit.data.preprocessor
    mean_data_units = pre.loc[0] + pre.scale[0] * mean[:, 0].numpy()  # (S,)
    assert mean_data_units.mean() == pytest.approx(scored.mean(), abs=0.5 * standard_error)
    sd_data_units = pre.scale[0] * predictive.stddev[:, 0, 0].mean().item()
    assert sd_data_units == pytest.approx(scored.std(), rel=0.01)


def test_predictive_mean_is_the_lag_regression_by_hand(returns):
    # Reference: y_hat_t = c + phi_1 z_t + phi_2 z_{t-1} + phi_3 z_{t-2} computed with
    # numpy from the standardized series; the scale is exp(log sigma + sum_w gamma_w f_{t,w}).
    data = prepare(returns.iloc[:300], targets=["ret"], window=10)
    expert = AR(3, family="normal", heteroscedastic=True)
    params = {
        "intercept": torch.tensor([0.1], dtype=torch.float64),
        "coef": torch.tensor([[0.3, -0.2, 0.05]], dtype=torch.float64),
        "scale": torch.tensor([0.8], dtype=torch.float64),
        "vol_coef": torch.tensor([[0.2, -0.1, 0.3, 0.05, 0.15, -0.4, 0.1]], dtype=torch.float64),
    }
    d = poutine.condition(expert.model, data=params)(data.inputs)
    z = data.inputs.series[:, 0].numpy()
    t = data.inputs.origins.numpy()
    expected_mean = 0.1 + 0.3 * z[t] - 0.2 * z[t - 1] + 0.05 * z[t - 2]
    f = data.inputs.vol[t, 0].numpy()  # (N, V)
    expected_sd = 0.8 * np.exp(f @ np.array([0.2, -0.1, 0.3, 0.05, 0.15, -0.4, 0.1]))
    np.testing.assert_allclose(d.mean[:, 0].numpy(), expected_mean, rtol=1e-12)
    np.testing.assert_allclose(d.stddev[:, 0].numpy(), expected_sd, rtol=1e-12)


def test_negative_order_is_rejected():
    with pytest.raises(ValueError, match="order must be >= 0"):
        AR(-1)
    with pytest.raises(ValueError, match="order must be >= 0"):
        bm.make_expert({"name": "ar", "order": -2})
