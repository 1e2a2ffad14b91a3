"""The Bayesian mixture of experts as a backtest forecaster.

:class:`MoEForecaster` fits a :class:`~bayes_moe.BayesianMoE` by SVI at every refit and,
between refits, conditions the same posterior draws on the growing frame
(:meth:`~bayes_moe.MoEFit.update`): windows, features and the regime filter move
forward, the parameters do not. Its predictive for each day is the exact posterior
predictive mixture over draws and experts, handed to the scoring code as a
:class:`~bayes_moe.evaluation.distributions.LocationScaleMixture` with ``S x M``
components per day.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyro.distributions as dist

from bayes_moe.evaluation.backtest import BlockForecast, realized_dates
from bayes_moe.evaluation.distributions import LocationScaleMixture
from bayes_moe.inference.predictive import PredictiveMixture
from bayes_moe.inference.svi_options import SVIOptions
from bayes_moe.models.distributions import decompose
from bayes_moe.models.moe import BayesianMoE


def _first_target_components(d: dist.Distribution):
    """loc, scale, df of the first target's marginal: arrays ``(S, n)`` (df inf if Normal)."""
    _, params = decompose(d)
    if isinstance(d, dist.Independent):
        base = d.base_dist
        if isinstance(base, dist.StudentT):
            df, loc, scale = (p[..., 0].numpy() for p in params)
            return loc, scale, df
        loc, scale = (p[..., 0].numpy() for p in params)
        return loc, scale, np.full_like(loc, np.inf)
    if isinstance(d, dist.MultivariateNormal):
        mean, tril = params
        first = mean[..., 0].numpy()
        return first, tril[..., 0, :].norm(dim=-1).numpy(), np.full_like(first, np.inf)
    if isinstance(d, dist.MultivariateStudentT):
        dof, mean, tril = params  # scale: sqrt((L L^T)_{00})
        return mean[..., 0].numpy(), tril[..., 0, :].norm(dim=-1).numpy(), dof.numpy()
    raise TypeError(f"unsupported predictive family {type(d).__name__}")


def to_location_scale(mixture: PredictiveMixture, dates: pd.DatetimeIndex) -> LocationScaleMixture:
    r"""The first target's marginal of a posterior predictive mixture, in data units.

    Component ``(s, k, m)`` of day ``n`` has weight :math:`w^{(s)}_{n,k,m} / S` and
    expert ``m``'s location and scale at regime ``k``'s volatility level mapped back
    from standardized units, :math:`\mu = a + b\,\mu_z`,
    :math:`\sigma = b\, e^{\lambda_k} \sigma_z`.
    """
    weights = mixture.log_weights.exp().numpy() / mixture.n_draws  # (S, n, K, M)
    S, n, K, M = weights.shape
    locs, scales, dfs = (
        np.stack(p, axis=-1) for p in zip(*(_first_target_components(d) for d in mixture.experts))
    )  # each (S, n, M)
    stretch = np.exp(mixture.log_scale.numpy())[:, None, :, None]  # (S, 1, K, 1)
    a, b = mixture.loc[0], mixture.scale[0]

    def flat(values):  # (S, n, K, M) -> (n, S * K * M)
        return np.moveaxis(np.broadcast_to(values, (S, n, K, M)), 1, 0).reshape(n, -1)

    return LocationScaleMixture(
        weights=flat(weights),
        loc=a + b * flat(locs[:, :, None, :]),
        scale=b * flat(stretch * scales[:, :, None, :]),
        df=flat(dfs[:, :, None, :]),
        dates=pd.DatetimeIndex(dates),
    )


class MoEForecaster:
    """Backtest forecaster of a :class:`~bayes_moe.BayesianMoE` (see module docstring).

    Parameters
    ----------
    model : BayesianMoE
        The specification (default: the package default experts and regimes).
    target : str
    covariates : sequence of str, optional
        Columns offered to the experts (default: all other columns of the frame); the
        model reads only those some expert reads (:meth:`BayesianMoE.prepare`).
    name : str
        Label in reports.
    horizon : int
        Fitted horizon ``h`` (the backtest's must be the same).
    allow_outliers : bool
        Passed to :meth:`BayesianMoE.fit` and to the :meth:`~bayes_moe.MoEFit.update`
        of each forecast, so that an accepted outlier is accepted throughout.
    options : SVIOptions, optional
        The SVI settings of every refit (default: the defaults without a progress bar).
    **svi_options
        Fields of :class:`~bayes_moe.inference.svi_options.SVIOptions` replacing those
        of ``options`` (``num_steps``, ``num_draws``, ``seed``...); checked here, so a
        misspelt option fails before the backtest starts.
    """

    def __init__(
        self,
        model: BayesianMoE | None = None,
        *,
        target: str = "ret",
        covariates: Sequence[str] | None = None,
        name: str = "bayes_moe",
        horizon: int = 1,
        allow_outliers: bool = False,
        options: SVIOptions | None = None,
        **svi_options: Any,
    ):
        self.model = model if model is not None else BayesianMoE()
        self.target = target
        self.covariates = covariates
        self.name = name
        self.horizon = horizon
        self.allow_outliers = allow_outliers
        base = options if options is not None else SVIOptions(progress=False)
        self.options = SVIOptions.merge(base, svi_options)

    def __call__(self, train: pd.DataFrame):
        """Fit on ``train``; return the ``predict`` function of the backtest protocol.

        Nothing is kept on the forecaster: ``predict`` returns the fit with its
        forecasts (:class:`~bayes_moe.evaluation.backtest.BlockForecast`), and
        ``backtest(..., keep_fits=True)`` gathers the fits.
        """
        fit = self.model.fit(
            train,
            self.target,
            covariates=self.covariates,
            horizon=self.horizon,
            allow_outliers=self.allow_outliers,
            options=self.options,
        )
        return _MoEPredict(fit, allow_outliers=self.allow_outliers)

    def replace(self, **changes: Any) -> MoEForecaster:
        """A copy with constructor arguments or SVI options replaced.

        ``forecaster.replace(horizon=5, seed=1)``: names of the constructor (``model``,
        ``target``, ``covariates``, ``name``, ``horizon``, ``allow_outliers``) replace
        those; any other name is an SVI option.
        """
        own = ("model", "target", "covariates", "name", "horizon", "allow_outliers")
        arguments = {key: getattr(self, key) for key in own}
        arguments.update({k: v for k, v in changes.items() if k in own})
        svi = {k: v for k, v in changes.items() if k not in own}
        return MoEForecaster(**arguments, options=SVIOptions.merge(self.options, svi))

    def for_horizon(self, horizon: int) -> MoEForecaster:
        """The same forecaster fitted for ``horizon`` (a sweep over horizons uses it)."""
        return self.replace(horizon=horizon)


class FittedForecaster:
    """Backtest forecaster that replays fits made before, one per refit, without fitting.

    ``forecaster(train)`` hands out the fit of ``fits`` whose data end on the last day
    of ``train`` (e.g. the ``fits`` of a backtest run with ``keep_fits=True``), so a
    backtest with the same test period and ``refit_every`` scores the same fits again:
    the way to compare evaluation options (such as sparse inference) on equal
    parameters. It keeps no state between refits, so the refits may run anywhere.
    """

    def __init__(self, fits: Sequence, *, allow_outliers: bool = False):
        self.fits = {fit.data.dates[-1]: fit for fit in fits}
        self.allow_outliers = allow_outliers

    def __call__(self, train: pd.DataFrame):
        """The ``predict`` function of the fit that ends on ``train``'s last day."""
        last = train.index[-1]
        if last not in self.fits:
            ends = ", ".join(str(d.date()) for d in self.fits)
            raise ValueError(
                f"no fit ends on {last.date()} (the fits end on {ends}): replay the fits "
                "of a backtest with the same test period and refit_every"
            )
        return _MoEPredict(self.fits[last], allow_outliers=self.allow_outliers)


class _MoEPredict:
    """``predict(frame, origins, horizon)`` of one fit, returning a :class:`BlockForecast`.

    It holds the forecasts, the fit and the filtered regime probabilities.
    """

    def __init__(self, fit, *, allow_outliers: bool = False):
        self.fit = fit
        self.allow_outliers = allow_outliers

    def __call__(self, frame: pd.DataFrame, origins: pd.DatetimeIndex, horizon: int = 1):
        if horizon != self.fit.horizon:
            raise ValueError(
                f"the mixture was fitted for horizon={self.fit.horizon}; pass "
                f"MoEForecaster(..., horizon={horizon}) to backtest horizon {horizon}"
            )
        current = self.fit.update(frame, allow_outliers=self.allow_outliers)
        index = current.data.origin_dates.get_indexer(origins)
        if (index < 0).any():
            raise ValueError("some origins are not forecast origins of the frame")
        start, end = origins[0], origins[-1]
        mixture = current.predictive(start=start, end=end)
        if len(mixture.dates) != len(origins):
            raise ValueError("origins must be consecutive rows of the frame")
        realized = realized_dates(frame.index, frame.index.get_indexer(origins), horizon)
        regime = mixture.regime_weights.mean(0).numpy()  # P(z_n = k | F_n), mean over draws
        probs = pd.DataFrame(
            regime, index=realized, columns=[f"regime_{k}" for k in range(regime.shape[1])]
        )
        return BlockForecast(
            to_location_scale(mixture, realized), extras={"regime_probs": probs}, fit=self.fit
        )
