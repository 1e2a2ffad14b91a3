"""The Markov gate: priors, weights, levels, transitions and the initial distribution."""

import dataclasses

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine

import bayes_moe as bm
from bayes_moe.data.windows import SLOW_VOL_FEATURES, VOL_FEATURES, prepare
from bayes_moe.models.gate import horizon_preference, log_softmax_of_sum


@pytest.fixture(scope="module")
def inputs(sp500):
    return prepare(sp500.iloc[:300], targets=["ret"], window=22).inputs


def _run(gate, inputs, groups, seed=0):
    pyro.set_rng_seed(seed)
    trace = poutine.trace(gate.model).get_trace(inputs, groups)
    return trace.nodes["_RETURN"]["value"], trace


def test_sticky_dirichlet_prior_mean():
    # Dirichlet(alpha + kappa e_k) has mean (alpha + kappa e_k) / (K alpha + kappa).
    gate = bm.MarkovGate(3, stickiness=10.0, concentration=1.0)
    mean = gate.transition_prior(torch.float64).base_dist.mean
    expected = (np.ones((3, 3)) + 10 * np.eye(3)) / 13.0
    np.testing.assert_allclose(mean.numpy(), expected)


def test_weights_are_distributions_and_depend_on_the_input(inputs):
    gate = bm.MarkovGate(3)
    out, trace = _run(gate, inputs, ["short", "linear", "linear"])
    np.testing.assert_allclose(out.log_weights.exp().sum(-1).numpy(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(out.log_trans.exp().sum(-1).numpy(), 1.0, rtol=1e-12)
    # u(X_t) moves the weights over time; b_k makes regimes differ.
    w = out.log_weights.exp()
    assert w[:, 0].std(0).max() > 1e-3
    assert not torch.allclose(w[:, 0], w[:, 1])
    # log softmax of b_k + W f_t, recomputed by hand from the named summaries: by
    # default those the regimes leave to the experts (all but the transition features).
    assert gate.feature_names == tuple(f for f in VOL_FEATURES if f not in SLOW_VOL_FEATURES)
    bias = trace.nodes["bias"]["value"]
    coef = trace.nodes["coef"]["value"]
    columns = [VOL_FEATURES.index(f) for f in gate.feature_names]
    logits = bias[None] + (inputs.origin_vol[:, 0, columns] @ coef.T)[:, None, :]
    torch.testing.assert_close(out.log_weights, torch.log_softmax(logits, -1))


def test_initial_distribution_is_stationary(inputs):
    out, _ = _run(bm.MarkovGate(3), inputs, ["short", "medium", "long"], seed=4)
    pi, P = out.log_init.exp(), out.log_trans.exp()
    torch.testing.assert_close(pi @ P, pi)
    assert pi.sum().item() == pytest.approx(1.0)


def test_horizon_groups_tilt_the_prior():
    groups = ["short", "medium", "long", "feature"]
    h1 = horizon_preference(groups, 1, 0.5)
    h20 = horizon_preference(groups, 20, 0.5)
    # h = 1 favours short over long; h = 20 the reverse; others are neutral.
    np.testing.assert_allclose(h1.numpy(), [0.5, 0.0, -0.5, 0.0])
    np.testing.assert_allclose(h20.numpy(), [-0.5, 0.0, 0.5, 0.0])
    assert horizon_preference(groups, 5, 0.5)[0] == pytest.approx(
        0.5 * (1 - 2 * np.log(5) / np.log(20))
    )


def test_one_regime_has_no_transition_site(inputs):
    out, trace = _run(bm.MarkovGate(1), inputs, ["short"])
    assert "transition" not in trace.nodes
    assert out.log_trans.shape == (1, 1) and out.log_trans.item() == 0.0


def test_invalid_configurations():
    with pytest.raises(ValueError, match="n_regimes"):
        bm.MarkovGate(0)
    with pytest.raises(ValueError, match="assignment has 3 entries"):
        bm.MarkovGate(2, assignment=[0, 1, 2])


def test_volatility_levels_are_ordered_and_start_at_the_experts_scale(inputs):
    # lambda_0 = 0 and lambda_k = lambda_{k-1} + delta_k with delta_k > 0 (Gamma prior):
    # recomputed from the sampled steps; ordered in every draw, so labels are identified.
    gate = bm.MarkovGate(4)
    assert gate.volatility_levels
    for seed in range(5):
        out, trace = _run(gate, inputs, ["short", "linear"], seed=seed)
        step = trace.nodes["level_step"]["value"]
        expected = torch.cat([torch.zeros(1, dtype=step.dtype), step.cumsum(-1)])
        torch.testing.assert_close(out.log_scale, expected)
        assert (out.log_scale.diff() > 0).all() and out.log_scale[0] == 0.0
    # Hamilton's model (a fixed assignment) and one regime have no levels.
    assert not bm.MarkovGate(2, assignment=[0, 1]).volatility_levels
    out, trace = _run(bm.MarkovGate(1), inputs, ["short"])
    assert "level_step" not in trace.nodes and out.log_scale.tolist() == [0.0]


def test_input_output_transitions_follow_the_formula_and_are_causal(inputs):
    # Pi_n[i, j] ~ Pi[i, j] exp(beta_j' x_n), beta_0 = 0, x_n the transition features at
    # origin n; rows sum to one; changing x after origin n leaves Pi_1..Pi_n alone.
    gate = bm.MarkovGate(3)
    names = ("log_rv_5", "log_rv_22", "log_ewma_var")
    assert gate.transition_features == names
    out, trace = _run(gate, inputs, ["short", "linear"], seed=2)
    assert out.time_varying and out.log_trans_t.shape == (inputs.n_origins, 3, 3)
    trans = trace.nodes["transition"]["value"]
    coef = trace.nodes["transition_coef"]["value"]
    beta = torch.cat([torch.zeros(1, 3, dtype=trans.dtype), coef])
    x = inputs.origin_vol[:, 0, [VOL_FEATURES.index(f) for f in names]]
    by_hand = trans[None] * torch.exp(x @ beta.T)[:, None, :]
    by_hand = by_hand / by_hand.sum(-1, keepdim=True)
    torch.testing.assert_close(out.log_trans_t.exp(), by_hand)
    torch.testing.assert_close(out.log_trans, trans.log())
    cut = 100
    vol = inputs.vol.clone()
    vol[inputs.origins[cut + 1] :] += 5.0
    moved = dataclasses.replace(inputs, vol=vol)
    params = {k: v["value"] for k, v in trace.nodes.items() if v["type"] == "sample"}
    out_moved = poutine.condition(gate.model, data=params)(moved, ["short", "linear"])
    torch.testing.assert_close(out_moved.log_trans_t[: cut + 1], out.log_trans_t[: cut + 1])
    assert not torch.allclose(out_moved.log_trans_t[cut + 1 :], out.log_trans_t[cut + 1 :])


def test_slow_summaries_belong_to_the_regimes_by_default():
    gate = bm.MarkovGate(3)
    assert gate.expert_features == tuple(f for f in VOL_FEATURES if f not in SLOW_VOL_FEATURES)
    assert bm.MarkovGate(3, transition_features=()).expert_features == VOL_FEATURES
    # A fast transition feature informs both the regime switch and the experts.
    assert bm.MarkovGate(3, transition_features=["log_rv_1"]).expert_features == VOL_FEATURES
    assert bm.MarkovGate(2, assignment=[0, 1]).transition_features == ()
    assert bm.MarkovGate(1).expert_features == VOL_FEATURES
    # A name that is not a volatility summary is a model column the gate reads.
    gate = bm.MarkovGate(3, transition_features=["vix", "log_rv_22", "credit_spread"])
    assert gate.transition_features == ("log_rv_22", "vix", "credit_spread")
    assert gate.transition_columns == gate.reads() == ("vix", "credit_spread")
    assert bm.MarkovGate(3, transition_features=()).reads() == ()
    for bad, match in [
        ([""], "non-empty names"),
        ([3], "non-empty names"),
        (["vix", "vix"], "more than once"),
    ]:
        with pytest.raises(ValueError, match=match):
            bm.MarkovGate(3, transition_features=bad)


def test_transition_columns_follow_the_formula_with_gaps_and_are_causal(sp500):
    # Pi_n[i, j] ~ Pi[i, j] exp(beta_j' x_n) with x_n = (log_rv_22, z_n): z the column
    # standardized with the training constants, 0 (its training mean) on days without a
    # value. Data after origin n, and whatever the series holds under a gap, leave
    # Pi_1..Pi_n alone.
    frame = sp500.iloc[:300][["ret"]].copy()
    spread = sp500["ret_nasdaq"].iloc[:300].rolling(10).std()  # NaN on the first 9 days
    spread.iloc[150:160] = np.nan
    frame["spread"] = spread
    data = prepare(frame, targets=["ret"], window=22, optional=["spread"])
    inputs = data.inputs
    gate = bm.MarkovGate(3, transition_features=["spread", "log_rv_22"])
    assert gate.transition_features == ("log_rv_22", "spread")
    out, trace = _run(gate, inputs, ["short"], seed=4)
    trans = trace.nodes["transition"]["value"]
    coef = trace.nodes["transition_coef"]["value"]  # (K - 1, 2)
    beta = torch.cat([torch.zeros(1, 2, dtype=trans.dtype), coef])
    loc, scale = spread.mean(), spread.std(ddof=0)  # the training constants
    z = ((spread - loc) / scale).fillna(0.0).to_numpy()[inputs.origins.numpy()]
    x = torch.stack(
        [inputs.origin_vol[:, 0, VOL_FEATURES.index("log_rv_22")], torch.as_tensor(z)], dim=-1
    )
    by_hand = trans[None] * torch.exp(x @ beta.T)[:, None, :]
    by_hand = by_hand / by_hand.sum(-1, keepdim=True)
    torch.testing.assert_close(out.log_trans_t.exp(), by_hand, rtol=1e-10, atol=1e-12)
    # On a day without the column, its term drops out of the tilt.
    gap = int(np.flatnonzero(np.isnan(spread.to_numpy()[inputs.origins.numpy()]))[0])
    only_vol = trans[None] * torch.exp(x[:, :1] @ beta[:, :1].T)[:, None, :]
    only_vol = only_vol / only_vol.sum(-1, keepdim=True)
    torch.testing.assert_close(out.log_trans_t[gap].exp(), only_vol[gap])

    params = {k: v["value"] for k, v in trace.nodes.items() if v["type"] == "sample"}
    conditioned = poutine.condition(gate.model, data=params)
    series = inputs.series.clone()
    column = inputs.columns.index("spread")
    series[~inputs.observed[:, column], column] = 123.0  # what sits under the gaps
    scrambled = conditioned(dataclasses.replace(inputs, series=series), ["short"])
    assert torch.equal(scrambled.log_trans_t, out.log_trans_t)
    cut = 200
    series = inputs.series.clone()
    series[inputs.origins[cut + 1] :, column] += 3.0
    moved = conditioned(dataclasses.replace(inputs, series=series), ["short"])
    assert torch.equal(moved.log_trans_t[: cut + 1], out.log_trans_t[: cut + 1])
    assert not torch.allclose(moved.log_trans_t[cut + 1 :], out.log_trans_t[cut + 1 :])


def test_initial_levels_are_log_ratios_of_rolling_volatility_quantiles():
    # Oracle: numpy on the same response, quantiles at (k + 1/2) / K of the 22-day
    # rolling root mean square (windows of at least 5 days at the start).
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.normal(0, 0.5, 400), rng.normal(0, 1.0, 400), rng.normal(0, 3, 200)])
    steps = bm.MarkovGate(3).initial_levels(torch.as_tensor(y[:, None]))
    sd = np.sqrt([np.mean(y[max(0, i - 21) : i + 1] ** 2) for i in range(4, len(y))])
    q = np.quantile(sd, [1 / 6, 3 / 6, 5 / 6])
    np.testing.assert_allclose(steps.numpy(), np.diff(np.log(q)), rtol=0.02)
    no_levels = bm.MarkovGate(3, volatility_levels=False)
    assert no_levels.initial_levels(torch.as_tensor(y[:, None])) is None


@pytest.mark.parametrize("spread", [1.0, 30.0, 400.0])
def test_log_softmax_of_sum_equals_the_direct_log_softmax(spread):
    # Oracle: torch.log_softmax of the materialised outer sum. spread=400 puts the two
    # factors' maxima ~800 nats apart, where the matrix-product normaliser underflows
    # and the function must fall back to the direct computation.
    gen = torch.Generator().manual_seed(3)
    rows = spread * torch.randn(5, 3, 4, generator=gen, dtype=torch.float64)  # S + (K, M)
    cols = spread * torch.randn(5, 7, 4, generator=gen, dtype=torch.float64)  # S + (N, M)
    rows.requires_grad_()
    expected = torch.log_softmax(rows.unsqueeze(-3) + cols.unsqueeze(-2), dim=-1)
    got = log_softmax_of_sum(rows, cols)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    weights = torch.randn(got.shape, generator=gen, dtype=torch.float64)
    (grad,) = torch.autograd.grad((got * weights).sum(), rows)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), rows)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)
