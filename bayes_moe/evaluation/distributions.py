r"""Per-day predictive distributions as finite mixtures of Normal and Student-t components.

Every forecaster in a backtest (the mixture of experts and every baseline) hands its
one-step predictive distributions to the scoring code in this one representation:
for each of ``n`` days a mixture of ``C`` location-scale components,

.. math::

    p_t(y) = \sum_{c=1}^{C} \frac{w_{t,c}}{\sigma_{t,c}}\,
        f_{\nu_{t,c}}\Big(\frac{y - \mu_{t,c}}{\sigma_{t,c}}\Big),
    \qquad
    F_t(y) = \sum_{c=1}^{C} w_{t,c}\, F_{\nu_{t,c}}\Big(\frac{y - \mu_{t,c}}{\sigma_{t,c}}\Big),

with :math:`f_\nu, F_\nu` the standard Student-t density and distribution function and
:math:`\nu = \infty` meaning a Normal component. A GARCH-t forecast is one Student-t
component per day, a Markov-switching regression a Normal mixture over regimes, the
Bayesian mixture of experts a mixture over posterior draws and experts (``C`` of
several hundred).

Conventions
-----------
==========================  ============  ==============================================
attribute / argument        shape         meaning
==========================  ============  ==============================================
``weights``                 ``(n, C)``    :math:`w_{t,c} \ge 0`, rows sum to one
``loc``                     ``(n, C)``    :math:`\mu_{t,c}`
``scale``                   ``(n, C)``    :math:`\sigma_{t,c} > 0` (the t scale, not its
                                          standard deviation)
``df``                      ``(n, C)``    :math:`\nu_{t,c} > 0`; ``np.inf`` for Normal
``dates``                   ``n``         dates of the realized values being forecast
``y``                       ``(n,)``      one realized value per day
``q``                       ``()``/(Q,)   probability levels
==========================  ============  ==============================================

Everything is float64 numpy and exact: densities by log-sum-exp over components, the
CDF from ``scipy.special`` (``ndtr``, ``stdtr``), quantiles by safeguarded Newton
iterations on the CDF, moments in closed form, the CRPS by
:func:`bayes_moe.evaluation.scoring.crps_mixture` (closed form where one exists,
adaptive spectral quadrature otherwise). No method loops over days in Python.

References
----------
G. McLachlan and D. Peel, *Finite Mixture Models*, Wiley, 2000 (mixture moments).

T. Gneiting and A. E. Raftery, "Strictly proper scoring rules, prediction, and
estimation", JASA 102(477), 359-378, 2007.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from bayes_moe.evaluation.crps import (
    _std_cdf,
    _std_logpdf,
    _std_pdf,
    _std_ppf,
    crps_mixture,
)

__all__ = ["LocationScaleMixture"]

_WEIGHT_TOL = 1e-6  # rows of weights must sum to 1 within this (then renormalized)
_HALLEY_ACCEPT = 1e-6  # a Halley step this small (relative to the scale) is final
_MAX_ITER = 200
_CHUNK_ELEMENTS = 2_000_000


def _frozen(a):
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class LocationScaleMixture:
    r"""Predictive distributions of ``n`` days, each a mixture of ``C`` Normal / t components.

    Parameters
    ----------
    weights : array_like, shape ``(n, C)``
        Non-negative mixture weights; each row sums to one (to 1e-6; rows are
        renormalized exactly). Components of zero weight are padding and ignored.
    loc : array_like, broadcastable to ``(n, C)``
        Component locations.
    scale : array_like, broadcastable to ``(n, C)``
        Component scales, ``> 0`` (for a t component the scale, not the standard
        deviation, which is :math:`\sigma\sqrt{\nu / (\nu - 2)}`).
    df : array_like, broadcastable to ``(n, C)``
        Degrees of freedom, ``> 0``; ``np.inf`` for a Normal component (e.g. an
        ``(n, 1)`` or scalar array broadcasts).
    dates : DatetimeIndex-like, length ``n``
        The dates of the realized values being forecast.

    Raises
    ------
    ValueError
        Naming the field, for a wrong shape, weights that are negative or do not sum
        to one, a non-positive scale, a non-positive or NaN df, non-finite values, or
        a number of dates different from ``n``.

    Notes
    -----
    The arrays are stored as read-only float64 copies of shape ``(n, C)``; the object
    is immutable. Equality is identity (``eq=False``): compare arrays explicitly.
    """

    weights: np.ndarray
    loc: np.ndarray
    scale: np.ndarray
    df: np.ndarray
    dates: pd.DatetimeIndex

    def __post_init__(self):
        weights = np.asarray(self.weights, dtype=np.float64)
        if weights.ndim != 2 or weights.shape[1] < 1:
            raise ValueError(f"weights: expected a 2-D array (n, C), got shape {weights.shape}")
        shape = weights.shape
        arrays = {"weights": weights}
        for name in ("loc", "scale", "df"):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            try:
                arrays[name] = np.broadcast_to(value, shape)
            except ValueError:
                raise ValueError(
                    f"{name}: shape {value.shape} does not broadcast to the weights' shape {shape}"
                ) from None
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("weights: must be finite and >= 0")
        total = weights.sum(axis=1)
        deviation = float(np.max(np.abs(total - 1.0))) if total.size else 0.0
        if deviation > _WEIGHT_TOL:
            raise ValueError(f"weights: rows must sum to 1 (largest deviation {deviation:.3g})")
        arrays["weights"] = weights / total[:, None]
        if not np.all(np.isfinite(arrays["loc"])):
            raise ValueError("loc: must be finite")
        if not np.all(np.isfinite(arrays["scale"])) or np.any(arrays["scale"] <= 0):
            raise ValueError("scale: must be finite and > 0")
        if np.any(np.isnan(arrays["df"])) or np.any(arrays["df"] <= 0):
            raise ValueError("df: must be > 0 (np.inf for a Normal component)")
        try:
            dates = pd.DatetimeIndex(self.dates)
        except (TypeError, ValueError) as err:
            raise ValueError(f"dates: cannot be read as dates ({err})") from None
        if len(dates) != shape[0]:
            raise ValueError(f"dates: expected {shape[0]} dates (one per day), got {len(dates)}")
        for name, value in arrays.items():
            object.__setattr__(self, name, _frozen(value))
        object.__setattr__(self, "dates", dates)

    def __repr__(self) -> str:
        span = f", {self.dates[0].date()}..{self.dates[-1].date()}" if self.n_days else ""
        return f"LocationScaleMixture(n_days={self.n_days}, n_components={self.n_components}{span})"

    # ----------------------------------------------------------------------------------
    # constructors
    # ----------------------------------------------------------------------------------

    @classmethod
    def normal(cls, loc, scale, dates) -> LocationScaleMixture:
        """One Normal component per day.

        Parameters
        ----------
        loc, scale : array_like, shape ``(n,)`` (scalars broadcast)
        dates : DatetimeIndex-like, length ``n``
        """
        n = len(pd.DatetimeIndex(dates))
        loc, scale = (_day_vector(a, n, name) for a, name in ((loc, "loc"), (scale, "scale")))
        # df is array_like (a scalar broadcasts), made an array in __post_init__.
        return cls(np.ones((n, 1)), loc[:, None], scale[:, None], np.inf, dates)  # type: ignore[arg-type]

    @classmethod
    def student_t(cls, df, loc, scale, dates) -> LocationScaleMixture:
        """One Student-t component per day.

        Parameters
        ----------
        df : float or array_like, shape ``(n,)``
            Degrees of freedom (``np.inf`` gives a Normal).
        loc, scale : array_like, shape ``(n,)``
            ``scale`` is the t scale, not the standard deviation.
        dates : DatetimeIndex-like, length ``n``
        """
        n = len(pd.DatetimeIndex(dates))
        df, loc, scale = (
            _day_vector(a, n, name) for a, name in ((df, "df"), (loc, "loc"), (scale, "scale"))
        )
        return cls(np.ones((n, 1)), loc[:, None], scale[:, None], df[:, None], dates)

    @classmethod
    def concatenate(cls, parts: Sequence[LocationScaleMixture]) -> LocationScaleMixture:
        """Stack mixtures along days (e.g. the folds of a backtest), in the given order.

        Parts with fewer components are padded with zero-weight components
        (``loc = 0``, ``scale = 1``, ``df = inf``), which change nothing.
        """
        parts = list(parts)
        if not parts:
            raise ValueError("parts: need at least one LocationScaleMixture")
        width = max(p.n_components for p in parts)

        def pad(a, fill):
            return np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill)

        stacked = {
            name: np.concatenate([pad(getattr(p, name), fill) for p in parts], axis=0)
            for name, fill in (("weights", 0.0), ("loc", 0.0), ("scale", 1.0), ("df", np.inf))
        }
        dates = parts[0].dates.append([p.dates for p in parts[1:]]) if len(parts) > 1 else None
        return cls(**stacked, dates=parts[0].dates if dates is None else dates)

    # ----------------------------------------------------------------------------------
    # shape
    # ----------------------------------------------------------------------------------

    @property
    def n_days(self) -> int:
        """``n``, the number of days."""
        return self.weights.shape[0]

    @property
    def n_components(self) -> int:
        """``C``, the number of components per day (zero-weight padding included)."""
        return self.weights.shape[1]

    def select(self, mask_or_index) -> LocationScaleMixture:
        """The days picked by a boolean mask of length ``n``, integer positions or a slice."""
        if not isinstance(mask_or_index, slice):
            mask_or_index = np.asarray(mask_or_index)
            if mask_or_index.dtype == bool and mask_or_index.shape != (self.n_days,):
                raise ValueError(
                    f"mask: expected {self.n_days} booleans, got shape {mask_or_index.shape}"
                )
        index = np.atleast_1d(np.arange(self.n_days)[mask_or_index])
        return LocationScaleMixture(
            self.weights[index],
            self.loc[index],
            self.scale[index],
            self.df[index],
            self.dates[index],
        )

    # ----------------------------------------------------------------------------------
    # densities and probabilities
    # ----------------------------------------------------------------------------------

    def _y(self, y):
        y = np.asarray(y, dtype=np.float64)
        try:
            return np.broadcast_to(y, (self.n_days,))
        except ValueError:
            raise ValueError(f"y: expected shape ({self.n_days},), got {y.shape}") from None

    def _z(self, y):
        return (self._y(y)[:, None] - self.loc) / self.scale

    def log_prob(self, y) -> np.ndarray:
        r"""Log density at ``y``: :math:`\log \sum_c w_c f_c(y)` (log-sum-exp), shape ``(n,)``."""
        component = _std_logpdf(self._z(y), self.df) - np.log(self.scale)
        with np.errstate(divide="ignore"):
            log_w = np.log(self.weights)
        return special.logsumexp(component + log_w, axis=1)

    def cdf(self, y) -> np.ndarray:
        r"""CDF, the PIT: :math:`\sum_c w_c F_{\nu_c}((y_t - \mu_c)/\sigma_c)`, shape ``(n,)``."""
        return np.clip(np.sum(self.weights * _std_cdf(self._z(y), self.df), axis=1), 0.0, 1.0)

    def quantile(self, q) -> np.ndarray:
        r"""Quantiles :math:`F_t^{-1}(q)`, exact to about 1e-15 relative.

        The mixture quantile lies between the smallest and the largest component
        quantile; from the weighted mean of the component quantiles, safeguarded Newton
        steps (bisection whenever a step leaves the bracket) solve :math:`F_t(x) = q`
        for :math:`q \le 1/2` and :math:`1 - F_t(x) = 1 - q` above (so both tails keep
        their relative precision), vectorized over days and levels.

        Parameters
        ----------
        q : float or array_like, shape ``(Q,)``
            Levels in ``[0, 1]`` (0 and 1 give ``-inf`` and ``inf``).

        Returns
        -------
        ndarray
            Shape ``(n,)`` for a scalar ``q``, ``(n, Q)`` for an array.
        """
        q_in = np.asarray(q, dtype=np.float64)
        if q_in.ndim > 1:
            raise ValueError(f"q: expected a scalar or a 1-D array, got shape {q_in.shape}")
        levels = np.atleast_1d(q_in)
        if np.any(np.isnan(levels)) or np.any((levels < 0) | (levels > 1)):
            raise ValueError("q: levels must lie in [0, 1]")
        n, n_q = self.n_days, levels.size
        out = np.empty((n, n_q))
        day = np.repeat(np.arange(n), n_q)
        level = np.tile(levels, n)
        flat = out.reshape(-1)
        flat[level == 0] = -np.inf
        flat[level == 1] = np.inf
        inner = np.nonzero((level > 0) & (level < 1))[0]
        step = max(1, _CHUNK_ELEMENTS // self.n_components)
        for i in range(0, inner.size, step):
            idx = inner[i : i + step]
            flat[idx] = self._solve_quantile(day[idx], level[idx])
        return out[:, 0] if q_in.ndim == 0 else out

    def _solve_quantile(self, day, level):
        """Solve ``F_day(x) = level`` for flat problems (one day and level each)."""
        w, mu, sig, nu = self.weights[day], self.loc[day], self.scale[day], self.df[day]
        active = w > 0
        upper = level > 0.5
        target = np.where(upper, 1.0 - level, level)
        comp_q = mu + sig * _std_ppf(np.broadcast_to(level[:, None], w.shape), nu)
        lo = np.min(np.where(active, comp_q, np.inf), axis=1)
        hi = np.max(np.where(active, comp_q, -np.inf), axis=1)
        x = np.clip(np.sum(w * comp_q, axis=1), lo, hi)
        scale = np.sum(w * sig, axis=1)
        todo = np.arange(day.size)
        for _ in range(_MAX_ITER):
            wt, mt, st, nt, xt = w[todo], mu[todo], sig[todo], nu[todo], x[todo]
            z = (xt[:, None] - mt) / st
            up = upper[todo]
            # g = F(x) - level, from the lower or the upper tail (relative precision)
            side = np.sum(wt * _std_cdf(np.where(up[:, None], -z, z), nt), axis=1)
            g = np.where(up, target[todo] - side, side - target[todo])
            pdf = wt * _std_pdf(z, nt) / st
            dens = pdf.sum(axis=1)
            nu_safe = np.where(np.isfinite(nt), nt, 1.0)
            shape = np.where(np.isfinite(nt), (nu_safe + 1.0) / (nu_safe + z * z), 1.0)
            slope = -np.sum(pdf / st * z * shape, axis=1)  # F''(x)
            lo[todo] = np.where(g <= 0, xt, lo[todo])
            hi[todo] = np.where(g >= 0, xt, hi[todo])
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                step = 2.0 * g * dens / (2.0 * dens * dens - g * slope)  # Halley
            new = xt - step
            inside = np.isfinite(new) & (new >= lo[todo]) & (new <= hi[todo])
            new = np.where(inside, new, 0.5 * (lo[todo] + hi[todo]))
            # After a Halley step of relative size <= 1e-6 the error is O(1e-18).
            small = np.abs(step) <= _HALLEY_ACCEPT * scale[todo]
            converged = (g == 0) | (inside & small) | (hi[todo] - lo[todo] <= 4e-16 * scale[todo])
            x[todo] = np.where(g == 0, xt, new)
            todo = todo[~converged]
            if todo.size == 0:
                break
        return x

    def interval(self, prob) -> tuple[np.ndarray, np.ndarray]:
        """Central interval of probability ``prob``: the ``(1 -/+ prob) / 2`` quantiles.

        Returns
        -------
        lower, upper : ndarray, shape ``(n,)``
        """
        prob = float(prob)
        if not 0.0 < prob < 1.0:
            raise ValueError(f"prob must be in (0, 1), got {prob}")
        both = self.quantile(np.array([0.5 * (1.0 - prob), 0.5 * (1.0 + prob)]))
        return both[:, 0], both[:, 1]

    # ----------------------------------------------------------------------------------
    # moments
    # ----------------------------------------------------------------------------------

    def mean(self) -> np.ndarray:
        r"""Mean :math:`\sum_c w_c \mu_c`, shape ``(n,)``.

        ``nan`` where a weighted component has :math:`\nu \le 1` (no mean).
        """
        weighted = self.weights > 0
        undefined = np.any(weighted & (self.df <= 1), axis=1)
        return np.where(undefined, np.nan, np.sum(self.weights * self.loc, axis=1))

    def variance(self) -> np.ndarray:
        r"""Law of total variance, shape ``(n,)``.

        .. math::

            \mathrm{Var}_t = \sum_c w_c \Big[\sigma_c^2 \frac{\nu_c}{\nu_c - 2}
            + (\mu_c - m_t)^2\Big], \qquad m_t = \sum_c w_c \mu_c,

        (:math:`\sigma_c^2` for a Normal component); ``inf`` where a weighted component
        has :math:`\nu \le 2`.
        """
        weighted = self.weights > 0
        infinite = np.any(weighted & (self.df <= 2), axis=1)
        nu = np.where(np.isfinite(self.df) & (self.df > 2), self.df, np.inf)
        ratio = np.where(np.isfinite(nu), nu / np.where(np.isfinite(nu), nu - 2.0, 1.0), 1.0)
        m = np.sum(self.weights * self.loc, axis=1)
        var = np.sum(self.weights * (self.scale**2 * ratio + (self.loc - m[:, None]) ** 2), axis=1)
        return np.where(infinite, np.inf, var)

    # ----------------------------------------------------------------------------------
    # scores and draws
    # ----------------------------------------------------------------------------------

    def crps(self, y) -> np.ndarray:
        r"""Continuous ranked probability score at ``y`` (lower is better), shape ``(n,)``.

        .. math::

            \mathrm{CRPS}(F_t, y_t) = \int (F_t(x) - \mathbb 1\{x \ge y_t\})^2 dx
            = \mathbb E|X - y_t| - \tfrac12 \mathbb E|X - X'|.

        Closed form for days with one weighted component (Normal or t) and for Normal
        mixtures of up to 128 weighted components; adaptive spectral quadrature of
        :math:`\int F (1 - F)` otherwise (see
        :func:`bayes_moe.evaluation.scoring.crps_mixture`). Needs :math:`\nu > 1` for
        every weighted component.
        """
        return crps_mixture(self._y(y), self.weights, self.loc, self.scale, self.df)

    def sample(self, num_samples, *, seed=None) -> np.ndarray:
        r"""Draws from every day's mixture: shape ``(num_samples, n)``.

        A component is drawn by its weight, then
        :math:`\mu_c + \sigma_c Z / \sqrt{V / \nu_c}` with :math:`Z \sim \mathcal N(0, 1)`
        and :math:`V \sim \chi^2_{\nu_c}` (:math:`V / \nu_c = 1` for a Normal).

        Parameters
        ----------
        num_samples : int
        seed : int, Generator or None
            Passed to ``numpy.random.default_rng``.
        """
        num_samples = int(num_samples)
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        rng = np.random.default_rng(seed)
        n, c = self.n_days, self.n_components
        cum = np.cumsum(self.weights, axis=1)
        cum[:, -1] = 1.0
        # One sorted array for all days: day t occupies [2t, 2t + 1].
        offset = 2.0 * np.arange(n)
        u = rng.random((num_samples, n))
        pos = np.searchsorted((cum + offset[:, None]).ravel(), u + offset, side="right")
        last = c - 1 - np.argmax(self.weights[:, ::-1] > 0, axis=1)
        comp = np.minimum(pos - np.arange(n) * c, last)
        days = np.broadcast_to(np.arange(n), comp.shape)
        nu = self.df[days, comp]
        finite = np.isfinite(nu)
        nu_safe = np.where(finite, nu, 1.0)
        gamma = rng.standard_gamma(0.5 * nu_safe)
        factor = np.where(finite, np.sqrt(0.5 * nu_safe / gamma), 1.0)
        z = rng.standard_normal(comp.shape) * factor
        return self.loc[days, comp] + self.scale[days, comp] * z


def _day_vector(value, n, name):
    value = np.asarray(value, dtype=np.float64)
    if value.ndim > 1:
        raise ValueError(f"{name}: expected a scalar or shape ({n},), got {value.shape}")
    try:
        return np.broadcast_to(value, (n,))
    except ValueError:
        raise ValueError(f"{name}: expected shape ({n},), got {value.shape}") from None
