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

import numba
import numpy as np
import torch

__all__ = ["causal_mixture", "pick_components", "regime_mixture"]

_JIT = {"cache": True, "nogil": True, "fastmath": {"nsz", "contract", "reassoc"}}


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
def _pick(log_w, u, picks):
    n_rows, n_components = log_w.shape
    for r in range(n_rows):
        top = -np.inf
        for c in range(n_components):
            top = max(top, log_w[r, c])
        total = 0.0
        for c in range(n_components):
            total += math.exp(log_w[r, c] - top)
        target = u[r] * total
        cumulative = 0.0
        choice = -1
        for c in range(n_components):
            w = math.exp(log_w[r, c] - top)
            cumulative += w
            if w > 0.0:
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
