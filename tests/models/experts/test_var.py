"""The VAR expert against statsmodels' VAR OLS, the conjugate posterior and closed forms.

Data: S&P 500 and NASDAQ Composite daily percentage log returns, 1999-2018
(``arch.data``). The expert works in standardized units: a coefficient of series
``j`` in the equation of ``i`` is :math:`A^{z}_{ij} = A_{ij}\\, s_j / s_i` for the
column standard deviations :math:`s`.
"""

from __future__ import annotations

import numpy as np
import pyro.distributions as dist
import pytest
import scipy.stats
import torch
from pyro import poutine
from statsmodels.tsa.api import VAR as StatsmodelsVAR

import bayes_moe as bm
from bayes_moe.data.windows import prepare
from bayes_moe.models.experts import VAR

DT = torch.float64


@pytest.fixture(scope="module")
def two_indices():
    """S&P 500 and NASDAQ returns, 1999-02-04 .. 2018-12-31."""
    return bm.data.load_sp500()[["ret", "ret_nasdaq"]]


def test_posterior_mean_matches_var_ols(fit_one_expert, two_indices):
    # Reference 1: statsmodels VAR(1) OLS on the same 5008 days (numpy input: a date index
    # without a frequency would warn), "ret" equation: const 0.0147, L1.ret -0.1341,
    # L1.ret_nasdaq 0.0541 (percent units) -> standardized lag coefficients (-0.1341, 0.0716).
    # Reference 2: the exact Gaussian posterior mean under the Minnesota prior (own lag
    # sd 0.2, cross lag sd 0.1, intercept sd 1) with the noise scale at its posterior
    # mean: (-0.1259, 0.0631); the prior shrinks the collinear pair (corr 0.9) a little.
    # Observed posterior means: (-0.1221, 0.0624).
    spec = {"name": "var", "order": 1, "family": "normal", "heteroscedastic": False}
    fit = fit_one_expert(two_indices, spec, window=1, num_steps=250)
    values = two_indices.to_numpy()
    ols = StatsmodelsVAR(values).fit(1)
    assert fit.data.n_observed == ols.nobs
    pre = fit.data.preprocessor
    assert pre.columns[:2] == ("ret", "ret_nasdaq")
    scale = np.asarray(pre.scale[:2])
    ols_lags_std = ols.params[1:, 0] * scale / scale[0]  # "ret" equation, standardized
    coef = fit.draws["var/coef"][:, 0, 0].numpy()  # (S, D): target ret, lag 1
    np.testing.assert_allclose(coef.mean(0), ols_lags_std, atol=0.03)
    # The intercept in percent units: c = loc_ret - sum_j A_j loc_j + s_ret c_z.
    loc = np.asarray(pre.loc[:2])
    lags_data_units = coef * scale[0] / scale
    c_std = fit.draws["var/intercept"][:, 0].numpy()
    const = loc[0] - lags_data_units @ loc + scale[0] * c_std
    assert const.mean() == pytest.approx(ols.params[0, 0], abs=0.03)

    z = fit.data.inputs.series[:, :2].numpy()
    X = np.c_[np.ones(len(z) - 1), z[:-1]]
    sigma2 = fit.draws["var/scale"][:, 0].mean().item() ** 2
    prior_precision = np.diag([1.0, 1 / 0.2**2, 1 / 0.1**2])
    exact = np.linalg.solve(X.T @ X / sigma2 + prior_precision, X.T @ z[1:, 0] / sigma2)
    np.testing.assert_allclose(coef.mean(0), exact[1:], atol=0.015)
    # The residual scale: OLS residual sd of the ret equation (standardized units).
    ols_sigma = np.sqrt(ols.sigma_u_mle[0, 0]) / scale[0]
    assert np.sqrt(sigma2) == pytest.approx(ols_sigma, rel=0.01)


def test_prior_scale_is_the_minnesota_pattern():
    # Reference: Litterman (1986): sd lambda / l on own lags, lambda * theta / l on the
    # lags of other series; the targets are the first series of the system.
    expert = VAR(3, tightness=0.3, cross_tightness=0.4)
    d_y, n_series = 2, 4
    scale = expert.prior_scale(d_y, n_series, DT).numpy()
    expected = np.empty((d_y, 3, n_series))
    for i in range(d_y):
        for lag in range(1, 4):
            for j in range(n_series):
                expected[i, lag - 1, j] = 0.3 / lag if i == j else 0.3 * 0.4 / lag
    np.testing.assert_allclose(scale, expected, rtol=1e-15)


def test_model_samples_coefficients_from_the_minnesota_prior(two_indices):
    # Reference: the same pattern read off the traced "coef" site (lambda = 0.2,
    # theta = 0.5), system (ret, ret_nasdaq): own 0.2 / l, cross 0.1 / l.
    data = prepare(two_indices.iloc[:200], targets=["ret"], window=8)
    trace = poutine.trace(VAR(2).model).get_trace(data.inputs)
    prior = trace.nodes["coef"]["fn"].base_dist
    np.testing.assert_allclose(prior.scale.numpy(), [[[0.2, 0.1], [0.1, 0.05]]], rtol=1e-15)
    np.testing.assert_array_equal(prior.loc.numpy(), np.zeros((1, 2, 2)))


def _joint_and_single(frame, family):
    """The same parameters evaluated with targets (ret, ret_nasdaq) and with ret alone."""
    joint_data = prepare(frame, targets=["ret", "ret_nasdaq"], covariates=[], window=8)
    single_data = prepare(frame, targets=["ret"], covariates=["ret_nasdaq"], window=8)
    expert = VAR(2, family=family, heteroscedastic=False)
    intercept = torch.tensor([0.05, -0.02], dtype=DT)
    coef = torch.tensor(
        [[[-0.10, 0.06], [0.03, -0.02]], [[0.08, -0.07], [-0.01, 0.04]]], dtype=DT
    )  # (target, lag, series)
    scale = torch.tensor([0.9, 1.1], dtype=DT)
    corr_chol = torch.linalg.cholesky(torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=DT))
    joint_params = {"intercept": intercept, "coef": coef, "scale": scale, "corr_chol": corr_chol}
    single_params = {"intercept": intercept[:1], "coef": coef[:1], "scale": scale[:1]}
    if family == "studentt":
        joint_params["df"] = torch.tensor([5.0], dtype=DT)
        single_params["df"] = torch.tensor([5.0], dtype=DT)
    joint = poutine.condition(expert.model, data=joint_params)(joint_data.inputs)
    single = poutine.condition(expert.model, data=single_params)(single_data.inputs)
    return joint, single, single_data


@pytest.mark.parametrize("family", ["normal", "studentt"])
def test_joint_predictive_marginalizes_to_the_single_target_model(two_indices, family):
    # Reference: the marginal of a multivariate Normal / Student-t is Normal / Student-t with
    # the same df, the sub-vector of the location and the sub-block of the scale matrix;
    # the target equations of a VAR do not depend on which targets are forecast.
    joint, single, single_data = _joint_and_single(two_indices.iloc[:400], family)
    expected_type = dist.MultivariateNormal if family == "normal" else dist.MultivariateStudentT
    assert isinstance(joint, expected_type)
    torch.testing.assert_close(joint.mean[:, 0], single.mean[:, 0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(joint.variance[:, 0], single.variance[:, 0], rtol=1e-12, atol=1e-12)

    # Log density of the marginal from scipy with the joint's parameters.
    y = single_data.response.nan_to_num(0.0)[:, 0].numpy()
    loc = joint.loc[:, 0].numpy()
    scale_00 = joint.scale_tril[:, 0, 0].numpy()  # sqrt of the (0, 0) scale-matrix entry
    if family == "normal":
        expected = scipy.stats.norm.logpdf(y, loc, scale_00)
    else:
        expected = scipy.stats.t.logpdf(y, 5.0, loc, scale_00)
    actual = single.log_prob(single_data.response.nan_to_num(0.0)).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-10)
    # And the joint's correlation is the one passed in (scale matrix D C D).
    cov = joint.covariance_matrix[0].numpy()
    assert cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]) == pytest.approx(0.8, rel=1e-12)
