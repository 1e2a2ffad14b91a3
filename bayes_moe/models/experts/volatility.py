r"""Volatility expert: a small MLP on realised and range-based variances drives the scale.

For each target ``j`` and origin ``t`` the expert reads a vector of log variances, all
in squared standardized-return units (so that a typical day is near zero),

.. math::

    v_{t} = \Big(\log \mathrm{RV}^{(5)}_t,\ \log \mathrm{RV}^{(20)}_t,\
    \log \mathrm{RV}^{(60)}_t,\ \log \sigma^2_{\mathrm{P},t},\
    \log \sigma^2_{\mathrm{GK},t},\ \log \mathrm{ATR}^2_t,\ \log(\mathrm{VIX}^2_t / 252)
    \Big) - \log s_y^2,
    \qquad \mathrm{RV}^{(w)}_t = \frac1w \sum_{i=0}^{w-1} y_{t-i}^2,

the realised variances of the target over 5, 20 and 60 days (fewer at the start of the
sample) and, for the columns the frame has, the Parkinson and Garman-Klass range
variances, the average true range and the VIX (``bm.data.add_range_features``,
``bm.data.add_vix``), each with a floor of ``VOL_FLOOR`` before the log.

Gaps. The range and VIX columns may have missing days (the VIX in ``arch.data`` starts
in 2014; :meth:`Volatility.optional_columns`). On a missing day the input is the
fallback :math:`\log \mathrm{RV}^{(20)}_t`, the realised variance the column would
otherwise be compared with, and an indicator :math:`m_{t,c} = 1` enters :math:`v_t`
beside it (for each range column with gaps in the data the expert is built on; 0 on
every day the column has), so the model learns how the missing value differs from its
fallback on average instead of reading a placeholder as data. A column that has gaps
only in later data (no indicator) uses the fallback alone.

A two-layer MLP and a linear term give the log scale of a heteroscedastic predictive,

.. math::

    h_t = \tanh(W_1 v_t + b_1), \qquad
    \log s_t = \log\sigma + \gamma^\top v_t + u^\top h_t, \qquad
    y_{t+h} = \mu + s_t\,\varepsilon, \quad \varepsilon \sim t_\nu \text{ or } \mathcal N(0, 1).

Bayesian output layer: :math:`\mu \sim \mathcal N(0, 1)`,
:math:`\sigma \sim \mathrm{LogNormal}(0, 1)`, :math:`\gamma_i \sim \mathcal N(0, 0.5^2)`,
:math:`u_i \sim \mathcal N(0, 0.5^2 / H)` and the shared prior of :math:`\nu`; the
hidden layer :math:`(W_1, b_1)` is a point estimate fitted with the ELBO (as the trunks
of the neural experts), started from a seeded draw of :math:`\mathcal N(0, 1/d_v)`.
The expert reads no window of returns beyond its 60-day variance and nothing after
the origin's close.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from bayes_moe.data.windows import VOL_FLOOR, ExpertInputs
from bayes_moe.models.experts.base import Expert
from bayes_moe.models.experts.noise import NoiseModel, per_target_dot

#: Columns the expert reads when the frame has them, and how each becomes a daily
#: variance in %^2: the range variances are one, the ATR (% of the close) is squared,
#: the VIX (annualised %) squared over 252 trading days.
RANGE_COLUMNS: dict[str, float | None] = {
    "var_parkinson": None,
    "var_garman_klass": None,
    "atr_14": 1.0,
    "vix": 1.0 / 252.0,
}
#: Spans (days) of the realised variances of the target.
RV_SPANS: tuple[int, ...] = (5, 20, 60)
#: The realised variance that stands in for a missing range or VIX value.
FALLBACK_SPAN: int = 20
#: Seed of the hidden layer's starting weights.
INIT_SEED: int = 20_240


def rolling_mean_square(z: torch.Tensor, span: int) -> torch.Tensor:
    r""":math:`\frac{1}{\min(w, t+1)} \sum_{i=0}^{\min(w, t+1)-1} z_{t-i}^2` along dim 0.

    Causal (rows ``<= t`` only); ``z`` of shape ``(T, ...)``.
    """
    csum = torch.cat([torch.zeros_like(z[:1]), z.square().cumsum(0)])
    t = torch.arange(1, z.shape[0] + 1, device=z.device)
    start = (t - span).clamp_min(0)
    count = (t - start).to(z.dtype).view((-1,) + (1,) * (z.dim() - 1))
    return (csum[t] - csum[start]) / count


class Volatility(Expert):
    """Heteroscedastic predictive whose log scale an MLP reads off volatility inputs.

    Parameters
    ----------
    columns : sequence of str, optional
        Range and implied-volatility columns to read, a subset of
        :data:`RANGE_COLUMNS`; default every one of them the frame has.
    hidden : int
        Width ``H`` of the hidden layer.
    family : {"studentt", "normal"}
    gap_columns : sequence of str, optional
        Range columns that get a missing-value indicator in :math:`v_t`; default those
        with gaps in the data the expert is first built on (fixed from then on, and kept
        in :meth:`config`, so a checkpoint builds the same inputs).
    """

    name = "volatility"
    group = "feature"
    capacity = 0
    param_dims = {
        "intercept": ("target",),
        "scale": ("target",),
        "vol_coef": ("target", "vol_input"),
        "head_scale": ("target", "hidden"),
        "df": ("target",),
    }

    def __init__(
        self,
        columns: Sequence[str] | None = None,
        *,
        hidden: int = 8,
        family: str = "studentt",
        gap_columns: Sequence[str] | None = None,
    ):
        super().__init__()
        if columns is not None:
            if isinstance(columns, str):
                raise ValueError(f"volatility: columns must be a list of names, got {columns!r}")
            unknown = [c for c in columns if c not in RANGE_COLUMNS]
            if unknown:
                raise ValueError(
                    f"volatility: columns {unknown} are not among {list(RANGE_COLUMNS)}"
                )
        if int(hidden) < 1:
            raise ValueError(f"volatility: hidden must be >= 1, got {hidden}")
        self.columns = None if columns is None else tuple(columns)
        self.hidden = int(hidden)
        self.gap_columns = None if gap_columns is None else tuple(gap_columns)
        self.noise = NoiseModel(family, heteroscedastic=False)
        self.layer: nn.Linear | None = None
        self._cache: tuple | None = None

    def config(self) -> dict:
        """Constructor arguments."""
        columns = None if self.columns is None else list(self.columns)
        gaps = None if self.gap_columns is None else list(self.gap_columns)
        return {
            "columns": columns,
            "hidden": self.hidden,
            "family": self.noise.family,
            "gap_columns": gaps,
        }

    def range_columns(self, inputs: ExpertInputs) -> tuple[str, ...]:
        """The range and VIX columns read: :attr:`columns`, or those the inputs have."""
        if self.columns is not None:
            return self.columns
        return tuple(c for c in RANGE_COLUMNS if c in inputs.columns)

    def reads(self, inputs: ExpertInputs) -> tuple[str, ...]:
        """The targets and the range columns."""
        return inputs.targets + self.range_columns(inputs)

    def optional_columns(self, inputs: ExpertInputs) -> tuple[str, ...]:
        """Every range and VIX column it reads may have gaps (module docstring)."""
        return self.range_columns(inputs)

    def indicated(self, inputs: ExpertInputs) -> tuple[str, ...]:
        """Range columns with a missing-value indicator (:attr:`gap_columns` once built)."""
        if self.gap_columns is not None:
            return self.gap_columns
        return inputs.columns_with_gaps(self.range_columns(inputs))

    def input_names(self, inputs: ExpertInputs) -> list[str]:
        """Names of the entries of :math:`v_t`, in order."""
        return (
            [f"log_rv_{w}" for w in RV_SPANS]
            + [f"log_{c}" for c in self.range_columns(inputs)]
            + [f"missing_{c}" for c in self.indicated(inputs)]
        )

    def param_coords(self, inputs: ExpertInputs) -> dict[str, list]:
        """Names of the volatility inputs."""
        return {"vol_input": self.input_names(inputs)}

    def build(self, inputs: ExpertInputs) -> None:
        """Check the columns and create the hidden layer (idempotent)."""
        try:
            inputs.column_index(self.reads(inputs))
        except KeyError as err:
            raise ValueError(f"volatility: {err.args[0]}") from None
        if self.gap_columns is None:
            self.gap_columns = self.indicated(inputs)
        unknown = [c for c in self.gap_columns if c not in self.range_columns(inputs)]
        if unknown:
            raise ValueError(f"volatility: gap_columns {unknown} are not columns it reads")
        if self.layer is None:
            d_v = len(self.input_names(inputs))
            self.layer = nn.Linear(d_v, self.hidden, dtype=torch.float64)
            generator = torch.Generator().manual_seed(INIT_SEED)
            with torch.no_grad():
                self.layer.weight.normal_(0.0, 1.0 / math.sqrt(d_v), generator=generator)
                self.layer.bias.zero_()

    def volatility_inputs(self, inputs: ExpertInputs) -> torch.Tensor:
        r""":math:`v_t` at every origin: shape ``(N, d_y, d_v)`` (module docstring)."""
        d_y = inputs.n_targets
        series = inputs.series
        cache = self._cache
        if cache is not None and cache[0] is series and cache[1] is inputs.origins:
            return cache[2]
        target_scale = torch.tensor(
            inputs.column_scale[:d_y], dtype=series.dtype, device=series.device
        )
        z = series[:, :d_y]  # standardized returns
        realised = [rolling_mean_square(z, w) for w in RV_SPANS]  # (T, d_y) each
        fallback = realised[RV_SPANS.index(FALLBACK_SPAN)]
        parts, missing = list(realised), []
        columns = self.range_columns(inputs)
        if columns:
            raw = inputs.raw(columns)  # (T, c) in data units
            observed = inputs.observed_mask(columns)
            indicated = self.indicated(inputs)
            for i, name in enumerate(columns):
                factor = RANGE_COLUMNS[name]
                variance = raw[:, i] if factor is None else raw[:, i].square() * factor
                variance = (variance[:, None] / target_scale.square()).expand(-1, d_y)
                parts.append(torch.where(observed[:, i : i + 1], variance, fallback))
                if name in indicated:
                    gap = (~observed[:, i : i + 1]).to(series.dtype)
                    missing.append(gap.expand(-1, d_y))
        logs = torch.log(torch.stack(parts, dim=-1).clamp_min(0.0) + VOL_FLOOR)
        v = torch.cat([logs, torch.stack(missing, dim=-1)], dim=-1) if missing else logs
        v = v[inputs.origins]
        self._cache = (series, inputs.origins, v)
        return v

    def model(self, inputs: ExpertInputs) -> dist.TorchDistribution:
        """Sample the output layer and return the predictive (see :meth:`Expert.model`)."""
        self.build(inputs)
        dtype, device = inputs.series.dtype, inputs.series.device
        d_y, H = inputs.n_targets, self.hidden
        v = self.volatility_inputs(inputs)  # (N, d_y, d_v)
        assert self.layer is not None  # made by build
        h = torch.tanh(self.layer(v.to(self.layer.weight.dtype))).to(dtype)  # (N, d_y, H)
        one = torch.ones((), dtype=dtype, device=device)
        intercept = pyro.sample("intercept", dist.Normal(0 * one, one).expand([d_y]).to_event(1))
        sigma = pyro.sample("scale", dist.LogNormal(0 * one, one).expand([d_y]).to_event(1))
        gamma = pyro.sample(
            "vol_coef", dist.Normal(0 * one, 0.5 * one).expand([d_y, v.shape[-1]]).to_event(2)
        )
        u = pyro.sample(
            "head_scale",
            dist.Normal(0 * one, 0.5 * one / math.sqrt(H)).expand([d_y, H]).to_event(2),
        )
        log_scale = (
            sigma.log().unsqueeze(-2) + per_target_dot(v, gamma) + per_target_dot(h, u)
        )  # S + (N, d_y)
        loc = intercept.unsqueeze(-2).expand(log_scale.shape)
        df = self.noise.sample_df(d_y, dtype=dtype, device=device)
        return self.noise.predictive(loc, log_scale.exp(), df)
