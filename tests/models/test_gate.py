"""The Markov gate: priors, weights and the stationary initial distribution."""

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine

import bayes_moe as bm
from bayes_moe.data.windows import SLOW_VOL_FEATURES, VOL_FEATURES, prepare
from bayes_moe.models.gate import horizon_preference


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
