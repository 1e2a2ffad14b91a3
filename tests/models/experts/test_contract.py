"""The contract every registered expert must meet (STYLE practice 10).

Parametrized over ``bm.list_experts()`` (each with its default configuration) plus
configurations worth covering on their own: AR of order 0 (Normal, homoscedastic),
VAR with two targets (a joint ``MultivariateStudentT``) and a Kalman expert with a
two-dimensional state. A family registered later is picked up automatically.

Each check has an oracle that can disagree with the expert:

a. shapes, and the vectorized evaluation of ``S`` parameter draws equals evaluating
   every draw on its own;
b. causality: perturbing every row after day ``t`` leaves each predictive at origins
   ``<= t`` unchanged and moves a later one;
c. the predictive is a proper distribution: a quadrature of ``exp(log_prob)``
   integrates to one with the distribution's own mean and variance, and samples
   agree with those moments;
d. the in-sample log predictive density rises when the expert is fitted, above the
   initial guide and against a fitted constant-Normal benchmark.

All on real S&P 500 / NASDAQ daily returns (``arch.data``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyro
import pytest
import torch
from pyro import poutine
from scipy.integrate import trapezoid

import bayes_moe as bm
from bayes_moe.data.windows import prepare
from bayes_moe.inference.posterior import evaluate_posterior
from bayes_moe.inference.svi import make_guide
from bayes_moe.models.experts import make_expert

WINDOW = 32
ROWS = 500


def _case(spec, targets, case_id, *, data_free=False):
    """A configuration: expert spec, targets, and whether its predictive ignores the data."""
    return pytest.param(spec, targets, data_free, id=case_id)


CONFIGS = [_case({"name": name}, ["ret"], name) for name in bm.list_experts()] + [
    _case(
        {"name": "ar", "order": 0, "family": "normal", "heteroscedastic": False},
        ["ret"],
        "ar-order0-normal-homoscedastic",
        data_free=True,
    ),
    _case({"name": "var"}, ["ret", "ret_nasdaq"], "var-two-targets"),
    _case({"name": "kalman", "state_dim": 2}, ["ret"], "kalman-state2"),
]


@pytest.fixture(scope="module")
def sp500_frame():
    """Real S&P 500 with NASDAQ returns and range features (arch.data), 1999-2018."""
    return bm.data.load_sp500()


@pytest.fixture(scope="module")
def short_frame(sp500_frame):
    """The first ROWS days (1999-2000)."""
    return sp500_frame.iloc[:ROWS]


def prior_draws(expert, inputs, batch_shape, *, seed=0):
    """Draws of every parameter site from the prior, stacked to ``batch_shape + site shape``."""
    pyro.set_rng_seed(seed)
    n = int(np.prod(batch_shape, dtype=int))
    traces = [poutine.trace(expert.model).get_trace(inputs) for _ in range(n)]
    names = [
        name
        for name, site in traces[0].nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    ]
    draws = {}
    for name in names:
        values = torch.stack([t.nodes[name]["value"].detach() for t in traces])
        draws[name] = values.reshape(tuple(batch_shape) + values.shape[1:])
    return draws


def predictive(expert, inputs, draws):
    """The expert's predictive with its parameters fixed to ``draws``."""
    with torch.no_grad():
        return poutine.condition(expert.model, data=draws)(inputs)


def covariance(d):
    """Covariance ``batch + (d_y, d_y)`` of a joint predictive.

    Pyro's ``MultivariateStudentT.covariance_matrix`` is the scale matrix
    :math:`L L^\\top`; the covariance is :math:`\\nu / (\\nu - 2)` times it.
    """
    if isinstance(d, pyro.distributions.MultivariateStudentT):
        return d.covariance_matrix * (d.df / (d.df - 2))[..., None, None]
    return d.covariance_matrix


def moments(d):
    """Mean and marginal variance, each ``batch + (d_y,)``."""
    shape = d.batch_shape + d.event_shape
    return d.mean.expand(shape), d.variance.expand(shape)


# --------------------------------------------------------------------------- a. shapes


@pytest.mark.parametrize(("spec", "targets", "data_free"), CONFIGS)
@pytest.mark.parametrize("batch_shape", [(4,), (2, 3)], ids=["S=4", "S=2x3"])
def test_batched_draws_equal_each_draw_evaluated_alone(
    short_frame, spec, targets, data_free, batch_shape
):
    # Oracle: the same expert evaluated on one parameter draw at a time.
    data = prepare(short_frame, targets=targets, window=WINDOW)
    expert = make_expert(spec)
    N, d_y = data.inputs.n_origins, len(targets)
    response = data.response.nan_to_num(0.0)
    draws = prior_draws(expert, data.inputs, batch_shape)

    batched = predictive(expert, data.inputs, draws)
    assert batched.batch_shape == torch.Size(batch_shape + (N,))
    assert batched.event_shape == torch.Size((d_y,))
    batched_log_prob = batched.log_prob(response)
    assert batched_log_prob.shape == batch_shape + (N,)
    assert torch.isfinite(batched_log_prob).all()
    batched_mean, batched_var = moments(batched)

    for index in np.ndindex(*batch_shape):
        single = predictive(expert, data.inputs, {k: v[index] for k, v in draws.items()})
        assert single.batch_shape == torch.Size((N,))
        assert single.event_shape == torch.Size((d_y,))
        mean, var = moments(single)
        torch.testing.assert_close(
            batched_log_prob[index], single.log_prob(response), rtol=1e-10, atol=1e-10
        )
        torch.testing.assert_close(batched_mean[index], mean, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(batched_var[index], var, rtol=1e-10, atol=1e-10)
    # The draws differ, so the predictives must too (the batch is not one draw repeated).
    flat = batched_log_prob.reshape(-1, N)
    assert (flat[0] - flat[1]).abs().max() > 1e-3


# ------------------------------------------------------------------------ b. causality


@pytest.mark.parametrize(("spec", "targets", "data_free"), CONFIGS)
@pytest.mark.parametrize("horizon", [1, 5])
def test_predictive_at_origin_ignores_the_future(short_frame, spec, targets, data_free, horizon):
    # Oracle: the unperturbed frame. Every column of every row after day t is scaled by a
    # random factor; the predictive at origins <= t must not move (to 1e-10), while a
    # forecast made after t, which may read the perturbed rows, does.
    t = 250
    data = prepare(short_frame, targets=targets, window=WINDOW, horizon=horizon)
    rng = np.random.default_rng(1)
    values = short_frame.to_numpy(dtype=np.float64).copy()
    values[t + 1 :] *= rng.uniform(0.5, 1.5, size=values[t + 1 :].shape)
    perturbed = pd.DataFrame(values, index=short_frame.index, columns=short_frame.columns)
    moved = prepare(
        perturbed, targets=targets, window=WINDOW, horizon=horizon, preprocessor=data.preprocessor
    )
    # The perturbation reached the model's columns (the history after t differs).
    assert not torch.allclose(data.inputs.series[t + 1 :], moved.inputs.series[t + 1 :])
    torch.testing.assert_close(data.inputs.series[: t + 1], moved.inputs.series[: t + 1])

    expert = make_expert(spec)
    draws = prior_draws(expert, data.inputs, (3,), seed=2)
    before = predictive(expert, data.inputs, draws)
    after = predictive(expert, moved.inputs, draws)
    value = torch.full((len(targets),), 0.5, dtype=torch.float64)
    stats_before = [before.log_prob(value), *moments(before)]
    stats_after = [after.log_prob(value), *moments(after)]

    past = data.inputs.origins <= t
    assert past.sum() == t - WINDOW + 2 and (~past).sum() > 0
    for b, a in zip(stats_before, stats_after):
        torch.testing.assert_close(a[:, past], b[:, past], rtol=1e-10, atol=1e-10)
    change = max(
        (a[:, ~past] - b[:, ~past]).abs().max().item() for a, b in zip(stats_before, stats_after)
    )
    if data_free:
        assert change == 0.0  # a constant predictive reads no data at all
    else:
        assert change > 1e-3


# ----------------------------------------------------------------- c. a proper predictive


def _fixed_df(draws):
    """Fix the Student-t degrees of freedom (when present) to 6: finite fourth moment."""
    return {k: torch.full_like(v, 6.0) if k == "df" else v for k, v in draws.items()}


@pytest.mark.parametrize(("spec", "targets", "data_free"), CONFIGS)
def test_density_integrates_to_one_with_its_mean_and_variance(
    short_frame, spec, targets, data_free
):
    # Oracle: trapezoid quadrature of exp(log_prob) over a grid of +-40 standard deviations
    # around each origin's mean (1-D), or a 2-D grid of +-25 standard deviations (joint).
    data = prepare(short_frame, targets=targets, window=WINDOW)
    expert = make_expert(spec)
    draws = _fixed_df(prior_draws(expert, data.inputs, (), seed=3))
    N = data.inputs.n_origins
    origins = data.inputs.origins[[0, N // 3, 2 * N // 3, N - 1]]
    d = predictive(expert, data.inputs.at(origins), draws)  # four origins
    mean, var = moments(d)
    sd = var.sqrt()
    if len(targets) == 1:
        u = torch.linspace(-40.0, 40.0, 8001, dtype=torch.float64)
        grid = mean[:, 0] + sd[:, 0] * u[:, None]  # (G, 4)
        dens = d.log_prob(grid.unsqueeze(-1)).exp().numpy()  # (G, 4)
        x = grid.numpy()
        mass = trapezoid(dens, x, axis=0)
        m1 = trapezoid(x * dens, x, axis=0)
        m2 = trapezoid((x - m1) ** 2 * dens, x, axis=0)
        np.testing.assert_allclose(mass, 1.0, rtol=1e-6)
        np.testing.assert_allclose(m1, mean[:, 0].numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(m2, var[:, 0].numpy(), rtol=1e-4)
    else:
        assert len(targets) == 2
        u = torch.linspace(-25.0, 25.0, 801, dtype=torch.float64)
        a = mean[:, 0] + sd[:, 0] * u[:, None]  # (G, 4)
        b = mean[:, 1] + sd[:, 1] * u[:, None]
        pts = torch.stack(torch.broadcast_tensors(a[:, None], b[None, :]), dim=-1)  # (G, G, 4, 2)
        dens = d.log_prob(pts).exp().numpy()  # (G, G, 4)
        an, bn = a.numpy()[:, None], b.numpy()[None, :]

        def integral(f):
            inner = trapezoid(f * dens, b.numpy()[None, :, :], axis=1)  # (G, 4)
            return trapezoid(inner, a.numpy(), axis=0)  # (4,)

        mass = integral(1.0)
        ma, mb = integral(an), integral(bn)
        cov = integral((an - ma) * (bn - mb))
        var_a = integral((an - ma) ** 2)
        np.testing.assert_allclose(mass, 1.0, rtol=1e-4)
        np.testing.assert_allclose(np.stack([ma, mb], -1), mean.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(cov, covariance(d)[:, 0, 1].numpy(), rtol=2e-3)
        np.testing.assert_allclose(var_a, var[:, 0].numpy(), rtol=2e-3)


@pytest.mark.parametrize(("spec", "targets", "data_free"), CONFIGS)
def test_samples_match_the_predictive_moments(short_frame, spec, targets, data_free):
    # Oracle: Monte Carlo (4000 samples per origin, seed 0) against .mean / .variance, using
    # the sampling distribution of the sample moments: over ~470 origins the squared
    # z-scores of the sample means average to 1, the sample/true variance ratios to 1.
    data = prepare(short_frame, targets=targets, window=WINDOW)
    expert = make_expert(spec)
    d = predictive(expert, data.inputs, _fixed_df(prior_draws(expert, data.inputs, (), seed=4)))
    mean, var = moments(d)
    n = 4000
    torch.manual_seed(0)
    samples = d.sample((n,))  # (n, N, d_y)
    z = (samples.mean(0) - mean) / (var / n).sqrt()
    assert z.square().mean().item() == pytest.approx(1.0, abs=0.25)
    ratio = samples.var(0) / var
    assert ratio.mean().item() == pytest.approx(1.0, abs=0.01)
    if len(targets) > 1:
        centered = samples - samples.mean(0)
        cov = (centered[..., 0] * centered[..., 1]).mean(0)
        expected = covariance(d)[..., 0, 1]
        assert (cov / expected).mean().item() == pytest.approx(1.0, abs=0.02)


# ------------------------------------------------------------- d. fitting improves the fit


def _normal_benchmark(y: np.ndarray) -> float:
    """Mean log density of the maximum-likelihood (multivariate) Normal on ``y`` itself."""
    n, d_y = y.shape
    cov = np.atleast_2d(np.cov(y, rowvar=False, bias=True))
    return -0.5 * (d_y * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1] + d_y)


def _initial_guide_lpd(model, data, seed):
    """Mean log predictive density at the median of the SVI guide before any step."""
    program = model.program()
    inputs = data.inputs.at(data.inputs.origins[: data.n_observed])
    response = data.observed_response
    pyro.set_rng_seed(seed)
    with pyro.settings.context(module_local_params=True):
        guide = make_guide(program, "normal", init_scale=0.02)
        guide(inputs, response)
        with torch.no_grad():
            median = guide.median(inputs, response)
    draws = {k: v.detach().unsqueeze(0) for k, v in median.items()}
    return evaluate_posterior(program.eval(), draws, data).log_predictive_density.mean().item()


@pytest.mark.parametrize(("spec", "targets", "data_free"), CONFIGS)
def test_fitting_raises_the_log_predictive_density(sp500_frame, spec, targets, data_free):
    # Oracles: (1) the same model at the SVI guide's initial median (the median of prior
    # draws), (2) the maximum-likelihood constant Normal on the scored days, which every
    # expert nests (AR/VAR with zero lags, Kalman with no signal, t with large df).
    frame = sp500_frame.iloc[-1000:]  # 2015-01 .. 2018-12
    model = bm.BayesianMoE(experts=[spec], n_regimes=1, window=64)
    fit = model.fit(
        frame,
        target=targets,
        num_steps=100,
        learning_rate=0.05,
        num_draws=40,
        seed=0,
        progress=False,
        convergence_tol=None,
        pretrain_steps=100,  # stage one of neural experts (two-stage strategy)
    )
    fitted = fit.posterior.log_predictive_density.mean().item()
    initial = _initial_guide_lpd(model, fit.data, seed=0)
    benchmark = _normal_benchmark(fit.data.observed_response.numpy())
    # Observed (nats per day): ar -1.214 (initial -1.602), var -1.214 (-1.599), kalman
    # -1.202 (-1.457), kalman k=2 -1.204 (-1.517), AR(0) Normal -1.4255 (-1.500), all
    # against the Normal benchmark -1.4244; two-target VAR -1.481 (-3.724) vs -1.712.
    report = f"fitted {fitted:.4f}, initial {initial:.4f}, constant Normal {benchmark:.4f}"
    assert fitted > initial + 0.01, report
    assert fitted > benchmark - 0.005, report
    if not data_free:
        # Volatility clustering (and fat tails) on real returns: a clear gain over a
        # constant Normal for every expert with a data-dependent scale.
        assert fitted > benchmark + 0.05, report
