"""LocationScaleMixture against scipy.stats, direct sums over components and quadrature.

Oracles: ``scipy.stats.norm`` / ``scipy.stats.t`` for one component; an explicit Python
sum over components (scipy densities and CDFs) for mixtures; ``scipy.integrate.quad`` for
moments and for the CRPS integral; seeded Monte Carlo for sampling.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from bayes_moe.evaluation import scoring as sc
from bayes_moe.evaluation.distributions import LocationScaleMixture


def dates(n):
    return pd.bdate_range("2021-01-04", periods=n)


def scipy_component(mu, s, nu):
    return stats.norm(mu, s) if np.isinf(nu) else stats.t(nu, mu, s)


def random_predictive(n=20, c=4, seed=0, min_df=2.5):
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(c), n)
    mu = rng.normal(0, 1, (n, c))
    s = np.exp(rng.normal(0, 0.5, (n, c)))
    nu = np.where(rng.random((n, c)) < 0.5, np.inf, min_df + rng.exponential(4.0, (n, c)))
    return LocationScaleMixture(w, mu, s, nu, dates(n))


# --------------------------------------------------------------------------------------
# densities, CDF, quantiles
# --------------------------------------------------------------------------------------


def test_single_components_match_scipy():
    y = np.array([-3.0, -0.4, 0.0, 1.7, 6.0])
    loc, scale = np.array([0.0, 1.0, -1.0, 0.5, 2.0]), np.array([1.0, 0.5, 2.0, 1.5, 0.3])
    normal = LocationScaleMixture.normal(loc, scale, dates(5))
    np.testing.assert_allclose(normal.log_prob(y), stats.norm.logpdf(y, loc, scale), rtol=1e-13)
    np.testing.assert_allclose(normal.cdf(y), stats.norm.cdf(y, loc, scale), rtol=1e-13)
    df = np.array([1.5, 3.0, 5.0, 30.0, 2.2])
    student = LocationScaleMixture.student_t(df, loc, scale, dates(5))
    np.testing.assert_allclose(student.log_prob(y), stats.t.logpdf(y, df, loc, scale), rtol=1e-12)
    np.testing.assert_allclose(student.cdf(y), stats.t.cdf(y, df, loc, scale), rtol=1e-12)
    q = np.array([0.001, 0.3, 0.5, 0.975])
    np.testing.assert_allclose(
        student.quantile(q),
        stats.t.ppf(q[None], df[:, None], loc[:, None], scale[:, None]),
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        normal.quantile(0.975), stats.norm.ppf(0.975, loc, scale), rtol=1e-12
    )


def test_mixture_density_and_cdf_equal_direct_sums():
    pred = random_predictive()
    y = np.random.default_rng(1).normal(0, 2, pred.n_days)
    dens, cdf = np.zeros(pred.n_days), np.zeros(pred.n_days)
    for t in range(pred.n_days):
        for c in range(pred.n_components):
            comp = scipy_component(pred.loc[t, c], pred.scale[t, c], pred.df[t, c])
            dens[t] += pred.weights[t, c] * comp.pdf(y[t])
            cdf[t] += pred.weights[t, c] * comp.cdf(y[t])
    np.testing.assert_allclose(pred.log_prob(y), np.log(dens), rtol=1e-12)
    np.testing.assert_allclose(pred.cdf(y), cdf, rtol=1e-12)
    # far in a tail the log-sum-exp keeps the log density finite and right
    far = LocationScaleMixture.normal([0.0], [1.0], dates(1))
    assert far.log_prob(np.array([40.0]))[0] == pytest.approx(stats.norm.logpdf(40.0))


def test_quantile_inverts_the_cdf():
    pred = random_predictive(n=30, c=5, seed=2)
    levels = np.array([1e-9, 1e-4, 0.025, 0.1, 0.5, 0.9, 0.975, 1 - 1e-4, 1 - 1e-9])
    q = pred.quantile(levels)
    assert q.shape == (30, levels.size)
    for k, level in enumerate(levels):
        np.testing.assert_allclose(pred.cdf(q[:, k]), level, rtol=1e-9, atol=1e-12)
    assert np.all(np.diff(q, axis=1) > 0)
    assert pred.quantile(0.3).shape == (30,)
    np.testing.assert_array_equal(pred.quantile(0.3), pred.quantile([0.3])[:, 0])
    edges = pred.quantile([0.0, 1.0])
    assert np.all(edges[:, 0] == -np.inf) and np.all(edges[:, 1] == np.inf)
    lower, upper = pred.interval(0.9)
    np.testing.assert_allclose(pred.cdf(lower), 0.05, atol=1e-12)
    np.testing.assert_allclose(pred.cdf(upper), 0.95, atol=1e-12)
    with pytest.raises(ValueError, match="q"):
        pred.quantile(1.5)


def test_quantile_of_a_bimodal_mixture():
    # Two far-apart modes: the median sits in the gap where the density is tiny.
    pred = LocationScaleMixture(
        [[0.5, 0.5]], [[-10.0, 10.0]], [[1.0, 1.0]], [[4.0, np.inf]], dates(1)
    )
    for level in (0.25, 0.5, 0.5 + 1e-6, 0.75):
        assert pred.cdf(pred.quantile(level))[0] == pytest.approx(level, abs=1e-12)


# --------------------------------------------------------------------------------------
# moments and sampling
# --------------------------------------------------------------------------------------


def test_mean_and_variance_match_numerical_moments():
    pred = random_predictive(n=4, c=3, seed=3)
    for t in range(pred.n_days):
        day = pred.select([t])

        def density(x, day=day):
            return float(np.exp(day.log_prob(np.array([x])))[0])

        m = integrate.quad(lambda x: x * density(x), -np.inf, np.inf, limit=200)[0]
        v = integrate.quad(lambda x, m=m: (x - m) ** 2 * density(x), -np.inf, np.inf, limit=200)[0]
        assert pred.mean()[t] == pytest.approx(m, abs=1e-8)
        assert pred.variance()[t] == pytest.approx(v, rel=1e-7)


def test_moments_that_do_not_exist():
    pred = LocationScaleMixture(
        [[0.5, 0.5], [0.5, 0.5], [1.0, 0.0]],
        0.0,
        1.0,
        [[np.inf, 1.5], [np.inf, 0.8], [np.inf, 0.5]],  # df <= 2: no variance; <= 1: no mean
        dates(3),
    )
    np.testing.assert_array_equal(pred.variance(), [np.inf, np.inf, 1.0])
    assert np.isnan(pred.mean()[1]) and pred.mean()[0] == 0.0 and pred.mean()[2] == 0.0


def test_sampling_moments_and_distribution():
    pred = random_predictive(n=6, c=3, seed=4, min_df=5.0)
    draws = pred.sample(200_000, seed=5)
    assert draws.shape == (200_000, 6)
    se_mean = np.sqrt(pred.variance() / 200_000)
    assert np.all(np.abs(draws.mean(axis=0) - pred.mean()) < 4.5 * se_mean)
    np.testing.assert_allclose(draws.var(axis=0), pred.variance(), rtol=0.05)
    # the PIT of the draws under their own mixture is uniform, day by day
    for t in range(pred.n_days):
        u = pred.select(np.full(5000, t)).cdf(draws[:5000, t])
        assert stats.kstest(u, "uniform").pvalue > 1e-3
    np.testing.assert_array_equal(pred.sample(10, seed=1), pred.sample(10, seed=1))


def test_sampling_skips_zero_weight_components():
    pred = LocationScaleMixture([[0.0, 1.0, 0.0]], [[-100.0, 0.0, 100.0]], 1.0, np.inf, dates(1))
    draws = pred.sample(5000, seed=0)
    assert np.all(np.abs(draws) < 10)


# --------------------------------------------------------------------------------------
# CRPS
# --------------------------------------------------------------------------------------


def crps_integral(pred, t, y):
    """Brute force: quad of (F(x) - 1{x >= y})^2 on the mixture's own CDF (scipy.stats)."""
    day = [
        scipy_component(pred.loc[t, c], pred.scale[t, c], pred.df[t, c])
        for c in range(pred.n_components)
    ]

    def cdf(x):
        return sum(w * comp.cdf(x) for w, comp in zip(pred.weights[t], day))

    def sf(x):
        return sum(w * comp.sf(x) for w, comp in zip(pred.weights[t], day))

    kw = {"limit": 500, "epsabs": 1e-13, "epsrel": 1e-11}
    return (
        integrate.quad(lambda x: cdf(x) ** 2, -np.inf, y, **kw)[0]
        + integrate.quad(lambda x: sf(x) ** 2, y, np.inf, **kw)[0]
    )


def test_crps_matches_the_crps_integral():
    pred = random_predictive(n=8, c=4, seed=6)
    y = np.random.default_rng(7).normal(0, 2, 8)
    got = pred.crps(y)
    ref = [crps_integral(pred, t, y[t]) for t in range(8)]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-8)


def test_crps_of_single_components_is_the_closed_form():
    y = np.array([0.3, -2.0, 4.0])
    normal = LocationScaleMixture.normal([0.0, 1.0, 2.0], [1.0, 2.0, 0.5], dates(3))
    np.testing.assert_allclose(normal.crps(y), sc.crps_normal(y, [0.0, 1.0, 2.0], [1.0, 2.0, 0.5]))
    student = LocationScaleMixture.student_t(3.0, [0.0, 1.0, 2.0], [1.0, 2.0, 0.5], dates(3))
    np.testing.assert_allclose(
        student.crps(y), sc.crps_student_t(y, 3.0, [0.0, 1.0, 2.0], [1.0, 2.0, 0.5])
    )


def test_crps_of_a_large_posterior_mixture_matches_normal_closed_form():
    # C = 600 Normal components (above the pairwise cut-off, so quadrature runs): against
    # the exact pairwise formula of Grimit et al. (2006).
    rng = np.random.default_rng(9)
    n, c = 5, 600
    w = rng.dirichlet(np.full(c, 3.0), n)
    mu, s = rng.normal(0, 0.2, (n, c)), np.exp(rng.normal(0, 0.3, (n, c)))
    pred = LocationScaleMixture(w, mu, s, np.inf, dates(n))
    y = rng.normal(0, 1.5, n)
    np.testing.assert_allclose(pred.crps(y), sc.crps_normal_mixture(y, w, mu, s), atol=1e-10)


# --------------------------------------------------------------------------------------
# construction, validation, selection
# --------------------------------------------------------------------------------------


def test_broadcasting_and_immutability():
    pred = LocationScaleMixture(
        np.full((3, 2), 0.5), [[0.0, 1.0]], 1.0, np.array([[4.0], [5.0], [np.inf]]), dates(3)
    )
    assert pred.loc.shape == pred.scale.shape == pred.df.shape == (3, 2)
    np.testing.assert_array_equal(pred.df[:, 1], [4.0, 5.0, np.inf])
    assert pred.n_days == 3 and pred.n_components == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        pred.loc = np.zeros((3, 2))
    with pytest.raises(ValueError):
        pred.weights[0, 0] = 1.0
    # weights within 1e-6 of summing to one are renormalized exactly
    almost = LocationScaleMixture([[0.3, 0.7 + 1e-8]], 0.0, 1.0, np.inf, dates(1))
    assert almost.weights.sum() == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"weights": [[0.5, 0.4]]}, "weights"),
        ({"weights": [[1.2, -0.2]]}, "weights"),
        ({"weights": [0.5, 0.5]}, "weights"),
        ({"scale": [[1.0, -1.0]]}, "scale"),
        ({"scale": [[1.0, 0.0]]}, "scale"),
        ({"loc": [[0.0, 1.0, 2.0]]}, "loc"),
        ({"loc": [[0.0, np.nan]]}, "loc"),
        ({"df": [[0.0, 3.0]]}, "df"),
        ({"df": [[np.nan, 3.0]]}, "df"),
        ({"dates": dates(2)}, "dates"),
    ],
)
def test_validation_names_the_field(kwargs, field):
    args = {"weights": [[0.5, 0.5]], "loc": 0.0, "scale": 1.0, "df": np.inf, "dates": dates(1)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"^{field}"):
        LocationScaleMixture(**args)


def test_concatenate_pads_components():
    a = LocationScaleMixture.normal([0.0, 1.0], [1.0, 2.0], dates(2))
    b = random_predictive(n=3, c=4, seed=8)
    both = LocationScaleMixture.concatenate([a, b])
    assert both.n_days == 5 and both.n_components == 4
    assert both.dates.equals(a.dates.append(b.dates))
    y = np.linspace(-1, 1, 5)
    np.testing.assert_allclose(both.log_prob(y), np.r_[a.log_prob(y[:2]), b.log_prob(y[2:])])
    np.testing.assert_allclose(both.crps(y), np.r_[a.crps(y[:2]), b.crps(y[2:])], atol=1e-12)
    np.testing.assert_allclose(both.variance(), np.r_[a.variance(), b.variance()])
    with pytest.raises(ValueError, match="parts"):
        LocationScaleMixture.concatenate([])


def test_select_by_mask_index_and_slice():
    pred = random_predictive(n=6, c=2, seed=9)
    mask = np.array([True, False, True, False, False, True])
    by_mask, by_index, by_slice = (
        pred.select(mask),
        pred.select([0, 2, 5]),
        pred.select(slice(0, 6, 2)),
    )
    np.testing.assert_array_equal(by_mask.weights, by_index.weights)
    assert by_mask.dates.equals(pred.dates[[0, 2, 5]])
    assert by_slice.dates.equals(pred.dates[[0, 2, 4]])
    assert pred.select(3).n_days == 1
    with pytest.raises(ValueError, match="mask"):
        pred.select(np.array([True, False]))


def test_y_must_have_one_value_per_day():
    pred = random_predictive(n=4, c=2, seed=10)
    with pytest.raises(ValueError, match="y"):
        pred.cdf(np.zeros(3))
    assert math.isfinite(pred.log_prob(0.0)[0])
