"""The Kalman expert against statsmodels' state-space filter, scipy and Monte Carlo.

The expert's model for a target (standardized S&P 500 returns here) is a latent AR(k)
signal observed in noise: state :math:`x_t = (\\mu_t, \\dots, \\mu_{t-k+1})`,
transition the AR(k) companion matrix of ``pacf_to_ar(pacf)``, state noise
:math:`q^2` on the first state, design :math:`(1, 0, \\dots)`, observation intercept
:math:`d` and noise variance :math:`R_t = s_{t-1}^2`, the scale model evaluated at
the previous close (:math:`\\sigma^2` on the first row), started at the stationary
distribution. Oracles: statsmodels' ``MLEModel`` (Cython Kalman filter) built from
those matrices, ``ArmaProcess.pacf``, ``scipy.linalg.solve_discrete_lyapunov`` and a
simulation of the state-space model.
"""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
import torch
from pyro import poutine
from scipy.linalg import solve_discrete_lyapunov
from statsmodels.tsa.arima_process import ArmaProcess

import bayes_moe as bm
from bayes_moe.data.windows import prepare
from bayes_moe.models.experts import Kalman
from bayes_moe.models.experts.kalman import companion, pacf_to_ar, stationary_covariance

DT = torch.float64
WINDOW = 64
PACF = {1: [0.6], 2: [0.7, -0.4], 3: [0.5, 0.3, -0.6]}
STATE_SCALE, OBS_INTERCEPT, SCALE = 0.15, 0.04, 0.9
VOL_COEF = [0.25, -0.1, 0.35, 0.05, 0.1, -0.3, 0.1]  # one per VOL_FEATURES entry


@pytest.fixture(scope="module")
def sp500_frame():
    """S&P 500 daily returns 1999-2001 (arch.data), the dot-com bust: 700 days."""
    return bm.data.load_sp500().iloc[:700]


def _params(k: int, heteroscedastic: bool) -> dict:
    params = {
        "pacf": torch.tensor([PACF[k]], dtype=DT),
        "state_scale": torch.tensor([STATE_SCALE], dtype=DT),
        "obs_intercept": torch.tensor([OBS_INTERCEPT], dtype=DT),
        "scale": torch.tensor([SCALE], dtype=DT),
    }
    if heteroscedastic:
        params["vol_coef"] = torch.tensor([VOL_COEF], dtype=DT)
    return params


def _ar_coefficients(pacf) -> np.ndarray:
    """Durbin-Levinson in plain numpy (independent of the torch implementation)."""
    phi = np.array([pacf[0]])
    for r in pacf[1:]:
        phi = np.r_[phi - r * phi[::-1], r]
    return phi


def _observation_variance(vol: np.ndarray, heteroscedastic: bool) -> np.ndarray:
    """R_t of every row: (sigma exp(sum_w gamma_w f_{t-1,w}))^2, sigma^2 on row 0."""
    T = vol.shape[0]
    if not heteroscedastic:
        return np.full(T, SCALE**2)
    log_scale = np.log(SCALE) + np.r_[0.0, vol[:-1, 0] @ np.array(VOL_COEF)]
    return np.exp(2 * log_scale)


def _statsmodels_filter(y: np.ndarray, k: int, obs_var: np.ndarray):
    """statsmodels' Kalman filter of the expert's state-space model on ``y`` (T,)."""
    phi = _ar_coefficients(PACF[k])
    F = np.zeros((k, k))
    F[0] = phi
    F[1:, :-1] = np.eye(k - 1)
    Q = np.zeros((k, k))
    Q[0, 0] = STATE_SCALE**2
    mod = sm.tsa.statespace.MLEModel(y, k_states=k)
    design = np.zeros((1, k))
    design[0, 0] = 1.0
    mod["design"] = design
    mod["obs_intercept"] = np.array([OBS_INTERCEPT])
    mod["obs_cov"] = obs_var.reshape(1, 1, -1)  # time-varying (p, p, T)
    mod["transition"] = F
    mod["selection"] = np.eye(k)
    mod["state_cov"] = Q
    mod.initialize_known(np.zeros(k), solve_discrete_lyapunov(F, Q))
    mod.ssm.tolerance = 0.0  # never switch to the steady-state shortcut
    return mod.ssm.filter(), F, Q


@pytest.mark.parametrize("heteroscedastic", [False, True], ids=["homoscedastic", "vol-scale"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_log_likelihood_equals_statsmodels(sp500_frame, k, heteroscedastic):
    # Reference: statsmodels MLEModel.ssm.filter() llf_obs summed over the days the expert
    # scores: origins t >= WINDOW - 1 forecast rows t + 1 >= WINDOW, so rows WINDOW..T-1.
    # Observed: equal to ~1e-16 relative, e.g. k = 2: -911.5062 (constant R), -1031.6986
    # (R_t from the volatility summaries).
    data = prepare(sp500_frame, targets=["ret"], window=WINDOW)
    expert = Kalman(k, family="normal", heteroscedastic=heteroscedastic)
    d = poutine.condition(expert.model, data=_params(k, heteroscedastic))(data.inputs)

    y = data.inputs.series[:, 0].numpy()
    obs_var = _observation_variance(data.inputs.vol.numpy(), heteroscedastic)
    res, _, _ = _statsmodels_filter(y, k, obs_var)
    n_obs = data.n_observed
    scored_rows = data.inputs.origins[:n_obs].numpy() + 1
    assert scored_rows[0] == WINDOW and scored_rows[-1] == len(y) - 1

    log_prob = d.log_prob(data.response.nan_to_num(0.0)).numpy()[:n_obs]
    assert log_prob.sum() == pytest.approx(res.llf_obs[scored_rows].sum(), rel=1e-4)
    # Stronger than the sum: every day's term, and the one-step predictive moments.
    np.testing.assert_allclose(log_prob, res.llf_obs[scored_rows], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(
        d.mean[:n_obs, 0].numpy(), res.forecasts[0, scored_rows], rtol=1e-8, atol=1e-10
    )
    np.testing.assert_allclose(
        d.variance[:n_obs, 0].numpy(), res.forecasts_error_cov[0, 0, scored_rows], rtol=1e-8
    )


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_pacf_to_ar_has_the_requested_partial_autocorrelations(k):
    # Reference: statsmodels ArmaProcess(ar=[1, -phi_1, ..., -phi_k]).pacf, the partial
    # autocorrelations of the AR(k) process with the returned coefficients.
    rng = np.random.default_rng(k)
    pacf = rng.uniform(-0.95, 0.95, size=(4, k))
    phi = pacf_to_ar(torch.as_tensor(pacf)).numpy()  # batched (4, k)
    for row, coef in zip(pacf, phi):
        process = ArmaProcess(ar=np.r_[1.0, -coef])
        assert process.isstationary
        np.testing.assert_allclose(process.pacf(k + 1)[1:], row, atol=1e-10)
        np.testing.assert_allclose(coef, _ar_coefficients(row), atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_stationary_covariance_solves_the_lyapunov_equation(k):
    # Reference: scipy.linalg.solve_discrete_lyapunov(F, Q), P = F P F' + Q.
    rng = np.random.default_rng(10 + k)
    pacf = rng.uniform(-0.9, 0.9, size=(3, k))
    F = companion(pacf_to_ar(torch.as_tensor(pacf)))  # (3, k, k)
    a = rng.standard_normal((3, k, k))
    Q = a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(k)  # a full SPD noise covariance
    P = stationary_covariance(F, torch.as_tensor(Q)).numpy()
    for i in range(3):
        np.testing.assert_allclose(P[i], solve_discrete_lyapunov(F[i].numpy(), Q[i]), rtol=1e-9)
    # The companion matrix: first row phi, ones on the subdiagonal.
    np.testing.assert_allclose(F[0, 0].numpy(), _ar_coefficients(pacf[0]), atol=1e-12)
    np.testing.assert_array_equal(F[0, 1:, :-1].numpy(), np.eye(k - 1))


@pytest.mark.parametrize("horizon", [5, 20])
def test_multi_day_predictive_matches_simulation(sp500_frame, horizon):
    # Reference: Monte Carlo of the state-space model. From statsmodels' filtered state at
    # origin t, x_t ~ N(m_t, P_t), simulate x_{t+j} = F x_{t+j-1} + w, y = d + x[0] + v for
    # j = 1..h (200,000 paths, seed 0) and take the mean and variance of the h-day sum.
    k = 2
    data = prepare(sp500_frame, targets=["ret"], window=WINDOW, horizon=horizon)
    expert = Kalman(k, family="normal", heteroscedastic=False)
    d = poutine.condition(expert.model, data=_params(k, False))(data.inputs)

    y = data.inputs.series[:, 0].numpy()
    res, F, Q = _statsmodels_filter(y, k, _observation_variance(data.inputs.vol.numpy(), False))
    rng = np.random.default_rng(0)
    n_paths = 200_000
    for n in (0, data.inputs.n_origins // 2, data.inputs.n_origins - 1):
        t = int(data.inputs.origins[n])
        x = rng.multivariate_normal(
            res.filtered_state[:, t], res.filtered_state_cov[:, :, t], n_paths
        )
        total = np.zeros(n_paths)
        for _ in range(horizon):
            x = x @ F.T
            x[:, 0] += STATE_SCALE * rng.standard_normal(n_paths)
            total += OBS_INTERCEPT + x[:, 0] + SCALE * rng.standard_normal(n_paths)
        mc_mean, mc_var = total.mean(), total.var()
        standard_error = np.sqrt(mc_var / n_paths)
        assert d.mean[n, 0].item() == pytest.approx(mc_mean, abs=4 * standard_error)
        # The sample variance's relative standard error is sqrt(2 / n_paths) = 0.0032.
        assert d.variance[n, 0].item() == pytest.approx(mc_var, rel=0.015)
        # The h-day variance exceeds h one-day noise variances (the signal adds to it).
        assert d.variance[n, 0].item() > horizon * SCALE**2
