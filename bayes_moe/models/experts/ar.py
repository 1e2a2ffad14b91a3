r"""Bayesian autoregressive expert, AR(p) with a heteroscedastic scale.

.. math::

    y_{t+h} = \phi_0 + \sum_{i=1}^{p} \phi_i\, y_{t+1-i} + s_t\,\varepsilon_{t+h},
    \qquad \varepsilon \sim \mathcal N(0,1) \text{ or } t_\nu,

with :math:`s_t` from :class:`~bayes_moe.models.experts.noise.NoiseModel`. For
``h > 1`` this is the direct ``h``-step regression of the ``h``-day return on the
last ``p`` daily returns. Each target has its own equation. ``order=0`` gives a
constant-mean expert (with ``heteroscedastic=False`` and ``family="normal"``, one
regime of Hamilton's Markov-switching model).

Priors (standardized units): :math:`\phi_0 \sim \mathcal N(0, 1)`,
:math:`\phi_i \sim \mathcal N(0, 0.5^2)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch

from bayes_moe.data.windows import ExpertInputs
from bayes_moe.models.experts.base import Expert
from bayes_moe.models.experts.noise import NoiseModel, per_target_dot


class AR(Expert):
    """AR(p) expert.

    Parameters
    ----------
    order : int
        Number of lags ``p >= 0``.
    family : {"studentt", "normal"}
    heteroscedastic : bool
    scale_features : sequence of str, optional
        Volatility summaries of the scale model (:class:`NoiseModel`; default all).
    """

    name = "ar"
    group = "short"
    capacity = 0
    targets_independent = True
    param_dims = {
        "intercept": ("target",),
        "coef": ("target", "lag"),
        "scale": ("target",),
        "vol_coef": ("target", "scale_feature"),
        "df": ("target",),
    }

    def __init__(
        self,
        order: int = 2,
        *,
        family: str = "studentt",
        heteroscedastic: bool = True,
        scale_features: Sequence[str] | None = None,
    ):
        super().__init__()
        if order < 0:
            raise ValueError(f"AR order must be >= 0, got {order}")
        self.order = order
        self.noise = NoiseModel(family, heteroscedastic, scale_features)

    def config(self) -> dict:
        """Constructor arguments."""
        return {"order": self.order, **self.noise.config()}

    def param_coords(self, inputs: ExpertInputs) -> dict[str, list]:
        """Lags are numbered from 1."""
        return super().param_coords(inputs) | {"lag": list(range(1, self.order + 1))}

    def model(self, inputs: ExpertInputs) -> dist.TorchDistribution:
        """Sample the AR parameters and return the predictive (see :meth:`Expert.model`)."""
        dtype, device = inputs.series.dtype, inputs.series.device
        d_y = inputs.n_targets
        one = torch.ones((), dtype=dtype, device=device)
        intercept = pyro.sample("intercept", dist.Normal(0 * one, one).expand([d_y]).to_event(1))
        loc = intercept.unsqueeze(-2)  # S + (1, d_y)
        if self.order > 0:
            coef = pyro.sample(
                "coef", dist.Normal(0 * one, 0.5 * one).expand([d_y, self.order]).to_event(2)
            )  # S + (d_y, p)
            lags = inputs.windows(self.order).flip(-2).transpose(-1, -2)  # (N, d_y, p), lag 1 first
            loc = loc + per_target_dot(lags, coef)
        scale = self.noise.sample_scale(
            inputs.origin_vol, dtype=dtype, available=inputs.scale_features
        )
        df = self.noise.sample_df(d_y, dtype=dtype, device=device)
        return self.noise.predictive(loc, scale, df)
