"""Leave-future-out model comparison: exact LFO, PSIS-LFO, stacking and the table."""

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, special

import bayes_moe as bm
from bayes_moe.evaluation.comparison import (
    LFOResult,
    compare_lfo,
    exact_lfo,
    psis_lfo,
    stacking_weights,
)
from bayes_moe.evaluation.moe_forecaster import MoEForecaster

FIT = {"num_steps": 150, "num_draws": 100, "seed": 0, "convergence_tol": None}
N_TEST = 10


@pytest.fixture(scope="module")
def small_case(sp500):
    """400 real S&P 500 days; the last 10 are predicted one step ahead."""
    frame = sp500[["ret"]].iloc[-400:]
    model = bm.BayesianMoE(experts=[{"name": "ar", "order": 1}], n_regimes=2, window=5)
    return frame, model, frame.index[-N_TEST]


@pytest.fixture(scope="module")
def exact(small_case):
    frame, model, start = small_case
    forecaster = MoEForecaster(model, **FIT)
    return exact_lfo(frame, forecaster, test_start=start, refit_every=1, progress=False)


def test_psis_lfo_that_always_refits_is_exact_lfo(small_case, exact):
    # With a threshold below any Pareto k, PSIS-LFO refits before every day on the data
    # up to its origin: the same fits as exact LFO, so the same densities.
    frame, model, start = small_case
    always = psis_lfo(frame, model, test_start=start, threshold=-np.inf, progress=False, **FIT)
    assert len(always.refit_dates) == N_TEST == len(exact.refit_dates)
    assert list(always.refit_dates) == list(exact.refit_dates)
    np.testing.assert_allclose(always.log_density, exact.log_density, rtol=1e-9)


def test_psis_lfo_agrees_with_exact_lfo_within_its_standard_error(small_case, exact):
    # Buerkner, Gabry & Vehtari (2020): PSIS-LFO reweights the draws of one fit instead
    # of refitting; the two elpd estimates agree within the standard error of the
    # estimate (here December 2018, a sell-off), with far fewer refits. Per day they
    # differ by under 0.02 nats (observed 0.009: reweighting vs ten separate SVI fits).
    frame, model, start = small_case
    approx = psis_lfo(frame, model, test_start=start, progress=False, **FIT)
    assert len(approx.refit_dates) < N_TEST
    assert (approx.pareto_k <= 0.7).all()
    assert abs(exact.elpd - approx.elpd) < min(exact.se, approx.se)
    assert abs(exact.elpd - approx.elpd) / N_TEST < 0.02


def test_stacking_weights_match_a_one_dimensional_search():
    # Oracle: for two models the stacking objective is a function of w in [0, 1]
    # alone, maximized by a bounded scalar search.
    rng = np.random.default_rng(0)
    lpd = np.column_stack([rng.normal(-1.0, 0.3, 300), rng.normal(-1.05, 0.5, 300)])

    def negative(w):
        return -special.logsumexp(lpd + np.log([w, 1 - w]), axis=1).sum()

    best = optimize.minimize_scalar(negative, bounds=(1e-9, 1 - 1e-9), method="bounded")
    weights = stacking_weights(lpd)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[0] == pytest.approx(best.x, abs=1e-4)
    # A model that is better on every day takes all the weight.
    dominated = np.column_stack([lpd[:, 0], lpd[:, 0] - 1.0])
    assert stacking_weights(dominated)[0] > 0.999


def _result(name, values, method="exact"):
    dates = pd.bdate_range("2020-01-01", periods=len(values), name="date")
    return LFOResult(name, method, pd.Series(values, index=dates), refit_dates=[dates[0]])


def test_compare_table_has_the_shape_and_numbers_of_az_compare():
    # Reference numbers computed by hand from the pointwise values.
    a = np.array([-1.0, -0.5, -2.0, -1.2])
    b = np.array([-1.1, -0.7, -1.9, -1.4])
    table = compare_lfo([_result("b", b), _result("a", a)])
    assert list(table.index) == ["a", "b"] and list(table["rank"]) == [0, 1]
    assert table.loc["a", "elpd"] == pytest.approx(a.sum())
    assert table.loc["a", "se"] == pytest.approx(2 * a.std(ddof=1))
    assert table.loc["b", "elpd_diff"] == pytest.approx(a.sum() - b.sum())
    assert table.loc["b", "dse"] == pytest.approx(2 * (a - b).std(ddof=1))
    assert table.loc["a", "elpd_diff"] == 0.0
    assert table["weight"].sum() == pytest.approx(1.0)
    with pytest.raises(bm.data.DataError, match="other days"):
        compare_lfo([_result("a", a), _result("c", a[:3])])


def test_compare_rejects_bad_arguments_before_fitting(sp500):
    frame = sp500[["ret"]].iloc[-300:]
    models = {"K=2": bm.BayesianMoE(experts=["ar"], n_regimes=2, window=5)}
    with pytest.raises(ValueError, match="method"):
        bm.compare(frame, models, test_start=frame.index[-5], method="loo")
    with pytest.raises(bm.data.DataError, match="no test days"):
        bm.compare(frame, models, test_start="2030-01-01")
    with pytest.raises(TypeError, match="psis"):
        bm.compare(frame, {"x": object()}, test_start=frame.index[-5], method="psis")
