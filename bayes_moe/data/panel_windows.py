r"""A panel of assets prepared for the model: one calendar, one input per asset, masks.

A panel is a wide frame of returns, one column per asset (:func:`~bayes_moe.data.panel_frame`),
with NaN where an asset has no value (not listed yet, delisted, a gap). It becomes

* one :class:`~bayes_moe.data.windows.ExpertInputs` per asset, on the panel's common
  calendar, whose single target column is the asset (named by it), standardized by the
  asset's own training mean and standard deviation; every expert reads an asset exactly
  as it reads a single series, so that it runs per asset with shared parameters;
* a *market* input for the gate: the equal-weighted cross-sectional mean of the
  standardized returns of the assets observed on each day,

  .. math:: m_t = \frac{1}{|A_t|} \sum_{i \in A_t} z_{i,t},

  standardized again, whose volatility summaries drive the one market-wide regime path;
* the mask of what is data. A missing asset-day is never filled into the likelihood:
  origin ``t`` scores asset ``i`` only when the asset's response (days ``t+1..t+h``) and
  its whole context window (days ``t-L+1..t``) are observed (:attr:`PanelData.scored`).
  The series an expert reads hold 0, the asset's training mean, on missing days: a
  placeholder inside windows that end after the asset's first ``L`` days, never a response.

Shapes: ``T`` days of the calendar, ``A`` assets, ``N`` origins, ``L`` window, ``h`` horizon.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from bayes_moe.data.errors import DataError
from bayes_moe.data.panel import validate_panel
from bayes_moe.data.windows import ExpertInputs, OriginDates, _vol_summaries

#: Name of the gate's input column (the equal-weighted market return).
MARKET_COLUMN: str = "market"


@dataclass(frozen=True)
class PanelPreprocessor:
    """Training-sample constants of a panel.

    Attributes
    ----------
    assets : tuple of str
    loc, scale : tuple of float
        Mean and standard deviation of each asset's returns over the days it has.
    vol_center : tuple of tuple of float
        Training mean of each asset's volatility summaries, ``(A, V)``.
    market_loc, market_scale : float
        Mean and standard deviation of the market series :math:`m_t`.
    market_vol_center : tuple of float
        Training mean of the market's volatility summaries, ``(V,)``.
    """

    assets: tuple[str, ...]
    loc: tuple[float, ...]
    scale: tuple[float, ...]
    vol_center: tuple[tuple[float, ...], ...]
    market_loc: float
    market_scale: float
    market_vol_center: tuple[float, ...]

    @classmethod
    def from_panel(cls, wide: pd.DataFrame) -> PanelPreprocessor:
        """Compute the constants from a (training) wide panel."""
        values = wide.to_numpy(dtype=np.float64)
        loc = np.nanmean(values, axis=0)
        scale = np.nanstd(values, axis=0)
        constant = [str(a) for a, s in zip(wide.columns, scale) if not s > 0]
        if constant:
            raise DataError(f"asset(s) {constant} have constant returns: nothing to forecast")
        z, present = _standardized(values, loc, scale)
        market = _market(z, present)
        m_loc, m_scale = float(market.mean()), float(market.std())
        vol = np.stack([_vol_summaries(z[:, [a]])[:, 0] for a in range(z.shape[1])], axis=1)
        market_vol = _vol_summaries(((market - m_loc) / m_scale)[:, None])[:, 0]
        return cls(
            assets=tuple(str(a) for a in wide.columns),
            loc=tuple(float(x) for x in loc),
            scale=tuple(float(x) for x in scale),
            vol_center=tuple(tuple(float(x) for x in row) for row in _masked_mean(vol, present)),
            market_loc=m_loc,
            market_scale=m_scale,
            market_vol_center=tuple(float(x) for x in market_vol.mean(axis=0)),
        )


def _standardized(values: np.ndarray, loc, scale) -> tuple[np.ndarray, np.ndarray]:
    """``(z, present)``: standardized values with 0 on missing days, and the mask ``(T, A)``."""
    present = ~np.isnan(values)
    z = (values - np.asarray(loc)) / np.asarray(scale)
    z[~present] = 0.0
    return z, present


def _market(z: np.ndarray, present: np.ndarray) -> np.ndarray:
    r"""Equal-weighted mean of the observed standardized returns of each day: ``(T,)``."""
    count = present.sum(axis=1)
    if not count.all():
        day = int(np.flatnonzero(count == 0)[0])
        raise DataError(f"no asset has a value on row {day} of the panel")
    return z.sum(axis=1) / count


def _masked_mean(vol: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Mean of ``vol`` ``(T, A, V)`` over each asset's observed days: ``(A, V)``."""
    weight = present[:, :, None].astype(np.float64)
    return (vol * weight).sum(axis=0) / weight.sum(axis=0)


@dataclass(frozen=True)
class PanelInputs:
    """What the experts and the gate of a panel read.

    Attributes
    ----------
    assets : tuple of ExpertInputs
        One per asset, all on the panel calendar with the same origins; the target
        column of asset ``i`` is named by it.
    names : tuple of str
        The ``A`` asset names.
    observed : BoolTensor ``(T, A)``
        Which asset-days are data.
    market : ExpertInputs
        The gate's input (column :data:`MARKET_COLUMN`), same calendar and origins.
    """

    assets: tuple[ExpertInputs, ...]
    names: tuple[str, ...]
    observed: torch.Tensor
    market: ExpertInputs

    @property
    def origins(self) -> torch.Tensor:
        """Row index of each origin: LongTensor ``(N,)``."""
        return self.market.origins

    @property
    def n_origins(self) -> int:
        """``N``."""
        return self.market.n_origins

    @property
    def n_assets(self) -> int:
        """``A``."""
        return len(self.names)

    @property
    def horizon(self) -> int:
        """``h``."""
        return self.market.horizon

    @property
    def window(self) -> int:
        """``L``."""
        return self.market.window

    @property
    def series(self) -> torch.Tensor:
        """The market series ``(T, 1)`` (its dtype is the model's)."""
        return self.market.series

    def at(self, origins: torch.Tensor) -> PanelInputs:
        """The same panel with other origins."""
        return replace(
            self,
            assets=tuple(a.at(origins) for a in self.assets),
            market=self.market.at(origins),
        )

    def window_observed(self, length: int) -> torch.Tensor:
        """Whether asset ``i``'s days ``t-length+1..t`` are all data: BoolTensor ``(N, A)``."""
        counts = torch.cat(
            [
                torch.zeros(1, self.n_assets, dtype=torch.long, device=self.observed.device),
                self.observed.long().cumsum(0),
            ]
        )
        end = self.origins + 1
        return (counts[end] - counts[end - length]) == length

    def stacked_windows(self, length: int) -> torch.Tensor:
        """Every asset's last ``length`` standardized returns: ``(N, A, length)``."""
        return torch.stack([a.windows(length)[..., 0] for a in self.assets], dim=1)

    def stacked_vol(self) -> torch.Tensor:
        """Every asset's volatility summaries at the origins: ``(N, A, V)``."""
        return torch.stack([a.origin_vol[:, 0] for a in self.assets], dim=1)


@dataclass(frozen=True)
class PanelData(OriginDates):
    """A wide panel prepared for the model (origin and response dates: :class:`OriginDates`).

    Attributes
    ----------
    inputs : PanelInputs
        With origins ``L-1 .. T-1``.
    response : Tensor ``(N, A)``
        Standardized ``h``-day response of each asset; NaN where it is not scored
        (:attr:`scored`) or lies beyond the data (the last ``h`` origins).
    scored : BoolTensor ``(N, A)``
        Response and whole context window observed.
    market_response : Tensor ``(N,)``
        The market series' ``h``-day response (NaN beyond the data).
    n_observed : int
        Origins whose responses lie within the data (``N - h``).
    dates : DatetimeIndex ``(T,)``
    preprocessor : PanelPreprocessor
    frame : DataFrame
        The wide panel.
    """

    inputs: PanelInputs
    response: torch.Tensor
    scored: torch.Tensor
    market_response: torch.Tensor
    n_observed: int
    dates: pd.DatetimeIndex
    preprocessor: PanelPreprocessor
    frame: pd.DataFrame = field(repr=False)

    @property
    def assets(self) -> tuple[str, ...]:
        """Asset names."""
        return self.inputs.names

    def unstandardize(self, z, asset: int) -> np.ndarray:
        """Asset ``asset``'s standardized ``h``-day responses back in data units."""
        p, h = self.preprocessor, self.inputs.horizon
        return h * p.loc[asset] + p.scale[asset] * np.asarray(z)


def _h_day_sums(z: np.ndarray, present: np.ndarray, origins: np.ndarray, h: int):
    """``(sums, complete)`` of rows ``t+1..t+h`` for each origin ``t`` (``(n, A)`` each)."""
    csum = np.concatenate([np.zeros((1, z.shape[1])), np.cumsum(z, axis=0)])
    count = np.concatenate([np.zeros((1, z.shape[1])), np.cumsum(present, axis=0)])
    sums = csum[origins + 1 + h] - csum[origins + 1]
    complete = (count[origins + 1 + h] - count[origins + 1]) == h
    return sums, complete


def prepare_panel(
    wide: pd.DataFrame,
    *,
    window: int,
    horizon: int = 1,
    preprocessor: PanelPreprocessor | None = None,
    dtype: torch.dtype = torch.float64,
    min_observations: int = 30,
) -> PanelData:
    """Validate a wide panel and build :class:`PanelData`.

    Parameters
    ----------
    wide : DataFrame
        Date-indexed, one float column per asset, NaN where an asset has no value
        (:func:`~bayes_moe.data.panel_frame` makes one from a long or wide frame).
    window, horizon : int
        ``L`` and ``h``.
    preprocessor : PanelPreprocessor, optional
        Constants of an earlier fit (same assets); computed from ``wide`` when omitted.
    min_observations : int
        Values every asset needs beyond the window and horizon.

    Raises
    ------
    DataError
        For every bad input, naming the asset and date (:func:`~bayes_moe.data.validate_panel`),
        an asset with fewer values than ``window + horizon + min_observations``, or a
        panel whose assets differ from the fitted ones.
    """
    if window < 1 or horizon < 1:
        raise DataError(f"window ({window}) and horizon ({horizon}) must be positive integers")
    validate_panel(wide, min_rows=window + horizon + min_observations)
    if len(wide) < window + horizon + 1:
        raise DataError(f"the panel has {len(wide)} days; need at least {window + horizon + 1}")
    if preprocessor is None:
        preprocessor = PanelPreprocessor.from_panel(wide)
    elif tuple(str(a) for a in wide.columns) != preprocessor.assets:
        raise DataError(
            f"assets {list(wide.columns)} differ from the fitted model's "
            f"{list(preprocessor.assets)}"
        )
    values = wide.to_numpy(dtype=np.float64)
    z, present = _standardized(values, preprocessor.loc, preprocessor.scale)
    market = (_market(z, present) - preprocessor.market_loc) / preprocessor.market_scale

    T, A = z.shape
    origins = np.arange(window - 1, T)
    n_observed = len(origins) - horizon
    observed_origins = origins[:n_observed]
    m_sums, _ = _h_day_sums(market[:, None], np.ones((T, 1), bool), observed_origins, horizon)
    market_response = np.full(len(origins), np.nan)
    market_response[:n_observed] = m_sums[:, 0]

    torch_origins = torch.as_tensor(origins, dtype=torch.long)
    assets = []
    for a, name in enumerate(preprocessor.assets):
        vol = _vol_summaries(z[:, [a]]) - np.asarray(preprocessor.vol_center[a])
        assets.append(
            ExpertInputs(
                series=torch.as_tensor(z[:, [a]], dtype=dtype),
                columns=(name,),
                n_targets=1,
                origins=torch_origins,
                horizon=horizon,
                window=window,
                vol=torch.as_tensor(vol, dtype=dtype),
                column_loc=(preprocessor.loc[a],),
                column_scale=(preprocessor.scale[a],),
            )
        )
    market_vol = _vol_summaries(market[:, None]) - np.asarray(preprocessor.market_vol_center)
    market_inputs = ExpertInputs(
        series=torch.as_tensor(market[:, None], dtype=dtype),
        columns=(MARKET_COLUMN,),
        n_targets=1,
        origins=torch_origins,
        horizon=horizon,
        window=window,
        vol=torch.as_tensor(market_vol, dtype=dtype),
        column_loc=(preprocessor.market_loc,),
        column_scale=(preprocessor.market_scale,),
    )
    inputs = PanelInputs(
        assets=tuple(assets),
        names=preprocessor.assets,
        observed=torch.as_tensor(present),
        market=market_inputs,
    )
    # An asset-day is scored when its h-day response and its whole window are data.
    sums, complete = _h_day_sums(z, present, observed_origins, horizon)
    scored = np.zeros((len(origins), A), dtype=bool)
    scored[:n_observed] = complete & inputs.window_observed(window)[:n_observed].numpy()
    response = np.full((len(origins), A), np.nan)
    response[scored] = sums[scored[:n_observed]]
    return PanelData(
        inputs=inputs,
        response=torch.as_tensor(response, dtype=dtype),
        scored=torch.as_tensor(scored),
        market_response=torch.as_tensor(market_response, dtype=dtype),
        n_observed=n_observed,
        dates=pd.DatetimeIndex(wide.index),
        preprocessor=preprocessor,
        frame=wide,
    )
