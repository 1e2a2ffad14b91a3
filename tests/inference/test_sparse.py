"""Sparse inference: heavier experts are not evaluated where their tilted weight is small.

Real S&P 500 data with parameters drawn from the prior (these are properties of the
evaluation code, not of a fit). ``var`` is made the heavy expert (capacity class 2;
the class, not the network, is what sparse inference reads) beside the light ``ar``.
Checked: threshold 0 runs the sparse code path and equals the dense evaluation
bit for bit; with a threshold, the heavy expert's model is called at the awake
origins only, asleep it has weight exactly zero and the weights of every origin
still sum to one, and the awake rows keep the dense weights.
"""

import pyro
import pytest
import torch
from pyro import poutine

import bayes_moe as bm
from bayes_moe.data.windows import prepare
from bayes_moe.inference.posterior import evaluate_energy, evaluate_posterior, wake_experts
from bayes_moe.models.energy import EnergyGate
from bayes_moe.models.experts import expert_list

WINDOW = 8


def _program(sparse, beta=2.0):
    experts = expert_list(["ar", "var"])
    experts[1].capacity = 2
    model = bm.BayesianMoE(
        experts=experts,
        n_regimes=2,
        window=WINDOW,
        energy_gate=EnergyGate(beta=beta, tau=1.5, sparse=sparse),
    )
    return model.program().eval()


@pytest.fixture(scope="module")
def data(sp500):
    return prepare(sp500.iloc[-400:], targets=["ret", "ret_nasdaq"], window=WINDOW, horizon=1)


def _draws(program, data, n_draws=3):
    inputs = data.inputs.at(data.inputs.origins[: data.n_observed])
    program.build(inputs)
    draws = []
    for seed in range(n_draws):
        pyro.set_rng_seed(seed)
        trace = poutine.trace(program).get_trace(inputs, data.observed_response)
        draws.append(
            {
                k: v["value"].detach()
                for k, v in trace.nodes.items()
                if v["type"] == "sample" and not v["is_observed"]
            }
        )
    return {k: torch.stack([d[k] for d in draws]) for k in draws[0]}


def test_threshold_zero_is_the_dense_evaluation_exactly(data):
    dense = _program(None)
    draws = _draws(dense, data)
    sparse = _program(0.0)
    sparse.build(data.inputs)
    sparse.load_state_dict(dense.state_dict())
    a = evaluate_posterior(dense, draws, data)
    b = evaluate_posterior(sparse, draws, data)
    for name in (
        "log_predictive_density",
        "log_mix_weights",
        "log_filtered",
        "posterior_predictive",
    ):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert bool((evaluate_energy(sparse, draws, data).evaluated == 1).all())


def test_sleeping_experts_are_not_evaluated(data, monkeypatch):
    program = _program(0.4)
    draws = _draws(program, data)
    heavy = program.experts[1]
    seen = []
    original = type(heavy).model

    def spy(self, inputs):
        seen.append(inputs.origins.clone())
        return original(self, inputs)

    monkeypatch.setattr(type(heavy), "model", spy)
    energy = evaluate_energy(program, draws, data)
    awake = energy.evaluated[:, 1] > 0
    assert 0 < int(awake.sum()) < len(awake)  # the threshold bites on some days only
    assert bool((energy.evaluated[:, 0] == 1).all())  # the light expert always runs
    # one call, at exactly the awake origins (the prior trace above ran before the spy)
    assert len(seen) == 1
    assert torch.equal(seen[0], data.inputs.origins[awake])


def test_asleep_weights_are_zero_and_rows_still_sum_to_one(data):
    program = _program(0.4)
    draws = _draws(program, data)
    S, N, K, M = 3, data.inputs.n_origins, 2, 2
    torch.manual_seed(0)
    log_w = torch.log_softmax(torch.randn(S, N, K, M, dtype=torch.float64) * 2, dim=-1)
    log_causal = torch.log_softmax(torch.randn(S, N, K, dtype=torch.float64), dim=-1)
    experts = [None, None]
    with torch.no_grad(), poutine.condition(data=draws):
        experts[0] = program.expert_predictive(0, data.inputs)
    out, new_w, awake = wake_experts(program, draws, data.inputs, experts, log_w, log_causal, 0.4)
    weight = torch.logsumexp(log_causal[..., None] + log_w, dim=-2).exp().amax(0)
    torch.testing.assert_close(awake[:, 1], weight[:, 1] >= 0.4, rtol=0, atol=0)
    torch.testing.assert_close(new_w.logsumexp(-1), torch.zeros(S, N, K, dtype=torch.float64))
    asleep = ~awake[:, 1]
    assert bool(torch.isneginf(new_w[:, asleep, :, 1]).all())
    assert torch.equal(new_w[:, ~asleep], log_w[:, ~asleep])
    assert out[1].batch_shape == out[0].batch_shape == (S, N)
    # awake origins: the heavy expert's predictive is the dense one, up to rounding (the
    # CPU's vector kernels may round a batch of fewer origins differently, by 1 ulp)
    with torch.no_grad(), poutine.condition(data=draws):
        dense = program.expert_predictive(1, data.inputs)
    torch.testing.assert_close(
        out[1].mean[:, ~asleep], dense.mean[:, ~asleep], rtol=1e-13, atol=1e-13
    )


def test_sparse_option_is_validated_and_round_trips():
    with pytest.raises(ValueError, match="sparse threshold"):
        EnergyGate(sparse=1.5)
    assert EnergyGate(sparse=True).sparse == 0.05
    model = bm.BayesianMoE(experts=["ar", "gru"], energy_gate={"sparse": 0.1})
    assert bm.BayesianMoE.from_config(model.config()).energy_gate.sparse == 0.1
