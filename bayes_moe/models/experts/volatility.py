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

Two optional groups of inputs, off by default: each range variance's averages over
the last 5 and 22 days (``range_spans=(5, 22)``), the heterogeneous horizons of Corsi's
HAR model, and the origin's standardized return twice, as :math:`\min(z_t, 0)` and
:math:`|z_t|` (``leverage=True``): a fall raises tomorrow's variance more than a rise
of the same size. They are off because on P1's validation years (2011-2014, seed 0,
the expert alone, 1,500 steps) they lowered the log score: -1.2089 with the averages,
-1.2104 with the return terms, -1.2245 with both, against -1.1982 without. The extra
inputs are strongly correlated with the others and slow SVI down; early stopping then
ends the fit before it settles (fitted to 2010, both groups stop at 700 steps with a
loss of 1.182 nats per day, and reach 1.168, below the 1.172 of the default inputs,
when allowed 4,000 steps).

Gaps. The range and VIX columns may have missing days (the VIX in ``arch.data`` starts
in 2014; :meth:`Volatility.optional_columns`). On a missing day the input is the
fallback :math:`\log \mathrm{RV}^{(20)}_t`, the realised variance the column would
otherwise be compared with, and an indicator :math:`m_{t,c} = 1` enters :math:`v_t`
beside it (for each range column with gaps in the data the expert is built on; 0 on
every day the column has), so the model learns how the missing value differs from its
fallback on average instead of reading a placeholder as data. A column that has gaps
only in later data (no indicator) uses the fallback alone.

A column with gaps also gets its own linear coefficients. Where it is observed, the
whole linear term shifts, :math:`\gamma \to \gamma + \delta_c` on the variance and
return inputs, with :math:`\delta_c \sim \mathcal N(0, \tau^2)` (``gap_shift_sd``):
a model with the VIX weighs the realised and range variances differently from one
without it, and the shrinkage lets the few days with the column (one year of VIX at
the first P1 refit) move the coefficients only as far as they support. This is a
pattern-mixture model with hierarchical shrinkage. :math:`\tau = 0.3` was chosen on
2014, the only validation year with the VIX (``benchmarks/p1_sp500.py --vix-validation
--refit-every 63``, seeds 0-2, the expert alone): mean log score -0.979 against -0.994,
-0.990 for :math:`\tau` = 0.1, 1 and -0.999 for the fallback alone.

A two-layer MLP and a linear term give the log scale of a heteroscedastic predictive,

.. math::

    h_t = \tanh(W_1 v_t + b_1), \qquad
    \log s_t = \log\sigma + \gamma^\top v_t + \textstyle\sum_c o_{t,c}\, \delta_c^\top \tilde v_t
    + u^\top h_t, \qquad
    y_{t+h} = \mu + s_t\,\varepsilon, \quad \varepsilon \sim t_\nu \text{ or } \mathcal N(0, 1),

where :math:`o_{t,c}` is 1 where column :math:`c` (with gaps) is observed and
:math:`\tilde v_t` is :math:`v_t` without the indicators.

Measurement equation (``measurement=True``; off by default), for a single target at
horizon 1 when the frame has the Parkinson variance: while fitting, the next day's
log range variance is a second observation of the same scale, as in Realized GARCH
(Hansen, Huang and Shek 2012),

.. math::

    \log \sigma^2_{\mathrm{P},t+1} = \xi + 2 \varphi \log s_t + u_{t+1}, \qquad
    u_{t+1} \sim \mathcal N(0, \sigma_u^2),

with :math:`\xi \sim \mathcal N(0, 1)`, :math:`\varphi \sim \mathcal N(1, 0.5^2)`,
:math:`\sigma_u \sim \mathrm{LogNormal}(0, 1)`. The range variance measures the
day's variance far more precisely than the squared return, which is all the
predictive's likelihood sees, so the coefficients of :math:`\log s_t` are learned from
both. It enters the training likelihood only
(:meth:`~bayes_moe.models.moe.MoEProgram.forward`, ``inputs.fitting``); forecasts and
scores read the return's predictive alone, and no origin reads a later day: the
observation of origin ``t`` is day ``t + 1``, whose return is its response.
Measured on P1's validation years (2011-2014, seeds 0-2): the expert alone scores
-1.1988, -1.1998 and -1.1981 with it, against -1.1982, -1.2125 and -1.2093 without (a
better mean, and far less noise between seeds); but the mixture AR + VAR + Kalman +
GARCH + volatility scores -1.1853, -1.1888 and -1.1896 with it (mean -1.1879),
against -1.1813, -1.1805 and -1.1894 without (mean -1.1837). So it is off by default.

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
#: Range variances that also enter as averages over the last ``range_spans`` days.
AVERAGED_COLUMNS: tuple[str, ...] = ("var_parkinson", "var_garman_klass")
#: Prior sd of the coefficient shift of a column with gaps (module docstring).
GAP_SHIFT_SD: float = 0.3
#: The range variance the measurement equation observes on the next day.
MEASURED_COLUMN: str = "var_parkinson"
#: Seed of the hidden layer's starting weights.
INIT_SEED: int = 20_240


def rolling_mean_square(z: torch.Tensor, span: int) -> torch.Tensor:
    r""":math:`\frac{1}{\min(w, t+1)} \sum_{i=0}^{\min(w, t+1)-1} z_{t-i}^2` along dim 0.

    Causal (rows ``<= t`` only); ``z`` of shape ``(T, ...)``.
    """
    return rolling_mean(z.square(), span)


def rolling_mean(x: torch.Tensor, span: int) -> torch.Tensor:
    r""":math:`\frac{1}{\min(w, t+1)} \sum_{i=0}^{\min(w, t+1)-1} x_{t-i}` along dim 0.

    Causal (rows ``<= t`` only); ``x`` of shape ``(T, ...)``.
    """
    csum = torch.cat([torch.zeros_like(x[:1]), x.cumsum(0)])
    t = torch.arange(1, x.shape[0] + 1, device=x.device)
    start = (t - span).clamp_min(0)
    count = (t - start).to(x.dtype).view((-1,) + (1,) * (x.dim() - 1))
    return (csum[t] - csum[start]) / count


class Volatility(Expert):
    r"""Heteroscedastic predictive whose log scale an MLP reads off volatility inputs.

    Parameters
    ----------
    columns : sequence of str, optional
        Range and implied-volatility columns to read, a subset of
        :data:`RANGE_COLUMNS`; default every one of them the frame has.
    hidden : int
        Width ``H`` of the hidden layer.
    family : {"studentt", "normal"}
    gap_columns : sequence of str, optional
        Range columns that get a missing-value indicator in :math:`v_t` and their own
        coefficient shift; default those with gaps in the data the expert is first built
        on (fixed from then on, and kept in :meth:`config`, so a checkpoint builds the
        same inputs).
    range_spans : sequence of int
        Spans (days) of the averages of the range variances in :data:`AVERAGED_COLUMNS`;
        ``()`` for the daily values only.
    leverage : bool
        Whether :math:`\min(z_t, 0)` and :math:`|z_t|` enter :math:`v_t`.
    gap_shift_sd : float
        :math:`\tau`, the prior sd of the coefficient shift :math:`\delta_c` of a column
        with gaps.
    measurement : bool
        Whether the next day's Parkinson variance is observed through the measurement
        equation while fitting (module docstring; :meth:`measures`).
    """

    name = "volatility"
    group = "feature"
    capacity = 0
    param_dims = {
        "intercept": ("target",),
        "scale": ("target",),
        "vol_coef": ("target", "vol_input"),
        "head_scale": ("target", "hidden"),
        "gap_coef": ("target", "gap_column", "shift_input"),
        "measure_intercept": ("target",),
        "measure_slope": ("target",),
        "measure_noise": ("target",),
        "df": ("target",),
    }

    def __init__(
        self,
        columns: Sequence[str] | None = None,
        *,
        hidden: int = 8,
        family: str = "studentt",
        gap_columns: Sequence[str] | None = None,
        range_spans: Sequence[int] = (),
        leverage: bool = False,
        gap_shift_sd: float = GAP_SHIFT_SD,
        measurement: bool = False,
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
        if isinstance(range_spans, (str, int)) or any(int(w) < 2 for w in range_spans):
            raise ValueError(
                f"volatility: range_spans must be a list of spans >= 2 days, got {range_spans!r}"
            )
        if not float(gap_shift_sd) > 0:
            raise ValueError(f"volatility: gap_shift_sd must be > 0, got {gap_shift_sd}")
        self.columns = None if columns is None else tuple(columns)
        self.hidden = int(hidden)
        self.gap_columns = None if gap_columns is None else tuple(gap_columns)
        self.range_spans = tuple(int(w) for w in range_spans)
        self.leverage = bool(leverage)
        self.gap_shift_sd = float(gap_shift_sd)
        self.measurement = bool(measurement)
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
            "range_spans": list(self.range_spans),
            "leverage": self.leverage,
            "gap_shift_sd": self.gap_shift_sd,
            "measurement": self.measurement,
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

    def measures(self, inputs: ExpertInputs) -> bool:
        """Whether the measurement equation is in the model for ``inputs``.

        It needs :attr:`measurement`, the Parkinson variance among the columns read, one
        target (the range measures that one series) and horizon 1 (the observation is
        the next day's range).
        """
        return (
            self.measurement
            and MEASURED_COLUMN in self.range_columns(inputs)
            and inputs.n_targets == 1
            and inputs.horizon == 1
        )

    def next_day_measure(self, inputs: ExpertInputs) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`\log \sigma^2_{\mathrm{P},t+1}` in standardized units, and where it exists.

        Returns ``(N,)`` values and a ``(N,)`` mask: False where day ``t + 1`` is past
        the end of the series or the Parkinson variance is missing there.
        """
        series = inputs.series
        raw = inputs.raw([MEASURED_COLUMN])[:, 0]  # (T,) in %^2
        observed = inputs.observed_mask([MEASURED_COLUMN])[:, 0]
        variance = raw / inputs.column_scale[0] ** 2
        log_v = torch.log(variance.clamp_min(0.0) + VOL_FLOOR)
        nxt = inputs.origins + 1
        inside = nxt < series.shape[0]
        nxt = nxt.clamp_max(series.shape[0] - 1)
        return log_v[nxt], inside & observed[nxt]

    def averaged(self, inputs: ExpertInputs) -> tuple[str, ...]:
        """Range columns that also enter as averages over :attr:`range_spans`."""
        if not self.range_spans:
            return ()
        return tuple(c for c in self.range_columns(inputs) if c in AVERAGED_COLUMNS)

    def shift_names(self, inputs: ExpertInputs) -> list[str]:
        r"""Names of the entries of :math:`\tilde v_t` (:math:`v_t` without indicators)."""
        names = [f"log_rv_{w}" for w in RV_SPANS]
        names += [f"log_{c}" for c in self.range_columns(inputs)]
        names += [f"log_{c}_mean_{w}" for c in self.averaged(inputs) for w in self.range_spans]
        if self.leverage:
            names += ["negative_return", "abs_return"]
        return names

    def input_names(self, inputs: ExpertInputs) -> list[str]:
        """Names of the entries of :math:`v_t`, in order."""
        return self.shift_names(inputs) + [f"missing_{c}" for c in self.indicated(inputs)]

    def param_coords(self, inputs: ExpertInputs) -> dict[str, list]:
        """Names of the volatility inputs and of the columns with gaps."""
        return {
            "vol_input": self.input_names(inputs),
            "gap_column": list(self.indicated(inputs)),
            "shift_input": self.shift_names(inputs),
        }

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
        parts, averages, missing = list(realised), [], []
        columns = self.range_columns(inputs)
        if columns:
            raw = inputs.raw(columns)  # (T, c) in data units
            observed = inputs.observed_mask(columns)
            indicated, averaged = self.indicated(inputs), self.averaged(inputs)
            for i, name in enumerate(columns):
                factor = RANGE_COLUMNS[name]
                variance = raw[:, i] if factor is None else raw[:, i].square() * factor
                variance = (variance[:, None] / target_scale.square()).expand(-1, d_y)
                filled = torch.where(observed[:, i : i + 1], variance, fallback)
                parts.append(filled)
                if name in averaged:
                    averages += [rolling_mean(filled, w) for w in self.range_spans]
                if name in indicated:
                    gap = (~observed[:, i : i + 1]).to(series.dtype)
                    missing.append(gap.expand(-1, d_y))
        variances = torch.stack(parts + averages, dim=-1)
        pieces = [torch.log(variances.clamp_min(0.0) + VOL_FLOOR)]
        if self.leverage:
            pieces.append(torch.stack([z.clamp_max(0.0), z.abs()], dim=-1))
        if missing:
            pieces.append(torch.stack(missing, dim=-1))
        v = torch.cat(pieces, dim=-1)[inputs.origins]
        self._cache = (series, inputs.origins, v)
        return v

    def gap_presence(self, inputs: ExpertInputs) -> torch.Tensor:
        r""":math:`o_{t,c} = 1 - m_{t,c}` at every origin: ``(N, d_y, n_gap)``.

        1 where column ``c`` of :attr:`gap_columns` is observed, else 0: the complement
        of the missing-value indicators, the last ``n_gap`` entries of :math:`v_t`.
        """
        v = self.volatility_inputs(inputs)
        return 1.0 - v[..., len(self.shift_names(inputs)) :]

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
        o = self.gap_presence(inputs)  # (N, d_y, n_gap)
        if o.shape[-1]:
            d_s = len(self.shift_names(inputs))
            delta = pyro.sample(
                "gap_coef",
                dist.Normal(0 * one, self.gap_shift_sd * one)
                .expand([d_y, o.shape[-1], d_s])
                .to_event(3),
            )  # S + (d_y, n_gap, d_s)
            shift = torch.einsum("...ndp,...dgp->...ndg", v[..., :d_s], delta)
            log_scale = log_scale + (shift * o).sum(-1)
        loc = intercept.unsqueeze(-2).expand(log_scale.shape)
        df = self.noise.sample_df(d_y, dtype=dtype, device=device)
        if self.measures(inputs):
            self._measurement_equation(inputs, log_scale[..., 0], one)
        return self.noise.predictive(loc, log_scale.exp(), df)

    def _measurement_equation(
        self, inputs: ExpertInputs, log_scale: torch.Tensor, one: torch.Tensor
    ) -> None:
        r"""Sample :math:`\xi, \varphi, \sigma_u`; while fitting, observe the next day's range.

        ``log_scale``: :math:`\log s_t`, ``S + (N,)``. Adds ``pyro.factor("measurement")``
        of the masked Normal log density, summed over origins (module docstring).
        """
        xi = pyro.sample("measure_intercept", dist.Normal(0 * one, one).expand([1]).to_event(1))
        phi = pyro.sample("measure_slope", dist.Normal(one, 0.5 * one).expand([1]).to_event(1))
        noise = pyro.sample("measure_noise", dist.LogNormal(0 * one, one).expand([1]).to_event(1))
        if not inputs.fitting:
            return
        value, present = self.next_day_measure(inputs)
        mean = xi + 2.0 * phi * log_scale  # S + (N,)
        log_density = dist.Normal(mean, noise).log_prob(torch.where(present, value, mean))
        pyro.factor("measurement", log_density.masked_fill(~present, 0.0).sum(-1))
