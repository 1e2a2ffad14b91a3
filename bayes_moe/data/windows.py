r"""From a validated frame to the tensors the model reads, with no look-ahead.

Shape convention (used throughout ``bayes_moe``)
------------------------------------------------

=============  ==============================================================
symbol         meaning
=============  ==============================================================
``T``          rows (trading days) of the frame
``C``          numeric columns the model may read (targets first)
``d_y``        target dimension (``len(targets)``, usually 1)
``N``          forecast origins: days ``t`` whose information set is the close
               of ``t``; the response of origin ``t`` is :math:`y_{t+h}`
``L``          context window length (an origin needs ``L`` rows up to ``t``)
``V``          volatility features per target (:data:`VOL_FEATURES`)
``S``          posterior draws, a leading batch dimension
``K``, ``M``   regimes, experts
=============  ==============================================================

Time runs along the second-to-last axis of event tensors (``(..., N, d_y)``);
batch dimensions (posterior draws) lead. The response of origin ``t`` at horizon
``h`` is the sum of the (standardized) targets over days ``t+1..t+h``, the
``h``-day log return for percentage log returns.

Standardization uses training-sample constants only (:class:`Preprocessor`); they
are stored with a fit and reused for any later data, so a forecast made at ``t``
depends on rows up to ``t`` and on fitted constants, nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import torch

from bayes_moe.data.errors import DataError
from bayes_moe.data.plausibility import check_plausible_values
from bayes_moe.data.validation import validate_frame

#: Spans (days) of the log realized-variance summaries every expert may read: a day, a
#: week, a month (Corsi's HAR) and a trading year, the low-frequency level of
#: volatility (Engle and Rangel 2008) that regimes and shorter summaries move around.
VOL_SPANS: tuple[int, ...] = (1, 5, 22, 252)
#: Spans (days) of the mean standardized return (its sign carries the leverage effect).
LEVERAGE_SPANS: tuple[int, ...] = (1, 5)
#: Decay of the exponentially weighted variance (RiskMetrics 1996).
EWMA_DECAY: float = 0.94
#: Names of the volatility features, in order: log realized variances, the log EWMA
#: variance, then mean returns.
VOL_FEATURES: tuple[str, ...] = (
    tuple(f"log_rv_{w}" for w in VOL_SPANS)
    + ("log_ewma_var",)
    + tuple(f"ret_{w}" for w in LEVERAGE_SPANS)
)
#: Floor added to realized variance (in standardized units) before the log.
VOL_FLOOR: float = 0.01
#: The slowly moving summaries (a month and the EWMA's ~16-day memory). When they drive
#: the regime transitions, the regimes carry the volatility level and these summaries
#: are theirs alone: the experts' scales and the gate weights read the others.
SLOW_VOL_FEATURES: tuple[str, ...] = ("log_rv_22", "log_ewma_var")
#: The default transition features of regimes with volatility levels: the slow
#: summaries plus the weekly variance, an early signal that the level is changing.
TRANSITION_FEATURES: tuple[str, ...] = ("log_rv_5",) + SLOW_VOL_FEATURES


def vol_feature_names(names: Sequence[str] | None, what: str = "features") -> tuple[str, ...]:
    """Validate a choice of volatility features; return it in :data:`VOL_FEATURES` order.

    ``None`` means all of them. A ValueError names the unknown entries and ``what``
    the choice is for.
    """
    if names is None:
        return VOL_FEATURES
    names = list(names)
    unknown = [n for n in names if n not in VOL_FEATURES]
    if unknown or not names:
        raise ValueError(f"{what} must be a non-empty subset of {list(VOL_FEATURES)}, got {names}")
    return tuple(f for f in VOL_FEATURES if f in names)


def select_vol_features(vol: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
    """The entries ``names`` of the last (feature) axis of ``vol`` ``(..., V)``."""
    if tuple(names) == VOL_FEATURES:
        return vol
    return vol[..., [VOL_FEATURES.index(n) for n in names]]


def non_overlapping_origins(n_origins: int, horizon: int) -> torch.Tensor:
    r"""Origins whose ``h``-day responses tile the days without overlap: BoolTensor ``(N,)``.

    The response of origin ``t`` sums days ``t+1..t+h``, so consecutive origins share
    ``h - 1`` days. Origins ``N-1, N-1-h, N-1-2h, ...`` (the last one and every
    ``h``-th before it) have disjoint responses that cover the days after the first
    kept origin once each; the most recent response is always kept. ``h = 1`` keeps
    every origin.
    """
    if n_origins < 0 or horizon < 1:
        raise ValueError(f"need n_origins >= 0 and horizon >= 1, got {n_origins}, {horizon}")
    back = torch.arange(n_origins - 1, -1, -1)  # days before the last origin
    return back % horizon == 0


@dataclass(frozen=True)
class Preprocessor:
    """Training-sample constants that turn a frame into standardized tensors.

    Parameters
    ----------
    columns : tuple of str
        Model columns, targets first.
    targets : tuple of str
        Target columns (a prefix of ``columns``).
    loc, scale : tuple of float
        Per-column mean and standard deviation on the training sample.
    vol_center : tuple of tuple of float
        Training mean of each target's volatility summaries, ``(d_y, V)``.
    optional : tuple of str
        Covariates read with gaps (:meth:`~bayes_moe.models.experts.Expert.optional_columns`):
        their mean and standard deviation are over the days they have.
    """

    columns: tuple[str, ...]
    targets: tuple[str, ...]
    loc: tuple[float, ...]
    scale: tuple[float, ...]
    vol_center: tuple[tuple[float, ...], ...]
    optional: tuple[str, ...] = ()

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        targets: Sequence[str],
        covariates: Sequence[str],
        optional: Sequence[str] = (),
    ):
        """Compute the constants from a (training) frame."""
        columns = tuple(targets) + tuple(c for c in covariates if c not in targets)
        values = frame.loc[:, list(columns)].to_numpy(dtype=np.float64)
        loc = np.nanmean(values, axis=0)  # NaN only in the optional columns' gaps
        scale = np.nanstd(values, axis=0)
        standardized_targets = (values[:, : len(targets)] - loc[: len(targets)]) / scale[
            : len(targets)
        ]
        vol = _vol_summaries(standardized_targets)
        return cls(
            columns=columns,
            targets=tuple(targets),
            loc=tuple(float(x) for x in loc),
            scale=tuple(float(x) for x in scale),
            vol_center=tuple(tuple(float(x) for x in row) for row in vol.mean(axis=0)),
            optional=tuple(c for c in columns if c in set(optional)),
        )

    def to_json(self) -> str:
        """Serialize to a JSON string (used in checkpoints)."""
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> Preprocessor:
        """Inverse of :meth:`to_json`."""
        raw = json.loads(text)
        fields = {k: tuple(v) for k, v in raw.items()}
        fields["vol_center"] = tuple(tuple(row) for row in raw["vol_center"])
        return cls(**fields)

    @property
    def target_loc(self) -> np.ndarray:
        """Mean of each target, shape ``(d_y,)``."""
        return np.asarray(self.loc[: len(self.targets)])

    @property
    def target_scale(self) -> np.ndarray:
        """Standard deviation of each target, shape ``(d_y,)``."""
        return np.asarray(self.scale[: len(self.targets)])


def _vol_summaries(z: np.ndarray) -> np.ndarray:
    r"""Volatility features of ``z`` (T, d), causal: (T, d, V) in :data:`VOL_FEATURES` order.

    .. math::

        f_{t,w} = \log\Big(\tfrac{1}{w}\sum_{j=0}^{w-1} z_{t-j}^2 + \epsilon\Big),
        \qquad
        e_t = \log\big(v_t + \epsilon\big),\ v_t = \lambda v_{t-1} + (1 - \lambda) z_t^2,
        \qquad
        g_{t,w} = \tfrac{1}{w}\sum_{j=0}^{w-1} z_{t-j},

    log realized variances over ``VOL_SPANS`` (Corsi 2009; the yearly one is the
    low-frequency component of Engle and Rangel 2008), the log of the
    exponentially weighted variance with :math:`\lambda` = ``EWMA_DECAY`` (a smooth,
    long memory, as in GARCH), and mean returns over ``LEVERAGE_SPANS``, whose sign
    lets volatility respond asymmetrically to falls and rises (the leverage effect of
    EGARCH / GJR models). The first ``w - 1`` rows average over the rows available so
    far; the EWMA starts at the first squared value.
    """
    sq = pd.DataFrame(z**2)
    level = pd.DataFrame(z)
    out = [np.log(sq.rolling(w, min_periods=1).mean().to_numpy() + VOL_FLOOR) for w in VOL_SPANS]
    ewma = sq.ewm(alpha=1.0 - EWMA_DECAY, adjust=False).mean().to_numpy()
    out.append(np.log(ewma + VOL_FLOOR))
    out += [level.rolling(w, min_periods=1).mean().to_numpy() for w in LEVERAGE_SPANS]
    return np.stack(out, axis=-1)


@dataclass(frozen=True)
class ExpertInputs:
    """What an expert may read: the standardized history and the forecast origins.

    Experts must only use rows ``<= t`` for origin ``t`` (the contract test checks it).

    Attributes
    ----------
    series : Tensor, shape ``(T, C)``
        Standardized model columns, targets first.
    columns : tuple of str
        Names of the ``C`` columns.
    n_targets : int
        ``d_y``; the first ``d_y`` columns are the targets.
    origins : LongTensor, shape ``(N,)``
        Row index of each forecast origin, increasing, each ``>= window - 1``.
    horizon : int
        ``h``: the response of origin ``t`` is the sum of the targets on ``t+1..t+h``.
    window : int
        ``L``, the longest history a window expert may ask for.
    vol : Tensor, shape ``(T, d_y, V)``
        Centered volatility features of each target (:data:`VOL_FEATURES`).
    scale_features : tuple of str
        The summaries an expert's scale model reads unless it chooses its own: all of
        :data:`VOL_FEATURES`, or those the gate's regimes leave to the experts
        (:meth:`bayes_moe.models.moe.MoEProgram.expert_inputs`).
    column_loc, column_scale : tuple of float
        The training-sample mean and standard deviation of each column
        (:class:`Preprocessor`), so that :meth:`raw` gives back data units; empty for
        :meth:`header` inputs.
    observed : BoolTensor, shape ``(T, C)``, optional
        Which values are data, when some column is read with gaps
        (:meth:`~bayes_moe.models.experts.Expert.optional_columns`); ``series`` holds 0
        (the training mean) at the others, a placeholder that only the experts reading
        the column with :meth:`observed_mask` see. None: every value is data.
    fitting : bool
        True only inside the training likelihood
        (:meth:`bayes_moe.models.moe.MoEProgram.forward`), whose origins all have their
        responses in the series: an expert may then add observations it models beside
        the response (the ``volatility`` expert's measurement equation). Forecasts,
        scores and posterior summaries read the predictive only and leave it False.
    """

    series: torch.Tensor
    columns: tuple[str, ...]
    n_targets: int
    origins: torch.Tensor
    horizon: int
    window: int
    vol: torch.Tensor
    scale_features: tuple[str, ...] = VOL_FEATURES
    column_loc: tuple[float, ...] = ()
    column_scale: tuple[float, ...] = ()
    observed: torch.Tensor | None = None
    fitting: bool = False

    @classmethod
    def header(
        cls, columns: Sequence[str], n_targets: int, *, window: int, horizon: int = 1
    ) -> ExpertInputs:
        """Inputs with column names and no rows (``T = N = 0``), before any data is read.

        What :meth:`~bayes_moe.models.experts.Expert.reads` is asked on, so that a mixture
        can choose and validate the columns its experts read before it reads their values.

        Parameters
        ----------
        columns : sequence of str
            Column names, targets first.
        n_targets : int
            ``d_y``.
        window, horizon : int
            ``L`` and ``h``.
        """
        return cls(
            series=torch.zeros(0, len(columns), dtype=torch.float64),
            columns=tuple(columns),
            n_targets=int(n_targets),
            origins=torch.zeros(0, dtype=torch.long),
            horizon=int(horizon),
            window=int(window),
            vol=torch.zeros(0, int(n_targets), len(VOL_FEATURES), dtype=torch.float64),
        )

    @property
    def targets(self) -> tuple[str, ...]:
        """Target column names."""
        return self.columns[: self.n_targets]

    @property
    def n_origins(self) -> int:
        """``N``."""
        return int(self.origins.shape[0])

    def column_index(self, names: Sequence[str]) -> list[int]:
        """Positions of ``names`` in :attr:`columns` (KeyError names the missing one)."""
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise KeyError(f"columns {missing} are not model columns {list(self.columns)}")
        return [self.columns.index(n) for n in names]

    def windows(self, length: int, names: Sequence[str] | None = None) -> torch.Tensor:
        """Rows ``t-length+1 .. t`` for each origin ``t``: shape ``(N, length, c)``.

        ``names`` defaults to the targets. The last entry along the time axis is the
        origin's own row.
        """
        if not 1 <= length <= self.window:
            raise ValueError(f"window length {length} must be in 1..{self.window}")
        cols = self.column_index(names) if names is not None else list(range(self.n_targets))
        values = self.series[:, cols]  # (T, c)
        unfolded = values.unfold(0, length, 1)  # (T - length + 1, c, length)
        return unfolded[self.origins - (length - 1)].transpose(-1, -2)

    def raw(self, names: Sequence[str]) -> torch.Tensor:
        r"""Columns ``names`` in data units, :math:`x = \mu + \sigma z`: shape ``(T, c)``.

        For experts whose features are nonlinear in the data (logs of variances).
        ValueError for inputs without the preprocessing constants (:meth:`header`).
        """
        if len(self.column_scale) != len(self.columns):
            raise ValueError("these inputs carry no preprocessing constants to undo")
        cols = self.column_index(names)
        dtype, device = self.series.dtype, self.series.device
        loc = torch.tensor([self.column_loc[c] for c in cols], dtype=dtype, device=device)
        scale = torch.tensor([self.column_scale[c] for c in cols], dtype=dtype, device=device)
        return loc + scale * self.series[:, cols]

    def observed_mask(self, names: Sequence[str]) -> torch.Tensor:
        """Whether each value of columns ``names`` is data: BoolTensor ``(T, c)``."""
        cols = self.column_index(names)
        if self.observed is None:
            shape = (self.series.shape[0], len(cols))
            return torch.ones(shape, dtype=torch.bool, device=self.series.device)
        return self.observed[:, cols]

    def columns_with_gaps(self, names: Sequence[str]) -> tuple[str, ...]:
        """Those of columns ``names`` missing on at least one row, in their order."""
        if not names or self.observed is None:
            return ()
        complete = self.observed_mask(names).all(dim=0)  # (c,)
        return tuple(c for c, full in zip(names, complete.tolist()) if not full)

    def mean_filled(self, names: Sequence[str]) -> torch.Tensor:
        r"""Standardized columns ``names`` with the fallback 0 on missing days: ``(T, c)``.

        .. math::

            \tilde x_{s,i} = \begin{cases} x_{s,i} & \text{observed} \\
            0 & \text{missing} \end{cases}

        0 is the column's training mean in standardized units; it is built from the
        mask (:meth:`observed_mask`), so whatever the series holds under a gap is never
        read.
        """
        x = self.series[:, self.column_index(names)]  # (T, c)
        return torch.where(self.observed_mask(names), x, torch.zeros_like(x))

    @cached_property
    def origin_vol(self) -> torch.Tensor:
        """Volatility summaries at the origins: shape ``(N, d_y, V)``."""
        return self.vol[self.origins]

    def at(self, origins: torch.Tensor) -> ExpertInputs:
        """The same history with other origins."""
        return replace(self, origins=origins)

    def with_scale_features(self, names: Sequence[str]) -> ExpertInputs:
        """The same inputs with another default set of scale features."""
        return replace(self, scale_features=vol_feature_names(names, "scale_features"))


class OriginDates:
    """Dates of the origins and of their responses (for :class:`ModelData` and panels).

    Needs the attributes ``inputs`` (origins and horizon), ``dates``, ``n_observed`` and
    ``response`` (rows by origin).
    """

    inputs: Any  # ExpertInputs or PanelInputs: what is read is origins and horizon
    dates: pd.DatetimeIndex
    n_observed: int
    response: torch.Tensor

    @property
    def origin_dates(self) -> pd.DatetimeIndex:
        """Date of each origin (the close whose information the forecast uses)."""
        return self.dates[self.inputs.origins.numpy()]

    @property
    def response_dates(self) -> pd.DatetimeIndex:
        """Date on which each observed response is realized (origin + h rows)."""
        idx = self.inputs.origins[: self.n_observed].numpy() + self.inputs.horizon
        return self.dates[idx]

    @property
    def observed_response(self) -> torch.Tensor:
        """Responses of the observed origins: ``(n_observed, ...)``."""
        return self.response[: self.n_observed]


@dataclass(frozen=True)
class ModelData(OriginDates):
    """A frame prepared for the model: inputs, responses and their dates.

    Attributes
    ----------
    inputs : ExpertInputs
        With origins ``L-1 .. T-1`` (every day with a full window).
    response : Tensor, shape ``(N, d_y)``
        Standardized response of each origin; rows whose response lies beyond the
        data (the last ``h`` origins) are ``NaN``.
    n_observed : int
        Origins whose response is observed (``N - h``).
    dates : DatetimeIndex, length ``T``
    preprocessor : Preprocessor
    """

    inputs: ExpertInputs
    response: torch.Tensor
    n_observed: int
    dates: pd.DatetimeIndex
    preprocessor: Preprocessor
    frame: pd.DataFrame = field(repr=False)

    def unstandardize(self, z: torch.Tensor | np.ndarray) -> np.ndarray:
        """Map standardized ``h``-day responses ``(..., d_y)`` back to data units."""
        h = self.inputs.horizon
        p = self.preprocessor
        return h * p.target_loc + p.target_scale * np.asarray(z)

    def standardize_response(self, y: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`unstandardize`."""
        h = self.inputs.horizon
        p = self.preprocessor
        return (np.asarray(y) - h * p.target_loc) / p.target_scale


def prepare(
    frame: pd.DataFrame,
    *,
    targets: Sequence[str],
    covariates: Sequence[str] | None = None,
    window: int,
    horizon: int = 1,
    preprocessor: Preprocessor | None = None,
    dtype: torch.dtype = torch.float64,
    min_observations: int = 30,
    readers: Mapping[str, str] | None = None,
    allow_outliers: bool = False,
    optional: Sequence[str] = (),
) -> ModelData:
    """Validate ``frame`` and turn it into :class:`ModelData`.

    Parameters
    ----------
    frame : DataFrame
        Date-indexed, sorted, numeric (see :mod:`bayes_moe.data`).
    targets : sequence of str
        Columns to forecast.
    covariates : sequence of str, optional
        Other columns experts may read; ``None`` means every other column.
    window, horizon : int
        Context length ``L`` and forecast horizon ``h``.
    preprocessor : Preprocessor, optional
        Constants of an earlier fit; computed from ``frame`` when omitted.
    min_observations : int
        Observed responses required beyond the window and horizon.
    readers : mapping of str to str, optional
        Who reads each covariate (``{"volume": "expert 'var'"}``), named in the error
        about that column (see :func:`~bayes_moe.data.validate_frame`).
    allow_outliers : bool, default False
        Accept target values whose robust z-score exceeds
        :data:`~bayes_moe.data.plausibility.OUTLIER_THRESHOLD`; see
        :func:`~bayes_moe.data.plausibility.check_plausible_values`, which runs after
        :func:`~bayes_moe.data.validate_frame` on every frame.
    optional : sequence of str
        Covariates that may have gaps (NaN), because every expert reading them accepts
        gaps (:meth:`~bayes_moe.models.experts.Expert.optional_columns`); the inputs
        carry their :attr:`~ExpertInputs.observed` mask. With a ``preprocessor``, its
        :attr:`~Preprocessor.optional` columns.

    Raises
    ------
    DataError
        For every bad input, before any tensor is built: an unreadable frame, an
        implausible target value (an outlier, unless ``allow_outliers``) or a column
        too large or too small in scale for float standardisation.
    """
    targets = list(targets)
    if window < 1 or horizon < 1:
        raise DataError(f"window ({window}) and horizon ({horizon}) must be positive integers")
    if preprocessor is not None:
        covariates = [c for c in preprocessor.columns if c not in targets]
        optional = preprocessor.optional
        if tuple(targets) != preprocessor.targets:
            raise DataError(
                f"targets {targets} differ from the fitted model's {list(preprocessor.targets)}"
            )
    elif covariates is None:
        missing = [t for t in targets if t not in frame.columns]
        if missing:  # let validate_frame produce the message naming the missing column
            covariates = []
        else:
            covariates = [c for c in frame.columns if c not in targets]
    columns = targets + [c for c in covariates if c not in targets]
    validate_frame(
        frame,
        columns=columns,
        min_length=window + horizon + min_observations,
        readers=readers,
        optional=[c for c in optional if c not in targets],
    )
    check_plausible_values(
        frame, targets=targets, columns=columns, allow_outliers=allow_outliers, readers=readers
    )

    if preprocessor is None:
        preprocessor = Preprocessor.from_frame(frame, targets, covariates, optional)
    values = frame.loc[:, columns].to_numpy(dtype=np.float64)
    z = (values - np.asarray(preprocessor.loc)) / np.asarray(preprocessor.scale)
    gaps = np.isnan(z)  # only in optional columns (validated above)
    present = torch.as_tensor(~gaps) if gaps.any() else None
    z[gaps] = 0.0  # a placeholder: the mask, not this value, tells the experts
    d_y = len(targets)
    vol = _vol_summaries(z[:, :d_y]) - np.asarray(preprocessor.vol_center)

    n_rows = len(frame)
    origins = np.arange(window - 1, n_rows)
    response = np.full((len(origins), d_y), np.nan)
    n_observed = len(origins) - horizon
    csum = np.concatenate([np.zeros((1, d_y)), np.cumsum(z[:, :d_y], axis=0)])
    observed = origins[:n_observed]
    response[:n_observed] = csum[observed + 1 + horizon] - csum[observed + 1]

    inputs = ExpertInputs(
        series=torch.as_tensor(z, dtype=dtype),
        columns=tuple(columns),
        n_targets=d_y,
        origins=torch.as_tensor(origins, dtype=torch.long),
        horizon=horizon,
        window=window,
        vol=torch.as_tensor(vol, dtype=dtype),
        column_loc=tuple(preprocessor.loc),
        column_scale=tuple(preprocessor.scale),
        observed=present,
    )
    return ModelData(
        inputs=inputs,
        response=torch.as_tensor(response, dtype=dtype),
        n_observed=n_observed,
        dates=pd.DatetimeIndex(frame.index),
        preprocessor=preprocessor,
        frame=frame,
    )
