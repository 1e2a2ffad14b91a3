r"""Shared pieces of an expert's predictive: its scale model and noise family.

Every expert forecasts with a location it computes itself and a scale that depends
on the input (heteroscedastic),

.. math::

    \log s_{t} = \log \sigma + \sum_{v} \gamma_v f_{t,v},

a HAR-type regression of the log scale on the centered volatility features of
:data:`~bayes_moe.data.windows.VOL_FEATURES`: log realized variances over 1, 5 and 22
days (Corsi 2009) and over a trading year (the slowly moving, low-frequency level of
Engle and Rangel 2008), the log RiskMetrics EWMA variance, and mean returns over 1 and
5 days, whose sign gives the asymmetric (leverage) response of EGARCH-type models
(Nelson 1991). The noise family
is Normal or Student-t. With ``heteroscedastic=False`` the scale is the constant
:math:`\sigma`.

Priors (standardized units): :math:`\sigma \sim \mathrm{LogNormal}(0, 1)`,
:math:`\gamma_v \sim \mathcal N(0, 0.5^2)`, and for Student-t
:math:`\nu - 2 \sim \mathrm{Gamma}(2, 0.1)` (Juárez & Steel 2010, shifted so the
variance exists).

References
----------
F. Corsi, "A simple approximate long-memory model of realized volatility",
J. Financial Econometrics 7(2), 2009.
D. B. Nelson, "Conditional heteroskedasticity in asset returns: a new approach",
Econometrica 59(2), 1991.
R. F. Engle and J. G. Rangel, "The spline-GARCH model for low-frequency volatility
and its global macroeconomic causes", Review of Financial Studies 21(3), 2008.
M. A. Juárez and M. F. J. Steel, "Model-based clustering of non-Gaussian panel
data based on skew-t distributions", JBES 28(1), 2010.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints
from torch.distributions.transforms import AffineTransform

from bayes_moe.data.windows import select_vol_features, vol_feature_names


class ShiftedGamma(dist.TransformedDistribution):
    r""":math:`\nu = 2 + G,\ G \sim \mathrm{Gamma}(\alpha, \beta)`: a prior for Student-t df."""

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.greater_than(2.0)

    def __init__(self, concentration: torch.Tensor, rate: torch.Tensor, validate_args=None):
        super().__init__(
            dist.Gamma(concentration, rate),
            [AffineTransform(2.0, 1.0)],
            validate_args=validate_args,
        )

    def expand(self, batch_shape, _instance=None):
        """Expand the batch shape (needed because ``__init__`` is custom)."""
        new = self._get_checked_instance(ShiftedGamma, _instance)
        return super().expand(batch_shape, _instance=new)


def per_target_dot(x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    r"""One regression per target: :math:`\sum_j x_{n,i,j}\, c_{i,j}`.

    Parameters
    ----------
    x : Tensor ``(..., N, d_y, p)``
        Regressors of each day and target.
    coef : Tensor ``S + (d_y, p)``
        Coefficients, with the draws' batch dims ``S``.

    Returns
    -------
    Tensor ``S + (N, d_y)``: one contraction, no ``S + (N, d_y, p)`` temporary.
    """
    return torch.einsum("...ndp,...dp->...nd", x, coef)


@dataclass(frozen=True)
class NoiseModel:
    """Scale model and noise family of an expert's predictive.

    Parameters
    ----------
    family : {"studentt", "normal"}
        Predictive family.
    heteroscedastic : bool
        Regress the log scale on the volatility summaries (else constant scale).
    features : sequence of str, optional
        The summaries :math:`f_{t,v}` the log scale regresses on, a subset of
        :data:`~bayes_moe.data.windows.VOL_FEATURES`. Default: those the mixture
        leaves to the experts (:attr:`ExpertInputs.scale_features`: all of them, or,
        when the regimes carry the volatility level, all but the slow ones).
    """

    family: str = "studentt"
    heteroscedastic: bool = True
    features: Sequence[str] | None = None

    def __post_init__(self):
        if self.family not in ("studentt", "normal"):
            raise ValueError(f"family must be 'studentt' or 'normal', got {self.family!r}")
        if self.features is not None:
            object.__setattr__(self, "features", vol_feature_names(self.features, "scale_features"))

    def feature_names(self, available: Sequence[str] | None = None) -> tuple[str, ...]:
        """Names of the summaries the scale regresses on (in :data:`VOL_FEATURES` order).

        ``available`` is the default when the model chose none (``inputs.scale_features``).
        """
        return vol_feature_names(self.features if self.features is not None else available)

    def config(self) -> dict:
        """JSON-serializable arguments, named as the experts' constructors take them."""
        features = None if self.features is None else list(self.feature_names())
        return {
            "family": self.family,
            "heteroscedastic": self.heteroscedastic,
            "scale_features": features,
        }

    def sample_scale(
        self, vol: torch.Tensor, *, dtype: torch.dtype, available: Sequence[str] | None = None
    ) -> torch.Tensor:
        r"""Sample ``scale`` (and ``vol_coef``) and return :math:`s_t`.

        Parameters
        ----------
        vol : Tensor, shape ``(n, d_y, V)``
            Volatility summaries (all of :data:`VOL_FEATURES`) at the days the scale
            applies to; the scale reads those of :meth:`feature_names`.
        available : sequence of str, optional
            The default summaries (``inputs.scale_features``).

        Returns
        -------
        Tensor, shape ``S + (n, d_y)``
        """
        d_y = vol.shape[-2]
        one = torch.ones((), dtype=dtype, device=vol.device)
        sigma = pyro.sample("scale", dist.LogNormal(0 * one, one).expand([d_y]).to_event(1))
        log_scale = sigma.log().unsqueeze(-2)  # S + (1, d_y)
        if self.heteroscedastic:
            vol = select_vol_features(vol, self.feature_names(available))
            coef = pyro.sample(
                "vol_coef",
                dist.Normal(0 * one, 0.5 * one).expand([d_y, vol.shape[-1]]).to_event(2),
            )  # S + (d_y, V')
            log_scale = log_scale + per_target_dot(vol, coef)
        # Expanded so that a constant scale also has one row per day, as documented.
        return log_scale.exp().expand(log_scale.shape[:-2] + vol.shape[-3:-1])

    def sample_df(
        self, d_y: int, *, dtype: torch.dtype, device: torch.device | None = None
    ) -> torch.Tensor | None:
        """Sample the Student-t degrees of freedom ``df``: shape ``S + (d_y,)`` (None if Normal)."""
        if self.family != "studentt":
            return None
        shape, rate = (torch.tensor(v, dtype=dtype, device=device) for v in (2.0, 0.1))
        prior = ShiftedGamma(shape, rate)
        return pyro.sample("df", prior.expand([d_y]).to_event(1))

    def predictive(
        self, loc: torch.Tensor, scale: torch.Tensor, df: torch.Tensor | None
    ) -> dist.TorchDistribution:
        """``Independent(Normal | StudentT, 1)`` with batch ``S + (N,)``, event ``(d_y,)``.

        Parameters
        ----------
        loc, scale : Tensor, shape ``S + (N, d_y)``
        df : Tensor, shape ``S + (d_y,)``, or None
        """
        if df is None:
            return dist.Normal(loc, scale).to_event(1)
        return dist.StudentT(df.unsqueeze(-2), loc, scale).to_event(1)

    def predictive_from_variance(
        self, loc: torch.Tensor, variance: torch.Tensor, df: torch.Tensor | None
    ) -> dist.TorchDistribution:
        r"""Like :meth:`predictive` but matching a given variance.

        For Student-t the scale is :math:`\sqrt{v (\nu - 2) / \nu}` so that the
        predictive variance equals ``variance`` (a Gaussian filter with t tails).
        """
        if df is None:
            return self.predictive(loc, variance.sqrt(), None)
        nu = df.unsqueeze(-2)
        return self.predictive(loc, (variance * (nu - 2) / nu).sqrt(), df)
