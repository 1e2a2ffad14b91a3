r"""Bayesian vector autoregressive expert, VAR(p), with a Minnesota prior.

The system :math:`x_t \in \mathbb R^D` holds the targets and the other return series
of the frame (columns named ``ret_*``, e.g. S&P 500 with NASDAQ). The expert
forecasts the targets' equations of the VAR,

.. math::

    y_{t+h} = c + \sum_{l=1}^{p} A_l\, x_{t+1-l} + S_t\, L\, \varepsilon_{t+h},
    \qquad \varepsilon \sim \mathcal N(0, I) \text{ or multivariate } t_\nu,

with :math:`A_l \in \mathbb R^{d_y \times D}`, :math:`S_t = \mathrm{diag}(s_t)` from
the shared scale model, and :math:`L` the Cholesky factor of the targets'
correlation (LKJ(2) prior). With several targets the predictive is their joint
distribution; with one target it is that target's marginal. The equations of
series that are not forecast do not enter the targets' predictive, so they are
not sampled (their posterior would equal their prior).

Minnesota prior (Litterman 1986; standardized units):
:math:`A_{l,ij} \sim \mathcal N(0, (\lambda / l)^2)` on own lags and
:math:`\mathcal N(0, (\lambda\theta / l)^2)` on other series' lags, with
:math:`\lambda = 0.2, \theta = 0.5`; :math:`c \sim \mathcal N(0, 1)`.

References
----------
R. B. Litterman, "Forecasting with Bayesian vector autoregressions: five years of
experience", JBES 4(1), 1986.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch

from bayes_moe.data.windows import ExpertInputs
from bayes_moe.models.experts.base import Expert
from bayes_moe.models.experts.noise import NoiseModel

RETURN_PREFIX = "ret_"


class VAR(Expert):
    r"""VAR(p) expert over the targets and the other return series.

    Parameters
    ----------
    order : int
        Number of lags ``p >= 1``.
    columns : sequence of str, optional
        Other series of the system; default: every model column whose name starts
        with ``"ret_"`` (besides the targets).
    family : {"studentt", "normal"}
    heteroscedastic : bool
    scale_features : sequence of str, optional
        Volatility summaries of the scale model (:class:`NoiseModel`; default all).
    tightness, cross_tightness : float
        Minnesota :math:`\lambda` and :math:`\theta`.
    """

    name = "var"
    group = "linear"
    capacity = 0
    param_dims = {
        "intercept": ("target",),
        "coef": ("target", "lag", "series"),
        "scale": ("target",),
        "vol_coef": ("target", "scale_feature"),
        "df": ("df_dim",),
        "corr_chol": ("target", "target_bis"),
    }

    def __init__(
        self,
        order: int = 1,
        *,
        columns: Sequence[str] | None = None,
        family: str = "studentt",
        heteroscedastic: bool = True,
        scale_features: Sequence[str] | None = None,
        tightness: float = 0.2,
        cross_tightness: float = 0.5,
    ):
        super().__init__()
        if order < 1:
            raise ValueError(f"VAR order must be >= 1, got {order}")
        self.order = order
        self.columns = None if columns is None else tuple(columns)
        self.noise = NoiseModel(family, heteroscedastic, scale_features)
        self.tightness = tightness
        self.cross_tightness = cross_tightness

    def config(self) -> dict:
        """Constructor arguments."""
        return {
            "order": self.order,
            "columns": None if self.columns is None else list(self.columns),
            **self.noise.config(),
            "tightness": self.tightness,
            "cross_tightness": self.cross_tightness,
        }

    def reads(self, inputs: ExpertInputs) -> tuple[str, ...]:
        """The targets followed by the other series of the system."""
        others = self.columns
        if others is None:
            others = tuple(
                c for c in inputs.columns if isinstance(c, str) and c.startswith(RETURN_PREFIX)
            )
        return inputs.targets + tuple(c for c in others if c not in inputs.targets)

    def param_coords(self, inputs: ExpertInputs) -> dict[str, list]:
        """Lags numbered from 1; series named by their columns."""
        lags = list(range(1, self.order + 1))
        return super().param_coords(inputs) | {"lag": lags, "series": list(self.reads(inputs))}

    def prior_scale(
        self, d_y: int, n_series: int, dtype: torch.dtype, device: torch.device | None = None
    ) -> torch.Tensor:
        """Minnesota prior standard deviations, shape ``(d_y, p, D)``."""
        lags = torch.arange(1, self.order + 1, dtype=dtype, device=device).view(1, -1, 1)
        own = torch.zeros(d_y, 1, n_series, dtype=dtype, device=device)
        target = torch.arange(d_y, device=device)
        own[target, 0, target] = 1.0  # targets are the first series
        ratio = own + (1 - own) * self.cross_tightness
        return self.tightness * ratio / lags

    def model(self, inputs: ExpertInputs) -> dist.TorchDistribution:
        """Sample the VAR parameters and return the predictive (see :meth:`Expert.model`)."""
        dtype, device = inputs.series.dtype, inputs.series.device
        d_y = inputs.n_targets
        system = self.reads(inputs)
        one = torch.ones((), dtype=dtype, device=device)
        intercept = pyro.sample("intercept", dist.Normal(0 * one, one).expand([d_y]).to_event(1))
        prior_sd = self.prior_scale(d_y, len(system), dtype, device)
        coef = pyro.sample("coef", dist.Normal(torch.zeros_like(prior_sd), prior_sd).to_event(3))
        lags = inputs.windows(self.order, system).flip(-2)  # (N, p, D), lag 1 first
        # loc[..., n, i] = c_i + sum_{l, j} A[..., i, l, j] * lags[n, l, j]
        loc = intercept.unsqueeze(-2) + torch.einsum("...ilj,nlj->...ni", coef, lags)
        scale = self.noise.sample_scale(
            inputs.origin_vol, dtype=dtype, available=inputs.scale_features
        )  # S + (N, d_y)
        if d_y == 1:
            df = self.noise.sample_df(d_y, dtype=dtype, device=device)
            return self.noise.predictive(loc, scale, df)
        corr_chol = pyro.sample("corr_chol", dist.LKJCholesky(d_y, 2.0 * one))
        scale_tril = scale.unsqueeze(-1) * corr_chol.unsqueeze(-3)  # S + (N, d_y, d_y)
        df = self.noise.sample_df(1, dtype=dtype, device=device)
        if df is None:
            return dist.MultivariateNormal(loc, scale_tril=scale_tril)
        return dist.MultivariateStudentT(df, loc, scale_tril)
