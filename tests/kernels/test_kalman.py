"""Tests for bayes_moe.kernels.kalman against oracles.

Oracles: statsmodels' Kalman filter (``MLEModel.ssm.filter``), the sequential
reference loop, the closed-form steady state of the local-level model, hand-unrolled
forecasts, and a Monte Carlo simulation of the state-space model.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from statsmodels.tsa.statespace.mlemodel import MLEModel

from bayes_moe.kernels.kalman import (
    KalmanFilterResult,
    aggregated_observation_forecast,
    forecast_state,
    kalman_filter,
    reference_kalman_filter,
)

DT = torch.float64


def _random_spd(rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
    a = rng.standard_normal((n, n))
    return scale * (a @ a.T / n + 0.2 * np.eye(n))


def _random_model(rng: np.random.Generator, k: int, p: int, T: int, time_varying_R: bool):
    """A random stable model (spectral radius of F is 0.9) and data simulated from it."""
    F = rng.standard_normal((k, k))
    F *= 0.9 / np.abs(np.linalg.eigvals(F)).max()
    c = rng.standard_normal(k)
    H = rng.standard_normal((p, k))
    d = rng.standard_normal(p)
    Q = _random_spd(rng, k)
    if time_varying_R:
        R = np.stack([_random_spd(rng, p, scale=0.5 + t / T) for t in range(T)])
    else:
        R = _random_spd(rng, p)
    m1 = rng.standard_normal(k)
    P1 = _random_spd(rng, k, scale=2.0)
    x = rng.multivariate_normal(m1, P1)
    y = np.empty((T, p))
    for t in range(T):
        Rt = R[t] if time_varying_R else R
        y[t] = H @ x + d + rng.multivariate_normal(np.zeros(p), Rt)
        x = F @ x + c + rng.multivariate_normal(np.zeros(k), Q)
    return dict(y=y, F=F, c=c, H=H, d=d, Q=Q, R=R, init_mean=m1, init_cov=P1)


def _torch(model: dict) -> dict:
    return {name: torch.as_tensor(value, dtype=DT) for name, value in model.items()}


def _statsmodels_filter(model: dict):
    """statsmodels' own filter on the same model.

    statsmodels writes alpha_{t+1} = T alpha_t + c_t + R eta_t, y_t = Z alpha_t + d_t +
    eps_t with alpha_1 ~ N(a_1, P_1) from ``initialize_known``: our F, c, H, d, Q, R
    with selection = I. A time-varying obs_cov takes a trailing time dim (p, p, T).
    """
    y = model["y"]
    k = model["F"].shape[0]
    mod = MLEModel(y, k_states=k)
    mod["design"] = model["H"]
    mod["obs_intercept"] = model["d"]
    R = model["R"]
    mod["obs_cov"] = np.moveaxis(R, 0, -1) if R.ndim == 3 else R
    mod["transition"] = model["F"]
    mod["state_intercept"] = model["c"]
    mod["selection"] = np.eye(k)
    mod["state_cov"] = model["Q"]
    mod.initialize_known(model["init_mean"], model["init_cov"])
    mod.ssm.tolerance = 0.0  # never switch to the steady-state shortcut
    return mod.ssm.filter()


def _assert_close(actual: torch.Tensor, expected, rtol: float = 1e-8, atol: float = 1e-10):
    np.testing.assert_allclose(actual.detach().numpy(), np.asarray(expected), rtol=rtol, atol=atol)


def _assert_results_close(a: KalmanFilterResult, b: KalmanFilterResult, rtol=1e-10, atol=1e-10):
    for name, x, y in zip(KalmanFilterResult._fields, a, b, strict=True):
        assert x.shape == y.shape, name
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol, msg=name)


# ---------------------------------------------------------------------------------------
# statsmodels oracle


@pytest.mark.parametrize("time_varying_R", [False, True])
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_matches_statsmodels(k, p, time_varying_R):
    rng = np.random.default_rng(100 * k + 10 * p + time_varying_R)
    T = 200
    model = _random_model(rng, k, p, T, time_varying_R)
    # Numbers from statsmodels' Cython Kalman filter (statsmodels.tsa.statespace).
    sm = _statsmodels_filter(model)
    for filt in (kalman_filter, reference_kalman_filter):
        out = filt(**_torch(model))
        _assert_close(out.log_likelihood_terms, sm.llf_obs)
        _assert_close(out.log_likelihood, sm.llf_obs.sum())
        _assert_close(out.filtered_mean, sm.filtered_state.T)
        _assert_close(out.filtered_cov, np.moveaxis(sm.filtered_state_cov, -1, 0))
        # statsmodels' predicted_state has T + 1 columns: column t is x_{t+1} | y_{1:t}
        # (0-based); the first T are our x_t | y_{1:t-1}, column 0 being init_mean.
        _assert_close(out.predicted_state_mean, sm.predicted_state[:, :T].T)
        _assert_close(out.predicted_state_cov, np.moveaxis(sm.predicted_state_cov[:, :, :T], -1, 0))
        _assert_close(out.predicted_obs_mean, sm.forecasts.T)
        _assert_close(out.predicted_obs_cov, np.moveaxis(sm.forecasts_error_cov, -1, 0))


# ---------------------------------------------------------------------------------------
# parallel == sequential; batching


@pytest.mark.parametrize("T", [1, 2, 3, 5, 8, 33])
def test_parallel_equals_reference_for_odd_and_tiny_lengths(T):
    # The scan recursion splits odd/even positions: cover lengths that stress it.
    rng = np.random.default_rng(T)
    model = _torch(_random_model(rng, 2, 2, T, time_varying_R=T > 2))
    _assert_results_close(kalman_filter(**model), reference_kalman_filter(**model))


def test_batch_dims_broadcast():
    rng = np.random.default_rng(7)
    k, p, T = 2, 1, 40
    base = _torch(_random_model(rng, k, p, T, time_varying_R=True))
    # batch shape (2, 3): F and init_mean vary along dim 0, y along dim 1, R is shared
    # and time-varying (T, p, p), Q varies over (2, 3).
    F = base["F"] * torch.tensor([1.0, 0.5], dtype=DT).reshape(2, 1, 1, 1)
    init_mean = base["init_mean"] + torch.tensor([0.0, 1.0], dtype=DT).reshape(2, 1, 1)
    y = base["y"] + torch.arange(3, dtype=DT).reshape(3, 1, 1)
    Q = base["Q"] * torch.linspace(0.5, 2.0, 6, dtype=DT).reshape(2, 3, 1, 1)
    batched = kalman_filter(
        y, F, base["c"], base["H"], base["d"], Q, base["R"], init_mean, base["init_cov"]
    )
    assert batched.filtered_mean.shape == (2, 3, T, k)
    assert batched.filtered_cov.shape == (2, 3, T, k, k)
    assert batched.predicted_obs_cov.shape == (2, 3, T, p, p)
    assert batched.log_likelihood_terms.shape == (2, 3, T)
    assert batched.log_likelihood.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            single = kalman_filter(
                y[j],
                F[i, 0],
                base["c"],
                base["H"],
                base["d"],
                Q[i, j],
                base["R"],
                init_mean[i, 0],
                base["init_cov"],
            )
            _assert_results_close(KalmanFilterResult(*(x[i, j] for x in batched)), single)


# ---------------------------------------------------------------------------------------
# the compiled route for a scalar state and observation


@pytest.mark.parametrize("time_varying_R", [False, True])
@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_scalar_routes_match_statsmodels(method, time_varying_R):
    model = _random_model(np.random.default_rng(21 + time_varying_R), 1, 1, 300, time_varying_R)
    sm = _statsmodels_filter(model)
    out = kalman_filter(**_torch(model), method=method)
    _assert_close(out.log_likelihood_terms, sm.llf_obs)
    _assert_close(out.filtered_mean, sm.filtered_state.T)
    _assert_close(out.filtered_cov, np.moveaxis(sm.filtered_state_cov, -1, 0))
    _assert_close(out.predicted_state_mean, sm.predicted_state[:, :300].T)
    _assert_close(out.predicted_obs_cov, np.moveaxis(sm.forecasts_error_cov, -1, 0))


def test_scalar_routes_agree_on_broadcast_batches_and_auto_takes_the_loop():
    # A batch of draws (3, 2): F, Q and the initial mean vary along it, y along dim 1,
    # R is time-varying and shared; the loop must equal the scan entry by entry.
    rng = np.random.default_rng(8)
    base = _torch(_random_model(rng, 1, 1, 60, time_varying_R=True))
    F = base["F"] * torch.tensor([1.0, 0.5, -0.7], dtype=DT).reshape(3, 1, 1, 1)
    Q = base["Q"] * torch.linspace(0.5, 2.0, 6, dtype=DT).reshape(3, 2, 1, 1)
    init_mean = base["init_mean"] + torch.tensor([0.0, 1.0, -2.0], dtype=DT).reshape(3, 1, 1)
    y = base["y"] + torch.arange(2, dtype=DT).reshape(2, 1, 1)
    args = (y, F, base["c"], base["H"], base["d"], Q, base["R"], init_mean, base["init_cov"])
    loop = kalman_filter(*args, method="sequential")
    scan = kalman_filter(*args, method="parallel")
    assert loop.filtered_mean.shape == (3, 2, 60, 1) and loop.log_likelihood.shape == (3, 2)
    _assert_results_close(loop, scan, rtol=1e-11, atol=1e-12)
    auto = kalman_filter(*args)
    assert all(torch.equal(a, b) for a, b in zip(auto, loop))  # no gradient: the loop
    needs_grad = kalman_filter(*(a.clone().requires_grad_() for a in args))
    assert needs_grad.log_likelihood.grad_fn is not None  # a gradient: the scan
    _assert_results_close(KalmanFilterResult(*(x.detach() for x in needs_grad)), scan)


def test_the_loop_refuses_what_it_cannot_do():
    model = _torch(_random_model(np.random.default_rng(1), 2, 1, 10, time_varying_R=False))
    with pytest.raises(ValueError, match="k = 2, p = 1"):
        kalman_filter(**model, method="sequential")
    scalar = _torch(_random_model(np.random.default_rng(2), 1, 1, 10, time_varying_R=False))
    with pytest.raises(ValueError, match="requires grad"):
        kalman_filter(**dict(scalar, Q=scalar["Q"].requires_grad_()), method="sequential")
    with pytest.raises(ValueError, match="method must be one of"):
        kalman_filter(**scalar, method="fast")


def test_time_varying_flag_disambiguates_batch_dim_equal_to_T():
    rng = np.random.default_rng(3)
    T = 4
    model = _torch(_random_model(rng, 1, 1, T, time_varying_R=False))
    # A batch of T constant R's, one per series; y batched to match.
    R_batch = model["R"] * torch.arange(1, T + 1, dtype=DT).reshape(T, 1, 1)
    y = model["y"].expand(T, T, 1)
    args = dict(model, y=y, R=R_batch)
    batched = kalman_filter(**args, time_varying_obs_cov=False)
    assert batched.log_likelihood.shape == (T,)
    for i in range(T):
        single = kalman_filter(**dict(model, R=R_batch[i]))
        torch.testing.assert_close(batched.log_likelihood[i], single.log_likelihood)
    # Left to itself, R's leading dim (== T) is read as time.
    assert kalman_filter(**args).log_likelihood.shape == (T,)
    assert not torch.allclose(kalman_filter(**args).log_likelihood, batched.log_likelihood)


def test_float32_promotes_and_agrees():
    rng = np.random.default_rng(11)
    model = _torch(_random_model(rng, 2, 1, 50, time_varying_R=False))
    out32 = kalman_filter(**{n: v.float() for n, v in model.items()})
    assert out32.log_likelihood.dtype == torch.float32
    torch.testing.assert_close(
        out32.log_likelihood.double(), kalman_filter(**model).log_likelihood, rtol=1e-4, atol=0
    )
    mixed = kalman_filter(**dict(model, y=model["y"].float()))
    assert mixed.log_likelihood.dtype == torch.float64


# ---------------------------------------------------------------------------------------
# closed form: steady state of the local-level model


def test_local_level_steady_state_gain():
    # x_t = x_{t-1} + w_t, y_t = x_t + v_t, w ~ N(0, q), v ~ N(0, r). The predicted
    # variance solves P = P r / (P + r) + q, i.e. P^2 - q P - q r = 0, so
    # P = (q + sqrt(q^2 + 4 q r)) / 2 and the gain is K = P / (P + r).
    q, r = 0.3, 1.7
    P = (q + math.sqrt(q * q + 4 * q * r)) / 2
    K = P / (P + r)
    T = 300
    y = torch.as_tensor(np.random.default_rng(0).standard_normal((T, 1)).cumsum(0), dtype=DT)
    one = torch.ones(1, 1, dtype=DT)
    zero = torch.zeros(1, dtype=DT)
    args = (y, one, zero, one, zero, q * one, r * one, zero)

    # Started at the steady state it stays there.
    out = kalman_filter(*args, P * one)
    _assert_close(out.predicted_state_cov, np.full((T, 1, 1), P), rtol=1e-12)
    _assert_close(out.filtered_cov, np.full((T, 1, 1), (1 - K) * P), rtol=1e-12)
    innovation = y - out.predicted_state_mean
    _assert_close(out.filtered_mean - out.predicted_state_mean, K * innovation, rtol=1e-10)

    # Started far away (nearly diffuse) it converges to it.
    out = kalman_filter(*args, 1e4 * one)
    _assert_close(out.predicted_state_cov[-1], [[P]], rtol=1e-12)
    gain = 1 - out.filtered_cov[-1] / out.predicted_state_cov[-1]
    _assert_close(gain, [[K]], rtol=1e-12)


# ---------------------------------------------------------------------------------------
# long series


def test_long_series_matches_statsmodels_and_reference():
    rng = np.random.default_rng(5)
    T = 100_000
    model = _random_model(rng, 2, 1, 50, time_varying_R=False)
    y = np.cumsum(rng.standard_normal((T, 1)), axis=0) * 0.01 + rng.standard_normal((T, 1))
    model["y"] = y
    out = kalman_filter(**_torch(model))
    assert torch.isfinite(out.log_likelihood_terms).all()
    assert torch.isfinite(out.filtered_cov).all()
    # Total log-likelihood from statsmodels' filter on the full series.
    sm = _statsmodels_filter(model)
    _assert_close(out.log_likelihood, sm.llf, rtol=1e-8)
    # The filter is causal, so the first T_ref terms equal those of the reference loop
    # run on y[:T_ref] (the loop is too slow for all of T).
    T_ref = 20_000
    with torch.no_grad():
        ref = reference_kalman_filter(**_torch(dict(model, y=y[:T_ref])))
    _assert_close(out.log_likelihood_terms[:T_ref].sum(), ref.log_likelihood, rtol=1e-8)
    _assert_close(out.filtered_mean[:T_ref], ref.filtered_mean, rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize("time_varying_R", [False, True])
def test_gradcheck_log_likelihood(time_varying_R):
    rng = np.random.default_rng(2)
    model = _torch(_random_model(rng, 2, 1, 7, time_varying_R))
    names = ["F", "c", "H", "d", "Q", "R", "init_mean", "init_cov"]
    inputs = tuple(model[n].clone().requires_grad_() for n in names)

    def loglik(*params):
        return kalman_filter(model["y"], *params).log_likelihood

    assert torch.autograd.gradcheck(loglik, inputs)

    grads = torch.autograd.grad(loglik(*inputs), inputs)
    ref_grads = torch.autograd.grad(
        reference_kalman_filter(model["y"], *inputs).log_likelihood, inputs
    )
    for name, g, g_ref in zip(names, grads, ref_grads, strict=True):
        assert torch.isfinite(g).all(), name
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-11, msg=name)


def test_gradients_finite_for_long_series():
    rng = np.random.default_rng(9)
    model = _torch(_random_model(rng, 2, 1, 2_000, time_varying_R=False))
    params = {n: v.requires_grad_() for n, v in model.items() if n != "y"}
    kalman_filter(**model).log_likelihood.backward()
    for name, value in params.items():
        assert torch.isfinite(value.grad).all(), name
        assert value.grad.abs().sum() > 0, name


# ---------------------------------------------------------------------------------------
# forecasts


def test_forecast_state_unrolled():
    rng = np.random.default_rng(4)
    m = _torch(_random_model(rng, 3, 1, 2, time_varying_R=False))
    F, c, Q, mean, cov = m["F"], m["c"], m["Q"], m["init_mean"], m["init_cov"]
    got = forecast_state(mean, cov, F, c, Q, 0)
    torch.testing.assert_close(got, (mean, cov))
    # Hand-unrolled three steps: x_3 = F^3 x_0 + (I + F + F^2) c + F^2 w_1 + F w_2 + w_3.
    F2 = F @ F
    F3 = F2 @ F
    eye = torch.eye(3, dtype=DT)
    exp_mean = F3 @ mean + (eye + F + F2) @ c
    exp_cov = F3 @ cov @ F3.T + F2 @ Q @ F2.T + F @ Q @ F.T + Q
    got_mean, got_cov = forecast_state(mean, cov, F, c, Q, 3)
    torch.testing.assert_close(got_mean, exp_mean)
    torch.testing.assert_close(got_cov, exp_cov)


def test_forecasts_agree_with_filter_one_step_predictions():
    # The filter's own predictions for time t + 1 are the one-step forecasts from t.
    rng = np.random.default_rng(6)
    model = _torch(_random_model(rng, 2, 2, 30, time_varying_R=False))
    out = kalman_filter(**model)
    t = 20
    mean, cov = out.filtered_mean[t], out.filtered_cov[t]
    F, c, H, d, Q, R = (model[n] for n in ("F", "c", "H", "d", "Q", "R"))
    state_mean, state_cov = forecast_state(mean, cov, F, c, Q, 1)
    torch.testing.assert_close(state_mean, out.predicted_state_mean[t + 1])
    torch.testing.assert_close(state_cov, out.predicted_state_cov[t + 1])
    obs_mean, obs_cov = aggregated_observation_forecast(mean, cov, F, c, H, d, Q, R, 1)
    torch.testing.assert_close(obs_mean, out.predicted_obs_mean[t + 1])
    torch.testing.assert_close(obs_cov, out.predicted_obs_cov[t + 1])


def test_aggregated_forecast_two_steps_scalar_by_hand():
    # k = p = 1: x_1 = f x_0 + c + w_1, x_2 = f^2 x_0 + (1 + f) c + f w_1 + w_2, so
    # Y = y_1 + y_2 = h ((f + f^2) x_0 + (2 + f) c + (1 + f) w_1 + w_2) + 2 d + v_1 + v_2:
    # E[Y] = h ((f + f^2) m + (2 + f) c) + 2 d,
    # Var[Y] = h^2 ((f + f^2)^2 P + ((1 + f)^2 + 1) q) + 2 r.
    f, c, h, d, q, r, m, P = 0.7, 0.3, 1.5, -0.2, 0.4, 0.9, 1.1, 0.6
    exp_mean = h * ((f + f**2) * m + (2 + f) * c) + 2 * d
    exp_var = h**2 * ((f + f**2) ** 2 * P + ((1 + f) ** 2 + 1) * q) + 2 * r

    def t(*shape_value):
        *shape, value = shape_value
        return torch.full(shape, value, dtype=DT)

    mean, cov = aggregated_observation_forecast(
        t(1, m), t(1, 1, P), t(1, 1, f), t(1, c), t(1, 1, h), t(1, d), t(1, 1, q), t(1, 1, r), 2
    )
    _assert_close(mean, [exp_mean], rtol=1e-14)
    _assert_close(cov, [[exp_var]], rtol=1e-14)


def test_aggregated_forecast_monte_carlo():
    # Simulate the model forward from x_t ~ N(m, P) and sum h observations.
    rng = np.random.default_rng(8)
    k, p, h, n = 2, 2, 5, 200_000
    model = _random_model(rng, k, p, 2, time_varying_R=False)
    F, c, H, d, Q, R = (model[n_] for n_ in ("F", "c", "H", "d", "Q", "R"))
    m, P = model["init_mean"], model["init_cov"]
    gen = np.random.default_rng(12345)
    x = gen.multivariate_normal(m, P, size=n)
    total = np.zeros((n, p))
    for _ in range(h):
        x = x @ F.T + c + gen.multivariate_normal(np.zeros(k), Q, size=n)
        total += x @ H.T + d + gen.multivariate_normal(np.zeros(p), R, size=n)
    mc_mean = total.mean(0)
    mc_cov = np.cov(total.T)

    args = _torch(dict(mean=m, cov=P, F=F, c=c, H=H, d=d, Q=Q, R=R))
    mean, cov = aggregated_observation_forecast(**args, horizon=h)
    mean, cov = mean.numpy(), cov.numpy()
    # Within 5 Monte Carlo standard errors: sd/sqrt(n) for the mean, and
    # sqrt((S_ii S_jj + S_ij^2) / n) for a Gaussian sample covariance entry.
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(mc_mean - mean) < 5 * se_mean)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(mc_cov - cov) < 5 * se_cov)
    # cov - h R is the state part H (...) H^T, positive definite for this full-rank H.
    assert np.all(np.linalg.eigvalsh(cov - h * R) > 0)


def test_invalid_arguments():
    model = _torch(_random_model(np.random.default_rng(0), 2, 1, 5, time_varying_R=False))
    with pytest.raises(ValueError, match="H must end in shape"):
        kalman_filter(**dict(model, H=torch.ones(1, 3, dtype=DT)))
    with pytest.raises(ValueError, match="horizon"):
        aggregated_observation_forecast(
            model["init_mean"], model["init_cov"], *(model[n] for n in "FcHdQR"), 0
        )
    with pytest.raises(ValueError, match="steps"):
        forecast_state(
            model["init_mean"], model["init_cov"], model["F"], model["c"], model["Q"], -1
        )
