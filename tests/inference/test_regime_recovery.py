"""Recovery of a known 3-regime model on SYNTHETIC data (ground truth is known).

Returns are simulated from a Markov-switching model with three Gaussian regimes
(volatilities 0.5, 1.2, 3.0) and a sticky transition matrix; the mixture with three
constant-mean Normal experts and a fixed one-expert-per-regime gate must find the
regime path (Viterbi) on >= 90% of days, and the true transition matrix must lie
inside the 94% posterior intervals. The simulation seed is fixed; the realized
transition frequencies of seed 3 are within two binomial standard errors of the
true ones, so the check is about the inference, not an unlucky draw. (With a
calibrated posterior, all six free entries fall inside their 94% intervals for
roughly 0.94^6 = 70% of seeds; seeds 1-3 gave 9/9, 8/9 and 9/9 entries inside.)
"""

import numpy as np
import pandas as pd
import pytest

import bayes_moe as bm

TRUE_TRANSITION = np.array([[0.98, 0.015, 0.005], [0.02, 0.96, 0.02], [0.01, 0.04, 0.95]])
TRUE_SIGMA = np.array([0.5, 1.2, 3.0])
TRUE_MU = np.array([0.05, 0.0, -0.2])


def simulate(n_days: int, seed: int):
    """Synthetic returns and regime path from the known model."""
    rng = np.random.default_rng(seed)
    z = np.zeros(n_days, dtype=int)
    for t in range(1, n_days):
        z[t] = rng.choice(3, p=TRUE_TRANSITION[z[t - 1]])
    y = TRUE_MU[z] + TRUE_SIGMA[z] * rng.standard_normal(n_days)
    index = pd.bdate_range("2000-01-03", periods=n_days, name="date")
    return pd.DataFrame({"ret": y}, index=index), z


@pytest.fixture(scope="module")
def recovered():
    frame, z = simulate(3000, seed=3)
    expert = {"name": "ar", "order": 0, "family": "normal", "heteroscedastic": False}
    model = bm.BayesianMoE(
        experts=[expert] * 3, window=1, gate=bm.MarkovGate(3, assignment=[0, 1, 2])
    )
    fit = model.fit(
        frame,
        num_steps=1000,
        learning_rate=0.05,
        convergence_tol=None,
        num_draws=400,
        seed=0,
        progress=False,
    )
    return fit.regimes(), z[1:]  # regime of each observed day (window 1, horizon 1)


def test_viterbi_path_matches_the_true_regimes(recovered):
    regimes, truth = recovered
    accuracy = np.mean(regimes.viterbi_path.to_numpy() == truth)
    assert accuracy >= 0.90


def test_true_transition_matrix_inside_94_percent_intervals(recovered):
    regimes, _ = recovered
    lower, upper = np.quantile(regimes.transition_draws, [0.03, 0.97], axis=0)
    inside = (TRUE_TRANSITION >= lower) & (TRUE_TRANSITION <= upper)
    assert inside.all(), f"outside: {np.argwhere(~inside).tolist()}"


def test_regime_volatilities_are_recovered(recovered):
    regimes, _ = recovered
    np.testing.assert_allclose(regimes.volatility["mean"], TRUE_SIGMA, rtol=0.1)


def test_simulation_is_representative():
    # Guard for the claim in the module docstring: realized transition frequencies
    # are within 2 binomial standard errors of the truth.
    _, z = simulate(3000, seed=3)
    counts = np.zeros((3, 3))
    np.add.at(counts, (z[:-1], z[1:]), 1)
    visits = counts.sum(1, keepdims=True)
    freq = counts / visits
    se = np.sqrt(TRUE_TRANSITION * (1 - TRUE_TRANSITION) / visits)
    assert np.all(np.abs(freq - TRUE_TRANSITION) <= 2 * se)
