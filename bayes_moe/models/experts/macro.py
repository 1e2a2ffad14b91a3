r"""Macro expert: a tiny GRU over macro inputs drives the location and the log scale.

Seed item 11 (and 5.2): the inputs are macro series only, core CPI year on year, the
Baa-Aaa credit spread, WTI oil returns and, when the frame has them, the quarterly
``macrodata`` series, each on the daily frame as it was known at that close
(:func:`bayes_moe.data.add_macro_features`, which applies the publication lags). For
each origin ``t`` and the rows :math:`s = t-L+1, \dots, t` of its window the expert reads

.. math::

    m_s = \big(\tilde x_{s,1}, \dots, \tilde x_{s,c},\ g_{s,1}, \dots, g_{s,q}\big),
    \qquad
    \tilde x_{s,i} = \begin{cases} x_{s,i} & \text{observed} \\ 0 & \text{missing}
    \end{cases},

the macro columns :math:`x_{s,i}` standardized with their training mean and standard
deviation, and runs a small GRU (:class:`bayes_moe.models.nets.recurrent.GRU`, ``H = 8``
units by default) over them,

.. math::

    h_s = \mathrm{GRU}(m_s, h_{s-1}), \quad h_{t-L} = 0, \qquad
    e_t = \mathrm{LN}(h_t) \in \mathbb R^{H},

    y_{t+h} = b + W e_t + s_t\, e^{V e_t}\, \varepsilon_{t+h},
    \qquad \varepsilon \sim t_\nu \text{ or } \mathcal N(0, 1),

a heteroscedastic predictive whose location and log scale the macro state moves (the
head of :class:`~bayes_moe.models.experts.window.WindowExpert`, LN a layer norm without
parameters).

Gaps. The macro columns may be missing on some days (before a series is first
published, after it stops, on days WTI has no price): :meth:`Macro.optional_columns`.
On a missing day the input is the fallback 0, the column's training mean (its
unconditional expectation), built from the mask and never read from the series, and a
missing-value indicator :math:`g_{s,j} = 1` enters :math:`m_s` for each column with
gaps in the data the expert is first built on (0 on days the column has; kept in
:meth:`config`), so the GRU learns how a missing value differs from its fallback. A
frame with none of the macro columns is the limit of every value missing: the input is
one constant indicator, and the expert reduces to a constant location and its scale
baseline (the default when a mixture of ``"all"`` experts meets a frame without macro
features; name ``columns=`` to require them).

Scale baseline. :math:`s_t` is the shared scale model
(:class:`~bayes_moe.models.experts.noise.NoiseModel`): with ``heteroscedastic=True``
(default, as every expert) a regression of :math:`\log s_t` on the target's own
realised-volatility summaries, the one place where the target's returns enter; the
GRU reads macro data only. ``heteroscedastic=False`` makes :math:`s_t = \sigma`
constant, a predictive driven by macro inputs alone.

Bayesian output layer (standardized units): :math:`b \sim \mathcal N(0, 1)`,
:math:`W_{ij} \sim \mathcal N(0, 1/H)`, :math:`V_{ij} \sim \mathcal N(0, 0.25/H)`,
:math:`\sigma \sim \mathrm{LogNormal}(0, 1)`, the scale model's coefficients
:math:`\mathcal N(0, 0.5^2)` and the shared prior of :math:`\nu`. The GRU weights are
point estimates fitted with the ELBO (two-stage training, as the trunks of the neural
experts; ``bayesian="full"`` puts mean-field priors on them), started from PyTorch's
GRU initialisation drawn with the fixed seed :data:`INIT_SEED`. The expert reads
nothing after the origin's close; look-ahead through publication dates is ruled out
upstream by the lags of :func:`~bayes_moe.data.add_macro_features`.

The Kalman expert reads macro columns too, as exogenous regressors of its observation
equation: ``{"name": "kalman", "exog": ["credit_spread", "core_cpi_yoy"]}``
(:class:`~bayes_moe.models.experts.kalman.Kalman`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bayes_moe.data.macro_features import MACRO_FEATURES, QUARTERLY_FEATURES
from bayes_moe.data.windows import ExpertInputs
from bayes_moe.models.experts.window import WindowExpert
from bayes_moe.models.nets.recurrent import GRU

#: Columns the expert reads by default, those of them the frame has.
MACRO_COLUMNS: tuple[str, ...] = MACRO_FEATURES + QUARTERLY_FEATURES
#: Seed of the GRU's starting weights.
INIT_SEED: int = 20_241
#: Name of the single input of a frame without macro columns.
NO_MACRO_INPUT: str = "no_macro_data"


class Macro(WindowExpert):
    """A tiny GRU over standardized macro inputs and a Bayesian heteroscedastic head.

    Parameters
    ----------
    length : int, optional
        Window length ``L`` of the GRU; default the model's window.
    columns : sequence of str, optional
        Macro columns to read; default those of :data:`MACRO_COLUMNS` the frame has.
        Named columns are required (a missing one is an error naming it).
    gap_columns : sequence of str, optional
        Columns that get a missing-value indicator; default those with gaps in the
        data the expert is first built on (fixed from then on, kept in :meth:`config`).
    hidden : int
        GRU units ``H``.
    bayesian, family, heteroscedastic, scale_features
        As for :class:`~bayes_moe.models.experts.window.WindowExpert`.
    **trunk_options
        Further options of the GRU (``layers``, ``mode``).
    """

    name = "macro"
    group = "feature"
    capacity = 0
    trunk_class = GRU

    def __init__(
        self,
        length: int | None = None,
        *,
        columns: Sequence[str] | None = None,
        gap_columns: Sequence[str] | None = None,
        hidden: int = 8,
        bayesian: str = "head",
        family: str = "studentt",
        heteroscedastic: bool = True,
        scale_features: Sequence[str] | None = None,
        **trunk_options,
    ):
        super().__init__(
            length,
            columns=columns,
            bayesian=bayesian,
            family=family,
            heteroscedastic=heteroscedastic,
            scale_features=scale_features,
            hidden=hidden,
            **trunk_options,
        )
        if gap_columns is not None and isinstance(gap_columns, str):
            raise ValueError(f"macro: gap_columns must be a list of names, got {gap_columns!r}")
        self.gap_columns = None if gap_columns is None else tuple(gap_columns)

    def config(self) -> dict:
        """Constructor arguments (the GRU's options included)."""
        gaps = None if self.gap_columns is None else list(self.gap_columns)
        return {**super().config(), "gap_columns": gaps}

    # ------------------------------------------------------------------ columns

    def macro_columns(self, inputs: ExpertInputs) -> tuple[str, ...]:
        """The macro columns read: :attr:`columns`, or those of :data:`MACRO_COLUMNS` present."""
        if self.columns is not None:
            return self.columns
        return tuple(c for c in MACRO_COLUMNS if c in inputs.columns)

    def reads(self, inputs: ExpertInputs) -> tuple[str, ...]:
        """The targets (for the scale baseline) and the macro columns."""
        return inputs.targets + tuple(
            c for c in self.macro_columns(inputs) if c not in inputs.targets
        )

    def optional_columns(self, inputs: ExpertInputs) -> tuple[str, ...]:
        """Every macro column may have gaps (module docstring)."""
        return self.macro_columns(inputs)

    def indicated(self, inputs: ExpertInputs) -> tuple[str, ...]:
        """Columns with a missing-value indicator (:attr:`gap_columns` once built)."""
        if self.gap_columns is not None:
            return self.gap_columns
        return inputs.columns_with_gaps(self.macro_columns(inputs))

    def input_names(self, inputs: ExpertInputs) -> list[str]:
        """Names of the entries of :math:`m_s`, in order."""
        columns = self.macro_columns(inputs)
        if not columns:
            return [NO_MACRO_INPUT]
        return list(columns) + [f"missing_{c}" for c in self.indicated(inputs)]

    def build(self, inputs: ExpertInputs) -> None:
        """Check the columns and the window; create the seeded GRU (idempotent).

        Raises ValueError naming a macro column the inputs lack, a target named as a
        macro column, or a window longer than the model's.
        """
        columns = self.macro_columns(inputs)
        try:
            inputs.column_index(columns)
        except KeyError as err:
            raise ValueError(
                f"macro: {err.args[0]}; add them with bayes_moe.data.add_macro_features"
            ) from None
        targets = [c for c in columns if c in inputs.targets]
        if targets:
            raise ValueError(f"macro: columns {targets} are targets; it reads macro inputs only")
        if self.window_length(inputs) > inputs.window:
            raise ValueError(
                f"macro: window length {self.length} > the model's window {inputs.window}"
            )
        if self.gap_columns is None:
            self.gap_columns = self.indicated(inputs)
        unknown = [c for c in self.gap_columns if c not in columns]
        if unknown:
            raise ValueError(f"macro: gap_columns {unknown} are not columns it reads")
        if self.trunk is None:
            options = self._length_option(self.window_length(inputs))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(INIT_SEED)
                self.trunk = self.trunk_class(len(self.input_names(inputs)), **options)

    # ------------------------------------------------------------------ inputs

    def macro_series(self, inputs: ExpertInputs) -> torch.Tensor:
        r""":math:`m_s` on every row: shape ``(T, d_m)``, ``d_m = c + q`` (module docstring)."""
        columns = self.macro_columns(inputs)
        series = inputs.series
        if not columns:
            return torch.ones(series.shape[0], 1, dtype=series.dtype, device=series.device)
        parts = [inputs.mean_filled(columns)]  # (T, c)
        indicated = self.indicated(inputs)
        if indicated:
            parts.append((~inputs.observed_mask(indicated)).to(series.dtype))  # (T, q)
        return torch.cat(parts, dim=-1)

    def window_batch(self, inputs: ExpertInputs) -> torch.Tensor:
        """The GRU's input: :math:`m_{t-L+1:t}` for each origin ``t``, ``(N, L, d_m)`` float32."""
        L = self.window_length(inputs)
        m = self.macro_series(inputs)
        return m.unfold(0, L, 1)[inputs.origins - (L - 1)].transpose(-1, -2).float()
