"""Baseline forecasters: the P1 anchors, oracles for each model, no look-ahead.

The anchors (mean log score in nats per day, mean CRPS) were measured with protocol P1
when the issue "Calibration studies and backtests" was filed: S&P 500 from arch.data,
test days 2015-01-02..2018-12-31 (1,006 days), one-step densities from the previous
close, refits at test days 0, 250, 500 and 750 on an expanding window, the state
filtered forward in between. The scores here are computed with scipy directly from
the predictive's components (an oracle independent of the scoring module): log
densities by log-sum-exp, the CRPS of a Student-t in closed form (Jordan, Krueger and
Lerch 2019, scoringRules ``crps_t``) and of a Normal mixture in closed form (Grimit et
al. 2006).
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pandas as pd
import pytest
from arch import arch_model
from scipy import special, stats
from statsmodels.regression.linear_model import OLS
from statsmodels.tsa.regime_switching.markov_regression import MarkovRegression

import bayes_moe as bm
from bayes_moe.data.errors import DataError
from bayes_moe.evaluation.baselines import (
    BASELINES,
    EWMA,
    P1_ANCHORS,
    ArchT,
    ConstantNormal,
    LogHAR,
    MarkovSwitching,
    har_regressors,
    realized_dates,
    regime_sum_mixture,
)
from bayes_moe.evaluation.distributions import LocationScaleMixture

TEST_START, TEST_END = "2015-01-02", "2018-12-31"

# Measured anchors: (mean log score, mean CRPS).
ANCHORS = P1_ANCHORS  # (mean log score, mean CRPS)


# ---------------------------------------------------------------------------------------
# oracles
# ---------------------------------------------------------------------------------------


def scipy_log_density(pred: LocationScaleMixture, y: np.ndarray) -> np.ndarray:
    """log sum_c w_c f_c(y) with scipy's Normal and Student-t densities."""
    parts = []
    for c in range(pred.weights.shape[1]):
        df, loc, scale = pred.df[:, c], pred.loc[:, c], pred.scale[:, c]
        normal = stats.norm.logpdf(y, loc, scale)
        student = stats.t.logpdf(y, np.where(np.isinf(df), 1.0, df), loc, scale)
        parts.append(np.log(pred.weights[:, c]) + np.where(np.isinf(df), normal, student))
    return special.logsumexp(np.stack(parts, axis=1), axis=1)


def crps_t(y, df, loc, scale):
    """Closed form CRPS of a Student-t (Jordan et al. 2019, scoringRules crps_t)."""
    z = (y - loc) / scale
    spread = (
        2.0
        * np.sqrt(df)
        / (df - 1.0)
        * special.beta(0.5, df - 0.5)
        / special.beta(0.5, df / 2) ** 2
    )
    return scale * (
        z * (2.0 * stats.t.cdf(z, df) - 1.0)
        + 2.0 * stats.t.pdf(z, df) * (df + z**2) / (df - 1.0)
        - spread
    )


def crps_normal_mixture(y, w, m, s):
    """Closed form CRPS of a Normal mixture (Grimit et al. 2006)."""

    def abs_mean(mu, sd):  # E|N(mu, sd^2)|
        return mu * (2.0 * stats.norm.cdf(mu / sd) - 1.0) + 2.0 * sd * stats.norm.pdf(mu / sd)

    first = (w * abs_mean(y[:, None] - m, s)).sum(axis=1)
    pair_sd = np.sqrt(s[:, :, None] ** 2 + s[:, None, :] ** 2)
    pairs = w[:, :, None] * w[:, None, :] * abs_mean(m[:, :, None] - m[:, None, :], pair_sd)
    return first - 0.5 * pairs.sum(axis=(1, 2))


def oracle_crps(pred: LocationScaleMixture, y: np.ndarray) -> np.ndarray:
    if pred.weights.shape[1] == 1:
        df = pred.df[:, 0]
        if np.isinf(df).all():
            return crps_normal_mixture(y, pred.weights, pred.loc, pred.scale)
        return crps_t(y, df, pred.loc[:, 0], pred.scale[:, 0])
    assert np.isinf(pred.df).all()
    return crps_normal_mixture(y, pred.weights, pred.loc, pred.scale)


def run_p1(forecaster, frame, *, refits=(0, 250, 500, 750)):
    """Protocol P1: refit at the given test days, one-step forecasts from the previous close."""
    test = np.flatnonzero((frame.index >= TEST_START) & (frame.index <= TEST_END))
    starts = list(refits) + [len(test)]
    parts = []
    for lo, hi in itertools.pairwise(starts):
        block = test[lo:hi]
        predict = forecaster(frame.iloc[: block[0]])  # every row before the first test day
        parts.append(predict(frame.iloc[: block[-1]], frame.index[block - 1], 1))
    predictive = LocationScaleMixture.concatenate(parts)
    y = frame["ret"].to_numpy()[test]
    assert (predictive.dates == frame.index[test]).all()
    return y, predictive


# ---------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frame(sp500):
    """load_sp500() (from 1999-02-04) with the VIX close where arch.data has it (2014-)."""
    return bm.data.add_vix(sp500)


@pytest.fixture(scope="module")
def p1(frame):
    """P1 runs of the anchored baselines, computed once: name -> (y, predictive, seconds)."""
    cache = {}

    def run(name):
        if name not in cache:
            start = time.perf_counter()
            y, pred = run_p1(BASELINES[name](), frame)
            cache[name] = (y, pred, time.perf_counter() - start)
        return cache[name]

    return run


@pytest.fixture(scope="module")
def short(frame):
    """2012-01 .. 2015-06 (VIX from 2014), training rows up to 2014-12-31."""
    sub = frame.loc["2012-01-01":"2015-06-30"]
    return sub, sub.loc[:"2014-12-31"]


# ---------------------------------------------------------------------------------------
# the anchors
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ANCHORS))
def test_p1_anchor(p1, name):
    y, pred, _ = p1(name)
    assert len(y) == 1006
    log_score = float(scipy_log_density(pred, y).mean())
    crps = float(oracle_crps(pred, y).mean())
    anchor_log, anchor_crps = ANCHORS[name]
    assert abs(log_score - anchor_log) < 0.005, (name, log_score, anchor_log)
    assert abs(crps - anchor_crps) < 0.005, (name, crps, anchor_crps)
    # The predictive's own scores agree with the scipy oracles.
    np.testing.assert_allclose(pred.log_prob(y), scipy_log_density(pred, y), atol=1e-9)


def test_garch_equals_arch_forecast(frame):
    """On one P1 block the GARCH-t predictive is arch's own fit(last_obs).forecast()."""
    r = frame["ret"]
    test = np.flatnonzero((r.index >= TEST_START) & (r.index <= TEST_END))
    block = test[250:500]
    am = arch_model(r.iloc[: block[-1] + 1], mean="Constant", vol="GARCH", p=1, q=1, dist="t")
    res = am.fit(last_obs=r.index[block[0]], disp="off")
    fc = res.forecast(start=r.index[block[0] - 1], horizon=5, reindex=False)
    fit = BASELINES["garch_t"]()(frame.iloc[: block[0]])
    np.testing.assert_allclose(fit.params.to_numpy(), res.params.to_numpy(), rtol=1e-10)
    origins = r.index[block - 1]
    nu = res.params["nu"]
    for h in (1, 5):
        pred = fit(frame.iloc[: block[-1]], origins, h)
        var = fc.variance.to_numpy()[: len(block), :h].sum(axis=1)
        np.testing.assert_allclose(pred.scale[:, 0], np.sqrt(var * (nu - 2) / nu), rtol=1e-10)
        np.testing.assert_allclose(pred.loc[:, 0], h * res.params["mu"], rtol=1e-12)
        np.testing.assert_allclose(pred.df[:, 0], nu)


def test_egarch_multistep_matches_arch_simulation(frame):
    """EGARCH h-step variances: seeded simulation, close to arch's own simulation."""
    r = frame["ret"].loc[:"2014-12-31"]
    am = arch_model(r, mean="Constant", vol="EGARCH", p=1, o=1, q=1, dist="t")
    res = am.fit(disp="off")
    fit = BASELINES["egarch_t"]()(frame.loc[:"2014-12-31"])
    origins = r.index[-20:]
    mine = fit.variance_forecasts(frame, frame.index.get_indexer(origins), 5)
    theirs = res.forecast(
        start=origins[0], horizon=5, method="simulation", simulations=2000, reindex=False
    ).variance.to_numpy()
    np.testing.assert_allclose(mine[:, 0], theirs[:, 0], rtol=1e-10)  # one step: exact
    np.testing.assert_allclose(mine.sum(axis=1), theirs.sum(axis=1), rtol=0.03)
    # Deterministic: the same seed gives the same forecast.
    again = fit.variance_forecasts(frame, frame.index.get_indexer(origins), 5)
    np.testing.assert_array_equal(mine, again)


# ---------------------------------------------------------------------------------------
# simple baselines against hand computations
# ---------------------------------------------------------------------------------------


def test_constant_normal_is_sample_moments(short):
    sub, train = short
    fit = ConstantNormal()(train)
    r = train["ret"].to_numpy()
    assert fit.mean == pytest.approx(r.mean(), rel=1e-12)
    assert fit.sd == pytest.approx(r.std(ddof=1), rel=1e-12)
    origins = sub.index[[800, 850]]
    for h in (1, 5):
        pred = fit(sub, origins, h)
        np.testing.assert_allclose(pred.loc[:, 0], h * r.mean())
        np.testing.assert_allclose(pred.scale[:, 0], np.sqrt(h) * r.std(ddof=1))
        assert np.isinf(pred.df).all()


def test_ewma_hand_recursion(short):
    sub, train = short
    fit = EWMA()(train)
    assert fit.lam == 0.94
    r = sub["ret"].to_numpy()
    var = np.mean(train["ret"].to_numpy() ** 2)  # variance of the first row
    hand = []
    for x in r:
        var = 0.94 * var + 0.06 * x**2  # variance of the next row
        hand.append(var)
    hand = np.array(hand)
    pos = np.array([30, 500, 700, len(sub) - 1])
    for h in (1, 3):
        pred = fit(sub, sub.index[pos], h)
        np.testing.assert_allclose(pred.scale[:, 0], np.sqrt(h * hand[pos]), rtol=1e-12)
        np.testing.assert_array_equal(pred.loc, 0.0)


# ---------------------------------------------------------------------------------------
# Markov switching
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ms2_fit(short):
    return BASELINES["ms2"]()(short[1])


def test_ms_one_step_weights_by_hand(short, ms2_fit):
    """Weights = transition^T applied to statsmodels' filtered probabilities at t."""
    sub, _ = short
    pos = np.array([10, 400, 760, 800, len(sub) - 1])
    pred = ms2_fit(sub, sub.index[pos], 1)
    model = MarkovRegression(sub["ret"].to_numpy(), k_regimes=2, trend="c", switching_variance=True)
    filtered = np.asarray(model.filter(ms2_fit.params).filtered_marginal_probabilities)
    left = np.asarray(model.regime_transition_matrix(ms2_fit.params))[:, :, 0]  # [i, j] = P(i|j)
    names = dict(zip(model.param_names, ms2_fit.params))
    for row, t in enumerate(pos):
        for i in range(2):
            expected = sum(left[i, j] * filtered[t, j] for j in range(2))
            assert pred.weights[row, i] == pytest.approx(expected, abs=1e-12)
            assert pred.loc[row, i] == pytest.approx(names[f"const[{i}]"], rel=1e-12)
            assert pred.scale[row, i] == pytest.approx(np.sqrt(names[f"sigma2[{i}]"]), rel=1e-12)
    assert np.isinf(pred.df).all()


def test_ms_lbfgs_reaches_statsmodels_maximum(short, ms2_fit):
    """The L-BFGS fit is statsmodels' likelihood at its maximum (oracle: statsmodels' fit)."""
    r = short[1]["ret"].to_numpy()
    model = MarkovRegression(r, k_regimes=2, trend="c", switching_variance=True)
    assert model.loglike(ms2_fit.params) == pytest.approx(ms2_fit.llf, abs=1e-8)
    reference = MarkovSwitching(k_regimes=2, optimizer="statsmodels")(short[1])
    assert reference.converged and ms2_fit.converged
    assert ms2_fit.llf >= reference.llf - 1e-4
    np.testing.assert_allclose(np.sort(ms2_fit.variance), np.sort(reference.variance), rtol=1e-3)


def test_regime_sum_mixture_matches_path_enumeration():
    """The h-day sum mixture equals the brute-force sum over all K^h regime paths."""
    rng = np.random.default_rng(0)
    k, h = 3, 4
    trans = rng.dirichlet(np.ones(k) * 2, size=k)  # rows: P(next | current)
    predicted = rng.dirichlet(np.ones(k), size=2)
    mean, variance = rng.normal(size=k), rng.uniform(0.5, 2.0, size=k)
    w, loc, scale = regime_sum_mixture(predicted, trans, mean, variance, h)
    assert w.shape[1] == special.comb(h + k - 1, k - 1, exact=True)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-14)
    grid = np.linspace(-8, 8, 41)
    for n in range(2):
        density = np.zeros_like(grid)
        for path in itertools.product(range(k), repeat=h):
            steps = [trans[a, b] for a, b in itertools.pairwise(path)]
            p = predicted[n, path[0]] * np.prod(steps)
            density += p * stats.norm.pdf(
                grid, mean[list(path)].sum(), np.sqrt(variance[list(path)].sum())
            )
        mine = (w[n] * stats.norm.pdf(grid[:, None], loc[n], scale[n])).sum(axis=1)
        np.testing.assert_allclose(mine, density, rtol=1e-12, atol=1e-300)
    # h = 1 is the one-step mixture itself.
    w1, loc1, _ = regime_sum_mixture(predicted, trans, mean, variance, 1)
    np.testing.assert_allclose(w1, predicted)
    np.testing.assert_allclose(loc1[0], mean)


# ---------------------------------------------------------------------------------------
# log-HAR
# ---------------------------------------------------------------------------------------


def test_har_regression_is_ols_on_log_range_variance(short):
    """Coefficients: statsmodels OLS of log v_{t+1} on log 1-, 5-, 22-day means of v."""
    _, train = short
    v = train["var_parkinson"]
    design = pd.DataFrame(
        {
            "const": 1.0,
            "d": np.log(v),
            "w": np.log(v.rolling(5).mean()),
            "m": np.log(v.rolling(22).mean()),
        }
    )
    target = np.log(v).shift(-1)
    ok = design.notna().all(axis=1) & target.notna()
    ols = OLS(target[ok], design[ok]).fit()
    fit = BASELINES["har"]()(train)
    plain, vixed = fit.params(1)
    assert vixed is None and not fit.uses_vix
    np.testing.assert_allclose(plain.beta, ols.params.to_numpy(), rtol=1e-8)
    # Return model: mean, variance ratio and a unit-variance t on the same pairs.
    r_next = train["ret"].shift(-1)[ok].to_numpy()
    level = np.exp(ols.fittedvalues.to_numpy())
    assert plain.mean == pytest.approx(r_next.mean(), rel=1e-12)
    assert plain.variance_scale == pytest.approx(np.mean((r_next - r_next.mean()) ** 2 / level))
    z = (r_next - plain.mean) / np.sqrt(plain.variance_scale * level)
    nu = plain.df

    def loglik(df):
        return stats.t.logpdf(z, df, 0, np.sqrt((df - 2) / df)).sum()

    assert loglik(nu) >= max(loglik(nu * 1.01), loglik(nu / 1.01))
    # The predictive at one origin, by hand.
    origin = train.index[-1]
    pred = fit(train, pd.DatetimeIndex([origin]), 1)
    var = plain.variance_scale * np.exp(design.iloc[-1].to_numpy() @ ols.params.to_numpy())
    assert pred.scale[0, 0] == pytest.approx(np.sqrt(var * (nu - 2) / nu), rel=1e-10)
    assert pred.dates[0] == origin + pd.offsets.BDay(1)
    # Horizon 5: direct OLS of the log mean variance of the next 5 days.
    target5 = np.log(v.rolling(5).mean().shift(-5))
    ok5 = design.notna().all(axis=1) & target5.notna()
    plain5, _ = fit.params(5)
    ols5 = OLS(target5[ok5], design[ok5]).fit()
    np.testing.assert_allclose(plain5.beta, ols5.params.to_numpy(), rtol=1e-8)
    sums = train["ret"].rolling(5).sum().shift(-5)[ok5].to_numpy()
    assert plain5.mean == pytest.approx(sums.mean(), rel=1e-10)


def test_har_vix_uses_vix_where_it_exists(short):
    sub, train = short
    har = BASELINES["har"]()(train)
    har_vix = BASELINES["har_vix"]()(train)
    assert har_vix.uses_vix
    _, vixed = har_vix.params(1)
    assert vixed.n_obs == train["vix"].notna().sum() - 1  # 2014 only: the overlapping sample
    origins = sub.index[[100, 700, 760]]  # 2012 (no VIX), 2014, 2015
    a, b = har(sub, origins), har_vix(sub, origins)
    assert a.scale[0, 0] == b.scale[0, 0]  # no VIX: the plain log-HAR
    assert not np.isclose(a.scale[1:, 0], b.scale[1:, 0]).any()
    x = har_regressors(sub, vix="vix")[sub.index.get_indexer(origins[1:])]
    np.testing.assert_allclose(x[:, -1], np.log(sub.loc[origins[1:], "vix"]))
    # Without a vix column har_vix is the plain log-HAR.
    no_vix = BASELINES["har_vix"]()(train.drop(columns="vix"))
    assert not no_vix.uses_vix
    np.testing.assert_array_equal(no_vix(sub, origins).scale, a.scale)


# ---------------------------------------------------------------------------------------
# protocol properties of every baseline
# ---------------------------------------------------------------------------------------


def test_registry():
    assert list(BASELINES) == [
        "constant_normal",
        "ewma",
        "garch_t",
        "gjr_garch_t",
        "egarch_t",
        "ms2",
        "ms3",
        "har",
        "har_vix",
    ]
    for name, make in BASELINES.items():
        assert make().name == name


def _perturbed_after(sub: pd.DataFrame, t: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    out = sub.copy()
    n = len(sub) - t - 1
    for col in ("ret", "var_parkinson", "vix", "high", "low"):
        out.iloc[t + 1 :, out.columns.get_loc(col)] *= rng.uniform(0.2, 5.0, size=n)
    return out


@pytest.mark.parametrize("name", list(BASELINES))
def test_no_look_ahead(short, name):
    """Perturbing rows after t, or cutting them, leaves every forecast at origins <= t alone."""
    sub, train = short
    fit = BASELINES[name]()(train)
    t = sub.index.get_loc(pd.Timestamp("2015-02-02"))
    origins = sub.index[[600, 750, t - 1, t]]
    later = sub.index[[t + 5, len(sub) - 1]]
    changed = _perturbed_after(sub, t)
    for h in (1, 5):
        base = fit(sub, origins.append(later), h)
        for other in (fit(changed, origins.append(later), h), fit(sub.iloc[: t + 1], origins, h)):
            for field in ("weights", "loc", "scale", "df"):
                np.testing.assert_array_equal(
                    getattr(other, field)[: len(origins)], getattr(base, field)[: len(origins)]
                )
        assert base.n_days == len(origins) + len(later)
        np.testing.assert_array_equal(
            base.dates[:4], sub.index[[600 + h, 750 + h, t - 1 + h, t + h]]
        )
    if name not in ("constant_normal",):  # the forecasts after t do react to new data
        moved, kept = fit(changed, later, 1), fit(sub, later, 1)
        assert not np.allclose(moved.weights * moved.scale, kept.weights * kept.scale)


def test_realized_dates_beyond_the_frame():
    index = pd.bdate_range("2020-01-01", periods=5, name="date")
    dates = realized_dates(index, np.array([0, 3, 4]), 2)
    expected = [index[2], index[4] + pd.offsets.BDay(1), index[4] + pd.offsets.BDay(2)]
    assert list(dates) == expected


def test_bad_input(short):
    sub, train = short
    with pytest.raises(DataError, match="'ret'"):
        ConstantNormal()(train.drop(columns="ret"))
    fit = EWMA()(train)
    with pytest.raises(DataError, match="2030-01-02 is not a row"):
        fit(sub, pd.DatetimeIndex(["2030-01-02"]))
    with pytest.raises(ValueError, match="horizon"):
        fit(sub, sub.index[-2:], 0)
    with pytest.raises(DataError, match="var_parkinson"):
        LogHAR()(train[["ret"]])
    with pytest.raises(DataError, match="at least 100"):
        ArchT()(train.iloc[:50])
    with pytest.raises(ValueError, match="optimizer"):
        MarkovSwitching(optimizer="newton")(train)
    broken = sub.copy()
    broken.iloc[100, broken.columns.get_loc("ret")] = np.nan
    with pytest.raises(DataError, match="not finite on"):
        fit(broken, sub.index[[200]])


def test_backtest_runs_a_baseline(frame):
    """The baselines plug into bayes_moe.evaluation.backtest.backtest."""
    from bayes_moe.evaluation.backtest import backtest

    result = backtest(
        frame.loc[:"2018-12-31"],
        BASELINES["garch_t"](),
        test_start="2018-07-02",
        refit_every=60,
        progress=False,
    )
    assert result.name == "garch_t"
    np.testing.assert_allclose(
        result.table["log_score"].to_numpy(),
        scipy_log_density(result.predictive, result.y),
        atol=1e-9,
    )
