"""GARCH(1,1) variances by a parallel scan against loops and the arch package."""

import numpy as np
import pytest
import torch
from arch import arch_model

from bayes_moe.kernels.garch import aggregate_variance, arch_backcast, garch_variance
from bayes_moe.kernels.scan import linear_recurrence

F64 = torch.float64


def _loop_recurrence(a, b, x0):
    out, x = [], x0
    for t in range(a.shape[0]):
        x = a[t] * x + b[t]
        out.append(x)
    return torch.stack(out) if out else b.clone()


@pytest.mark.parametrize("length", [0, 1, 2, 3, 7, 64, 101])
def test_linear_recurrence_equals_the_loop_with_batches(length):
    g = torch.Generator().manual_seed(length)
    a = torch.rand(length, 4, 2, generator=g, dtype=F64) * 1.2  # some |a| > 1 too
    b = torch.randn(length, 4, 2, generator=g, dtype=F64)
    x0 = torch.randn(4, 2, generator=g, dtype=F64)
    torch.testing.assert_close(linear_recurrence(a, b, x0), _loop_recurrence(a, b, x0))


def test_linear_recurrence_gradient_equals_the_loops():
    g = torch.Generator().manual_seed(1)
    leaves = [
        torch.rand(37, 3, generator=g, dtype=F64).requires_grad_(),
        torch.randn(37, 3, generator=g, dtype=F64).requires_grad_(),
        torch.randn(3, generator=g, dtype=F64).requires_grad_(),
    ]
    weights = torch.randn(37, 3, generator=g, dtype=F64)
    ours = torch.autograd.grad((linear_recurrence(*leaves) * weights).sum(), leaves)
    loop = torch.autograd.grad((_loop_recurrence(*leaves) * weights).sum(), leaves)
    for x, y in zip(ours, loop):
        torch.testing.assert_close(x, y)


def _garch_loop(resid, omega, alpha, beta, backcast):
    s = np.empty(len(resid) + 1)
    s[0] = omega + (alpha + beta) * backcast
    for t in range(1, len(resid) + 1):
        s[t] = omega + alpha * resid[t - 1] ** 2 + beta * s[t - 1]
    return s


def test_garch_variance_equals_the_loop_for_each_draw_and_target():
    g = torch.Generator().manual_seed(2)
    resid = torch.randn(2, 300, generator=g, dtype=F64)  # (d_y, T)
    omega = torch.rand(5, 2, generator=g, dtype=F64) * 0.1 + 0.01  # (S, d_y)
    alpha = torch.rand(5, 2, generator=g, dtype=F64) * 0.2
    beta = torch.rand(5, 2, generator=g, dtype=F64) * 0.75
    backcast = arch_backcast(resid)
    ours = garch_variance(resid, omega, alpha, beta, backcast)
    assert ours.shape == (5, 2, 301)
    for s in range(5):
        for j in range(2):
            expected = _garch_loop(
                resid[j].numpy(),
                *(float(x[s, j]) for x in (omega, alpha, beta)),
                float(backcast[j]),
            )
            np.testing.assert_allclose(ours[s, j].numpy(), expected, rtol=1e-13)


@pytest.fixture(scope="module")
def arch_garch_t(sp500):
    """arch's GARCH(1,1)-t MLE on the real S&P 500 returns, 1999-2018."""
    returns = sp500["ret"]
    return returns, arch_model(returns, mean="Constant", vol="GARCH", p=1, q=1, dist="t").fit(
        disp="off"
    )


def test_backcast_is_archs(arch_garch_t):
    returns, res = arch_garch_t
    resid = returns.to_numpy() - res.params["mu"]
    expected = res.model.volatility.backcast(resid)
    assert arch_backcast(torch.as_tensor(resid)).item() == pytest.approx(expected, rel=1e-14)
    short = torch.as_tensor(resid[:20])  # fewer days than the 75 the backcast reads
    assert arch_backcast(short).item() == pytest.approx(
        res.model.volatility.backcast(resid[:20]), rel=1e-14
    )


def test_garch_variance_equals_archs_conditional_variances_at_archs_mle(arch_garch_t):
    # The oracle: 1e-8 relative at arch's parameters (measured: ~1e-15).
    returns, res = arch_garch_t
    y = torch.as_tensor(returns.to_numpy(copy=True))
    mu, omega, alpha, beta = (
        torch.tensor(float(res.params[k]), dtype=F64)
        for k in ("mu", "omega", "alpha[1]", "beta[1]")
    )
    backcast = arch_backcast(y - y.mean())  # arch backcasts from its starting residuals
    ours = garch_variance(y - mu, omega, alpha, beta, backcast)[:-1].numpy()
    reference = res.conditional_volatility.to_numpy() ** 2
    assert np.max(np.abs(ours / reference - 1.0)) < 1e-8
    # The extra last entry is arch's one-step forecast beyond the sample.
    forecast = res.forecast(horizon=1, reindex=False).variance.to_numpy()[-1, 0]
    full = garch_variance(y - mu, omega, alpha, beta, backcast)[-1].item()
    assert full == pytest.approx(forecast, rel=1e-10)


@pytest.mark.parametrize("horizon", [1, 5, 22])
def test_aggregate_variance_is_the_sum_of_archs_multistep_forecasts(arch_garch_t, horizon):
    # arch's analytic h-step variance forecasts, summed over the h days of the sum.
    returns, res = arch_garch_t
    start = len(returns) - 40
    expected = (
        res.forecast(horizon=horizon, start=start, reindex=False).variance.to_numpy().sum(axis=1)
    )
    one_step = torch.as_tensor(
        res.forecast(horizon=1, start=start, reindex=False).variance.to_numpy()[:, 0].copy()
    )
    persistence = torch.tensor(float(res.params["alpha[1]"] + res.params["beta[1]"]), dtype=F64)
    omega = torch.tensor(float(res.params["omega"]), dtype=F64)
    ours = aggregate_variance(one_step, omega, persistence, horizon).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-12)


def test_aggregate_variance_equals_the_closed_form_away_from_the_unit_root():
    # sum_j E sigma^2_{t+j} = h V + (sigma^2_{t+1} - V) (1 - p^h) / (1 - p), V = omega / (1 - p)
    p, omega, h = torch.tensor(0.9, dtype=F64), torch.tensor(0.1, dtype=F64), 10
    next_var = torch.tensor([0.3, 1.0, 4.0], dtype=F64)
    V = omega / (1 - p)
    closed = h * V + (next_var - V) * (1 - p**h) / (1 - p)
    torch.testing.assert_close(aggregate_variance(next_var, omega, p, h), closed)
