"""The mixture's likelihood against brute-force enumeration and an unrolled Pyro model."""

import itertools

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, config_enumerate

import bayes_moe as bm
from bayes_moe.data.windows import SLOW_VOL_FEATURES, VOL_FEATURES, prepare
from bayes_moe.inference.posterior import conditioned_components
from bayes_moe.kernels.hmm import hmm_filter
from bayes_moe.models.distributions import rescale


def _prior_draw(program, inputs, response, seed):
    pyro.set_rng_seed(seed)
    trace = poutine.trace(program).get_trace(inputs, response)
    return {
        name: site["value"].detach()
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    }


GATES = {
    "input-output": {},
    "input-output with a column": {"transition_features": ["log_rv_22", "ret_nasdaq"]},
    "homogeneous": {"transition_features": ()},
}


def _setup(sp500, rows, experts=("ar", "var", "kalman"), n_regimes=3, seed=0, gate=None):
    frame = sp500.iloc[:rows]
    data = prepare(frame, targets=["ret"], window=3, horizon=1, min_observations=1)
    model = bm.BayesianMoE(
        experts=list(experts), window=3, gate=bm.MarkovGate(n_regimes, **(gate or {}))
    )
    program = model.program().eval()
    inputs = data.inputs.at(data.inputs.origins[: data.n_observed])
    response = data.observed_response
    params = _prior_draw(program, inputs, response, seed)
    return program, inputs, response, params


def _model_log_evidence(program, inputs, response, params):
    with torch.no_grad():
        return poutine.condition(program, data=params)(inputs, response)


def _rescaled_log_probs(comps, response):
    """log p_m^{(k)}(y_t) from explicitly rescaled distributions: (T, K, M)."""
    levels = comps.gate.log_scale
    return torch.stack(
        [
            torch.stack([rescale(d, lam).log_prob(response) for lam in levels], dim=-1)
            for d in comps.experts
        ],
        dim=-1,
    )


def _transitions_by_hand(params, inputs, names):
    """Transition into each day's regime, (T, K, K), from the sampled sites alone.

    Homogeneous: Pi. Input-output: Pi_t[i, j] ~ Pi[i, j] exp(beta_j' x_t), beta_0 = 0,
    x_t the transition features ``names`` at the day's origin (a volatility summary, or
    a model column).
    """
    trans = params["gate/transition"]
    T, K = inputs.n_origins, trans.shape[-1]
    if "gate/transition_coef" not in params:
        return trans.expand(T, K, K)
    coef = params["gate/transition_coef"]  # (K - 1, V_x)
    beta = torch.cat([torch.zeros(1, len(names), dtype=trans.dtype), coef])
    x = torch.stack(
        [
            inputs.origin_vol[:, 0, VOL_FEATURES.index(f)]
            if f in VOL_FEATURES
            else inputs.series[inputs.origins, inputs.columns.index(f)]
            for f in names
        ],
        dim=-1,
    )  # (T, V_x): volatility summaries, or a standardized column, at each origin
    unnormalized = trans[None] * torch.exp(x @ beta.T)[:, None, :]
    return unnormalized / unnormalized.sum(-1, keepdim=True)


@pytest.mark.parametrize("gate", sorted(GATES))
def test_log_evidence_equals_enumeration_over_all_regime_paths(sp500, gate):
    # Oracle: sum over all K^T regime paths of p(z_{1:T}) prod_t sum_m g p_m^{(k)}(y_t),
    # each expert's predictive stretched by the regime's volatility level, with
    # p(z_t | z_{t-1}) from Pi (and the slow volatility summaries, input-output).
    program, inputs, response, params = _setup(sp500, rows=8, gate=GATES[gate])
    assert ("gate/transition_coef" in params) == (gate != "homogeneous")
    assert program.gate.volatility_levels and "gate/level_step" in params
    comps = conditioned_components(program, params, inputs)
    log_p = _rescaled_log_probs(comps, response)  # (T, K, M)
    assert not torch.allclose(log_p[:, 0], log_p[:, -1])  # the levels matter
    log_w = comps.gate.log_weights  # (T, K, M)
    emission = torch.logsumexp(log_w + log_p, dim=-1).numpy()  # (T, K)
    init = comps.gate.log_init.numpy()
    names = program.gate.transition_features
    assert set(SLOW_VOL_FEATURES) <= set(names) or gate != "input-output"
    trans = _transitions_by_hand(params, inputs, names).log().numpy()
    T, K = emission.shape
    assert T == 5
    path_scores = []
    for path in itertools.product(range(K), repeat=T):
        score = init[path[0]] + emission[0, path[0]]
        for t in range(1, T):
            score += trans[t, path[t - 1], path[t]] + emission[t, path[t]]
        path_scores.append(score)
    expected = np.logaddexp.reduce(path_scores)
    actual = _model_log_evidence(program, inputs, response, params).item()
    assert actual == pytest.approx(expected, rel=1e-12, abs=1e-10)


@pytest.mark.parametrize("gate", sorted(GATES))
def test_log_evidence_equals_unrolled_pyro_model_under_traceenum(sp500, gate):
    # Oracle: an unrolled Pyro model with one discrete z_t per day, marginalized by
    # TraceEnum_ELBO (variable elimination), on 60 days of real returns.
    program, inputs, response, params = _setup(
        sp500, rows=64, n_regimes=2, seed=3, gate=GATES[gate]
    )
    comps = conditioned_components(program, params, inputs)
    trans = _transitions_by_hand(params, inputs, program.gate.transition_features)
    init = comps.gate.log_init.exp()
    weights = comps.gate.log_weights.exp()  # (T, K, M)
    log_p_all = _rescaled_log_probs(comps, response)  # (T, K, M)

    @config_enumerate
    def unrolled():
        z = pyro.sample("z_0", dist.Categorical(init))
        for t in pyro.markov(range(response.shape[0])):
            if t > 0:
                z = pyro.sample(f"z_{t}", dist.Categorical(trans[t][z]))
            density = torch.logsumexp(weights[t][z].log() + log_p_all[t][z], dim=-1)
            pyro.factor(f"y_{t}", density)

    def empty_guide():
        pass

    oracle = -TraceEnum_ELBO(max_plate_nesting=0).loss(unrolled, empty_guide)
    actual = _model_log_evidence(program, inputs, response, params).item()
    assert actual == pytest.approx(oracle, rel=1e-10)


def test_zero_transition_coefficients_give_the_homogeneous_chain(sp500):
    # B = 0: the input-output model (a volatility summary and a column driving the
    # switches) equals the time-homogeneous one with the same parameters, to 1e-10,
    # in the log evidence and in the filtered regime probabilities. log_rv_5 is not a
    # slow summary, so both gates leave the experts the same scale features.
    gate = {"transition_features": ["log_rv_5", "ret_nasdaq"]}
    program, inputs, response, params = _setup(sp500, rows=400, seed=7, gate=gate)
    homogeneous, *_ = _setup(sp500, rows=400, gate={"transition_features": ()})
    assert program.gate.expert_features == homogeneous.gate.expert_features
    coef = params.pop("gate/transition_coef")
    assert coef.abs().min() > 0
    zero = {**params, "gate/transition_coef": torch.zeros_like(coef)}
    io_evidence = _model_log_evidence(program, inputs, response, zero)
    evidence = _model_log_evidence(homogeneous, inputs, response, params)
    assert abs(io_evidence.item() - evidence.item()) <= 1e-10 * abs(evidence.item())
    assert not torch.isclose(
        _model_log_evidence(program, inputs, response, {**params, "gate/transition_coef": coef}),
        evidence,
    )
    io_gate = conditioned_components(program, zero, inputs).gate
    gate = conditioned_components(homogeneous, params, inputs).gate
    io_filter = hmm_filter(
        io_gate.log_init,
        io_gate.hmm_trans,
        _emissions(program, zero, inputs, response),
        time_varying=True,
    )
    plain_filter = hmm_filter(
        gate.log_init, gate.log_trans, _emissions(homogeneous, params, inputs, response)
    )
    torch.testing.assert_close(
        io_filter.log_filtered, plain_filter.log_filtered, rtol=0, atol=1e-10
    )


def _emissions(program, params, inputs, response):
    """log p(y_t | z_t = k) of the mixture with parameters ``params``: (T, K)."""
    return conditioned_components(program, params, inputs).log_emission(response)


def test_fixed_assignment_reduces_to_one_expert_per_regime(sp500):
    expert = {"name": "ar", "order": 0, "family": "normal", "heteroscedastic": False}
    frame = sp500.iloc[:80]
    data = prepare(frame, targets=["ret"], window=1, horizon=1)
    model = bm.BayesianMoE(
        experts=[expert, expert], window=1, gate=bm.MarkovGate(2, assignment=[1, 0])
    )
    program = model.program()
    inputs = data.inputs.at(data.inputs.origins[: data.n_observed])
    params = _prior_draw(program, inputs, data.observed_response, seed=1)
    comps = conditioned_components(program, params, inputs)
    weights = comps.gate.log_weights.exp()
    # Regime 0 uses expert 1 alone and regime 1 uses expert 0 alone.
    assert torch.equal(weights[:, 0], torch.tensor([0.0, 1.0]).expand_as(weights[:, 0]))
    assert torch.equal(weights[:, 1], torch.tensor([1.0, 0.0]).expand_as(weights[:, 1]))
    assert "gate/bias" not in params


def test_expert_dropout_renormalizes_over_kept_experts(sp500):
    model = bm.BayesianMoE(
        experts=["ar", "var", "kalman"], n_regimes=2, window=8, expert_dropout=0.5
    )
    program = model.program().train()
    log_w = torch.log_softmax(torch.randn(30, 2, 3, dtype=torch.float64), dim=-1)
    torch.manual_seed(0)
    kept_patterns = set()
    for _ in range(40):
        dropped = program._drop(log_w)
        kept = torch.isfinite(dropped[0, 0])
        kept_patterns.add(tuple(kept.tolist()))
        assert kept.any()
        torch.testing.assert_close(dropped.exp().sum(-1), torch.ones(30, 2, dtype=torch.float64))
        # Kept experts keep their relative weights.
        ratio = (dropped - log_w)[..., kept]
        torch.testing.assert_close(ratio, ratio[..., :1].expand_as(ratio))
    assert len(kept_patterns) > 3  # the mask really is random


def test_fitting_does_not_modify_the_specification(sp500):
    model = bm.BayesianMoE(experts=["ar", "kalman"], n_regimes=2, window=16)
    config_before = model.config()
    state_before = {k: v.clone() for e in model.experts for k, v in e.state_dict().items()}
    fit = model.fit(sp500.iloc[-300:], num_steps=5, num_draws=4, progress=False)
    assert model.config() == config_before
    state_after = {k: v for e in model.experts for k, v in e.state_dict().items()}
    assert state_before.keys() == state_after.keys()
    assert fit.model is model and fit.program.experts[0] is not model.experts[0]


def test_bad_input_is_rejected_before_fitting(sp500):
    frame = sp500.iloc[-300:].copy()
    frame.iloc[100, frame.columns.get_loc("ret")] = np.nan
    model = bm.BayesianMoE(experts=["ar"], n_regimes=2, window=16)
    with pytest.raises(bm.data.DataError, match="ret"):
        model.fit(frame, num_steps=10_000, progress=False)  # would take minutes if it ran
    with pytest.raises(bm.data.DataError, match="missing"):
        model.fit(frame, target="close_price", num_steps=10_000, progress=False)
    with pytest.raises(ValueError, match="window"):
        bm.BayesianMoE(experts=[{"name": "ar", "order": 10}], window=5)
    with pytest.raises(ValueError, match="unknown expert"):
        bm.BayesianMoE(experts=["no_such_expert"])


def test_expert_dropout_zero_is_the_plain_model_exactly(sp500):
    # p = 0 in training and any p at evaluation give the plain mixture's likelihood, to
    # the last bit, and p = 0 draws no random numbers (a fit's trajectory is unchanged).
    program, inputs, response, params = _setup(sp500, rows=60, n_regimes=2)
    plain = _model_log_evidence(program.eval(), inputs, response, params)
    spec = dict(experts=["ar", "var", "kalman"], window=3, gate=bm.MarkovGate(2))
    zero = bm.BayesianMoE(**spec, expert_dropout=0.0).program().train()
    state = torch.get_rng_state()
    with torch.no_grad():
        in_training = poutine.condition(zero, data=params)(inputs, response)
    assert torch.equal(torch.get_rng_state(), state)
    assert in_training.item() == plain.item()
    dropping = bm.BayesianMoE(**spec, expert_dropout=0.3).program().eval()
    assert _model_log_evidence(dropping, inputs, response, params).item() == plain.item()
    torch.manual_seed(1)
    dropping.train()
    with torch.no_grad():
        trained = [poutine.condition(dropping, data=params)(inputs, response) for _ in range(20)]
    assert any(t.item() != plain.item() for t in trained)  # p > 0 does drop in training
