"""Scoring rules and calibration tests, each against an independent oracle.

Oracles: the CRPS integral :math:`\\int (F(x) - 1\\{x \\ge y\\})^2 dx` by
``scipy.integrate.quad`` on ``scipy.stats`` distribution functions; Monte Carlo with fixed
seeds; hand-computed interval scores; statsmodels (``ARIMA`` exact and ``AutoReg``
conditional AR(1) likelihoods for Berkowitz, ``OLS`` with a HAC covariance for
Diebold-Mariano).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import integrate, stats
from statsmodels.tsa.ar_model import AutoReg
from statsmodels.tsa.arima.model import ARIMA

from bayes_moe.evaluation import scoring as sc
from bayes_moe.evaluation.distributions import LocationScaleMixture

QUAD = {"limit": 500, "epsabs": 1e-13, "epsrel": 1e-11}


def mixture_cdf(x, w, mu, s, nu, upper=False):
    """Mixture CDF (or survival function) from scipy.stats only, not the package's kernels."""
    x = np.asarray(x, dtype=np.float64)[..., None]
    z = (mu - x) / s if upper else (x - mu) / s
    finite = np.isfinite(nu)
    comp = np.where(finite, stats.t.cdf(z, np.where(finite, nu, 1.0)), stats.norm.cdf(z))
    return np.sum(w * comp, axis=-1)


def crps_quad(y, w, mu, s, nu):
    """Brute-force CRPS: quad of F^2 below y and (1 - F)^2 above y.

    Breakpoints at the components' mu + k sigma (thinned to about 60 for large mixtures);
    the infinite tails through x = edge -/+ exp(v), which turns power-law tails into
    exponential ones in v; 1 - F from the survival functions, for relative precision.
    """
    w, mu, s, nu = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (w, mu, s, nu))
    nu = np.broadcast_to(nu, w.shape)

    def below(x):
        return mixture_cdf(x, w, mu, s, nu) ** 2

    def above(x):
        return mixture_cdf(x, w, mu, s, nu, upper=True) ** 2

    points = np.unique(np.concatenate([mu + s * k for k in (-8, -4, -2, -1, 0, 1, 2, 4, 8)]))
    if points.size > 60:
        points = np.quantile(points, np.linspace(0, 1, 60))
    points = np.unique(np.append(points, y))
    lo, hi = points[0], points[-1]
    vmax = math.log(1e300)
    total = integrate.quad(lambda v: below(lo - math.exp(v)) * math.exp(v), -40, vmax, **QUAD)[0]
    total += integrate.quad(lambda v: above(hi + math.exp(v)) * math.exp(v), -40, vmax, **QUAD)[0]
    for left, right in zip(points[:-1], points[1:]):
        fn = below if right <= y else above
        total += integrate.quad(fn, left, right, **QUAD)[0]
    return total


# --------------------------------------------------------------------------------------
# closed forms
# --------------------------------------------------------------------------------------


def test_crps_normal_known_value():
    # Gneiting & Raftery (2007) eq. (21) at z = 0: 2 phi(0) - 1/sqrt(pi) = (sqrt(2) - 1)/sqrt(pi)
    expected = (math.sqrt(2.0) - 1.0) / math.sqrt(math.pi)
    assert sc.crps_normal(0.0, 0.0, 1.0) == pytest.approx(expected, abs=1e-15)
    assert expected == pytest.approx(0.23369497725510913)
    # location-scale equivariance: CRPS(N(m, s^2), m + s z) = s CRPS(N(0, 1), z)
    assert sc.crps_normal(3.0 + 2.0 * 0.7, 3.0, 2.0) == pytest.approx(
        2.0 * sc.crps_normal(0.7, 0.0, 1.0), rel=1e-14
    )


@pytest.mark.parametrize("y, loc, scale", [(0.3, 0.0, 1.0), (-2.5, 0.4, 0.7), (10.0, 1.0, 3.0)])
def test_crps_normal_matches_quadrature(y, loc, scale):
    ref = crps_quad(y, [1.0], [loc], [scale], [np.inf])
    assert sc.crps_normal(y, loc, scale) == pytest.approx(ref, abs=1e-11)


@pytest.mark.parametrize(
    "y, df, loc, scale",
    [(0.3, 1.5, 0.0, 1.0), (-2.5, 3.0, 0.4, 0.7), (10.0, 4.5, 1.0, 3.0), (0.0, 30.0, 0.0, 1.0)],
)
def test_crps_student_t_matches_quadrature(y, df, loc, scale):
    ref = crps_quad(y, [1.0], [loc], [scale], [df])
    assert sc.crps_student_t(y, df, loc, scale) == pytest.approx(ref, abs=1e-10)


def test_crps_closed_forms_match_monte_carlo():
    # CRPS = E|X - y| - E|X - X'| / 2, estimated from 400,000 seeded draws.
    rng = np.random.default_rng(11)
    m = 400_000
    for draw, exact in [
        (lambda: 0.5 + 2.0 * rng.standard_normal(m), sc.crps_normal(1.3, 0.5, 2.0)),
        (lambda: 0.5 + 2.0 * rng.standard_t(4.0, m), sc.crps_student_t(1.3, 4.0, 0.5, 2.0)),
    ]:
        x, x2 = draw(), draw()
        terms = np.abs(x - 1.3) - 0.5 * np.abs(x - x2)
        se = terms.std() / math.sqrt(m)
        assert abs(terms.mean() - exact) < 4 * se


def test_crps_student_t_tends_to_normal():
    y = np.linspace(-4, 4, 9)
    normal = sc.crps_normal(y, 0.2, 1.5)
    gaps = [np.max(np.abs(sc.crps_student_t(y, df, 0.2, 1.5) - normal)) for df in (10, 1e3, 1e6)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-6
    np.testing.assert_array_equal(sc.crps_student_t(y, np.inf, 0.2, 1.5), normal)


def test_crps_student_t_needs_df_above_one():
    with pytest.raises(ValueError, match="df"):
        sc.crps_student_t(0.0, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="scale"):
        sc.crps_normal(0.0, 0.0, -1.0)


def test_crps_normal_mixture_matches_quadrature():
    rng = np.random.default_rng(5)
    for _ in range(5):
        c = int(rng.integers(1, 6))
        w = rng.dirichlet(np.ones(c))
        mu, s = rng.normal(0, 2, c), np.exp(rng.normal(0, 0.7, c))
        y = float(rng.normal(0, 3))
        ref = crps_quad(y, w, mu, s, np.inf)
        assert sc.crps_normal_mixture(y, w, mu, s) == pytest.approx(ref, abs=1e-10)
    # one component: the Normal closed form
    assert sc.crps_normal_mixture(0.4, [1.0], [0.1], [0.8]) == pytest.approx(
        sc.crps_normal(0.4, 0.1, 0.8), rel=1e-14
    )


# --------------------------------------------------------------------------------------
# general mixtures (Normal and Student-t components)
# --------------------------------------------------------------------------------------


def random_mixture(rng, c):
    w = rng.dirichlet(np.ones(c) * rng.choice([0.3, 1.0, 5.0]))
    mu = rng.normal(0, rng.choice([0.1, 1.0, 5.0]), c)
    s = np.exp(rng.normal(0, rng.choice([0.2, 1.0, 2.0]), c))
    nu = np.where(rng.random(c) < 0.5, np.inf, 1.3 + rng.exponential(rng.choice([1.0, 5.0]), c))
    return w, mu, s, nu


def test_crps_mixture_matches_quadrature_on_random_mixtures():
    # Mixed Normal / t components, scales over several orders of magnitude, df down to 1.3.
    rng = np.random.default_rng(2024)
    cases = [random_mixture(rng, int(rng.integers(2, 8))) for _ in range(16)]
    y = rng.normal(0, 3, len(cases))
    for (w, mu, s, nu), yi in zip(cases, y):
        got = sc.crps_mixture(yi, w, mu, s, nu)
        ref = crps_quad(yi, w, mu, s, nu)
        assert abs(got - ref) < 1e-9 * np.sum(w * s), (w, mu, s, nu, yi)


def test_crps_mixture_of_one_component_is_the_closed_form():
    y = np.array([-1.0, 0.2, 3.0])
    got = sc.crps_mixture(y, np.ones((3, 1)), 0.5, 2.0, np.array([[3.0], [np.inf], [1.7]]))
    expected = [
        sc.crps_student_t(-1.0, 3.0, 0.5, 2.0),
        sc.crps_normal(0.2, 0.5, 2.0),
        sc.crps_student_t(3.0, 1.7, 0.5, 2.0),
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-14)


def test_crps_mixture_quadrature_matches_normal_closed_form():
    # The quadrature path, forced on Normal mixtures, against the pairwise closed form.
    rng = np.random.default_rng(8)
    n, c = 40, 12
    w = rng.dirichlet(np.ones(c), n)
    mu, s = rng.normal(0, 1, (n, c)), np.exp(rng.normal(0, 1, (n, c)))
    y = rng.normal(0, 2, n)
    closed = sc.crps_normal_mixture(y, w, mu, s)
    quad = sc.crps_mixture(y, w, mu, s, np.inf, method="quadrature")
    np.testing.assert_allclose(quad, closed, rtol=0, atol=1e-10)


def test_crps_mixture_resolves_a_narrow_spike():
    # 1% of the mass in a component 10,000 times narrower than the rest.
    w, mu, s = np.array([0.99, 0.01]), np.array([0.0, 3.0]), np.array([1.0, 1e-4])
    for nu in (np.array([np.inf, np.inf]), np.array([4.0, np.inf]), np.array([np.inf, 3.0])):
        got = sc.crps_mixture(0.5, w, mu, s, nu, method="quadrature")
        assert got == pytest.approx(crps_quad(0.5, w, mu, s, nu), abs=1e-10)


def test_crps_mixture_large_posterior_mixture():
    # The Bayesian mixture's shape: C = 600 (300 t draws with their own df, 300 Normal),
    # checked on a few days against the brute-force integral.
    rng = np.random.default_rng(3)
    n, c = 3, 600
    nu = np.tile(np.concatenate([2.0 + rng.gamma(2.0, 10.0, 300), np.full(300, np.inf)]), (n, 1))
    w = rng.dirichlet(np.full(c, 5.0), n)
    mu = rng.normal(0, 0.1, (n, c))
    s = np.exp(rng.normal(0, 0.2, (n, c))) * np.exp(rng.normal(0, 0.4, (n, 1)))
    y = np.array([0.1, -2.5, 6.0])
    got = sc.crps_mixture(y, w, mu, s, nu)
    ref = [crps_quad(y[i], w[i], mu[i], s[i], nu[i]) for i in range(n)]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)


def test_crps_mixture_ignores_zero_weight_padding_and_validates():
    w = np.array([[0.3, 0.7, 0.0]])
    got = sc.crps_mixture(0.2, w, [[0.0, 1.0, 50.0]], [[1.0, 0.5, 1.0]], [[3.0, np.inf, 0.5]])
    ref = sc.crps_mixture(0.2, w[:, :2], [[0.0, 1.0]], [[1.0, 0.5]], [[3.0, np.inf]])
    np.testing.assert_allclose(got, ref, rtol=1e-13)
    with pytest.raises(ValueError, match="df"):
        sc.crps_mixture(0.0, [0.5, 0.5], [0.0, 1.0], [1.0, 1.0], [3.0, 0.9])
    with pytest.raises(ValueError, match="weights"):
        sc.crps_mixture(0.0, [0.5, 0.6], [0.0, 1.0], [1.0, 1.0], np.inf)
    with pytest.raises(ValueError, match="method"):
        sc.crps_mixture(0.0, [1.0], [0.0], [1.0], np.inf, method="nope")


# --------------------------------------------------------------------------------------
# ensembles
# --------------------------------------------------------------------------------------


def test_crps_sample_sorting_formula_matches_double_sum():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=3)
    pair = np.abs(x[:, None, :] - x[None, :, :]).sum(axis=(0, 1))
    first = np.abs(x - y).mean(axis=0)
    np.testing.assert_allclose(sc.crps_sample(y, x), first - pair / (2 * 7 * 6), rtol=1e-13)
    np.testing.assert_allclose(
        sc.crps_sample(y, x, fair=False), first - pair / (2 * 7 * 7), rtol=1e-13
    )


def test_fair_crps_is_unbiased_and_plain_crps_is_biased_by_the_known_term():
    # Ferro (2014): E[fair] = CRPS; E[plain] = CRPS + E|X - X'| / (2m), and for N(0, 1)
    # E|X - X'| = 2 / sqrt(pi). 40,000 seeded ensembles of m = 5 draws, y fixed.
    rng = np.random.default_rng(7)
    m, reps, y = 5, 40_000, 0.6
    samples = rng.standard_normal((m, reps))
    truth = sc.crps_normal(y, 0.0, 1.0)
    fair = sc.crps_sample(np.full(reps, y), samples)
    plain = sc.crps_sample(np.full(reps, y), samples, fair=False)
    bias = (2.0 / math.sqrt(math.pi)) / (2 * m)
    assert abs(fair.mean() - truth) < 4 * fair.std() / math.sqrt(reps)
    assert abs(plain.mean() - truth - bias) < 4 * plain.std() / math.sqrt(reps)
    assert plain.mean() - truth > 0.8 * bias
    with pytest.raises(ValueError, match="draws"):
        sc.crps_sample([0.0], np.zeros((1, 1)))


# --------------------------------------------------------------------------------------
# intervals and coverage
# --------------------------------------------------------------------------------------


def test_interval_score_hand_values():
    # Width 2, penalty 2 / alpha = 20 per unit outside: inside 2; 1 above 2 + 20; 2 below 2 + 40.
    y = np.array([0.0, 2.0, -3.0, 1.0])
    got = sc.interval_score(y, -1.0, 1.0, 0.1)
    np.testing.assert_allclose(got, [2.0, 22.0, 42.0, 2.0])
    # a 50% interval [0, 4] with y = 5: 4 + (2 / 0.5) * 1 = 8
    assert sc.interval_score(5.0, 0.0, 4.0, 0.5) == pytest.approx(8.0)
    with pytest.raises(ValueError, match="alpha"):
        sc.interval_score(0.0, -1.0, 1.0, 1.5)


def test_coverage_hand_example():
    # covered: 0 (inside), 1 (on the boundary); not: 2, -3
    assert sc.coverage([0.0, 2.0, -3.0, 1.0], -1.0, 1.0) == 0.5


def small_predictive(n=300, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(3), n)
    mu = rng.normal(0, 0.5, (n, 3))
    s = np.exp(rng.normal(0, 0.3, (n, 3)))
    nu = np.array([[4.0, np.inf, 8.0]])
    dates = pd.bdate_range("2020-01-01", periods=n)
    return LocationScaleMixture(w, mu, s, nu, dates)


def test_coverage_curve_agrees_with_quantile_intervals():
    pred = small_predictive()
    y = pred.sample(1, seed=1)[0] * 1.3  # a little too dispersed: coverage below nominal
    curve = sc.coverage_curve(pred, y, levels=[0.5, 0.8, 0.9, 0.95])
    for level, empirical in zip(curve["nominal"], curve["empirical"]):
        lower, upper = pred.interval(level)
        assert empirical == sc.coverage(y, lower, upper)
    default = sc.coverage_curve(pred, y)
    assert list(default.columns) == ["nominal", "empirical"]
    assert default["nominal"].iloc[0] == 0.05 and default["nominal"].iloc[-1] == 0.99
    assert len(default) == 95


# --------------------------------------------------------------------------------------
# PIT, KS and Berkowitz
# --------------------------------------------------------------------------------------


def test_pit_of_true_draws_is_uniform_and_narrow_forecasts_are_rejected():
    pred = small_predictive(n=800, seed=2)
    y = pred.sample(1, seed=3)[0]
    u = sc.pit(pred, y)
    _, pvalue = sc.pit_ks_test(u)
    assert pvalue > 0.01
    narrow = LocationScaleMixture(pred.weights, pred.loc, pred.scale * 0.6, pred.df, pred.dates)
    _, pvalue_narrow = sc.pit_ks_test(sc.pit(narrow, y))
    assert pvalue_narrow < 1e-6
    with pytest.raises(ValueError, match="pit_values"):
        sc.pit_ks_test([0.2, 1.2])


def ar1(n, mu, sigma, rho, seed):
    rng = np.random.default_rng(seed)
    z = np.empty(n)
    z[0] = mu + sigma / math.sqrt(1 - rho**2) * rng.standard_normal()
    for t in range(1, n):
        z[t] = mu + rho * (z[t - 1] - mu) + sigma * rng.standard_normal()
    return z


def test_berkowitz_accepts_iid_standard_normal_and_rejects_misspecification():
    z = np.random.default_rng(4).standard_normal(500)
    result = sc.berkowitz_test(stats.norm.cdf(z))
    assert result["pvalue"] > 0.05
    assert set(result) >= {"lr", "pvalue", "mu", "sigma", "rho"}
    wide = sc.berkowitz_test(stats.norm.cdf(1.5 * z))
    assert wide["pvalue"] < 1e-6 and wide["sigma"] == pytest.approx(1.5, rel=0.1)
    dependent = sc.berkowitz_test(stats.norm.cdf(ar1(500, 0.0, math.sqrt(1 - 0.09), 0.3, 5)))
    assert dependent["pvalue"] < 1e-3 and dependent["rho"] == pytest.approx(0.3, abs=0.1)


def test_berkowitz_lr_matches_statsmodels():
    # Exact: LR = 2 (llf of statsmodels' exact-likelihood ARIMA(1, 0, 0) with a constant
    # - sum log phi(z_t)). Conditional: AutoReg(1) llf (sigma^2 = RSS / (n - 1)) against
    # sum_{t >= 2} log phi(z_t). Our exact fit maximizes the profile likelihood exactly,
    # so it may only exceed statsmodels' numerical optimum, by optimizer tolerance.
    z = ar1(400, 0.2, 1.1, 0.25, 9)
    u = stats.norm.cdf(z)
    exact = sc.berkowitz_test(u)
    fit = ARIMA(z, order=(1, 0, 0), trend="c").fit()
    lr_sm = 2 * (fit.llf - stats.norm.logpdf(z).sum())
    assert exact["lr"] == pytest.approx(lr_sm, abs=1e-5)
    assert exact["lr"] >= lr_sm - 1e-9
    mu_sm, rho_sm, sigma2_sm = fit.params
    assert exact["mu"] == pytest.approx(mu_sm, abs=1e-3)
    assert exact["rho"] == pytest.approx(rho_sm, abs=1e-3)
    assert exact["sigma"] ** 2 == pytest.approx(sigma2_sm, rel=1e-3)

    conditional = sc.berkowitz_test(u, likelihood="conditional")
    ar = AutoReg(z, 1, trend="c").fit()
    lr_ar = 2 * (ar.llf - stats.norm.logpdf(z[1:]).sum())
    assert conditional["lr"] == pytest.approx(lr_ar, rel=1e-10)
    assert conditional["rho"] == pytest.approx(ar.params[1], rel=1e-10)
    assert conditional["sigma"] ** 2 == pytest.approx(ar.sigma2, rel=1e-10)
    assert exact["pvalue"] == pytest.approx(stats.chi2.sf(exact["lr"], 3))


# --------------------------------------------------------------------------------------
# Diebold-Mariano
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("lag", [None, 0, 3, 12])
def test_diebold_mariano_matches_statsmodels_hac(lag):
    # statsmodels OLS of d on a constant, HAC (Bartlett) covariance without the small-sample
    # correction, is the same Newey-West standard error (agrees to rounding).
    rng = np.random.default_rng(1)
    e = rng.standard_normal(301)
    a = 0.1 + e[1:] + 0.5 * e[:-1]
    b = rng.standard_normal(300) * 0.2
    result = sc.diebold_mariano(a, b, lag=lag)
    expected_lag = math.floor(4 * (300 / 100) ** (2 / 9)) if lag is None else lag
    assert result["lag"] == expected_lag == (5 if lag is None else lag)
    ols = sm.OLS(a - b, np.ones(300)).fit(
        cov_type="HAC", cov_kwds={"maxlags": expected_lag, "use_correction": False}
    )
    assert result["nw_se"] == pytest.approx(ols.bse[0], rel=1e-12)
    assert result["mean_diff"] == pytest.approx(ols.params[0], rel=1e-12)
    assert result["t_stat"] == pytest.approx(ols.tvalues[0], rel=1e-12)
    assert result["pvalue"] == pytest.approx(ols.pvalues[0], rel=1e-9)


def test_diebold_mariano_size_and_power_on_iid_differences():
    # iid d with mean 0: |t| > 1.96 in about 5% of 400 seeded replications; with a mean
    # shift of 0.3 sd at n = 250 the test almost always rejects.
    rng = np.random.default_rng(12)
    t_null = np.array(
        [sc.diebold_mariano(rng.standard_normal(250), np.zeros(250))["t_stat"] for _ in range(400)]
    )
    assert 0.02 <= np.mean(np.abs(t_null) > 1.96) <= 0.09
    assert abs(t_null.mean()) < 0.2 and 0.85 < t_null.std() < 1.15
    shifted = [
        sc.diebold_mariano(rng.standard_normal(250) + 0.3, np.zeros(250))["pvalue"]
        for _ in range(50)
    ]
    assert np.mean(np.array(shifted) < 0.05) > 0.9
    with pytest.raises(ValueError, match="finite"):
        sc.diebold_mariano([1.0, np.nan], [0.0, 0.0])


# --------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------


def test_score_table_and_summary_agree_with_the_scoring_functions():
    pred = small_predictive(n=120, seed=4)
    y = pd.Series(pred.sample(1, seed=5)[0], index=pred.dates)
    table = sc.score_table(pred, y)
    assert table.index.equals(pred.dates)
    assert {
        "log_score",
        "crps",
        "pit",
        "lower_90",
        "upper_90",
        "lower_95",
        "upper_95",
        "interval_score_90",
        "interval_score_95",
        "covered_90",
        "covered_95",
    } <= set(table.columns)
    np.testing.assert_allclose(table["crps"], pred.crps(y.to_numpy()))
    lower, upper = pred.interval(0.9)
    np.testing.assert_allclose(table["interval_score_90"], sc.interval_score(y, lower, upper, 0.1))
    summary = sc.summarize(table)
    assert {
        "log_score",
        "crps",
        "coverage_90",
        "coverage_95",
        "pit_ks_pvalue",
        "n_days",
        "interval_score_90",
        "berkowitz_pvalue",
    } <= set(summary)
    assert summary["n_days"] == 120
    assert summary["log_score"] == pytest.approx(sc.log_score(pred.log_prob(y.to_numpy())))
    assert summary["coverage_90"] == pytest.approx(sc.coverage(y, lower, upper))
    assert summary["pit_ks_pvalue"] == pytest.approx(sc.pit_ks_test(table["pit"])[1])
    assert summary["berkowitz_pvalue"] == pytest.approx(sc.berkowitz_test(table["pit"])["pvalue"])
    np.testing.assert_allclose(table["variance"], pred.variance())
    np.testing.assert_allclose(table["mean"], pred.mean())
    expected = np.corrcoef(pred.variance(), y.to_numpy() ** 2)[0, 1]
    assert summary["variance_correlation"] == pytest.approx(expected)
    assert math.isnan(sc.summarize(table.drop(columns="variance"))["variance_correlation"])
    shifted = pd.Series(y.to_numpy(), index=pred.dates + pd.Timedelta(days=1))
    with pytest.raises(ValueError, match="dates"):
        sc.score_table(pred, shifted)


def test_log_score_is_the_mean_log_density():
    assert sc.log_score([-1.0, -2.0, -3.0]) == pytest.approx(-2.0)
    assert math.isnan(sc.log_score([]))
