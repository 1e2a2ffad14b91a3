r"""Compiled reductions over regimes and experts for posterior evaluation.

Posterior evaluation reduces ``(S, N, K, M)`` arrays (draws, origins, regimes,
experts) over their two short trailing axes again and again: the regime moments, the
regime emission likelihoods of the forward-backward pass and the causal mixture
density. In torch each of those is a broadcast and a reduction over an axis of length
2-20, several times slower per element than a plain elementwise operation; here each
is one compiled pass over the array (numba), with no gradient. The formulas are those
of :func:`regime_mixture` and :func:`causal_mixture`; the tests compare them with the
torch expressions they replace.

All arrays are C-contiguous float64; ``S`` draws, ``N`` origins, ``K`` regimes,
``M`` experts.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
import torch

__all__ = [
    "causal_mixture",
    "outer_log_softmax",
    "pick_components",
    "regime_location_scale_log_prob",
    "regime_mixture",
]

_JIT: dict[str, Any] = {
    "cache": True,
    "nogil": True,
    "fastmath": {"nsz", "contract", "reassoc"},
    "error_model": "numpy",  # x / 0 is inf or nan, as in torch, not an exception
}


@numba.njit(**_JIT)
def _regime_mixture(log_w, log_p, means, variances, stretch, mu, var, log_emit):
    n_draws, n_origins, n_regimes, n_experts = log_w.shape
    n_obs = log_emit.shape[1]
    for s in range(n_draws):
        for n in range(n_origins):
            for k in range(n_regimes):
                first = 0.0
                second = 0.0
                top = -np.inf
                for m in range(n_experts):
                    g = math.exp(log_w[s, n, k, m])
                    first += g * means[s, n, m]
                    second += g * (stretch[s, k] * variances[s, n, m] + means[s, n, m] ** 2)
                    top = max(top, log_w[s, n, k, m] + log_p[s, n, k, m])
                mu[s, n, k] = first
                var[s, n, k] = max(second - first * first, 0.0)
                if n < n_obs:
                    if top == -np.inf:
                        log_emit[s, n, k] = -np.inf
                        continue
                    total = 0.0
                    for m in range(n_experts):
                        total += math.exp(log_w[s, n, k, m] + log_p[s, n, k, m] - top)
                    log_emit[s, n, k] = top + math.log(total)


@numba.njit(**_JIT)
def _causal_mixture(log_regime, log_w, log_p, log_mix, log_density):
    n_draws, n_origins, n_regimes, n_experts = log_w.shape
    n_obs = log_density.shape[1]
    for s in range(n_draws):
        for n in range(n_origins):
            top = -np.inf
            for k in range(n_regimes):
                for m in range(n_experts):
                    a = log_regime[s, n, k] + log_w[s, n, k, m]
                    log_mix[s, n, k, m] = a
                    top = max(top, a + log_p[s, n, k, m])
            if n >= n_obs:
                continue
            if top == -np.inf:
                log_density[s, n] = -np.inf
                continue
            total = 0.0
            for k in range(n_regimes):
                for m in range(n_experts):
                    total += math.exp(log_mix[s, n, k, m] + log_p[s, n, k, m] - top)
            log_density[s, n] = top + math.log(total)


@numba.njit(**_JIT)
def _outer_log_softmax(rows, cols, out):
    n_batch, n_origins, n_rows, n_cols = out.shape
    row_top = np.empty(n_rows)
    row_exp = np.empty((n_rows, n_cols))
    col_exp = np.empty(n_cols)
    tiny = np.finfo(np.float64).tiny
    for b in range(n_batch):
        for k in range(n_rows):
            top = -np.inf
            for m in range(n_cols):
                top = max(top, rows[b, k, m])
            row_top[k] = top
            for m in range(n_cols):
                row_exp[k, m] = math.exp(rows[b, k, m] - top)
        for n in range(n_origins):
            col_top = -np.inf
            for m in range(n_cols):
                col_top = max(col_top, cols[b, n, m])
            for m in range(n_cols):
                col_exp[m] = math.exp(cols[b, n, m] - col_top)
            for k in range(n_rows):
                total = 0.0
                for m in range(n_cols):
                    total += row_exp[k, m] * col_exp[m]
                if total >= tiny:
                    log_norm = math.log(total) + row_top[k] + col_top
                else:  # the two maxima far apart: the plain stable log-sum-exp
                    top = -np.inf
                    for m in range(n_cols):
                        top = max(top, rows[b, k, m] + cols[b, n, m])
                    total = 0.0
                    for m in range(n_cols):
                        total += math.exp(rows[b, k, m] + cols[b, n, m] - top)
                    log_norm = top + math.log(total)
                for m in range(n_cols):
                    out[b, n, k, m] = rows[b, k, m] + cols[b, n, m] - log_norm


@numba.njit(**_JIT)
def _regime_log_prob(value, loc, scale, df, student, log_scale, out):
    n_batch, n_origins, n_dims = loc.shape
    n_regimes = log_scale.shape[1]
    shrink = np.empty(n_regimes)
    half_log_2pi = 0.5 * math.log(2.0 * math.pi)
    last_nu = np.nan
    t_const = 0.0
    for b in range(n_batch):
        for k in range(n_regimes):
            shrink[k] = math.exp(-log_scale[b, k])
            out[b, :, k] = -n_dims * log_scale[b, k]
        for n in range(n_origins):
            for j in range(n_dims):
                r = (value[n, j] - loc[b, n, j]) / scale[b, n, j]
                if student:
                    nu = df[b, n, j]
                    if nu != last_nu:  # the df is mostly one value per draw
                        t_const = (
                            0.5 * math.log(nu * math.pi)
                            + math.lgamma(0.5 * nu)
                            - math.lgamma(0.5 * (nu + 1.0))
                        )
                        last_nu = nu
                    log_norm = math.log(scale[b, n, j]) + t_const
                    for k in range(n_regimes):
                        z = shrink[k] * r
                        out[b, n, k] += -0.5 * (nu + 1.0) * math.log1p(z * z / nu) - log_norm
                else:
                    log_norm = math.log(scale[b, n, j]) + half_log_2pi
                    for k in range(n_regimes):
                        z = shrink[k] * r
                        out[b, n, k] += -0.5 * z * z - log_norm


@numba.njit(**_JIT)
def _pick(log_w, u, picks):
    n_rows, n_components = log_w.shape
    w = np.empty(n_components)
    for r in range(n_rows):
        top = -np.inf
        for c in range(n_components):
            top = max(top, log_w[r, c])
        total = 0.0
        for c in range(n_components):
            w[c] = math.exp(log_w[r, c] - top)
            total += w[c]
        target = u[r] * total
        cumulative = 0.0
        choice = -1
        for c in range(n_components):
            cumulative += w[c]
            if w[c] > 0.0:
                choice = c
                if cumulative >= target:
                    break
        picks[r] = choice


def _array(x: torch.Tensor, shape: tuple) -> np.ndarray:
    """``x`` broadcast to ``shape`` as a C-contiguous float64 numpy array."""
    return np.ascontiguousarray(x.detach().to(torch.float64).expand(shape).numpy())


def regime_mixture(log_w, log_p, means, variances, log_scale, n_obs: int):
    r"""Each regime's mixture of rescaled experts: moments and emission likelihood.

    .. math::

        \mu_{n,k} = \sum_m g_{n,k,m} \mu_{n,m}, \qquad
        \sigma^2_{n,k} = \sum_m g_{n,k,m} \big(e^{2\lambda_k} \sigma^2_{n,m}
                         + \mu_{n,m}^2\big) - \mu_{n,k}^2,

        \log p(y_n \mid z_n = k) = \log \sum_m g_{n,k,m}\, p^{(k)}_m(y_n)

    with :math:`g = e^{\log w}` the gate's weights and :math:`\lambda_k` the regime
    volatility levels.

    Parameters
    ----------
    log_w : Tensor ``(S, N, K, M)``
        :math:`\log g`, broadcastable.
    log_p : Tensor ``(S, N, K, M)``
        :math:`\log p^{(k)}_m(y_n)` (rows ``n >= n_obs`` are not read).
    means, variances : Tensor ``(S, N, M)``
        Each expert's predictive mean and variance of the first target.
    log_scale : Tensor ``(S, K)``
        :math:`\lambda_k`.
    n_obs : int
        Origins with an observed response.

    Returns
    -------
    tuple of Tensor
        ``mu (S, N, K)``, ``var (S, N, K)`` and ``log_emit (S, n_obs, K)``, float64.
    """
    shape = tuple(log_p.shape)
    S, N, K, _ = shape
    mu, var = np.empty((S, N, K)), np.empty((S, N, K))
    log_emit = np.empty((S, n_obs, K))
    _regime_mixture(
        _array(log_w, shape),
        _array(log_p, shape),
        _array(means, shape[:2] + shape[3:]),
        _array(variances, shape[:2] + shape[3:]),
        np.exp(2.0 * _array(log_scale, (S, K))),
        mu,
        var,
        log_emit,
    )
    return torch.from_numpy(mu), torch.from_numpy(var), torch.from_numpy(log_emit)


def causal_mixture(log_regime, log_w, log_p, n_obs: int):
    r"""Mixture weights of the causal predictive and its density at the realised value.

    .. math::

        \log w_{n,k,m} = \log P(z_n = k \mid \mathcal F_n) + \log g_{n,k,m},
        \qquad
        \log p(y_n \mid \mathcal F_n) = \log \sum_{k,m} w_{n,k,m}\, p^{(k)}_m(y_n)

    Parameters
    ----------
    log_regime : Tensor ``(S, N, K)``
        :math:`\log P(z_n = k \mid \mathcal F_n)`.
    log_w : Tensor ``(S, N, K, M)``
        The gate's :math:`\log g`, broadcastable.
    log_p : Tensor ``(S, N, K, M)``
        :math:`\log p^{(k)}_m(y_n)` (rows ``n >= n_obs`` are not read).
    n_obs : int

    Returns
    -------
    tuple of Tensor
        ``log_mix (S, N, K, M)`` and ``log_density (S, n_obs)``, float64.
    """
    shape = tuple(log_p.shape)
    log_mix = np.empty(shape)
    log_density = np.empty((shape[0], n_obs))
    _causal_mixture(
        _array(log_regime, shape[:3]),
        _array(log_w, shape),
        _array(log_p, shape),
        log_mix,
        log_density,
    )
    return torch.from_numpy(log_mix), torch.from_numpy(log_density)


def outer_log_softmax(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    r"""``log_softmax`` over the last dimension of an outer sum, one compiled pass.

    .. math::

        \ell_{n,k,m} = a_{k,m} + b_{n,m} - \log \sum_{m'} e^{a_{k,m'} + b_{n,m'}},
        \qquad
        \sum_{m'} e^{a_{k,m'} + b_{n,m'}} = e^{\bar a_k + \bar b_n}
        \sum_{m'} e^{a_{k,m'} - \bar a_k}\, e^{b_{n,m'} - \bar b_n}

    with the row maxima :math:`\bar a_k`, :math:`\bar b_n`: ``M`` exponentials per
    origin instead of ``K M``; where that sum falls below the smallest normal number
    (maxima ~700 nats apart) the entry takes the plain stable log-sum-exp. The
    compiled route of :func:`bayes_moe.models.gate.log_softmax_of_sum`; no gradient.

    Parameters
    ----------
    rows : Tensor ``S + (K, M)``
    cols : Tensor ``S + (N, M)``
        ``S`` any batch shape, broadcast between the two.

    Returns
    -------
    Tensor ``S + (N, K, M)``, the dtype of ``rows``
    """
    K, M = rows.shape[-2:]
    N = cols.shape[-2]
    batch = torch.broadcast_shapes(rows.shape[:-2], cols.shape[:-2])
    B = math.prod(batch)
    out = np.empty((B, N, K, M))
    _outer_log_softmax(
        _array(rows, batch + (K, M)).reshape(B, K, M),
        _array(cols, batch + (N, M)).reshape(B, N, M),
        out,
    )
    return torch.from_numpy(out).reshape(batch + (N, K, M)).to(rows.dtype)


def regime_location_scale_log_prob(value, loc, scale, df, log_scale) -> torch.Tensor:
    r"""Log density of independent Normal or Student-t margins stretched by each regime.

    .. math::

        \log p_k(y) = \sum_j \Big[\log f_\nu\big(e^{-\lambda_k}
        (y_j - \mu_j) / s_j\big) - \log s_j\Big] - d_y \lambda_k,

    with :math:`f_\nu` the standard Student-t density (the standard Normal's without
    ``df``). The compiled route of
    :func:`bayes_moe.models.distributions.regime_log_prob` for ``Independent``
    families; no gradient.

    Parameters
    ----------
    value : Tensor ``(N, d_y)``
    loc, scale : Tensor ``S + (N, d_y)``
    df : Tensor ``S + (N, d_y)`` or None (Normal margins)
    log_scale : Tensor ``S + (K,)``
        :math:`\lambda_k`; ``S`` broadcasts with the batch of ``loc``.

    Returns
    -------
    Tensor ``S + (N, K)``, the dtype of ``loc``
    """
    N, D = value.shape[-2:]
    K = log_scale.shape[-1]
    batch = torch.broadcast_shapes(loc.shape[:-2], scale.shape[:-2], log_scale.shape[:-1])
    if df is not None:
        batch = torch.broadcast_shapes(batch, df.shape[:-2])
    B = math.prod(batch)
    shape = batch + (N, D)
    out = np.empty((B, N, K))
    _regime_log_prob(
        _array(value, (N, D)),
        _array(loc, shape).reshape(B, N, D),
        _array(scale, shape).reshape(B, N, D),
        np.empty((1, 1, 1)) if df is None else _array(df, shape).reshape(B, N, D),
        df is not None,
        _array(log_scale, batch + (K,)).reshape(B, K),
        out,
    )
    return torch.from_numpy(out).reshape(batch + (N, K)).to(loc.dtype)


def pick_components(log_w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    r"""Inverse-CDF draws of a component from unnormalised log weights.

    Row ``r`` picks the first component ``c`` with positive weight at which the
    cumulative normalised weight reaches ``u[r]``:
    :math:`\min\{c : w_c > 0, \sum_{c' \le c} w_{c'} \ge u_r \sum_{c'} w_{c'}\}`
    (the last positive-weight component if rounding leaves the sum short), so a
    uniform ``u`` gives a draw from :math:`w / \sum w`.

    Parameters
    ----------
    log_w : Tensor ``(..., C)``
        Log weights, not necessarily normalised; ``-inf`` for an impossible component.
    u : Tensor ``(...)``
        Uniform draws in ``[0, 1)``.

    Returns
    -------
    Tensor ``(...)`` int64
    """
    shape = tuple(log_w.shape)
    picks = np.empty(math.prod(shape[:-1]), dtype=np.int64)
    _pick(_array(log_w, shape).reshape(-1, shape[-1]), _array(u, shape[:-1]).reshape(-1), picks)
    return torch.from_numpy(picks).reshape(shape[:-1])
