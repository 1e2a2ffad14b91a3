"""The simplest baselines: an iid Normal and the RiskMetrics EWMA."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import signal

from bayes_moe.evaluation.backtest import realized_dates
from bayes_moe.evaluation.baselines._common import (
    _finite_column,
    _origin_positions,
    _train_returns,
)
from bayes_moe.evaluation.distributions import LocationScaleMixture


@dataclass(frozen=True)
class ConstantNormalFit:
    r"""Fitted iid Normal: :math:`R^{(h)}_t \sim N(h\mu, h\sigma^2)` (exact for iid returns).

    Attributes
    ----------
    mean, sd : float
        Sample mean and standard deviation (``ddof=1``) of the training returns.
    """

    mean: float
    sd: float

    def __call__(self, frame: pd.DataFrame, origins, horizon: int = 1) -> LocationScaleMixture:
        """Predictive distributions at ``origins`` (module docstring)."""
        pos = _origin_positions(frame, origins, horizon)
        n = len(pos)
        return LocationScaleMixture.normal(
            loc=np.full(n, horizon * self.mean),
            scale=np.full(n, np.sqrt(horizon) * self.sd),
            dates=realized_dates(frame.index, pos, horizon),
        )


@dataclass(frozen=True)
class ConstantNormal:
    """iid Normal returns with the training sample's mean and standard deviation."""

    name: str = "constant_normal"

    def __call__(self, train: pd.DataFrame) -> ConstantNormalFit:
        """Fit on ``train`` (needs 2 returns)."""
        r = _train_returns(train, 2)
        return ConstantNormalFit(mean=float(r.mean()), sd=float(r.std(ddof=1)))


def ewma_variance(r: np.ndarray, lam: float, initial: float) -> np.ndarray:
    r"""RiskMetrics variance recursion, one step ahead.

    .. math::

        \sigma^2_0 = v_0, \qquad \sigma^2_{t+1} = \lambda \sigma^2_t + (1 - \lambda) r_t^2

    Parameters
    ----------
    r : ndarray (T,)
        Returns.
    lam : float
        Decay :math:`\lambda \in (0, 1)`.
    initial : float
        :math:`v_0`, the variance of ``r[0]``.

    Returns
    -------
    ndarray (T,)
        Entry ``t`` is :math:`\sigma^2_{t+1}`, the variance of ``r[t+1]`` given
        ``r[:t+1]``.
    """
    out, _ = signal.lfilter([1.0 - lam], [1.0, -lam], r**2, zi=[lam * initial])
    return out


@dataclass(frozen=True)
class EWMAFit:
    r"""Fitted RiskMetrics model.

    One step: :math:`r_{t+1} \mid \mathcal F_t \sim N(0, \sigma^2_{t+1})` with
    :func:`ewma_variance` run from the first row of ``frame``, started at
    ``initial_variance``. ``h`` steps: :math:`N(0, h\,\sigma^2_{t+1})`; the variance is
    exact (the IGARCH recursion without intercept forecasts a flat variance path), the
    Normal shape of the sum is an approximation.

    Attributes
    ----------
    lam : float
    initial_variance : float
        Mean squared training return: the variance of the first row of ``frame``
        (forgotten at rate :math:`\lambda^t`).
    """

    lam: float
    initial_variance: float

    def __call__(self, frame: pd.DataFrame, origins, horizon: int = 1) -> LocationScaleMixture:
        """Predictive distributions at ``origins`` (module docstring)."""
        pos = _origin_positions(frame, origins, horizon)
        r = _finite_column(frame, "ret", pos.max() + 1, "frame")
        var = ewma_variance(r, self.lam, self.initial_variance)[pos]
        return LocationScaleMixture.normal(
            loc=np.zeros(len(pos)),
            scale=np.sqrt(horizon * var),
            dates=realized_dates(frame.index, pos, horizon),
        )


@dataclass(frozen=True)
class EWMA:
    """RiskMetrics exponentially weighted variance, zero mean, Normal.

    Parameters
    ----------
    lam : float, default 0.94
        The RiskMetrics daily decay.
    """

    lam: float = 0.94
    name: str = "ewma"

    def __call__(self, train: pd.DataFrame) -> EWMAFit:
        """Fit on ``train``: only the starting variance is estimated."""
        if not 0.0 < self.lam < 1.0:
            raise ValueError(f"lam must lie in (0, 1), got {self.lam}")
        r = _train_returns(train, 2)
        return EWMAFit(lam=self.lam, initial_variance=float(np.mean(r**2)))
