r"""Proper scoring rules, calibration tests and forecast comparisons.

Pure functions, numpy in and numpy (or a float, a dict, a DataFrame) out. The
predictive distributions of every forecaster are
:class:`~bayes_moe.evaluation.distributions.LocationScaleMixture` objects (``n`` days,
each a finite mixture of Normal and Student-t components); the functions that take
one (``predictive``) only use its ``log_prob``, ``cdf``, ``crps`` and ``interval``
methods.

Orientation
-----------
The **log score** is *positively* oriented (higher is better; nats per day). The
**CRPS** and the **interval score** are *negatively* oriented (lower is better; in the
units of ``y``). All three are strictly proper (the interval score is proper for the
pair of quantiles it scores).

Conventions
-----------
=========================  =============  ==================================================
argument / result          shape          meaning
=========================  =============  ==================================================
``y``                      ``(n,)``       realized values, one per day (broadcasts where
                                          the closed forms are elementwise)
``loc``, ``scale``, ``df`` ``(n,)``       one Normal / Student-t per day (``scale`` is the
                                          t scale, not its standard deviation)
``weights``, ``loc``,      ``(n, C)``     ``C`` mixture components per day; ``df = inf``
``scale``, ``df``                         marks a Normal component
``samples``                ``(m, n)``     ``m`` draws (an ensemble) for each of ``n`` days
``pit_values``             ``(n,)``       :math:`u_t = F_t(y_t)` in ``[0, 1]``
``score_a``, ``score_b``   ``(n,)``       per-day scores of two forecasters, same days
=========================  =============  ==================================================

The CRPS of every predictive family lives in :mod:`bayes_moe.evaluation.crps`
(closed forms, the quadrature for Student-t mixtures, the fair ensemble CRPS); its
functions are re-exported here.

References
----------
T. Gneiting and A. E. Raftery, "Strictly proper scoring rules, prediction, and
estimation", Journal of the American Statistical Association 102(477), 359-378, 2007.

J. Berkowitz, "Testing density forecasts, with applications to risk management",
Journal of Business & Economic Statistics 19(4), 465-474, 2001.

F. X. Diebold and R. S. Mariano, "Comparing predictive accuracy", Journal of Business &
Economic Statistics 13(3), 253-263, 1995.

W. K. Newey and K. D. West, "Automatic lag selection in covariance matrix estimation",
Review of Economic Studies 61(4), 631-653, 1994.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from bayes_moe.evaluation.crps import (
    _LOG_SQRT_2PI,
    crps_mixture,
    crps_normal,
    crps_normal_mixture,
    crps_sample,
    crps_student_t,
)

if TYPE_CHECKING:
    from bayes_moe.evaluation.distributions import LocationScaleMixture

__all__ = [
    "DEFAULT_METRICS",
    "berkowitz_test",
    "coverage",
    "coverage_curve",
    "crps_mixture",
    "crps_normal",
    "crps_normal_mixture",
    "crps_sample",
    "crps_student_t",
    "diebold_mariano",
    "interval_metric",
    "interval_score",
    "log_score",
    "pit",
    "pit_ks_test",
    "score_table",
    "summarize",
    "variance_correlation",
]


# --------------------------------------------------------------------------------------
# Log score
# --------------------------------------------------------------------------------------


def log_score(log_density) -> float:
    r"""Mean log score, in nats per day (positively oriented: higher is better).

    .. math:: \mathrm{LS} = \frac1n \sum_{t=1}^{n} \log p_t(y_t)

    Parameters
    ----------
    log_density : array_like, shape ``(n,)``
        Predictive log densities at the realized values (e.g.
        ``predictive.log_prob(y)``).

    Returns
    -------
    float
        The average; ``nan`` for an empty input.

    References
    ----------
    Gneiting and Raftery (2007), section 4.1 (the logarithmic score is the only local
    strictly proper scoring rule).
    """
    log_density = np.asarray(log_density, dtype=np.float64)
    if log_density.size == 0:
        return float("nan")
    return float(np.mean(log_density))


def interval_score(y, lower, upper, alpha) -> np.ndarray:
    r"""Interval score of central :math:`(1 - \alpha)` prediction intervals (lower is better).

    .. math::

        S_\alpha(l, u; y) = (u - l) + \frac{2}{\alpha} (l - y)\, \mathbb 1\{y < l\}
        + \frac{2}{\alpha} (y - u)\, \mathbb 1\{y > u\}.

    Parameters
    ----------
    y, lower, upper : array_like
        Broadcast together; ``lower <= upper``.
    alpha : float
        In ``(0, 1)``: 0.1 for a 90% interval.

    Returns
    -------
    ndarray

    References
    ----------
    Gneiting and Raftery (2007), eq. (43).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    y, lower, upper = (np.asarray(a, dtype=np.float64) for a in (y, lower, upper))
    if np.any(lower > upper):
        raise ValueError("lower must be <= upper")
    below = np.maximum(lower - y, 0.0)
    above = np.maximum(y - upper, 0.0)
    return (upper - lower) + (2.0 / alpha) * (below + above)


def coverage(y, lower, upper) -> float:
    r"""Empirical coverage: the share of days with :math:`l_t \le y_t \le u_t`.

    .. math:: \hat c = \frac1n \sum_t \mathbb 1\{l_t \le y_t \le u_t\}

    Parameters
    ----------
    y, lower, upper : array_like, shape ``(n,)``

    Returns
    -------
    float
        ``nan`` for no days.

    References
    ----------
    P. F. Christoffersen, "Evaluating interval forecasts", International Economic
    Review 39(4), 841-862, 1998 (coverage as the first check of interval forecasts).
    """
    y, lower, upper = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (y, lower, upper)))
    if y.size == 0:
        return float("nan")
    return float(np.mean((y >= lower) & (y <= upper)))


_DEFAULT_LEVELS = np.round(np.arange(5, 100) / 100.0, 2)  # 0.05, 0.06, ..., 0.99


def coverage_curve(predictive: LocationScaleMixture, y, levels=None) -> pd.DataFrame:
    r"""Empirical coverage of central intervals against their nominal level.

    The central interval of level :math:`L` is
    :math:`[F_t^{-1}(\tfrac{1 - L}{2}), F_t^{-1}(\tfrac{1 + L}{2})]`; for a continuous,
    strictly increasing :math:`F_t` it holds :math:`y_t` exactly when the PIT value
    :math:`u_t = F_t(y_t)` lies in :math:`[\tfrac{1-L}{2}, \tfrac{1+L}{2}]`, which is how
    it is computed here (one CDF evaluation per day, no quantiles):

    .. math:: \hat c(L) = \frac1n \sum_t \mathbb 1\{|u_t - \tfrac12| \le \tfrac L2\}.

    A calibrated forecast gives :math:`\hat c(L) \approx L` at every level.

    Parameters
    ----------
    predictive : LocationScaleMixture
        ``n`` days.
    y : array_like, shape ``(n,)``
    levels : array_like, optional
        Nominal levels in ``(0, 1)``; by default ``0.05, 0.06, ..., 0.99``.

    Returns
    -------
    DataFrame
        Columns ``nominal`` and ``empirical``, one row per level.

    References
    ----------
    Gneiting, Balabdaoui and Raftery, "Probabilistic forecasts, calibration and
    sharpness", JRSS B 69(2), 243-268, 2007 (calibration and its diagnostics).
    """
    levels = _DEFAULT_LEVELS if levels is None else np.asarray(levels, dtype=np.float64)
    if np.any((levels <= 0) | (levels >= 1)):
        raise ValueError("levels must lie in (0, 1)")
    u = pit(predictive, y)
    inside = np.abs(u[:, None] - 0.5) <= 0.5 * levels[None, :]
    empirical = inside.mean(axis=0) if u.size else np.full(levels.shape, np.nan)
    return pd.DataFrame({"nominal": levels, "empirical": empirical})


def _as_y(predictive, y):
    """``y`` as a float array of length ``n``; a dated Series must match the dates."""
    if isinstance(y, pd.Series) and isinstance(y.index, pd.DatetimeIndex):
        if not y.index.equals(predictive.dates):
            raise ValueError("y: its dates differ from the predictive's dates")
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (predictive.n_days,):
        raise ValueError(f"y: expected shape ({predictive.n_days},), got {y.shape}")
    return y


def pit(predictive: LocationScaleMixture, y) -> np.ndarray:
    r"""Probability integral transform :math:`u_t = F_t(y_t)`.

    If the forecasts are the true conditional distributions, the :math:`u_t` are iid
    uniform on ``[0, 1]`` (Diebold, Gunther and Tay 1998).

    Parameters
    ----------
    predictive : LocationScaleMixture
        ``n`` days.
    y : array_like, shape ``(n,)``

    Returns
    -------
    ndarray, shape ``(n,)``

    References
    ----------
    F. X. Diebold, T. A. Gunther and A. S. Tay, "Evaluating density forecasts with
    applications to financial risk management", International Economic Review 39(4),
    863-883, 1998.
    """
    return np.asarray(predictive.cdf(_as_y(predictive, y)), dtype=np.float64)


def _check_pit(pit_values):
    u = np.asarray(pit_values, dtype=np.float64).ravel()
    if np.any(~np.isfinite(u)) or np.any((u < 0) | (u > 1)):
        raise ValueError("pit_values must lie in [0, 1]")
    return u


def pit_ks_test(pit_values) -> tuple[float, float]:
    r"""Kolmogorov-Smirnov test of uniformity of PIT values.

    .. math:: D_n = \sup_u |\hat G_n(u) - u|,

    with :math:`\hat G_n` the empirical CDF of the PIT values; ``scipy.stats.kstest``
    against ``uniform(0, 1)``, exact p-value for small samples. It tests uniformity
    only (not independence; see :func:`berkowitz_test`).

    Parameters
    ----------
    pit_values : array_like, shape ``(n,)``

    Returns
    -------
    statistic, pvalue : float

    References
    ----------
    Diebold, Gunther and Tay (1998).
    """
    u = _check_pit(pit_values)
    result = stats.kstest(u, "uniform")
    return float(result.statistic), float(result.pvalue)


def _ar1_exact_profile(z, rho):
    """Profile log likelihood of a stationary Gaussian AR(1) at ``rho``; also mu, sigma^2."""
    n = z.size
    root = math.sqrt(1.0 - rho * rho)
    r = np.concatenate([[root * z[0]], z[1:] - rho * z[:-1]])
    d = np.concatenate([[root], np.full(n - 1, 1.0 - rho)])
    mu = float(r @ d / (d @ d))
    sigma2 = float(np.sum((r - mu * d) ** 2) / n)
    loglik = -0.5 * n * (math.log(2.0 * math.pi * sigma2) + 1.0) + math.log(root)
    return loglik, mu, sigma2


def berkowitz_test(pit_values, *, likelihood="exact", eps=1e-10) -> dict:
    r"""Berkowitz (2001) likelihood-ratio test of iid N(0, 1) normalized PIT values.

    The PIT values are clipped to :math:`[\epsilon, 1 - \epsilon]` and mapped to
    :math:`z_t = \Phi^{-1}(u_t)`, which are iid :math:`\mathcal N(0, 1)` under correct
    calibration. The alternative is a Gaussian AR(1),

    .. math::

        z_t - \mu = \rho (z_{t-1} - \mu) + \varepsilon_t, \qquad
        \varepsilon_t \sim \mathcal N(0, \sigma^2),

    and :math:`\mathrm{LR} = 2\,[\ell(\hat\mu, \hat\sigma, \hat\rho) - \ell(0, 1, 0)]
    \sim \chi^2_3` under the null.

    With ``likelihood="exact"`` (the default, as in Berkowitz 2001), :math:`\ell` is
    the exact Gaussian likelihood with the stationary distribution
    :math:`\mathcal N(\mu, \sigma^2 / (1 - \rho^2))` for :math:`z_1`, maximized by
    profiling (for fixed :math:`\rho`, :math:`\hat\mu` is a GLS mean and
    :math:`\hat\sigma^2 = Q / n`) and a bounded Brent search over :math:`\rho`. With
    ``likelihood="conditional"`` it conditions on :math:`z_1` (closed form: OLS of
    :math:`z_t` on :math:`(1, z_{t-1})`, :math:`\hat\sigma^2 = \mathrm{RSS} / (n - 1)`),
    and the restricted likelihood uses :math:`z_2, \dots, z_n` too.

    Parameters
    ----------
    pit_values : array_like, shape ``(n,)``
        In ``[0, 1]``, in time order; ``n >= 3``.
    likelihood : {"exact", "conditional"}
    eps : float
        The clip away from 0 and 1 (``Phi^{-1}(1e-10) = -6.36``).

    Returns
    -------
    dict
        ``lr``, ``pvalue``, ``mu``, ``sigma``, ``rho`` (the unrestricted MLEs) and
        ``n``.

    References
    ----------
    Berkowitz (2001), section 3, eq. (6)-(7); J. D. Hamilton, *Time Series Analysis*,
    Princeton, 1994, section 5.2 (exact and conditional AR(1) likelihoods).
    """
    if likelihood not in ("exact", "conditional"):
        raise ValueError(f"likelihood must be 'exact' or 'conditional', got {likelihood!r}")
    u = _check_pit(pit_values)
    if u.size < 3:
        raise ValueError("berkowitz_test needs at least 3 PIT values")
    z = special.ndtri(np.clip(u, eps, 1.0 - eps))
    n = z.size
    if likelihood == "conditional":
        x = np.column_stack([np.ones(n - 1), z[:-1]])
        (c, rho), *_ = np.linalg.lstsq(x, z[1:], rcond=None)
        sigma2 = float(np.sum((z[1:] - x @ np.array([c, rho])) ** 2) / (n - 1))
        loglik = -0.5 * (n - 1) * (math.log(2.0 * math.pi * sigma2) + 1.0)
        restricted = float(np.sum(-0.5 * z[1:] ** 2 - _LOG_SQRT_2PI))
        mu = float(c / (1.0 - rho)) if rho != 1.0 else float("nan")
        rho = float(rho)
    else:
        bound = 1.0 - 1e-9
        grid = np.linspace(-0.99, 0.99, 199)
        values = [_ar1_exact_profile(z, r)[0] for r in grid]
        k = int(np.argmax(values))
        lo, hi = (-bound if k == 0 else grid[k - 1]), (bound if k == grid.size - 1 else grid[k + 1])
        best = optimize.minimize_scalar(
            lambda r: -_ar1_exact_profile(z, r)[0],
            bounds=(lo, hi),
            method="bounded",
            options={"xatol": 1e-12},
        )
        rho = float(best.x)
        loglik, mu, sigma2 = _ar1_exact_profile(z, rho)
        restricted = float(np.sum(-0.5 * z**2 - _LOG_SQRT_2PI))
    lr = max(2.0 * (loglik - restricted), 0.0)
    return {
        "lr": lr,
        "pvalue": float(stats.chi2.sf(lr, 3)),
        "mu": mu,
        "sigma": math.sqrt(sigma2),
        "rho": rho,
        "n": n,
    }


def newey_west_lag(n: int, horizon: int = 1) -> int:
    r"""Truncation lag for ``n`` daily score differences of ``horizon``-day forecasts.

    :math:`L = \max(\lfloor 4 (n / 100)^{2/9} \rfloor,\, h - 1)`: Newey and West's
    (1994) rule, and at least :math:`h - 1` because the realised ``h``-day sums of
    consecutive origins overlap in :math:`h - 1` days, so their score differences are
    autocorrelated to that lag by construction.
    """
    return max(int(math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0))), int(horizon) - 1)


def diebold_mariano(score_a, score_b, *, lag=None) -> dict:
    r"""Diebold-Mariano test of equal expected scores, with a Newey-West standard error.

    With :math:`d_t = s^a_t - s^b_t` and :math:`\bar d` its mean over :math:`n` days,

    .. math::

        \hat\gamma_k = \frac1n \sum_{t=k+1}^{n} (d_t - \bar d)(d_{t-k} - \bar d),
        \qquad
        \widehat{\mathrm{se}}^2 = \frac1n \Big[\hat\gamma_0
            + 2 \sum_{k=1}^{L} \Big(1 - \frac{k}{L + 1}\Big) \hat\gamma_k\Big],

        t = \bar d / \widehat{\mathrm{se}}, \qquad p = 2\,\Phi(-|t|),

    the Bartlett-kernel (Newey-West) long-run variance with the default lag
    :math:`L = \lfloor 4 (n / 100)^{2/9} \rfloor` (Newey and West 1994). It equals
    statsmodels' ``OLS(d, ones).fit(cov_type="HAC", cov_kwds={"maxlags": L,
    "use_correction": False})`` standard error. The sign of ``mean_diff`` says which
    forecaster is better: negative means ``a`` has the lower average score (better for
    the CRPS and the interval score, *worse* for the log score).

    Parameters
    ----------
    score_a, score_b : array_like, shape ``(n,)``
        Per-day scores of two forecasters on the same days (finite).
    lag : int, optional
        Truncation lag :math:`L \ge 0`.

    Returns
    -------
    dict
        ``mean_diff``, ``nw_se``, ``t_stat``, ``pvalue``, ``lag``, ``n``.

    References
    ----------
    Diebold and Mariano (1995); W. K. Newey and K. D. West, "A simple, positive
    semi-definite, heteroskedasticity and autocorrelation consistent covariance
    matrix", Econometrica 55(3), 703-708, 1987; Newey and West (1994) for the lag.
    """
    a = np.asarray(score_a, dtype=np.float64).ravel()
    b = np.asarray(score_b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"score_a and score_b differ in length: {a.size} vs {b.size}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("scores must be finite")
    n = a.size
    if n < 2:
        raise ValueError("diebold_mariano needs at least 2 days")
    if lag is None:
        lag = newey_west_lag(n)
    lag = int(lag)
    if not 0 <= lag < n:
        raise ValueError(f"lag must be in [0, n), got {lag}")
    d = a - b
    mean = float(d.mean())
    u = d - mean
    var = float(u @ u) / n
    for k in range(1, lag + 1):
        var += 2.0 * (1.0 - k / (lag + 1.0)) * float(u[k:] @ u[:-k]) / n
    se = math.sqrt(max(var, 0.0) / n)
    if se > 0:
        t = mean / se
    else:
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    return {
        "mean_diff": mean,
        "nw_se": se,
        "t_stat": t,
        "pvalue": float(2.0 * special.ndtr(-abs(t))),
        "lag": lag,
        "n": n,
    }


def _log_score_column(predictive: LocationScaleMixture, y: np.ndarray) -> np.ndarray:
    return predictive.log_prob(y)


def _crps_column(predictive: LocationScaleMixture, y: np.ndarray) -> np.ndarray:
    return predictive.crps(y)


def _pit_column(predictive: LocationScaleMixture, y: np.ndarray) -> np.ndarray:
    return predictive.cdf(y)


def interval_metric(level: int) -> Callable:
    r"""Per-day metric of the central ``level`` % interval from the exact quantiles.

    Returns a function ``(predictive, y) -> dict`` with the columns ``lower_{level}``,
    ``upper_{level}``, ``interval_score_{level}`` (:func:`interval_score`,
    :math:`\alpha = 1 - level/100`) and ``covered_{level}`` (bool).
    """

    def metric(predictive: LocationScaleMixture, y: np.ndarray) -> dict:
        lower, upper = predictive.interval(level / 100.0)
        return {
            f"lower_{level}": lower,
            f"upper_{level}": upper,
            f"interval_score_{level}": interval_score(y, lower, upper, 1.0 - level / 100.0),
            f"covered_{level}": (y >= lower) & (y <= upper),
        }

    metric.__name__ = f"interval_{level}"
    return metric


def _moments_column(predictive: LocationScaleMixture, y: np.ndarray) -> dict:
    return {"mean": predictive.mean(), "variance": predictive.variance()}


#: The per-day metrics of :func:`score_table` and of a backtest, by name, in the spirit
#: of ``pyro.contrib.forecast.DEFAULT_METRICS``. A metric is ``f(predictive, y)`` with
#: ``y`` an ``(n,)`` array; it returns an ``(n,)`` array (one column, named by its key)
#: or a dict of such arrays (one column each). :func:`summarize` and the reports read
#: the columns these produce; pass your own dict to add or drop metrics.
DEFAULT_METRICS: dict[str, Callable] = {
    "log_score": _log_score_column,
    "crps": _crps_column,
    "pit": _pit_column,
    "interval_90": interval_metric(90),
    "interval_95": interval_metric(95),
    "moments": _moments_column,
}


def score_table(
    predictive: LocationScaleMixture, y, metrics: Mapping[str, Callable] | None = None
) -> pd.DataFrame:
    r"""Per-day scores of a predictive against realized values.

    With the default ``metrics`` (:data:`DEFAULT_METRICS`) the columns are: ``y``;
    ``log_score`` (:math:`\log p_t(y_t)`, higher is better); ``crps`` (lower is better);
    ``pit`` (:math:`F_t(y_t)`); ``lower_90``, ``upper_90``, ``interval_score_90``,
    ``covered_90`` and the same at 95 (central intervals from the exact quantiles; the
    interval score is lower-is-better); ``mean`` and ``variance`` of the predictive.

    Parameters
    ----------
    predictive : LocationScaleMixture
        ``n`` days.
    y : array_like, shape ``(n,)``
        Realized values; a Series with a DatetimeIndex must have the predictive's dates.
    metrics : mapping of str to callable, optional
        Per-day metrics (:data:`DEFAULT_METRICS` describes the protocol).

    Returns
    -------
    DataFrame
        Indexed by ``predictive.dates``.

    Raises
    ------
    ValueError
        A metric returns a column of the wrong length, or a column name twice.

    References
    ----------
    Gneiting and Raftery (2007), eq. (20), (43); Diebold, Gunther and Tay (1998).
    """
    y = _as_y(predictive, y)
    table = {"y": y}
    for name, metric in (DEFAULT_METRICS if metrics is None else metrics).items():
        value = metric(predictive, y)
        columns = value if isinstance(value, Mapping) else {name: value}
        for column, values in columns.items():
            values = np.asarray(values)
            if column in table:
                raise ValueError(f"metric {name!r} writes column {column!r} twice")
            if values.shape != y.shape:
                raise ValueError(
                    f"metric {name!r} returned shape {values.shape} for column {column!r}; "
                    f"expected one value per day {y.shape}"
                )
            table[column] = values
    return pd.DataFrame(table, index=pd.DatetimeIndex(predictive.dates, name="date"))


#: Columns of a :func:`score_table` that :func:`summarize` does not average.
_NOT_AVERAGED = frozenset({"y", "pit", "mean", "variance"}) | {
    f"{side}_{level}" for side in ("lower", "upper") for level in (90, 95)
}


def summarize(table: pd.DataFrame) -> dict:
    """Aggregate a :func:`score_table` into one row of numbers.

    Returns
    -------
    dict
        ``n_days``; ``log_score`` (mean, nats per day, higher is better); ``crps``,
        ``interval_score_90``, ``interval_score_95`` (means, lower is better);
        ``coverage_90``, ``coverage_95`` (shares of days covered); ``pit_ks_statistic``,
        ``pit_ks_pvalue`` (:func:`pit_ks_test`); ``berkowitz_lr``,
        ``berkowitz_pvalue`` (:func:`berkowitz_test`, exact likelihood; ``nan`` for
        fewer than 3 days); ``variance_correlation``, the Pearson correlation of the
        predictive variance with the squared outcome :math:`y_t^2` (how well the
        forecast tracks volatility; ``nan`` for fewer than 3 days, a non-finite
        variance, or a table without the ``variance`` column). A table made with
        other metrics gives the entries its columns allow, plus the mean of every
        other numeric column under its own name.

    References
    ----------
    Gneiting and Raftery (2007); Berkowitz (2001).
    """
    n = len(table)
    out: dict = {"n_days": n}

    def mean(column):
        return float(table[column].mean()) if n else float("nan")

    renamed = {"covered_90": "coverage_90", "covered_95": "coverage_95"}
    for column in table.columns:
        numeric = pd.api.types.is_numeric_dtype(table[column]) or table[column].dtype == bool
        if column not in _NOT_AVERAGED and numeric:
            out[renamed.get(column, column)] = mean(column)
    if "pit" in table:
        if n:
            out["pit_ks_statistic"], out["pit_ks_pvalue"] = pit_ks_test(table["pit"].to_numpy())
        else:
            out["pit_ks_statistic"] = out["pit_ks_pvalue"] = float("nan")
        if n >= 3:
            berk = berkowitz_test(table["pit"].to_numpy())
            out["berkowitz_lr"], out["berkowitz_pvalue"] = berk["lr"], berk["pvalue"]
        else:
            out["berkowitz_lr"] = out["berkowitz_pvalue"] = float("nan")
    out["variance_correlation"] = variance_correlation(table)
    return out


def variance_correlation(table: pd.DataFrame) -> float:
    r"""Pearson correlation of a :func:`score_table`'s ``variance`` with :math:`y_t^2`."""
    if len(table) < 3 or "variance" not in table:
        return float("nan")
    variance = table["variance"].to_numpy(dtype=float)
    squared = table["y"].to_numpy(dtype=float) ** 2
    if not np.all(np.isfinite(variance)) or variance.std() == 0 or squared.std() == 0:
        return float("nan")
    return float(np.corrcoef(variance, squared)[0, 1])
