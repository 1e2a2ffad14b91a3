"""The GARCH(1,1)-t expert and the Markov-switching GARCH: oracles from arch, loops, scipy."""

import numpy as np
import pandas as pd
import pyro
import pytest
import torch
from arch import arch_model
from pyro import poutine
from scipy import stats
from scipy.special import logsumexp

import bayes_moe as bm
from bayes_moe.data.windows import prepare
from bayes_moe.inference.posterior import conditioned_components
from bayes_moe.models.experts import expert_spec, make_expert
from bayes_moe.models.experts.garch import GARCH, garch_coefficients
from bayes_moe.models.gate import MarkovGate

F64 = torch.float64


def _prior_draw(program, inputs, response=None, seed=0):
    pyro.set_rng_seed(seed)
    args = (inputs,) if response is None else (inputs, response)
    trace = poutine.trace(program).get_trace(*args)
    return {
        name: site["value"].detach()
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    }


def _predictive_moments(expert, inputs, params):
    """Location and variance of the expert's predictive at ``params``: ``(N,)`` each."""
    with torch.no_grad(), poutine.condition(data=params):
        d = expert.model(inputs)
    nu = d.base_dist.df[..., 0]
    return d.base_dist.loc[..., 0], d.base_dist.scale[..., 0] ** 2 * nu / (nu - 2)


def test_every_prior_draw_is_a_stationary_garch():
    # alpha + beta < 1 by construction, omega, alpha, beta > 0, whatever the prior gives.
    expert = GARCH()
    persistence = torch.distributions.Beta(*torch.tensor(expert.persistence_prior, dtype=F64))
    share = torch.distributions.Beta(*torch.tensor(expert.alpha_share_prior, dtype=F64))
    p, r = persistence.sample((100_000,)), share.sample((100_000,))
    level = torch.distributions.LogNormal(*torch.tensor(expert.variance_prior, dtype=F64))
    level = level.sample((100_000,))
    omega, alpha, beta = garch_coefficients(p, r, level)
    assert (omega > 0).all() and (alpha > 0).all() and (beta > 0).all()
    assert (alpha + beta < 1).all()
    torch.testing.assert_close(alpha + beta, p)
    torch.testing.assert_close(omega / (1 - alpha - beta), level)


@pytest.fixture(scope="module")
def standardized(sp500):
    """The real S&P 500 returns prepared for a window of 64 days (1999-2018)."""
    return prepare(sp500, targets=["ret"], covariates=[], window=64)


PARAMS = {
    "mean": torch.tensor([0.04], dtype=F64),
    "persistence": torch.tensor([0.985], dtype=F64),
    "alpha_share": torch.tensor([0.09], dtype=F64),
    "unconditional_variance": torch.tensor([1.1], dtype=F64),
    "df": torch.tensor([6.5], dtype=F64),
}


def test_one_step_predictive_is_the_garch_recursion_with_a_causal_start(standardized):
    # Oracle: the plain loop over days, started from arch's backcast of the residuals up
    # to the first origin only, and Student-t scaled to the GARCH variance.
    inputs = standardized.inputs
    loc, variance = _predictive_moments(GARCH(), inputs, PARAMS)
    y = inputs.series[:, 0].numpy()
    mu = PARAMS["mean"].item()
    omega, alpha, beta = (float(x) for x in garch_coefficients(0.985, 0.09, 1.1))
    first = int(inputs.origins[0])
    resid = y - mu
    tau = min(75, first + 1)
    w = 0.94 ** np.arange(tau)
    backcast = np.sum(w / w.sum() * resid[:tau] ** 2)
    s = [omega + (alpha + beta) * backcast]
    for t in range(len(y)):
        s.append(omega + alpha * resid[t] ** 2 + beta * s[-1])
    expected = np.asarray(s)[inputs.origins.numpy() + 1]
    np.testing.assert_allclose(variance.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(loc.numpy(), mu)


@pytest.mark.parametrize("horizon", [5, 20])
def test_h_day_predictive_variance_is_archs_forecast_summed(sp500, horizon):
    # Once the start has decayed (beta^500 ~ 1e-4 of a tiny difference), the h-day
    # variance equals arch's analytic forecasts, summed over the h days, at the same
    # parameters on the same standardized returns.
    data = prepare(sp500, targets=["ret"], covariates=[], window=64, horizon=horizon)
    inputs = data.inputs
    _, variance = _predictive_moments(GARCH(), inputs, PARAMS)
    y = inputs.series[:, 0].numpy()
    omega, alpha, beta = (float(x) for x in garch_coefficients(0.985, 0.09, 1.1))
    fixed = arch_model(y, mean="Constant", vol="GARCH", p=1, q=1, dist="t").fix(
        [PARAMS["mean"].item(), omega, alpha, beta, PARAMS["df"].item()]
    )
    late = inputs.origins.numpy() >= 1500
    origins = inputs.origins.numpy()[late]
    forecasts = fixed.forecast(horizon=horizon, start=int(origins[0]), reindex=False)
    expected = forecasts.variance.to_numpy().sum(axis=1)[origins - origins[0]]
    np.testing.assert_allclose(variance.numpy()[late], expected, rtol=1e-9)


def test_bad_priors_are_refused_naming_the_argument():
    with pytest.raises(ValueError, match="persistence_prior"):
        GARCH(persistence_prior=(10.0, -1.0))
    with pytest.raises(ValueError, match="variance_prior"):
        GARCH(variance_prior=(0.0, 0.0))
    with pytest.raises(ValueError, match="family"):
        GARCH(family="laplace")


def test_config_round_trips_through_the_registry():
    expert = GARCH(family="normal", persistence_prior=(8.0, 2.0), variance_prior=(-1.0, 0.5))
    again = make_expert(expert_spec(expert))
    assert isinstance(again, GARCH) and again.config() == expert.config()
    assert "garch" in bm.list_experts()


def test_recovers_known_garch_t_parameters_from_synthetic_data():
    # SYNTHETIC data with known parameters (the only way to know the truth).
    rng = np.random.default_rng(7)
    T, mu, omega, alpha, beta, nu = 3000, 0.05, 0.05, 0.08, 0.9, 6.0
    eta = rng.standard_t(nu, size=T) * np.sqrt((nu - 2) / nu)
    y, s2 = np.empty(T), omega / (1 - alpha - beta)
    for t in range(T):
        y[t] = mu + np.sqrt(s2) * eta[t]
        s2 = omega + alpha * (y[t] - mu) ** 2 + beta * s2
    frame = pd.DataFrame({"ret": y}, index=pd.bdate_range("2000-01-03", periods=T))
    fit = bm.BayesianMoE(experts=["garch"], n_regimes=1, window=20).fit(
        frame, target="ret", num_steps=800, num_draws=200, seed=0, progress=False
    )
    draws = {k.split("/")[1]: v[:, 0].numpy() for k, v in fit.draws.items() if "garch/" in k}
    _, a, b = garch_coefficients(draws["persistence"], draws["alpha_share"], 1.0)
    assert abs(a.mean() - alpha) < 0.03
    assert abs(b.mean() - beta) < 0.03
    assert abs(draws["df"].mean() - nu) < 2.0


# Markov-switching GARCH


def test_ms_garch_builds_the_haas_mittnik_paolella_model():
    model = bm.ms_garch(3, stickiness=50.0)
    assert model.labels == ["garch_1", "garch_2", "garch_3"]
    assert model.gate.assignment == (0, 1, 2)
    assert not model.gate.volatility_levels and model.gate.transition_features == ()
    centres = [e.variance_prior[0] for e in model.experts]
    assert centres == sorted(centres) and centres[0] < 0 < centres[-1]  # calm ... turbulent
    with pytest.raises(ValueError, match="n_regimes >= 2"):
        bm.ms_garch(1)
    with pytest.raises(ValueError, match="assignment"):
        bm.ms_garch(2, assignment=[1, 0])


def test_ms_garch_likelihood_is_an_hmm_over_per_regime_garch_recursions(sp500):
    # Oracle: each regime's GARCH variance by a loop over days on the observed returns
    # (no path dependence), Student-t densities from scipy, and the forward algorithm
    # from the stationary distribution of Pi, in numpy.
    model = bm.ms_garch(2, window=3)
    data = prepare(sp500.iloc[:300], targets=["ret"], covariates=[], window=3, min_observations=1)
    program = model.program().eval()
    inputs = data.inputs.at(data.inputs.origins[: data.n_observed])
    response = data.observed_response
    params = _prior_draw(program, inputs, response, seed=3)
    with torch.no_grad():
        actual = poutine.condition(program, data=params)(inputs, response).item()

    y = inputs.series[:, 0].numpy()
    origins = inputs.origins.numpy()
    first = int(origins[0])
    log_emit = []
    for label in model.labels:
        p = {k.split("/")[1]: v.item() for k, v in params.items() if k.startswith(label + "/")}
        omega, alpha, beta = garch_coefficients(
            p["persistence"], p["alpha_share"], p["unconditional_variance"]
        )
        resid = y - p["mean"]
        tau = min(75, first + 1)
        w = 0.94 ** np.arange(tau)
        s = [omega + (alpha + beta) * np.sum(w / w.sum() * resid[:tau] ** 2)]
        for t in range(len(y)):
            s.append(omega + alpha * resid[t] ** 2 + beta * s[-1])
        var = np.asarray(s)[origins + 1]
        nu = p["df"]
        scale = np.sqrt(var * (nu - 2) / nu)
        log_emit.append(stats.t.logpdf(response[:, 0].numpy(), nu, p["mean"], scale))
    log_emit = np.stack(log_emit, axis=1)  # (T, K)
    Pi = params["gate/transition"].numpy()
    vals, vecs = np.linalg.eig(Pi.T)
    pi0 = np.real(vecs[:, np.argmin(np.abs(vals - 1))])
    pi0 = pi0 / pi0.sum()
    alpha_t = np.log(pi0) + log_emit[0]
    for t in range(1, len(log_emit)):
        alpha_t = logsumexp(alpha_t[:, None] + np.log(Pi), axis=0) + log_emit[t]
    assert actual == pytest.approx(logsumexp(alpha_t), rel=1e-10)


def test_ms_garch_fit_survives_a_checkpoint(sp500, tmp_path):
    fit = bm.ms_garch(2, window=20).fit(
        sp500.iloc[-400:], target="ret", num_steps=5, num_draws=10, seed=0, progress=False
    )
    fit.save(tmp_path / "ms")
    again = bm.load_fit(tmp_path / "ms")
    assert isinstance(again.model.gate, MarkovGate) and again.model.gate.assignment == (0, 1)
    assert [e.variance_prior for e in again.model.experts] == [
        e.variance_prior for e in fit.model.experts
    ]
    a, b = fit.forecast(num_samples=10), again.forecast(num_samples=10)
    assert a.mean == pytest.approx(b.mean, rel=1e-12)
    # The regimes' predictive moments at the last origin come from the same draws.
    comps = conditioned_components(again.program, again.draws, again.data.inputs)
    assert len(comps.experts) == 2
