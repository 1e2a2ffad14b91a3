"""Energy and energy-based gating (bayes_moe.models.energy).

Real S&P 500 data with parameters traced from the prior (no fitting needed for these
properties): the tilt with beta = 0 is the identity, tilted weights are distributions,
the energy and the tilted weights up to day t do not move when data after t change,
and the energy's parts agree with an independent computation (scipy quadrature of the
assembled predictive mixture, the posterior code's causal regime probabilities).
"""

import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from scipy import integrate, special, stats

import bayes_moe as bm
from bayes_moe.data.windows import prepare
from bayes_moe.inference.posterior import evaluate_posterior
from bayes_moe.models.distributions import first_marginal
from bayes_moe.models.energy import EnergyGate, EnergyTilt, reference_energy, tilt_weights
from bayes_moe.models.experts import expert_list

WINDOW = 8


def _experts():
    experts = expert_list(["ar", "var"])
    experts[1].capacity = 2  # a heavy class for the tilt (the class, not the network, matters)
    return experts


def _program(energy_gate, n_regimes=2):
    model = bm.BayesianMoE(
        experts=_experts(), n_regimes=n_regimes, window=WINDOW, energy_gate=energy_gate
    )
    return model.program().eval()


def _prior_draw(program, inputs, response, seed=0):
    pyro.set_rng_seed(seed)
    trace = poutine.trace(program).get_trace(inputs, response)
    return {
        k: v["value"].detach()
        for k, v in trace.nodes.items()
        if v["type"] == "sample" and not v["is_observed"]
    }


@pytest.fixture(scope="module")
def data(sp500):
    return prepare(sp500.iloc[-400:], targets=["ret", "ret_nasdaq"], window=WINDOW, horizon=1)


def _observed(data):
    inputs = data.inputs.at(data.inputs.origins[: data.n_observed])
    return inputs, data.observed_response


def test_tilt_with_beta_zero_is_the_identity(data):
    inputs, response = _observed(data)
    plain = _program(None).build(inputs)
    tilted = _program(EnergyGate(beta=0.0, tau=1.3)).build(inputs)
    tilted.load_state_dict(plain.state_dict())
    params = _prior_draw(plain, inputs, response)
    with torch.no_grad():
        a = poutine.condition(plain, data=params)(inputs, response)
        b = poutine.condition(tilted, data=params)(inputs, response)
    assert float(a) == pytest.approx(float(b), rel=1e-13, abs=1e-10)


def test_tilted_weights_are_distributions_that_follow_the_energy():
    torch.manual_seed(0)
    # The same untilted weights every day, so that only the energy moves the tilt.
    log_w = torch.log_softmax(torch.randn(5, 1, 3, 4, dtype=torch.float64), dim=-1)
    log_w = log_w.expand(5, 30, 3, 4)
    energy = torch.linspace(0.0, 3.0, 30, dtype=torch.float64).expand(5, 30)
    capacity = torch.tensor([0.0, 1.0, 2.0, 2.0], dtype=torch.float64)
    for beta in (-1.5, 0.0, 0.7):
        tilt = EnergyTilt(torch.full((5,), beta, dtype=torch.float64), torch.ones(5))
        out = tilt_weights(log_w, energy, tilt, capacity)
        torch.testing.assert_close(out.logsumexp(-1), torch.zeros(5, 30, 3, dtype=out.dtype))
        heavy = out.exp()[..., 2:].sum(-1)  # (5, 30, 3)
        steps = heavy.diff(dim=1)
        if beta > 0:
            assert bool((steps > 0).all())  # more energy, more weight on the heavy class
        elif beta < 0:
            assert bool((steps < 0).all())
        else:
            torch.testing.assert_close(out, log_w)
    # At E = tau the tilt is the identity whatever beta.
    tilt = EnergyTilt(
        torch.tensor(2.0, dtype=torch.float64), torch.tensor(1.5, dtype=torch.float64)
    )
    at_tau = tilt_weights(log_w, torch.full((5, 30), 1.5, dtype=torch.float64), tilt, capacity)
    torch.testing.assert_close(at_tau, log_w)


def _energy_and_weights(program, params, data):
    inputs, response = data.inputs, torch.nan_to_num(data.response, nan=0.0)
    with torch.no_grad(), poutine.condition(data=params):
        comps = program.components(inputs)
        log_p = comps.regime_log_probs(response)
        parts = program.energy_parts(comps, log_p, inputs)
        return parts, program.tilted_weights(comps, parts)


def test_energy_and_tilted_weights_up_to_t_ignore_the_data_after_t(sp500, data):
    frame = sp500.iloc[-400:]
    program = _program(EnergyGate(beta=None)).build(data.inputs)
    params = _prior_draw(program, *_observed(data))
    params["energy/beta"] = torch.tensor(1.2, dtype=torch.float64)
    t = 250  # the origin at row t; rows after it are scaled by noise
    changed = frame.copy()
    rng = np.random.default_rng(1)
    changed.iloc[t + 1 :] = changed.iloc[t + 1 :].to_numpy() * rng.uniform(0.2, 3.0, (149, 1))
    other = prepare(
        changed,
        targets=["ret", "ret_nasdaq"],
        window=WINDOW,
        horizon=1,
        preprocessor=data.preprocessor,
    )
    n = int((data.origin_dates <= frame.index[t]).sum())
    a_parts, a_w = _energy_and_weights(program, params, data)
    b_parts, b_w = _energy_and_weights(program, params, other)
    for a, b in ((a_parts.total, b_parts.total), (a_w, b_w)):
        torch.testing.assert_close(a[:n], b[:n], rtol=1e-12, atol=1e-12)
        assert (a[n:] - b[n:]).abs().max() > 1e-3  # and the later ones do move


def _scipy_entropy(w, df, loc, scale):
    def log_p(y):
        terms = [
            np.log(wi) + (stats.norm.logpdf(y, m, s) if np.isinf(d) else stats.t.logpdf(y, d, m, s))
            for wi, d, m, s in zip(w, df, loc, scale)
            if wi > 0
        ]
        return special.logsumexp(terms)

    return integrate.quad(lambda y: -np.exp(log_p(y)) * log_p(y), -np.inf, np.inf, limit=400)[0]


def _forward_predicted(log_init, trans, log_emit, n_origins):
    """P(z_n | y_1..n-1) for n = 0..n_origins-1 by the textbook loop (numpy, float64)."""
    p = filtered = np.exp(log_init)
    out = []
    for n in range(n_origins):
        if n > 0:
            p = filtered @ trans[n]
        out.append(p)
        if n < len(log_emit):
            filtered = p * np.exp(log_emit[n] - log_emit[n].max())
            filtered /= filtered.sum()
    return np.array(out)


def test_energy_parts_agree_with_an_independent_computation(data):
    """The energy is measured by the light expert (ar) alone: its forward filter by a
    Python loop, its predictive entropy by scipy quadrature of the assembled mixture."""
    program = _program(EnergyGate(beta=0.8, tau=1.0)).build(data.inputs)
    assert program.light == [0]  # var was made heavy
    draws = {k: v.unsqueeze(0) for k, v in _prior_draw(program, *_observed(data), seed=3).items()}
    params = {k: v[0] for k, v in draws.items()}
    parts, log_w = _energy_and_weights(program, params, data)
    response = torch.nan_to_num(data.response, nan=0.0)
    with torch.no_grad(), poutine.condition(data=params):
        comps = program.components(data.inputs)
    gate = comps.gate
    N, K = data.inputs.n_origins, 2
    log_emit = comps.regime_log_probs(response)[: data.n_observed, :, 0].numpy()
    trans = gate.hmm_trans.exp().numpy() if gate.time_varying else None
    if trans is None:
        trans = np.broadcast_to(gate.log_trans.exp().numpy(), (N, K, K))
    predicted = _forward_predicted(gate.log_init.numpy(), trans, log_emit, N)
    np.testing.assert_allclose(parts.log_causal_regime.exp().numpy(), predicted, rtol=1e-8)
    # The regime part is their entropy, at most log K.
    p = parts.log_causal_regime.exp()
    np.testing.assert_allclose(parts.regime, -(p * p.log()).sum(-1), rtol=1e-12)
    assert float(parts.regime.max()) <= math.log(2) + 1e-12
    # The predictive part: scipy's quadrature of the light expert at each regime's level.
    nu, mu, s = first_marginal(comps.experts[0])
    levels = gate.log_scale.exp()
    for n in (0, 150, N - 1):
        w = [float(p[n, k]) for k in range(K)]
        df = [np.inf if nu is None else float(nu[n])] * K
        loc = [float(mu[n])] * K
        scale = [float(s[n] * levels[k]) for k in range(K)]
        assert float(parts.predictive[n]) == pytest.approx(
            _scipy_entropy(w, df, loc, scale),
            abs=5e-3,  # 32 nodes: kernels/entropy.py
        )
    # The forecast mixture uses the tilted weights of both experts.
    post = evaluate_posterior(program, draws, data)
    tilted = (post.log_mix_weights[0] - post.log_causal_regime[0][..., None]).exp()
    torch.testing.assert_close(tilted, log_w.exp(), rtol=1e-9, atol=1e-12)


def test_energy_gate_options_and_errors():
    with pytest.raises(ValueError, match="capacity class"):
        bm.BayesianMoE(experts=["ar", "var"], energy_gate=True)
    with pytest.raises(ValueError, match="beta_scale"):
        EnergyGate(beta_scale=0.0)
    with pytest.raises(ValueError, match="finite"):
        EnergyGate(tau=float("nan"))
    with pytest.raises(TypeError, match="energy_gate"):
        bm.BayesianMoE(experts=["ar", "gru"], energy_gate="yes")
    model = bm.BayesianMoE(experts=["ar", "gru"], energy_gate={"beta": 0.5})
    again = bm.BayesianMoE.from_config(model.config())
    assert again.energy_gate.config() == model.energy_gate.config()
    assert again.energy_gate.beta == 0.5 and again.energy_gate.tau is None
    assert bm.BayesianMoE.from_config(bm.BayesianMoE().config()).energy_gate is None
    assert reference_energy(1, 1) == pytest.approx(0.5 * math.log(2 * math.pi * math.e))
