"""The mixture reduced to Hamilton's model reproduces statsmodels on real S&P 500 returns.

Two regimes, each holding one constant-mean Gaussian expert (AR of order 0, Normal,
homoscedastic), the gate fixed so that regime k uses expert k alone: this is
statsmodels' ``MarkovRegression(k_regimes=2, switching_variance=True)``. Its maximum
likelihood estimates on 1999-2018 S&P 500 percentage log returns are the reference:
p00 = 0.98775, p11 = 0.97780, sigma = (0.684, 1.805) (computed in the test).
"""

import numpy as np
import pytest
import statsmodels.api as sm

import bayes_moe as bm


@pytest.fixture(scope="module")
def hamilton(sp500):
    returns = sp500["ret"]
    reference = sm.tsa.MarkovRegression(
        returns.to_numpy(), k_regimes=2, switching_variance=True
    ).fit(search_reps=5)
    expert = {"name": "ar", "order": 0, "family": "normal", "heteroscedastic": False}
    model = bm.BayesianMoE(
        experts=[expert, expert], window=1, gate=bm.MarkovGate(2, assignment=[0, 1])
    )
    fit = model.fit(
        sp500[["ret"]],
        target="ret",
        num_steps=1500,
        learning_rate=0.05,
        convergence_tol=None,
        num_draws=200,
        seed=0,
        progress=False,
    )
    return reference, fit


def _reference_in_calm_first_order(reference):
    sigma = np.sqrt(reference.params[-2:])
    order = np.argsort(sigma)
    transition = reference.regime_transition[:, :, 0].T  # statsmodels: [to, from]
    return transition[np.ix_(order, order)], sigma[order], order


def test_transition_probabilities_match_statsmodels(hamilton):
    reference, fit = hamilton
    expected, _, _ = _reference_in_calm_first_order(reference)
    posterior_mean = fit.regimes().transition.to_numpy()
    np.testing.assert_allclose(posterior_mean, expected, atol=0.01)


def test_regime_volatilities_match_statsmodels(hamilton):
    reference, fit = hamilton
    _, sigma, _ = _reference_in_calm_first_order(reference)
    np.testing.assert_allclose(fit.regimes().volatility["mean"], sigma, rtol=0.03)


def test_smoothed_probabilities_correlate_with_statsmodels(hamilton):
    reference, fit = hamilton
    _, _, order = _reference_in_calm_first_order(reference)
    theirs = reference.smoothed_marginal_probabilities[:, order]
    ours = fit.regimes().smoothed.to_numpy()
    # Our first regime observation is the second return (window 1, horizon 1).
    theirs = theirs[-len(ours) :]
    assert np.corrcoef(ours[:, 1], theirs[:, 1])[0, 1] >= 0.98
