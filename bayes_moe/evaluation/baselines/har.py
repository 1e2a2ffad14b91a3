"""log-HAR on the Parkinson range variance (Corsi 2009), optionally with log VIX."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd

from bayes_moe.data.errors import DataError, format_date
from bayes_moe.data.features import parkinson_variance
from bayes_moe.evaluation.backtest import realized_dates
from bayes_moe.evaluation.baselines._common import (
    _fit_unit_t_df,
    _origin_positions,
    _train_returns,
)
from bayes_moe.evaluation.distributions import LocationScaleMixture


def _range_variance(frame: pd.DataFrame) -> pd.Series:
    if "var_parkinson" in frame.columns:
        return frame["var_parkinson"]
    if {"high", "low"} <= set(frame.columns):
        return parkinson_variance(frame["high"], frame["low"])
    raise DataError(
        "the HAR baselines need 'var_parkinson' or 'high' and 'low'; "
        f"the frame has {[str(c) for c in frame.columns]}"
    )


def har_regressors(
    frame: pd.DataFrame, *, vix: str | None = None, variance_floor: float = 1e-4
) -> np.ndarray:
    r"""The log-HAR regressors of every row: ``(T, 4)``, or ``(T, 5)`` with VIX.

    .. math::

        x_t = \big(1,\ \log v_t,\ \log \tfrac15 \textstyle\sum_{i=0}^{4} v_{t-i},\
              \log \tfrac1{22} \sum_{i=0}^{21} v_{t-i}\ [,\ \log \mathrm{VIX}_t]\big)

    with :math:`v_t = \max(\text{Parkinson variance}_t, \text{floor})` (``var_parkinson``,
    or computed from ``high`` and ``low``). Rows without 22 days of history, or without a
    finite positive VIX, are NaN.
    """
    v = np.maximum(_range_variance(frame).to_numpy(dtype=np.float64), variance_floor)
    s = pd.Series(v)
    cols = [
        np.ones(len(v)),
        np.log(v),
        np.log(s.rolling(5, min_periods=5).mean().to_numpy()),
        np.log(s.rolling(22, min_periods=22).mean().to_numpy()),
    ]
    if vix is not None:
        x = frame[vix].to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            cols.append(np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.nan))
    return np.column_stack(cols)


@dataclass(frozen=True)
class HARParams:
    r"""One fitted direct ``h``-step log-HAR return model.

    Attributes
    ----------
    horizon : int
    beta : ndarray (p,)
        OLS coefficients of :math:`\log \bar v_{t,h}` on :math:`x_t`.
    mean : float
        :math:`m_h`, the mean training ``h``-day return.
    variance_scale : float
        :math:`c_h`.
    df : float
        :math:`\nu_h`.
    n_obs : int
        Training pairs used.
    """

    horizon: int
    beta: np.ndarray
    mean: float
    variance_scale: float
    df: float
    n_obs: int


def _fit_har(
    x: np.ndarray, logv: np.ndarray, r: np.ndarray, horizon: int, *, required: bool = True
) -> HARParams | None:
    """Fit :class:`HARParams` on training regressors ``x``, log variances and returns.

    Needs ``10 p`` usable pairs for ``p`` regressors; with fewer, raises a DataError
    (``required``) or returns None.
    """
    n = len(r)
    h = horizon
    rows = np.flatnonzero(np.isfinite(x).all(axis=1)[: max(n - h, 0)])
    if len(rows) < 10 * x.shape[1]:
        if not required:
            return None
        raise DataError(
            f"the HAR regression for horizon {h} has {len(rows)} usable training days; "
            f"it needs at least {10 * x.shape[1]}"
        )
    v = np.exp(logv)
    cv = np.concatenate([[0.0], np.cumsum(v)])
    cr = np.concatenate([[0.0], np.cumsum(r)])
    target = np.log((cv[rows + 1 + h] - cv[rows + 1]) / h)
    sums = cr[rows + 1 + h] - cr[rows + 1]
    beta, *_ = np.linalg.lstsq(x[rows], target, rcond=None)
    level = np.exp(x[rows] @ beta)
    mean = float(sums.mean())
    scale = float(np.mean((sums - mean) ** 2 / level))
    df = _fit_unit_t_df((sums - mean) / np.sqrt(scale * level))
    return HARParams(h, beta, mean, scale, df, len(rows))


class LogHARFit:
    r"""A fitted log-HAR return model (see :class:`LogHAR`); direct fits per horizon.

    The horizon-1 model is fitted eagerly; a model for another horizon is fitted on the
    same training sample the first time it is asked for, then cached.

    Attributes
    ----------
    name : str
    uses_vix : bool
        Whether a VIX model was fitted (the training sample has enough VIX days).
    plain : dict of int to HARParams
        The log-HAR without VIX, per horizon.
    with_vix : dict of int to HARParams
        The log-HAR with log VIX, per horizon (empty when ``uses_vix`` is false; a
        horizon is missing when the VIX sample has too few pairs for it, and the plain
        model is used).
    """

    def __init__(self, train: pd.DataFrame, *, vix: str | None, variance_floor: float, name):
        self.name = name
        self.variance_floor = variance_floor
        r = _train_returns(train, 60)
        self._r = r
        self._x = har_regressors(train, variance_floor=variance_floor)
        self._logv = self._x[:, 1].copy()
        if not np.isfinite(self._logv).all():
            raise DataError("train: the range variance is not finite")
        self.vix = vix if vix is not None and vix in train.columns else None
        self._xv = None
        if self.vix is not None:
            xv = har_regressors(train, vix=self.vix, variance_floor=variance_floor)
            if np.isfinite(xv[:-1]).all(axis=1).sum() >= 10 * xv.shape[1]:
                self._xv = xv
        self.plain: dict[int, HARParams] = {}
        self.with_vix: dict[int, HARParams] = {}
        self.params(1)

    @property
    def uses_vix(self) -> bool:
        """Whether the VIX model exists."""
        return self._xv is not None

    def params(self, horizon: int) -> tuple[HARParams, HARParams | None]:
        """The (plain, VIX) models of ``horizon``, fitted on first use."""
        if horizon not in self.plain:
            # required (the default): raises rather than returning None
            self.plain[horizon] = cast(HARParams, _fit_har(self._x, self._logv, self._r, horizon))
            if self._xv is not None:
                vixed = _fit_har(self._xv, self._logv, self._r, horizon, required=False)
                if vixed is not None:
                    self.with_vix[horizon] = vixed
        return self.plain[horizon], self.with_vix.get(horizon)

    def __call__(self, frame: pd.DataFrame, origins, horizon: int = 1) -> LocationScaleMixture:
        """Predictive distributions at ``origins`` (module docstring)."""
        pos = _origin_positions(frame, origins, horizon)
        plain, vixed = self.params(horizon)
        sub = frame.iloc[: pos.max() + 1]
        x = har_regressors(sub, variance_floor=self.variance_floor)[pos]
        if not np.isfinite(x).all():
            bad = pos[~np.isfinite(x).all(axis=1)][0]
            raise DataError(
                f"{self.name}: origin {format_date(frame.index[bad])} has no 22 days of "
                "finite range variance before it"
            )
        fc = x @ plain.beta
        loc = np.full(len(pos), plain.mean)
        var = plain.variance_scale * np.exp(fc)
        df = np.full(len(pos), plain.df)
        if vixed is not None and self.vix in frame.columns:
            xv = har_regressors(sub, vix=self.vix, variance_floor=self.variance_floor)[pos]
            has = np.isfinite(xv).all(axis=1)
            loc[has] = vixed.mean
            var[has] = vixed.variance_scale * np.exp(xv[has] @ vixed.beta)
            df[has] = vixed.df
        return LocationScaleMixture.student_t(
            df=df,
            loc=loc,
            scale=np.sqrt(var * (df - 2.0) / df),
            dates=realized_dates(frame.index, pos, horizon),
        )

    def __repr__(self) -> str:
        return f"LogHARFit(name={self.name!r}, uses_vix={self.uses_vix}, plain={self.plain})"


@dataclass(frozen=True)
class LogHAR:
    r"""log-HAR (Corsi 2009) on the Parkinson range variance, Student-t returns.

    Specification (horizon ``h``; ``h = 1`` is the one-step model):

    1. Variance: :math:`v_t` is the Parkinson range variance ``var_parkinson`` (%^2).
       Direct OLS of the log of the next ``h`` days' mean variance on the HAR
       regressors (:func:`har_regressors`; log of the 1-, 5- and 22-day averages, plus
       :math:`\log \mathrm{VIX}_t` for ``har_vix``):

       .. math:: \log \tfrac1h \textstyle\sum_{j=1}^{h} v_{t+j} = x_t^\top \beta + u_t

    2. Returns: :math:`R^{(h)}_t = m_h + \sqrt{c_h e^{x_t^\top\beta}}\,\epsilon_t` with
       :math:`\epsilon_t` a unit-variance Student-t, where on the training pairs
       :math:`m_h` is the mean of :math:`R^{(h)}_t`,
       :math:`c_h = \overline{(R^{(h)}_t - m_h)^2 / e^{x_t^\top\beta}}` (the moment
       estimator of the variance ratio, which absorbs both the log-normal bias
       :math:`E e^{u}` and the overnight variance the intraday range misses; about 2 for
       the S&P 500 1999-2014) and :math:`\nu_h` maximizes the unit-variance t
       likelihood of the standardized training returns.

    The predictive is :math:`t_{\nu_h}\big(m_h, \sqrt{c_h e^{x_t^\top\beta}
    (\nu_h - 2)/\nu_h}\big)`. For ``h > 1`` the training pairs overlap; the estimates
    stay consistent moment and quasi-likelihood estimates.

    With VIX (``vix="vix"``, the column :func:`bayes_moe.data.add_vix` adds): the VIX
    model is fitted on the training days that have VIX only (in arch.data that is from
    2014-01-03 on: the HAR-VIX regression, :math:`m_h`, :math:`c_h` and :math:`\nu_h`
    all come from that overlapping sample) and used at origins that have a VIX value;
    at origins without one, or when the training sample has fewer than 50 VIX days or
    no ``vix`` column, the plain log-HAR (fitted on all training days) is used.

    Parameters
    ----------
    vix : str or None
        Column holding the VIX close (``None``: plain log-HAR).
    variance_floor : float
        Floor on the daily range variance before the log (days with ``high == low``).
    name : str
    """

    vix: str | None = None
    variance_floor: float = 1e-4
    name: str = "har"

    def __call__(self, train: pd.DataFrame) -> LogHARFit:
        """Fit on ``train`` (needs ``ret`` and ``var_parkinson`` or ``high``/``low``)."""
        return LogHARFit(train, vix=self.vix, variance_floor=self.variance_floor, name=self.name)
