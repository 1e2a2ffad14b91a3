r"""The Kalman filter for a scalar state and observation as a compiled loop (numba).

The route ``method="sequential"`` of :func:`bayes_moe.kernels.kalman.kalman_filter`
for ``k = p = 1``: the textbook recursion of
:func:`~bayes_moe.kernels.kalman.reference_kalman_filter`,

.. math::

    S_t &= H^2 P_{t|t-1} + R_t, \qquad K_t = P_{t|t-1} H / S_t, \qquad
    e_t = y_t - H m_{t|t-1} - d, \\
    m_{t|t} &= m_{t|t-1} + K_t e_t, \qquad P_{t|t} = P_{t|t-1} (1 - K_t H), \\
    m_{t+1|t} &= F m_{t|t} + c, \qquad P_{t+1|t} = F^2 P_{t|t} + Q,

with :math:`\log p(y_t \mid y_{1:t-1}) = -\tfrac12 (\log 2\pi + \log S_t + e_t^2 / S_t)`,
looped over the batch and time in float64: ``O(T)`` scalar operations per sequence
against the ``O(T log T)`` tensor operations of the parallel scan, and no gradient.
Posterior evaluation runs it once per draw (the draws are the batch).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

__all__ = ["scalar_filter_loop"]

_JIT: dict[str, Any] = {
    "cache": True,
    "nogil": True,
    "fastmath": {"nsz", "contract", "reassoc"},
    "error_model": "numpy",  # x / 0 is inf or nan, as in torch, not an exception
}
_LOG_2PI = math.log(2.0 * math.pi)


@numba.njit(**_JIT)
def _scalar_filter(y, F, c, H, d, Q, R, m1, P1, out):
    n_batch, n_steps = y.shape
    for b in range(n_batch):
        m = m1[b]
        P = P1[b]
        for t in range(n_steps):
            if t > 0:
                m = F[b] * m + c[b]
                P = F[b] * F[b] * P + Q[b]
            out[2, b, t] = m
            out[3, b, t] = P
            obs_mean = H[b] * m + d[b]
            S = H[b] * H[b] * P + R[b, t]
            err = y[b, t] - obs_mean
            out[4, b, t] = obs_mean
            out[5, b, t] = S
            out[6, b, t] = -0.5 * (_LOG_2PI + math.log(S) + err * err / S)
            gain = P * H[b] / S
            m = m + gain * err
            P = P * (1.0 - gain * H[b])
            out[0, b, t] = m
            out[1, b, t] = P


def scalar_filter_loop(y, F, c, H, d, Q, R, m1, P1) -> np.ndarray:
    """Run the recursion; every argument a float64 numpy array.

    Parameters
    ----------
    y, R : ndarray ``(B, T)``
        Observations and observation variances.
    F, c, H, d, Q, m1, P1 : ndarray ``(B,)``
        Transition, state intercept, design, observation intercept, state variance,
        and the predicted state mean and variance at ``t = 1``.

    Returns
    -------
    ndarray ``(7, B, T)``
        Filtered mean and variance, predicted state mean and variance, predicted
        observation mean and variance, log-likelihood terms.
    """
    arrays = [np.ascontiguousarray(a, dtype=np.float64) for a in (y, F, c, H, d, Q, R, m1, P1)]
    out = np.empty((7,) + arrays[0].shape)
    _scalar_filter(*arrays, out)
    return out
