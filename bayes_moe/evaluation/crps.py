r"""Continuous ranked probability score of Normal, Student-t and mixture forecasts.

The CRPS is negatively oriented (lower is better) and in the units of ``y``. Shape
conventions are those of :mod:`bayes_moe.evaluation.scoring`; the standardized
Normal / Student-t helpers here are shared with
:class:`~bayes_moe.evaluation.distributions.LocationScaleMixture`.

CRPS of a general mixture
-------------------------
For a mixture :math:`F = \sum_c w_c F_c` of location-scale components,

.. math::

    \mathrm{CRPS}(F, y) = \int_{-\infty}^{\infty} \big(F(x) - \mathbb 1\{x \ge y\}\big)^2 dx
    = \mathbb E|X - y| - \tfrac12 \mathbb E|X - X'|
    = \sum_c w_c\, \mathbb E|X_c - y| \;-\; \int_{-\infty}^{\infty} F(x)\,(1 - F(x))\, dx,

with :math:`X, X'` independent draws from :math:`F`. The first term is exact (a closed
form per component). The second, :math:`\tfrac12 \mathbb E|X - X'|`, has a closed form
for Normal mixtures (a double sum over pairs of components, Grimit et al. 2006) but not
for mixtures that contain Student-t components, and the double sum costs
:math:`O(C^2)` per day anyway. :func:`crps_mixture` computes it by adaptive spectral
quadrature of :math:`\int F (1 - F)\,dx`:

1. an interval :math:`[a, b]` with :math:`F(a) \le \epsilon` and
   :math:`1 - F(b) \le \epsilon` (:math:`\epsilon = 10^{-8}`, from the components'
   quantiles); outside it :math:`\int_{-\infty}^a F(1 - F) \approx \int_{-\infty}^a F =
   \sum_c w_c \mathbb E(a - X_c)^+` in closed form, with an error below
   :math:`\epsilon \int_{-\infty}^a F`;
2. panels between :math:`a` and :math:`b`: a geometric template around the mixture's
   centre, refined until every panel that holds :math:`\mu_c + k \sigma_c`
   (:math:`k \in \{0, \pm 4, \pm 8\}`) of a weighted component is at most
   :math:`4 \sigma_c` wide, so that no component is narrower than the grid;
3. in each panel, the mixture *density* (cheap: no incomplete beta function) at
   :math:`p = 17` Chebyshev-Lobatto nodes, integrated spectrally to :math:`F` from the
   left (anchored at the exact :math:`F(a)`) and to :math:`1 - F` from the right
   (anchored at the exact :math:`1 - F(b)`), so that both tails keep their relative
   precision; :math:`F (1 - F)` is integrated with the Clenshaw-Curtis weights of the
   same nodes;
4. panels whose density's last Chebyshev coefficients are not negligible, and days
   whose total mass :math:`F(a) + \int_a^b f + (1 - F(b))` is not 1, are split (only
   the new halves are evaluated) until they are.

The cost is :math:`O(C)` per node and day, with some 400-500 nodes per day for a
posterior mixture; the density kernel runs in torch (one thread), whose vectorized
``exp`` / ``log1p`` are several times faster than numpy's. Normal mixtures of more than
128 components take this path too: it is faster than the :math:`O(C^2)` double sum.

The tolerance is relative to the day's mean component scale
:math:`\bar\sigma = \sum_c w_c \sigma_c`; the error is typically below
:math:`10^{-10} \bar\sigma` (tests check it against brute-force references).

References
----------
T. Gneiting and A. E. Raftery, "Strictly proper scoring rules, prediction, and
estimation", Journal of the American Statistical Association 102(477), 359-378, 2007.

E. P. Grimit, T. Gneiting, V. J. Berrocal and N. A. Johnson, "The continuous ranked
probability score for circular variables and its application to mesoscale forecast
ensemble verification", Quarterly Journal of the Royal Meteorological Society 132,
2925-2942, 2006.

A. Jordan, F. Krüger and S. Lerch, "Evaluating probabilistic forecasts with
scoringRules", Journal of Statistical Software 90(12), 1-37, 2019.

C. A. T. Ferro, "Fair scores for ensemble forecasts", Quarterly Journal of the Royal
Meteorological Society 140, 1917-1923, 2014.

L. N. Trefethen, *Approximation Theory and Approximation Practice*, SIAM, 2013
(Chebyshev interpolation, spectral integration and Clenshaw-Curtis quadrature).
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.polynomial import chebyshev as _cheb
from scipy import special

from bayes_moe._runtime import torch_threads

if TYPE_CHECKING:
    pass

_SQRT_PI = math.sqrt(math.pi)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


# --------------------------------------------------------------------------------------
# Standardized components: Normal (df = inf) and Student-t (df finite), elementwise.
# --------------------------------------------------------------------------------------


def _split(df):
    """Boolean mask of the Student-t entries of ``df`` (finite), or a shortcut flag."""
    finite = np.isfinite(df)
    if finite.all():
        return finite, "t"
    if not finite.any():
        return finite, "normal"
    return finite, "mixed"


def _elementwise(z, df, normal_fn, t_fn):
    """Apply ``normal_fn(z)`` where ``df`` is inf and ``t_fn(z, df)`` elsewhere."""
    z, df = np.broadcast_arrays(np.asarray(z, dtype=np.float64), np.asarray(df, np.float64))
    finite, kind = _split(df)
    if kind == "normal":
        return normal_fn(z)
    if kind == "t":
        return t_fn(z, df)
    out = np.empty(z.shape)
    out[~finite] = normal_fn(z[~finite])
    out[finite] = t_fn(z[finite], df[finite])
    return out


def _t_log_const(df):
    r"""Log of the standard t density at 0: :math:`-\tfrac12\log\nu - \log B(\nu/2, 1/2)`."""
    return -0.5 * np.log(df) - special.betaln(0.5 * df, 0.5)


def _std_logpdf(z, df):
    """Log density of the standard Normal (df inf) or Student-t."""
    return _elementwise(
        z,
        df,
        lambda z: -0.5 * z * z - _LOG_SQRT_2PI,
        lambda z, v: _t_log_const(v) - 0.5 * (v + 1.0) * np.log1p(z * z / v),
    )


def _std_pdf(z, df):
    """Density of the standard Normal (df inf) or Student-t."""
    return np.exp(_std_logpdf(z, df))


def _std_cdf(z, df):
    """Distribution function of the standard Normal (df inf) or Student-t."""
    return _elementwise(z, df, special.ndtr, lambda z, v: special.stdtr(v, z))


def _std_ppf(q, df):
    """Quantile function of the standard Normal (df inf) or Student-t."""
    q, df = np.broadcast_arrays(np.asarray(q, np.float64), np.asarray(df, np.float64))
    finite = np.isfinite(df)
    out = special.ndtri(q)
    if finite.any():
        # stdtrit costs ~1 us; posterior draws repeat df values, so solve per unique pair.
        df_t, q_t = df[finite], q[finite]
        levels = np.unique(q_t)
        if levels.size <= 16:
            values = np.empty(df_t.shape)
            for level in levels:
                at = q_t == level
                uniq, inverse = np.unique(df_t[at], return_inverse=True)
                values[at] = special.stdtrit(uniq, level)[inverse]
            out[finite] = values
        else:
            pairs = np.stack([df_t, q_t], axis=-1)
            uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
            out[finite] = special.stdtrit(uniq[:, 0], uniq[:, 1])[inverse.ravel()]
    return out


def _std_lower_partial(z, df):
    r""":math:`G(z) = \int_{-\infty}^{z} F(u)\,du = \mathbb E(z - U)^+` for a standard component.

    Normal: :math:`z\Phi(z) + \phi(z)`; Student-t (:math:`\nu > 1`):
    :math:`z F_\nu(z) + \frac{\nu + z^2}{\nu - 1} f_\nu(z)`.
    """
    return _elementwise(
        z,
        df,
        lambda z: z * special.ndtr(z) + np.exp(-0.5 * z * z - _LOG_SQRT_2PI),
        lambda z, v: z * special.stdtr(v, z) + (v + z * z) / (v - 1.0) * _std_pdf(z, v),
    )


def _std_abs_dev(z, df):
    r""":math:`\mathbb E|U - z|` for a standard component: :math:`G(z) + G(-z)`.

    Normal: :math:`z(2\Phi(z) - 1) + 2\phi(z)`; Student-t:
    :math:`z(2F_\nu(z) - 1) + 2 f_\nu(z) (\nu + z^2) / (\nu - 1)`.
    """
    return _elementwise(
        z,
        df,
        lambda z: z * special.erf(z / math.sqrt(2.0)) + 2.0 * np.exp(-0.5 * z * z - _LOG_SQRT_2PI),
        lambda z, v: (
            z * (2.0 * special.stdtr(v, z) - 1.0) + 2.0 * _std_pdf(z, v) * (v + z * z) / (v - 1.0)
        ),
    )


def _std_half_spread(df):
    r""":math:`\tfrac12 \mathbb E|U - U'|` for iid standard components.

    Normal: :math:`1/\sqrt\pi`; Student-t:
    :math:`2\sqrt\nu\, B(\tfrac12, \nu - \tfrac12) / \big((\nu - 1) B(\tfrac12, \tfrac\nu2)^2\big)`.
    """
    df = np.asarray(df, dtype=np.float64)

    def t_fn(v):
        return np.exp(
            math.log(2.0)
            + 0.5 * np.log(v)
            + special.betaln(0.5, v - 0.5)
            - np.log(v - 1.0)
            - 2.0 * special.betaln(0.5, 0.5 * v)
        )

    return _elementwise(np.zeros(df.shape), df, lambda z: z + 1.0 / _SQRT_PI, lambda z, v: t_fn(v))


def _check_scale(scale, name="scale"):
    scale = np.asarray(scale, dtype=np.float64)
    if not np.all(scale > 0) or not np.all(np.isfinite(scale)):
        raise ValueError(f"{name} must be finite and > 0")
    return scale


def _check_df_crps(df):
    df = np.asarray(df, dtype=np.float64)
    if not np.all(df > 1):
        raise ValueError("df must be > 1 for the CRPS to exist (np.inf for a Normal)")
    return df


# --------------------------------------------------------------------------------------
# CRPS: closed forms
# --------------------------------------------------------------------------------------


def crps_normal(y, loc, scale) -> np.ndarray:
    r"""CRPS of a Normal predictive, closed form (negatively oriented: lower is better).

    .. math::

        \mathrm{CRPS}(\mathcal N(\mu, \sigma^2), y) = \sigma \Big[ z \big(2\Phi(z) - 1\big)
        + 2 \phi(z) - \frac{1}{\sqrt\pi} \Big], \qquad z = \frac{y - \mu}{\sigma}.

    Parameters
    ----------
    y, loc, scale : array_like
        Broadcast together; ``scale > 0``.

    Returns
    -------
    ndarray
        The broadcast shape of the inputs, in the units of ``y``.

    References
    ----------
    Gneiting and Raftery (2007), eq. (21).
    """
    y, loc = np.asarray(y, np.float64), np.asarray(loc, np.float64)
    scale = _check_scale(scale)
    z = (y - loc) / scale
    return scale * (_std_abs_dev(z, np.inf) - 1.0 / _SQRT_PI)


def crps_student_t(y, df, loc, scale) -> np.ndarray:
    r"""CRPS of a location-scale Student-t predictive, closed form (lower is better).

    .. math::

        \mathrm{CRPS}(t_\nu(\mu, \sigma), y) = \sigma \Big[ z\big(2F_\nu(z) - 1\big)
        + 2 f_\nu(z) \frac{\nu + z^2}{\nu - 1}
        - \frac{2\sqrt\nu\, B(\tfrac12, \nu - \tfrac12)}{(\nu - 1)\, B(\tfrac12, \tfrac\nu2)^2}
        \Big], \qquad z = \frac{y - \mu}{\sigma},

    with :math:`F_\nu, f_\nu` the standard t distribution function and density. The CRPS
    exists for :math:`\nu > 1`; ``df = inf`` gives :func:`crps_normal`.

    Parameters
    ----------
    y, df, loc, scale : array_like
        Broadcast together; ``df > 1``, ``scale > 0`` (the t scale, not the standard
        deviation).

    Returns
    -------
    ndarray
        The broadcast shape of the inputs.

    References
    ----------
    Jordan, Krüger and Lerch (2019), ``crps_t`` of the R package scoringRules (its
    appendix gives the formula).
    """
    y, loc = np.asarray(y, np.float64), np.asarray(loc, np.float64)
    df = _check_df_crps(df)
    scale = _check_scale(scale)
    z = (y - loc) / scale
    z, df_b = np.broadcast_arrays(z, df)
    return scale * (_std_abs_dev(z, df_b) - _std_half_spread(df_b))


def _pair_abs_normal(m, s):
    r""":math:`\mathbb E|D|` for :math:`D \sim \mathcal N(m, s^2)`.

    :math:`s\sqrt{2/\pi}\, e^{-m^2/2s^2} + m\,\mathrm{erf}(m / (\sqrt2 s))`.
    """
    r = m / s
    return s * (math.sqrt(2.0 / math.pi) * np.exp(-0.5 * r * r)) + m * special.erf(
        r / math.sqrt(2.0)
    )


def _normal_mixture_half_spread(weights, loc, scale):
    """``0.5 E|X - X'|`` for Normal mixtures, rows of ``(r, C)``, by the pairwise closed form."""
    r, c = weights.shape
    out = np.empty(r)
    step = max(1, int(2_000_000 // max(c * c, 1)))
    for i in range(0, r, step):
        w, mu, s2 = weights[i : i + step], loc[i : i + step], scale[i : i + step] ** 2
        pair = _pair_abs_normal(
            mu[:, :, None] - mu[:, None, :], np.sqrt(s2[:, :, None] + s2[:, None, :])
        )
        out[i : i + step] = 0.5 * np.einsum("rc,rcd,rd->r", w, pair, w)
    return out


def _as_mixture_arrays(y, weights, loc, scale, df=None):
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim < 1:
        raise ValueError("weights must have a component axis (last axis)")
    shape = weights.shape
    loc = np.broadcast_to(np.asarray(loc, np.float64), shape)
    scale = np.broadcast_to(_check_scale(scale), shape)
    y = np.broadcast_to(np.asarray(y, np.float64), shape[:-1])
    if not np.all(weights >= 0):
        raise ValueError("weights must be >= 0")
    total = weights.sum(axis=-1)
    if not np.allclose(total, 1.0, rtol=0, atol=1e-6):
        raise ValueError("weights must sum to 1 over the last axis")
    weights = weights / total[..., None]
    arrays = [y.reshape(-1), *(a.reshape(-1, shape[-1]) for a in (weights, loc, scale))]
    if df is not None:
        df = np.broadcast_to(np.asarray(df, np.float64), shape)
        _check_df_crps(df[weights > 0])
        arrays.append(df.reshape(-1, shape[-1]))
    return shape[:-1], arrays


def crps_normal_mixture(y, weights, loc, scale) -> np.ndarray:
    r"""CRPS of a finite Normal mixture, closed form (lower is better).

    With :math:`X, X'` iid from :math:`F = \sum_c w_c \mathcal N(\mu_c, \sigma_c^2)`,

    .. math::

        \mathrm{CRPS}(F, y) = \mathbb E|X - y| - \tfrac12 \mathbb E|X - X'|
        = \sum_c w_c A(y - \mu_c, \sigma_c^2)
          - \tfrac12 \sum_{c, d} w_c w_d A(\mu_c - \mu_d, \sigma_c^2 + \sigma_d^2),

    where :math:`A(m, s^2) = \mathbb E|\mathcal N(m, s^2)|
    = 2 s\, \phi(m/s) + m\,(2\Phi(m/s) - 1)`. Costs :math:`O(C^2)` per day.

    Parameters
    ----------
    y : array_like, shape ``(...)``
    weights, loc, scale : array_like, shape ``(..., C)``
        Weights are non-negative and sum to one over the last axis (to 1e-6; they are
        renormalized).

    Returns
    -------
    ndarray, shape ``(...)``

    References
    ----------
    Grimit, Gneiting, Berrocal and Johnson (2006), eq. (5); Gneiting and Raftery (2007),
    eq. (21) for :math:`A`.
    """
    lead, (y, w, mu, s) = _as_mixture_arrays(y, weights, loc, scale)
    first = np.sum(w * _pair_abs_normal(y[:, None] - mu, s), axis=-1)
    return (first - _normal_mixture_half_spread(w, mu, s)).reshape(lead)


# --------------------------------------------------------------------------------------
# CRPS of general mixtures: adaptive spectral quadrature of  int F (1 - F) dx
# --------------------------------------------------------------------------------------

_NODES = 17  # Chebyshev-Lobatto nodes per panel
_TAIL_EPS = 1e-8  # F(a) <= eps and 1 - F(b) <= eps
_RTOL = 1e-11  # per-panel error target, relative to the day's mean component scale
_PROBES = np.array([-8.0, -4.0, 0.0, 4.0, 8.0])  # mu_c + k sigma_c must sit in panels ...
_PROBE_WIDTH = 4.0  # ... no wider than 4 sigma_c
_MAX_ROUNDS = 12
_TEMPLATE = (2.0, 4.0, 6.0, 8.0, 12.0, 16.0)  # panel edges / mean scale, then geometric
_TEMPLATE_RATIO = 2.0
_PAIRWISE_MAX = 128  # Normal mixtures up to this many components: closed form
_MASS_TOL = 1e-12  # |F(a) + int_a^b f + 1 - F(b) - 1|
_CHUNK_ELEMENTS = 500_000  # rows x nodes x components per density evaluation


def _chebyshev_rules(p):
    """Lobatto nodes on [-1, 1], the spectral integration matrix, CC weights, coefficients."""
    t = -np.cos(np.pi * np.arange(p) / (p - 1))
    vander = _cheb.chebvander(t, p - 1)
    to_coef = np.linalg.inv(vander)
    antider = np.empty((p, p))
    for k in range(p):
        e = np.zeros(p)
        e[k] = 1.0
        antider[:, k] = _cheb.chebval(t, _cheb.chebint(e, lbnd=-1))
    integrate = antider @ to_coef  # (F(t_i) - F(-1)) = integrate[i] @ f
    return t, integrate, integrate[-1].copy(), to_coef


_T, _INTEGRATE, _CC, _TO_COEF = _chebyshev_rules(_NODES)


class _Components:
    """Per-day component arrays for the quadrature: t components first, inactive dropped.

    The density kernel runs in torch (float64): its vectorized ``exp`` / ``log1p`` are
    2-3 times faster than numpy's, and this kernel is where the time goes.
    """

    def __init__(self, w, mu, sig, nu):
        kind = np.where(w > 0, np.where(np.isfinite(nu), 0, 1), 2)
        if np.all(kind == kind[:1]):  # the same pattern every day: one column permutation
            order = np.argsort(kind[0], kind="stable")
            kind, w, mu, sig, nu = (a[:, order] for a in (kind, w, mu, sig, nu))
        else:
            order = np.argsort(kind, axis=1, kind="stable")
            kind, w, mu, sig, nu = (
                np.take_along_axis(a, order, axis=1) for a in (kind, w, mu, sig, nu)
            )
        n_active = int((kind < 2).sum(axis=1).max())
        kind, w, mu, sig, nu = (a[:, :n_active] for a in (kind, w, mu, sig, nu))
        self.active = kind < 2
        self.is_t = kind == 0
        self.w, self.mu, self.sig, self.nu = w, mu, sig, nu
        self.inv_sig = 1.0 / sig
        nu_t = np.where(self.is_t, nu, 3.0)
        # t: (1 + z^2 / nu)^expo with z^2 / nu = (x - mu)^2 * quad;  Normal: exp(-(x - mu)^2 quad)
        quad = np.where(self.is_t, 1.0 / (sig * sig * nu_t), 0.5 / (sig * sig))
        expo = np.where(self.is_t, -0.5 * (nu_t + 1.0), 0.0)
        log_const = np.where(self.is_t, _t_log_const(nu_t), -_LOG_SQRT_2PI)
        coef = np.where(self.active, w * self.inv_sig * np.exp(log_const), 0.0)
        self._torch = {
            "mu": torch.from_numpy(np.ascontiguousarray(mu)),
            "quad": torch.from_numpy(quad),
            "expo": torch.from_numpy(expo),
            "coef": torch.from_numpy(coef),
            "is_t": torch.from_numpy(self.is_t),
        }
        n_t = self.is_t.sum(axis=1)
        c = mu.shape[1]
        t_lo, t_hi = int(n_t.min()), int(n_t.max())
        self._segments = [
            (lo, hi, kind)
            for lo, hi, kind in ((0, t_lo, "t"), (t_lo, t_hi, "mixed"), (t_hi, c, "normal"))
            if hi > lo
        ]

    def pdf_panels(self, rows, x):
        """Mixture density of day ``rows[k]`` at ``x[k]``: rows ``(K,)``, x ``(K, p)``."""
        out = np.empty(x.shape)
        c = self.mu.shape[1]
        step = max(1, int(_CHUNK_ELEMENTS // max(x.shape[1] * c, 1)))
        rows_t = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))
        x_t = torch.from_numpy(np.ascontiguousarray(x))
        with torch_threads(1):  # see bayes_moe._runtime: one thread, no spinning
            for i in range(0, x.shape[0], step):
                block = self._pdf_block(x_t[i : i + step], rows_t[i : i + step])
                out[i : i + step] = block.numpy()
        return out

    def _pdf_block(self, x, rows):
        par = {key: value[rows] for key, value in self._torch.items()}
        total = torch.zeros(x.shape, dtype=torch.float64)
        for lo, hi, kind in self._segments:
            z = x[:, :, None] - par["mu"][:, None, lo:hi]
            z.square_().mul_(par["quad"][:, None, lo:hi])
            if kind == "normal":
                z.neg_().exp_()
            elif kind == "t":
                z.log1p_().mul_(par["expo"][:, None, lo:hi]).exp_()
            else:
                t_part = torch.log1p(z).mul_(par["expo"][:, None, lo:hi]).exp_()
                z = torch.where(par["is_t"][:, None, lo:hi], t_part, z.neg_().exp_())
            total += torch.matmul(z, par["coef"][:, lo:hi, None])[..., 0]
        return total


def _trim(bp):
    """Drop the trailing columns where every row already sits at its last breakpoint.

    Rows are sorted and padded with their last breakpoint ``b`` (zero-width panels), so
    the columns where all rows equal ``b`` form a suffix; one of them is kept.
    """
    at_end = np.all(bp == bp[:, -1:], axis=0)
    first = int(np.argmax(at_end))  # at_end[-1] is always True
    return bp[:, : first + 1]


def _insert_points(bp, new_points):
    """Merge per-row breakpoints ``(r, P + 1)`` with new points (``nan`` = none)."""
    last = bp[:, -1:]
    merged = np.concatenate([bp, np.where(np.isnan(new_points), last, new_points)], axis=1)
    return _trim(np.minimum(np.sort(merged, axis=1), last))


def _initial_breakpoints(comp, a, b):
    """Geometric template around the weighted centre, clipped to ``[a, b]``."""
    centre = np.sum(comp.w * comp.mu, axis=1)
    centre = np.clip(centre, a, b)
    scale = np.sum(comp.w * comp.sig, axis=1)
    reach = np.max(np.maximum(centre - a, b - centre) / scale)
    half = list(_TEMPLATE)
    while half[-1] < reach:
        half.append(half[-1] * _TEMPLATE_RATIO)
    half = np.array(half)
    template = np.concatenate([-half[::-1], [0.0], half])
    inner = centre[:, None] + scale[:, None] * template
    inner = np.where((inner > a[:, None]) & (inner < b[:, None]), inner, b[:, None])
    bp = np.concatenate([a[:, None], inner, b[:, None]], axis=1)
    return _trim(np.sort(bp, axis=1))


def _panel_index(bp, x):
    """Index of the panel of each row's breakpoints ``bp`` that contains ``x`` (r, k)."""
    inner = bp[:, 1:-1]
    idx = np.zeros(x.shape, dtype=np.int64)
    step = max(1, int(_CHUNK_ELEMENTS // max(x.shape[1] * max(inner.shape[1], 1), 1)))
    for i in range(0, x.shape[0], step):
        sl = slice(i, i + step)
        idx[sl] = np.sum(x[sl, :, None] >= inner[sl, None, :], axis=2)
    return idx


def _refine_for_components(comp, bp, a, b):
    """Split panels until each probe ``mu_c + k sigma_c`` lies in a panel <= 4 sigma_c wide."""
    r, c = comp.mu.shape
    probes = (comp.mu[:, :, None] + comp.sig[:, :, None] * _PROBES).reshape(r, -1)
    probes = np.clip(probes, a[:, None], b[:, None])
    need = np.repeat(np.where(comp.active, _PROBE_WIDTH * comp.sig, np.inf), len(_PROBES), axis=1)
    rows = np.repeat(np.arange(r), probes.shape[1])
    for _ in range(64):
        n_panels = bp.shape[1] - 1
        idx = _panel_index(bp, probes)
        required = np.full(r * n_panels, np.inf)
        np.minimum.at(required, rows * n_panels + idx.ravel(), need.ravel())
        required = required.reshape(r, n_panels)
        width = np.diff(bp, axis=1)
        pieces = np.where(width > required, np.ceil(width / required), 1.0)
        pieces = np.minimum(pieces, 16.0)
        if np.all(pieces <= 1):
            return bp
        k = np.arange(1, 16)
        new = bp[:, :-1, None] + width[:, :, None] * (k / pieces[:, :, None])
        new = np.where(k < pieces[:, :, None], new, np.nan).reshape(r, -1)
        bp = _insert_points(bp, new)
    return bp


def _panel_nodes(lo, hi):
    return lo[:, None] + (0.5 * (hi - lo))[:, None] * (_T + 1.0)


def _assemble(n_rows, row, lo, hi, f, fa, sb):
    """Quadrature of int_a^b F (1 - F) from the density ``f`` at every panel's nodes.

    Panels are flat arrays sorted by ``(row, lo)``. Returns the integral per row, the
    per-panel error indicator of ``F`` and the mass defect per row.
    """
    half = 0.5 * (hi - lo)
    partial = half[:, None] * (f @ _INTEGRATE.T)  # int from the panel's start to each node
    mass = partial[:, -1]
    # Segmented cumulative sums on a padded (rows, panels) layout, so that neither tail
    # loses its relative precision to the other days' masses.
    start = np.searchsorted(row, np.arange(n_rows))
    pos = np.arange(row.size) - start[row]
    padded = np.zeros((n_rows, int(pos.max()) + 1 if row.size else 1))
    padded[row, pos] = mass
    before = (np.cumsum(padded, axis=1) - padded)[row, pos]
    after = (np.cumsum(padded[:, ::-1], axis=1)[:, ::-1] - padded)[row, pos]
    lower = (fa[row] + before)[:, None] + partial
    upper = (sb[row] + after)[:, None] + (mass[:, None] - partial)
    integrand = np.clip(lower, 0.0, 1.0) * np.clip(upper, 0.0, 1.0)
    integral = np.bincount(row, half * (integrand @ _CC), minlength=n_rows)
    coef = np.abs(f @ _TO_COEF.T)
    err_mass = half * (coef[:, -1] + coef[:, -2])
    defect = fa + np.bincount(row, mass, minlength=n_rows) + sb - 1.0
    return integral, err_mass, defect


def _spread_quadrature(w, mu, sig, nu):
    r"""``0.5 E|X - X'| = int F (1 - F) dx`` for mixture rows ``(r, C)`` by quadrature."""
    n_rows = w.shape[0]
    comp = _Components(w, mu, sig, nu)
    q_eps = _std_ppf(_TAIL_EPS, np.where(comp.active, comp.nu, np.inf))
    a = np.min(np.where(comp.active, comp.mu + comp.sig * q_eps, np.inf), axis=1)
    b = np.max(np.where(comp.active, comp.mu - comp.sig * q_eps, -np.inf), axis=1)
    fa = _mix_scaled(comp, _std_cdf, a, sign=1.0, scaled=False)
    sb = _mix_scaled(comp, _std_cdf, b, sign=-1.0, scaled=False)
    # int_{-inf}^a F dx + int_b^inf (1 - F) dx, exact; F^2 beyond [a, b] is neglected.
    tails = _mix_scaled(comp, _std_lower_partial, a, sign=1.0) + _mix_scaled(
        comp, _std_lower_partial, b, sign=-1.0
    )
    scale = np.sum(comp.w * comp.sig, axis=1)

    bp = _refine_for_components(comp, _initial_breakpoints(comp, a, b), a, b)
    keep = np.diff(bp, axis=1) > 0
    row = np.nonzero(keep)[0]
    lo, hi = bp[:, :-1][keep], bp[:, 1:][keep]
    f = comp.pdf_panels(row, _panel_nodes(lo, hi))
    for _ in range(_MAX_ROUNDS):
        integral, err_mass, defect = _assemble(n_rows, row, lo, hi, f, fa, sb)
        bad = err_mass * (scale[row] + (hi - lo)) > _RTOL * scale[row]
        bad_mass = np.abs(defect) > _MASS_TOL
        if not (bad.any() or bad_mass.any()):
            return integral + tails
        # a mass defect without a flagged panel: split every panel of the day
        blind = bad_mass & (np.bincount(row, bad, minlength=n_rows) == 0)
        split = bad | blind[row]
        mid = 0.5 * (lo[split] + hi[split])
        new_row = np.concatenate([row[split], row[split]])
        new_lo = np.concatenate([lo[split], mid])
        new_hi = np.concatenate([mid, hi[split]])
        new_f = comp.pdf_panels(new_row, _panel_nodes(new_lo, new_hi))
        row = np.concatenate([row[~split], new_row])
        lo = np.concatenate([lo[~split], new_lo])
        hi = np.concatenate([hi[~split], new_hi])
        f = np.concatenate([f[~split], new_f])
        order = np.lexsort((lo, row))
        row, lo, hi, f = row[order], lo[order], hi[order], f[order]
    warnings.warn(
        "crps_mixture: the quadrature did not reach its tolerance on "
        f"{int(np.sum(bad_mass | (np.bincount(row, bad, minlength=n_rows) > 0)))} day(s)",
        RuntimeWarning,
        stacklevel=3,
    )
    return _assemble(n_rows, row, lo, hi, f, fa, sb)[0] + tails


def _mix_scaled(comp, fn, x, *, sign, scaled=True):
    """``sum_c w_c [sigma_c] fn(sign (x - mu_c) / sigma_c, nu_c)`` over active components."""
    z = sign * (x[:, None] - comp.mu) * comp.inv_sig
    z = np.where(comp.active, z, 0.0)
    nu = np.where(comp.active, comp.nu, np.inf)
    factor = comp.w * comp.sig if scaled else comp.w
    return np.sum(np.where(comp.active, factor * fn(z, nu), 0.0), axis=1)


def crps_mixture(y, weights, loc, scale, df, *, method="auto") -> np.ndarray:
    r"""CRPS of finite mixtures of Normal and Student-t components (lower is better).

    .. math::

        \mathrm{CRPS}(F, y) = \sum_c w_c\, \mathbb E|X_c - y|
        - \int_{-\infty}^{\infty} F(x) (1 - F(x))\, dx,
        \qquad F = \sum_c w_c F_{\nu_c}\Big(\frac{x - \mu_c}{\sigma_c}\Big).

    :math:`\mathbb E|X_c - y|` is exact for every component (see
    :func:`crps_student_t`). The second term (:math:`\tfrac12 \mathbb E|X - X'|`) is
    exact for days with a single weighted component (:func:`crps_normal`,
    :func:`crps_student_t`) and for Normal mixtures of at most 128 weighted components
    (:func:`crps_normal_mixture`, :math:`O(C^2)` per day); every other day uses the
    adaptive spectral quadrature described in the module docstring
    (:math:`O(C \times \text{nodes})` per day, accurate to about
    :math:`10^{-10} \bar\sigma`).

    Parameters
    ----------
    y : array_like, shape ``(...)``
    weights, loc, scale, df : array_like, shape ``(..., C)``
        Weights are non-negative and sum to one over the last axis (to 1e-6; they are
        renormalized); ``scale > 0``; ``df > 1``, ``np.inf`` for a Normal component.
        Components of zero weight are ignored.
    method : {"auto", "quadrature"}
        ``"quadrature"`` forces the numerical spread term on every day (a check of the
        closed forms).

    Returns
    -------
    ndarray, shape ``(...)``

    References
    ----------
    Gneiting and Raftery (2007), eq. (20); Grimit et al. (2006); Jordan, Krüger and
    Lerch (2019); Trefethen (2013), chapters 19 (Clenshaw-Curtis) and 21.
    """
    if method not in ("auto", "quadrature"):
        raise ValueError(f"method must be 'auto' or 'quadrature', got {method!r}")
    lead, (y, w, mu, s, nu) = _as_mixture_arrays(y, weights, loc, scale, df)
    active = w > 0
    nu_active = np.where(active, nu, np.inf)
    z = np.where(active, (y[:, None] - mu) / s, 0.0)
    first = np.sum(np.where(active, w * s * _std_abs_dev(z, nu_active), 0.0), axis=1)

    spread = np.empty(y.shape[0])
    n_active = active.sum(axis=1)
    all_normal = ~np.any(active & np.isfinite(nu), axis=1)
    single = n_active == 1
    pairwise = all_normal & ~single & (n_active <= _PAIRWISE_MAX)
    numeric = ~single & ~pairwise
    if method == "quadrature":
        single[:] = pairwise[:] = False
        numeric[:] = True
    if single.any():
        c = np.argmax(active[single], axis=1)[:, None]
        pick = lambda a: np.take_along_axis(a[single], c, axis=1)[:, 0]  # noqa: E731
        spread[single] = pick(s) * _std_half_spread(pick(nu))
    if pairwise.any():
        spread[pairwise] = _normal_mixture_half_spread(w[pairwise], mu[pairwise], s[pairwise])
    if numeric.any():
        spread[numeric] = _spread_quadrature(w[numeric], mu[numeric], s[numeric], nu[numeric])
    return (first - spread).reshape(lead)


def crps_sample(y, samples, fair=True) -> np.ndarray:
    r"""CRPS of an ensemble (samples), fair or plain (lower is better).

    With :math:`x_1, \dots, x_m` the draws for one day and :math:`x_{(i)}` their order
    statistics,

    .. math::

        \widehat{\mathrm{CRPS}} = \frac1m \sum_i |x_i - y| - \frac{1}{2 m\,k}
        \sum_{i,j} |x_i - x_j|, \qquad
        \sum_{i,j} |x_i - x_j| = 2 \sum_{i=1}^{m} (2i - m - 1)\, x_{(i)},

    with :math:`k = m - 1` for the *fair* score (Ferro 2014), an unbiased estimate of
    the CRPS of the distribution the draws come from, and :math:`k = m` for the plain
    score, the CRPS of the empirical distribution, whose expectation exceeds the true
    CRPS by :math:`\mathbb E|X - X'| / (2m)`. Sorting makes it :math:`O(m \log m)`.

    Parameters
    ----------
    y : array_like, shape ``(n,)`` (or ``(...)``)
    samples : array_like, shape ``(m, n)`` (or ``(m, ...)``)
        Draws along the first axis.
    fair : bool
        The fair (default) or the plain ensemble CRPS.

    Returns
    -------
    ndarray, shape ``(n,)``

    References
    ----------
    Ferro (2014), eq. (6) (fair CRPS); Gneiting and Raftery (2007), eq. (20) (the
    kernel representation); Jordan, Krüger and Lerch (2019), ``crps_sample``.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim < 1:
        raise ValueError("samples must have the draws on axis 0")
    m = samples.shape[0]
    if m < (2 if fair else 1):
        raise ValueError(
            f"the {'fair' if fair else 'plain'} CRPS needs at least {2 if fair else 1} draws"
        )
    y = np.broadcast_to(np.asarray(y, dtype=np.float64), samples.shape[1:])
    first = np.mean(np.abs(samples - y), axis=0)
    ordered = np.sort(samples, axis=0)
    rank_weight = (2.0 * np.arange(1, m + 1) - m - 1).reshape((m,) + (1,) * (samples.ndim - 1))
    pair_sum = 2.0 * np.sum(rank_weight * ordered, axis=0)
    k = m - 1 if fair else m
    return first - pair_sum / (2.0 * m * k)
