r"""GARCH(1,1) conditional variances by a parallel scan, and their h-day aggregates.

Bollerslev's (1986) recursion for the residuals :math:`\varepsilon_t = y_t - \mu`,

.. math::

    \sigma^2_0 = \omega + (\alpha + \beta)\, \bar\sigma^2, \qquad
    \sigma^2_t = \omega + \alpha\, \varepsilon^2_{t-1} + \beta\, \sigma^2_{t-1}
    \quad (t \ge 1),

with the backcast :math:`\bar\sigma^2` standing in for the squared residual and the
variance before the first day (the start the ``arch`` package uses, so that the two
agree to rounding at the same parameters). Given the residuals the recursion is linear
in :math:`\sigma^2`, so it runs as a prefix scan of affine maps
(:func:`~bayes_moe.kernels.scan.linear_recurrence`): ``O(log T)`` sequential tensor
operations, batched over posterior draws and differentiable, with no loop over days.

References
----------
T. Bollerslev, "Generalized autoregressive conditional heteroskedasticity",
J. Econometrics 31(3), 1986.
"""

from __future__ import annotations

import torch

from bayes_moe.kernels.scan import linear_recurrence

#: Residuals the backcast averages over, and the weight decay between them (arch's).
BACKCAST_DAYS: int = 75
BACKCAST_DECAY: float = 0.94


def arch_backcast(resid: torch.Tensor, days: int = BACKCAST_DAYS) -> torch.Tensor:
    r"""The exponentially weighted mean square of the first residuals.

    .. math::

        \bar\sigma^2 = \sum_{i=0}^{\tau-1} w_i\, \varepsilon_i^2, \qquad
        w_i = 0.94^i \Big/ \sum_{j<\tau} 0.94^j, \qquad \tau = \min(75, T),

    ``arch``'s default start of a variance recursion.

    Parameters
    ----------
    resid : Tensor ``(..., T)``
        Residuals, time last; only the first ``min(days, T)`` are read.
    days : int
        :math:`\tau`'s upper bound.

    Returns
    -------
    Tensor ``(...)``
    """
    tau = min(days, resid.shape[-1])
    weights = BACKCAST_DECAY ** torch.arange(tau, dtype=resid.dtype, device=resid.device)
    return (resid[..., :tau].square() * (weights / weights.sum())).sum(-1)


def garch_variance(
    resid: torch.Tensor,
    omega: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    backcast: torch.Tensor,
) -> torch.Tensor:
    r"""Conditional variances :math:`\sigma^2_0, \dots, \sigma^2_T` of a GARCH(1,1).

    The recursion of the module docstring, one step past the last residual: entry
    ``t`` depends on residuals ``< t`` only, so entry ``T`` is the one-step forecast
    made after the last day.

    Parameters
    ----------
    resid : Tensor ``(..., T)``
        :math:`\varepsilon_0, \dots, \varepsilon_{T-1}`, time last.
    omega, alpha, beta, backcast : Tensor
        Broadcastable to ``resid.shape[:-1]``; :math:`\omega > 0`,
        :math:`\alpha, \beta \ge 0`.

    Returns
    -------
    Tensor ``broadcast(...) + (T + 1,)``
    """
    batch = torch.broadcast_shapes(
        resid.shape[:-1], omega.shape, alpha.shape, beta.shape, backcast.shape
    )
    start = omega + (alpha + beta) * backcast  # sigma^2_0
    # x_t = beta x_{t-1} + (omega + alpha eps_{t-1}^2), time-major for the scan.
    drive = omega.unsqueeze(-1) + alpha.unsqueeze(-1) * resid.square()
    drive = drive.expand(batch + resid.shape[-1:]).movedim(-1, 0)
    later = linear_recurrence(beta.expand(batch).unsqueeze(0), drive, start.expand(batch))
    return torch.cat([start.expand(batch).unsqueeze(-1), later.movedim(0, -1)], dim=-1)


def aggregate_variance(
    next_variance: torch.Tensor, omega: torch.Tensor, persistence: torch.Tensor, horizon: int
) -> torch.Tensor:
    r"""Forecast variance of the sum of the next ``h`` returns given :math:`\sigma^2_{t+1}`.

    .. math::

        \operatorname{Var}_t\Big(\sum_{j=1}^h \varepsilon_{t+j}\Big)
        = \sum_{j=1}^{h} \mathbb E_t\,\sigma^2_{t+j}, \qquad
        \mathbb E_t\,\sigma^2_{t+j} = \omega \sum_{i=0}^{j-2} p^i + p^{j-1}\,\sigma^2_{t+1},

    with :math:`p = \alpha + \beta` (the GARCH errors are uncorrelated). Summed term by
    term, so it stays exact as :math:`p \to 1`.

    Parameters
    ----------
    next_variance : Tensor ``(..., N)``
        :math:`\sigma^2_{t+1}` at each origin.
    omega, persistence : Tensor
        Broadcastable to ``next_variance.shape[:-1]``.
    horizon : int
        ``h >= 1``.

    Returns
    -------
    Tensor ``(..., N)``
    """
    omega, persistence = omega.unsqueeze(-1), persistence.unsqueeze(-1)
    expected = next_variance  # E_t sigma^2_{t+1}
    total = expected
    for _ in range(1, horizon):
        expected = omega + persistence * expected
        total = total + expected
    return total
