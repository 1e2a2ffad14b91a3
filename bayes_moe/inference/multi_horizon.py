r"""Forecasts at several horizons from one call: one fit per horizon (direct strategy).

``BayesianMoE.fit(frame, horizon=[1, 5, 20])`` fits the mixture once per horizon
``h``, each to its own response, the ``h``-day cumulative return
:math:`y = r_{t+1} + \dots + r_{t+h}` (the direct strategy: no iterated one-day
forecasts, so no error compounds through a recursion), with the honest ``h``-day
likelihood of :meth:`MoEProgram.forward` and the gate's horizon prior, which favours
the short-horizon experts at ``h = 1`` and the long-horizon ones at ``h = 20``
(:func:`~bayes_moe.models.gate.horizon_preference`). Every horizon's data are
prepared and validated before any fitting starts; the fits then run one after the
other, each with the same options and seed, or at once as tasks on a Dask cluster
(``fit(..., client=client)``, :func:`fit_horizons`) with results equal to the serial
run's.

:class:`MultiHorizonFit` holds the fits, keyed by horizon: ``forecast(horizon=[1, 5,
20])`` returns the three forecast distributions, ``to_frame()`` one table of them.
Backtests score each horizon separately (``MoEForecaster(model, horizon=h)``), and
their Newey-West lags are at least ``h - 1`` because consecutive ``h``-day targets
overlap (:func:`~bayes_moe.evaluation.scoring.newey_west_lag`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pandas as pd

from bayes_moe.inference.predictive import Forecast
from bayes_moe.inference.results import MoEFit
from bayes_moe.inference.svi import fit_svi
from bayes_moe.inference.svi_options import SVIOptions
from bayes_moe.io import atomic_folder

if TYPE_CHECKING:
    from bayes_moe.data.windows import ModelData
    from bayes_moe.models.moe import BayesianMoE


def check_horizons(horizon) -> tuple[int, ...]:
    """``horizon`` as a sorted tuple of distinct positive ints (ValueError otherwise)."""
    values = [horizon] if isinstance(horizon, int) else list(horizon)
    if not values:
        raise ValueError("horizon must name at least one horizon, got an empty list")
    for h in values:
        if isinstance(h, bool) or not isinstance(h, int) or h < 1:
            raise ValueError(f"every horizon must be a positive integer (days), got {h!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"horizons must be distinct, got {values}")
    return tuple(sorted(values))


def horizon_options(options: SVIOptions, horizon: int) -> SVIOptions:
    """The options of one horizon's fit: its own checkpoint, ``svi.h5.safetensors``."""
    if options.checkpoint is None:
        return options
    path = Path(options.checkpoint)
    return replace(options, checkpoint=path.with_name(f"{path.stem}.h{horizon}{path.suffix}"))


def fit_horizons(
    model: BayesianMoE,
    prepared: Mapping[int, ModelData],
    options: SVIOptions,
    *,
    client=None,
) -> MultiHorizonFit:
    """Fit ``model`` to every horizon's prepared data (``{h: model.prepare(..., horizon=h)}``).

    Without ``client`` the fits run here, one after the other. With a
    :class:`distributed.Client` each horizon's fit is a task on its cluster and they run
    at once; each fit sets its own torch threads (``options.num_threads``, default one)
    and seeds itself from ``options.seed``, so the fits equal the serial ones. Checkpoint
    paths (:func:`horizon_options`) must then be reachable from the workers (a local
    cluster shares this machine's files).
    """
    each = {h: horizon_options(options, h) for h in prepared}
    if client is None:
        return MultiHorizonFit({h: fit_svi(model, data, each[h]) for h, data in prepared.items()})
    futures = {
        h: client.submit(fit_svi, model, data, each[h], key=f"fit-h{h}-{id(prepared)}", pure=False)
        for h, data in prepared.items()
    }
    try:
        return MultiHorizonFit({h: future.result() for h, future in futures.items()})
    finally:
        client.cancel(list(futures.values()))


class MultiHorizonFit:
    """Fits of one mixture at several horizons (module docstring).

    Parameters
    ----------
    fits : mapping of int to MoEFit
        One fit per horizon; each fit's ``horizon`` must be its key.
    """

    def __init__(self, fits: Mapping[int, MoEFit]):
        horizons = check_horizons(list(fits))
        for h in horizons:
            if fits[h].horizon != h:
                raise ValueError(f"the fit under horizon {h} was fitted for {fits[h].horizon}")
        self.fits = {h: fits[h] for h in horizons}

    @property
    def horizons(self) -> tuple[int, ...]:
        """The fitted horizons, ascending."""
        return tuple(self.fits)

    def __getitem__(self, horizon: int) -> MoEFit:
        """The fit of ``horizon``."""
        if horizon not in self.fits:
            raise KeyError(f"no fit for horizon {horizon}; fitted horizons: {list(self.fits)}")
        return self.fits[horizon]

    def forecast(
        self,
        horizon: int | Iterable[int] | None = None,
        num_samples: int = 2000,
        *,
        seed: int | None = 0,
    ) -> Forecast | dict[int, Forecast]:
        """Forecast distributions of the ``h``-day returns from the last close.

        ``horizon``: one fitted horizon (a :class:`Forecast`), a list of them, or None
        for all (a dict ``{h: Forecast}`` in ascending ``h``). An unfitted horizon is a
        ValueError naming the fitted ones.
        """
        wanted = self.horizons if horizon is None else check_horizons(horizon)
        missing = [h for h in wanted if h not in self.fits]
        if missing:
            raise ValueError(
                f"no fit for horizon(s) {missing}; fitted horizons: {list(self.fits)} "
                f"(fit with horizon={sorted(set(self.fits) | set(missing))})"
            )
        out = {h: self.fits[h].forecast(num_samples=num_samples, seed=seed) for h in wanted}
        return out[wanted[0]] if isinstance(horizon, int) else out

    def to_frame(self, qs=(0.05, 0.25, 0.5, 0.75, 0.95), num_samples: int = 2000) -> pd.DataFrame:
        """Every horizon's forecast: one row per horizon and target (mean, std, quantiles)."""
        every = cast("dict[int, Forecast]", self.forecast(num_samples=num_samples))  # horizon None
        frames = [fc.to_frame(qs=qs) for fc in every.values()]
        return pd.concat(frames).reset_index().set_index(["horizon", "target"])

    def update(self, frame: pd.DataFrame, *, allow_outliers: bool = False) -> MultiHorizonFit:
        """Every fit conditioned on newer rows (:meth:`MoEFit.update`); nothing refitted."""
        return MultiHorizonFit(
            {h: fit.update(frame, allow_outliers=allow_outliers) for h, fit in self.fits.items()}
        )

    def save(self, directory) -> None:
        """Write one checkpoint per horizon, ``h<h>.safetensors``, into a new folder.

        The folder is written whole, with a ``manifest.json``
        (:func:`~bayes_moe.io.atomic_folder`): an existing one is replaced only once
        every checkpoint is written.
        """
        with atomic_folder(directory) as folder:
            for h, fit in self.fits.items():
                fit.save(Path(folder) / f"h{h}.safetensors")

    @classmethod
    def load(cls, directory) -> MultiHorizonFit:
        """Read the folder written by :meth:`save`."""
        paths = sorted(Path(directory).glob("h*.safetensors"))
        if not paths:
            raise FileNotFoundError(f"{directory} holds no h<h>.safetensors checkpoints")
        fits = [MoEFit.load(path) for path in paths]
        return cls({fit.horizon: fit for fit in fits})

    def __repr__(self) -> str:
        fit = next(iter(self.fits.values()))
        return (
            f"MultiHorizonFit(horizons={list(self.fits)}, experts={fit.program.labels}, "
            f"regimes={fit.model.n_regimes}, days={fit.data.n_observed})"
        )
