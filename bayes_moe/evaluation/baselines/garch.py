"""GARCH(1,1)-t, GJR-GARCH-t and EGARCH-t forecasters on top of the arch package."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bayes_moe.evaluation.backtest import realized_dates
from bayes_moe.evaluation.baselines._common import (
    _finite_column,
    _origin_positions,
    _t_scale,
    _train_returns,
)
from bayes_moe.evaluation.distributions import LocationScaleMixture

if TYPE_CHECKING:
    from arch.univariate.base import ARCHModel


@dataclass(frozen=True)
class ArchTFit:
    r"""A fitted constant-mean GARCH-family model with Student-t innovations.

    The variance recursion is run by the fitted :mod:`arch` volatility process over
    ``frame`` with the fitted parameters, the *training* backcast (the arch default,
    an exponentially weighted mean of the first 75 squared training residuals) and
    constant variance bounds from the training sample, so nothing after ``t`` enters
    the forecast made at ``t``. On the training frame this is exactly
    ``arch_model(...).fit(...).forecast(...)``.

    ``h`` steps: :math:`R^{(h)}_t` is Student-t with location :math:`h\mu`, the fitted
    :math:`\nu` and variance :math:`\sum_{j=1}^h E_t\sigma^2_{t+j}` (the exact variance
    of the sum; the t shape is an approximation). The variance path is analytic for
    GARCH and GJR-GARCH and simulated for EGARCH (``simulations`` paths with the same
    seeded standardized t shocks for every origin, so a forecast depends on the rows up
    to its origin and the seed only).

    Attributes
    ----------
    params : Series
        ``mu``, the volatility parameters, ``nu`` (arch's names).
    model : arch ARCHModel
        The training model (its ``volatility`` process is used).
    backcast : float
    var_bounds : ndarray (2,)
        Lower and upper variance bounds.
    simulations, seed : int
        For simulated multi-step variance paths (EGARCH).
    """

    params: pd.Series
    model: ARCHModel = field(repr=False)
    backcast: float
    var_bounds: np.ndarray = field(repr=False)
    simulations: int = 2000
    seed: int = 0

    @property
    def df(self) -> float:
        r"""Degrees of freedom :math:`\nu`."""
        return float(self.params["nu"])

    def variance_forecasts(self, frame: pd.DataFrame, pos: np.ndarray, horizon: int):
        r""":math:`E_t \sigma^2_{t+j}`, ``j = 1..h``, for origins at ``pos``: ``(n, h)``."""
        p = self.params.to_numpy()
        mu, vp = p[0], p[1:-1]
        stop = pos.max() + 1
        resids = _finite_column(frame, "ret", stop, "frame") - mu
        bounds = np.tile(self.var_bounds, (stop, 1))
        vol = self.model.volatility
        start = int(pos.min())
        if horizon == 1 or vol.name != "EGARCH":
            out = vol.forecast(vp, resids, self.backcast, bounds, start=start, horizon=horizon)
        else:
            nu = self.df
            gen = np.random.default_rng(self.seed)
            shocks = gen.standard_t(nu, size=(self.simulations, horizon)) * np.sqrt((nu - 2) / nu)
            out = vol.forecast(
                vp,
                resids,
                self.backcast,
                bounds,
                start=start,
                horizon=horizon,
                method="simulation",
                simulations=self.simulations,
                rng=lambda size: shocks,
            )
        return np.asarray(out.forecasts)[pos - start]

    def __call__(self, frame: pd.DataFrame, origins, horizon: int = 1) -> LocationScaleMixture:
        """Predictive distributions at ``origins`` (module docstring)."""
        pos = _origin_positions(frame, origins, horizon)
        var = self.variance_forecasts(frame, pos, horizon).sum(axis=1)
        nu = self.df
        return LocationScaleMixture.student_t(
            df=np.full(len(pos), nu),
            loc=np.full(len(pos), horizon * float(self.params.iloc[0])),
            scale=_t_scale(var, nu),
            dates=realized_dates(frame.index, pos, horizon),
        )


@dataclass(frozen=True)
class ArchT:
    r"""Constant mean, (GJR/E)GARCH(1, o, 1) variance, standardized Student-t errors.

    Fitted by maximum likelihood with :func:`arch.arch_model`
    (``mean="Constant", vol=vol, p=1, o=o, q=1, dist="t"``, arch's default starting
    values and backcast) on the training returns:

    .. math::

        r_t = \mu + \sigma_t \epsilon_t, \quad
        \epsilon_t \sim t_\nu \sqrt{(\nu - 2)/\nu}, \quad
        \sigma^2_t = \omega + (\alpha + \gamma 1\{\epsilon_{t-1} < 0\}) (r_{t-1}-\mu)^2
            + \beta \sigma^2_{t-1}

    (GARCH: ``o=0``; GJR: ``o=1``; EGARCH: the recursion in :math:`\log\sigma^2_t` of
    Nelson 1991 with ``o=1``).

    Parameters
    ----------
    vol : {"GARCH", "EGARCH"}
    o : int
        Order of the asymmetric term.
    name : str
    simulations, seed : int
        Paths and seed of the simulated EGARCH multi-step variance forecasts.
    """

    vol: str = "GARCH"
    o: int = 0
    name: str = "garch_t"
    simulations: int = 2000
    seed: int = 0

    def __call__(self, train: pd.DataFrame) -> ArchTFit:
        """Fit on ``train`` (needs 100 returns)."""
        from arch import arch_model

        r = _train_returns(train, 100)
        # arch types vol as a Literal of its process names; self.vol is a plain str field.
        am = arch_model(r, mean="Constant", vol=self.vol, p=1, o=self.o, q=1, dist="t")  # type: ignore[arg-type]
        res = am.fit(disp="off")
        params = pd.Series(res.params.to_numpy(), index=res.params.index)
        resids = r - params.iloc[0]
        bounds = am.volatility.variance_bounds(resids, 2.0)
        return ArchTFit(
            params=params,
            model=am,
            backcast=float(am.volatility.backcast(resids)),
            var_bounds=np.array([bounds[:, 0].min(), bounds[:, 1].max()]),
            simulations=self.simulations,
            seed=self.seed,
        )
