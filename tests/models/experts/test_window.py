"""The window-expert base: Bayesian head, fully Bayesian trunks, the training strategies.

Oracles: the head's location and scale computed by hand from the trunk's features;
a fully Bayesian trunk evaluated draw by draw with ``functional_call``; trunk weights
that must not move once frozen (two-stage) and must move when trained jointly;
checkpoints that reproduce the forecasts exactly. Real S&P 500 returns (arch.data).
"""

from __future__ import annotations

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from torch.func import functional_call

import bayes_moe as bm
from bayes_moe.data.windows import prepare
from bayes_moe.models.experts import make_expert
from bayes_moe.models.experts.long_range import LONG_RANGE_EXPERTS
from bayes_moe.models.experts.neural import NEURAL_EXPERTS

WINDOW = 32


@pytest.fixture(scope="module")
def data(sp500):
    return prepare(sp500.iloc[:400], targets=["ret"], window=WINDOW)


@pytest.mark.parametrize("cls", NEURAL_EXPERTS + LONG_RANGE_EXPERTS, ids=lambda c: c.name)
def test_default_size_is_under_50k_parameters(cls, data):
    expert = cls()
    n = expert.n_parameters(data.inputs)
    trunk = sum(p.numel() for p in expert.trunk.parameters())
    assert trunk < n < 50_000
    # Head: intercept, E location and E log-scale weights, scale, 6 scale-feature
    # coefficients and df, for the one target.
    assert n - trunk == 1 + 2 * expert.embedding_dim + 1 + 7 + 1


def test_head_is_the_documented_regression_on_normalized_features(data):
    # Reference: loc = b + W h, scale = sigma exp(gamma' f) exp(V h), h the layer-normed
    # last trunk state, all recomputed here from the trunk itself.
    torch.manual_seed(0)
    expert = make_expert({"name": "tcn", "family": "normal"})
    expert.build(data.inputs)
    E = expert.embedding_dim
    gen = torch.Generator().manual_seed(1)
    params = {
        "intercept": torch.tensor([0.1], dtype=torch.float64),
        "head": 0.3 * torch.randn(1, E, generator=gen, dtype=torch.float64),
        "head_scale": 0.1 * torch.randn(1, E, generator=gen, dtype=torch.float64),
        "scale": torch.tensor([0.7], dtype=torch.float64),
        "vol_coef": torch.zeros(1, 7, dtype=torch.float64),
    }
    d = poutine.condition(expert.model, data=params)(data.inputs)
    x = data.inputs.windows(WINDOW).float()
    with torch.no_grad():
        h = expert.trunk(x)[:, -1].double()
    h = (h - h.mean(-1, keepdim=True)) / (h.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    loc = 0.1 + h @ params["head"][0]
    sd = 0.7 * torch.exp(h @ params["head_scale"][0])
    torch.testing.assert_close(d.mean[:, 0], loc, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(d.stddev[:, 0], sd, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["cnn", "gru", "sru", "performer", "timesnet", "mamba"])
def test_full_bayesian_draws_equal_functional_call_per_draw(data, name):
    # Oracle: each posterior draw of the trunk weights put into the trunk on its own.
    expert = make_expert({"name": name, "bayesian": "full"})
    pyro.set_rng_seed(0)
    traces = [poutine.trace(expert.model).get_trace(data.inputs) for _ in range(3)]
    sites = [n for n, s in traces[0].nodes.items() if s["type"] == "sample"]
    draws = {n: torch.stack([t.nodes[n]["value"] for t in traces]) for n in sites}
    trunk_sites = [n for n in sites if n.startswith("trunk_")]
    assert len(trunk_sites) == len(list(expert.trunk.parameters()))
    with torch.no_grad():
        batched = poutine.condition(expert.model, data=draws)(data.inputs)
        x = data.inputs.windows(WINDOW).float()
        for s in range(3):
            names = [n for n, _ in expert.trunk.named_parameters()]
            weights = {n: draws["trunk_" + n.replace(".", "_")][s] for n in names}
            h = functional_call(expert.trunk, weights, (x,))[:, -1]
            h = torch.nn.functional.layer_norm(h, (h.shape[-1],)).double()
            loc = draws["intercept"][s] + h @ draws["head"][s].T
            torch.testing.assert_close(batched.mean[s], loc, rtol=1e-5, atol=1e-5)
        # Different weight draws give different forecasts.
        assert (batched.mean[0] - batched.mean[1]).abs().max() > 1e-3


def test_full_bayesian_priors_centre_on_the_neutral_trunk(data):
    # TimesNet's filter prior is centred on the identity G = 1 and Hyena's sine
    # frequencies on their initial value; everything else on zero.
    for name, site, centre in [
        ("timesnet", "trunk_filter_real", 1.0),
        ("hyena", "trunk_blocks_0_filters_frequency", 1.0),
        ("hyena", "trunk_lift_weight", 0.0),
    ]:
        expert = make_expert({"name": name, "bayesian": "full"})
        trace = poutine.trace(expert.model).get_trace(data.inputs)
        assert float(trace.nodes[site]["fn"].mean.mean()) == pytest.approx(centre)


def _trunk_state(fit, label):
    expert = fit.program.experts[fit.program.labels.index(label)]
    return {k: v.clone() for k, v in expert.trunk.state_dict().items()}


@pytest.mark.parametrize("strategy", ["two_stage", "joint"])
def test_strategies_freeze_or_train_the_trunk(sp500, strategy):
    # Two-stage: stage two must leave the pretrained trunk exactly as stage one left it
    # (pretraining alone, with the same seed, is the oracle); joint: the trunk moves.
    frame = sp500.iloc[:500]
    model = bm.BayesianMoE(experts="ar,cnn", n_regimes=2, window=WINDOW)
    options = dict(num_draws=5, seed=0, progress=False, convergence_tol=None, pretrain_steps=30)
    fit = model.fit(frame, num_steps=20, strategy=strategy, **options)
    assert fit.diagnostics.strategy == strategy
    after = _trunk_state(fit, "cnn")
    torch.manual_seed(0)
    untouched = bm.BayesianMoE(experts="ar,cnn", n_regimes=2, window=WINDOW).program()
    untouched.build(fit.data.inputs)
    if strategy == "two_stage":
        pretrained = model.fit(frame, num_steps=1, strategy=strategy, **options)
        for k, v in _trunk_state(pretrained, "cnn").items():
            torch.testing.assert_close(after[k], v, rtol=0, atol=0)
        assert fit.diagnostics.pretrain_s > 0
        expert = fit.program.experts[1]
        assert expert.frozen and not any(p.requires_grad for p in expert.trunk.parameters())
    else:
        assert fit.diagnostics.pretrain_s < 0.5
    assert np.isfinite(fit.diagnostics.losses).all()


def test_checkpoint_round_trip_with_neural_experts(sp500, tmp_path):
    frame = sp500.iloc[:400]
    model = bm.BayesianMoE(experts="ar,tcn,gru", n_regimes=2, window=WINDOW)
    fit = model.fit(frame, num_steps=10, num_draws=8, seed=0, progress=False, pretrain_steps=10)
    path = tmp_path / "fit.safetensors"
    fit.save(path)
    assert b"pickle" not in path.read_bytes()[:64]
    loaded = bm.load_fit(path)
    a, b = fit.forecast(num_samples=300, seed=1), loaded.forecast(num_samples=300, seed=1)
    np.testing.assert_array_equal(a.samples, b.samples)
    for k, v in _trunk_state(fit, "tcn").items():
        torch.testing.assert_close(_trunk_state(loaded, "tcn")[k], v, rtol=0, atol=0)


def test_experts_by_string():
    assert [e.name for e in bm.BayesianMoE(experts="ar,tcn,gru").experts] == ["ar", "tcn", "gru"]
    everything = bm.BayesianMoE(experts="all").experts
    assert [e.name for e in everything] == bm.list_experts()
    for name in ("cnn", "depthwise", "mobilenet", "efficientnet_lite", "tcn", "gru"):
        assert name in bm.list_experts()
    assert {"minimalrnn", "sru"} <= set(bm.list_experts())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"experts": "ar,nonsense"}, "unknown expert 'nonsense'"),
        ({"experts": ""}, "at least one expert"),
        ({"experts": [{"name": "tcn", "bayesian": "partly"}]}, "bayesian must be one of"),
        ({"experts": [{"name": "tcn", "kernel_sizes": 3}]}, "invalid trunk options"),
        ({"experts": [{"name": "gru", "length": 100}], "window": 64}, "needs 100 days"),
        ({"experts": [{"name": "cnn", "columns": "ret"}]}, "non-empty list"),
    ],
)
def test_bad_specifications_fail_before_fitting(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bm.BayesianMoE(**kwargs)


def test_bad_columns_and_strategy_fail_before_fitting(sp500):
    frame = sp500.iloc[:300]
    model = bm.BayesianMoE(experts=[{"name": "cnn", "columns": ["ret", "nope"]}], window=WINDOW)
    with pytest.raises(ValueError, match="nope"):
        model.fit(frame, num_steps=1, progress=False)
    with pytest.raises(ValueError, match="unknown strategy 'fast'"):
        bm.BayesianMoE(experts="ar", window=WINDOW).fit(frame, strategy="fast", progress=False)
    with pytest.raises(ValueError, match="fully Bayesian"):
        make_expert({"name": "gru", "bayesian": "full"}).freeze()
