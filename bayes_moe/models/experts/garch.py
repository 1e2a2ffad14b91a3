r"""Bayesian GARCH(1,1) expert with Student-t innovations.

For each target, a constant mean and Bollerslev's variance recursion on the residuals
:math:`\varepsilon_t = y_t - \mu`,

.. math::

    y_{t+1} = \mu + \sigma_{t+1} \eta_{t+1}, \qquad
    \sigma^2_{t+1} = \omega + \alpha\, \varepsilon_t^2 + \beta\, \sigma^2_t, \qquad
    \eta \sim t_\nu \text{ scaled to unit variance (or } \mathcal N(0, 1)),

computed over the whole history by a parallel scan
(:func:`bayes_moe.kernels.garch.garch_variance`), started from the backcast of the
residuals up to the first origin (``arch``'s exponentially weighted start, restricted
to days every origin may read, so no origin sees a later day). The predictive of
origin ``t`` for ``h`` days ahead is Student-t with location :math:`h\mu` and the
exact variance of the ``h``-day sum,
:math:`\sum_{j=1}^h \mathbb E_t \sigma^2_{t+j}`
(:func:`~bayes_moe.kernels.garch.aggregate_variance`; for ``h > 1`` the t shape is
an approximation, as in :class:`~bayes_moe.evaluation.baselines.garch.ArchTFit`).

Parameterisation. Stationarity, :math:`\alpha + \beta < 1`, holds by construction:

.. math::

    p = \alpha + \beta \sim \mathrm{Beta}(a_p, b_p), \qquad
    r = \alpha / p \sim \mathrm{Beta}(a_r, b_r), \qquad
    \bar\sigma^2 = \omega / (1 - p) \sim \mathrm{LogNormal}(m_v, s_v^2),

    \alpha = r p, \qquad \beta = (1 - r) p, \qquad \omega = \bar\sigma^2 (1 - p),

so the priors on :math:`(\omega, \alpha, \beta)` are those induced by priors on the
persistence :math:`p`, the share :math:`r` of the news coefficient in it and the
unconditional variance :math:`\bar\sigma^2` (standardized units): the quantities a
user reads and compares across regimes, and well identified where :math:`\omega`
alone is not (it shrinks to zero as :math:`p \to 1`). Defaults: :math:`p \sim
\mathrm{Beta}(10, 1.5)` (mean 0.87, mode 0.95, no mass at the integrated boundary),
:math:`r \sim \mathrm{Beta}(2, 10)` (mean 0.17), :math:`\bar\sigma^2 \sim
\mathrm{LogNormal}(0, 1)`, :math:`\mu \sim \mathcal N(0, 1)` and the shared
:math:`\nu - 2 \sim \mathrm{Gamma}(2, 0.1)`.

Markov-switching GARCH. Several GARCH experts, each fixed to one regime of a Markov
gate (:func:`bayes_moe.models.ms_garch.ms_garch`), are the Markov-switching GARCH of
Haas, Mittnik and Paolella (2004): every regime runs its own variance recursion on the
observed returns, so the likelihood has no path dependence and the regime path is
marginalised exactly by the forward algorithm.

References
----------
T. Bollerslev, "Generalized autoregressive conditional heteroskedasticity",
J. Econometrics 31(3), 1986.
M. Haas, S. Mittnik and M. S. Paolella, "A new approach to Markov-switching GARCH
models", J. Financial Econometrics 2(4), 2004.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch

from bayes_moe.data.windows import ExpertInputs
from bayes_moe.kernels.garch import aggregate_variance, arch_backcast, garch_variance
from bayes_moe.models.experts.base import Expert
from bayes_moe.models.experts.noise import NoiseModel


def garch_coefficients(
    persistence: torch.Tensor, alpha_share: torch.Tensor, unconditional_variance: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r""":math:`(\omega, \alpha, \beta)` from :math:`(p, r, \bar\sigma^2)` (module docstring).

    .. math:: \alpha = r p, \quad \beta = (1 - r) p, \quad \omega = \bar\sigma^2 (1 - p)

    Any shapes that broadcast; works on tensors and numpy arrays alike.
    """
    alpha = alpha_share * persistence
    beta = persistence - alpha
    omega = unconditional_variance * (1 - persistence)
    return omega, alpha, beta


def _pair(values: Sequence[float], name: str, *, positive_both: bool = True) -> tuple:
    """Two floats, both positive (the second positive only with ``positive_both=False``)."""
    pair = tuple(float(v) for v in values)
    if len(pair) != 2 or pair[1] <= 0 or (positive_both and pair[0] <= 0):
        kind = "positive numbers" if positive_both else "numbers, the second positive"
        raise ValueError(f"{name} must be two {kind}, got {values}")
    return pair


class GARCH(Expert):
    r"""GARCH(1,1) expert with Student-t (or Normal) innovations, per target.

    Parameters
    ----------
    family : {"studentt", "normal"}
        Innovation family (the Student-t is scaled to unit variance, as in ``arch``).
    persistence_prior : (float, float)
        Beta shape parameters :math:`(a_p, b_p)` of :math:`p = \alpha + \beta`.
    alpha_share_prior : (float, float)
        Beta shape parameters :math:`(a_r, b_r)` of :math:`r = \alpha / p`.
    variance_prior : (float, float)
        Location and scale :math:`(m_v, s_v)` of the LogNormal prior of the
        unconditional variance :math:`\bar\sigma^2` in standardized units (1: the
        sample variance). :func:`~bayes_moe.models.ms_garch.ms_garch` gives its regimes
        ordered locations.
    """

    name = "garch"
    group = "linear"
    capacity = 0
    param_dims = {
        "mean": ("target",),
        "persistence": ("target",),
        "alpha_share": ("target",),
        "unconditional_variance": ("target",),
        "df": ("target",),
    }

    def __init__(
        self,
        *,
        family: str = "studentt",
        persistence_prior: Sequence[float] = (10.0, 1.5),
        alpha_share_prior: Sequence[float] = (2.0, 10.0),
        variance_prior: Sequence[float] = (0.0, 1.0),
    ):
        super().__init__()
        self.noise = NoiseModel(family, heteroscedastic=False)
        self.persistence_prior = _pair(persistence_prior, "persistence_prior")
        self.alpha_share_prior = _pair(alpha_share_prior, "alpha_share_prior")
        self.variance_prior = _pair(variance_prior, "variance_prior", positive_both=False)

    def config(self) -> dict:
        """Constructor arguments."""
        return {
            "family": self.noise.family,
            "persistence_prior": list(self.persistence_prior),
            "alpha_share_prior": list(self.alpha_share_prior),
            "variance_prior": list(self.variance_prior),
        }

    def param_coords(self, inputs: ExpertInputs) -> dict[str, list]:
        """No dimensions beyond ``target`` (the scale model of other experts is not used)."""
        return {}

    def model(self, inputs: ExpertInputs) -> dist.TorchDistribution:
        """Sample the GARCH parameters and return the predictive (see :meth:`Expert.model`)."""
        dtype, device = inputs.series.dtype, inputs.series.device
        d_y = inputs.n_targets
        one = torch.ones((), dtype=dtype, device=device)

        def per_target(prior):
            return prior.expand([d_y]).to_event(1)

        mean = pyro.sample("mean", per_target(dist.Normal(0 * one, one)))  # S + (d_y,)
        a_p, b_p = self.persistence_prior
        persistence = pyro.sample("persistence", per_target(dist.Beta(a_p * one, b_p * one)))
        a_r, b_r = self.alpha_share_prior
        share = pyro.sample("alpha_share", per_target(dist.Beta(a_r * one, b_r * one)))
        m_v, s_v = self.variance_prior
        level = pyro.sample(
            "unconditional_variance", per_target(dist.LogNormal(m_v * one, s_v * one))
        )
        df = self.noise.sample_df(d_y, dtype=dtype, device=device)
        omega, alpha, beta = garch_coefficients(persistence, share, level)

        resid = inputs.series[:, :d_y].transpose(0, 1) - mean.unsqueeze(-1)  # S + (d_y, T)
        # The start reads only days every origin may read: those up to the first origin.
        first = int(inputs.origins[0]) if inputs.n_origins else resid.shape[-1] - 1
        backcast = arch_backcast(resid[..., : first + 1])
        variance = garch_variance(resid, omega, alpha, beta, backcast)  # S + (d_y, T + 1)
        # sigma^2_{t+1}, the variance of the day after origin t.
        next_variance = variance[..., inputs.origins + 1]  # S + (d_y, N)
        h = inputs.horizon
        total = aggregate_variance(next_variance, omega, persistence, h)
        loc = (h * mean).unsqueeze(-2).expand(total.shape[:-2] + total.shape[-1:] + (d_y,))
        return self.noise.predictive_from_variance(loc, total.transpose(-1, -2), df)
