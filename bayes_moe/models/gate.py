r"""The Markov gate: a latent market regime that decides how experts are mixed.

.. math::

    z_t \mid z_{t-1} \sim \mathrm{Categorical}(\Pi_{z_{t-1}}), \qquad
    \Pi_k \sim \mathrm{Dirichlet}(\alpha \mathbf 1 + \kappa e_k),

    g_{t,k} = \mathrm{softmax}_m\big(b_{k,m} + u_m(X_t)\big), \qquad
    u_m(X_t) = w_m^\top f_t,

    p(y_{t+h} \mid z_t = k, X_t) = \sum_m g_{t,k,m}\, p_m(y_{t+h} \mid X_t).

:math:`f_t` are the centered volatility features of the first target
(:data:`~bayes_moe.data.windows.VOL_FEATURES`), :math:`\kappa` the stickiness. The
initial regime follows the stationary distribution of :math:`\Pi`.

Horizon groups: the prior mean of :math:`b_{k,m}` favours short-horizon experts at
``h = 1`` and long-horizon ones at ``h = 20``,
:math:`\mathbb E\, b_{k,m} = \lambda\,(1 - 2a)\,\mathbb 1[\text{short}] -
\lambda\,(1 - 2a)\,\mathbb 1[\text{long}]` with :math:`a = \min(1, \log h / \log 20)`.

A fixed ``assignment`` (regime ``k`` uses expert ``assignment[k]`` alone) reduces the
gate to Hamilton's Markov-switching model over those experts.

References
----------
J. D. Hamilton, "A new approach to the economic analysis of nonstationary time
series and the business cycle", Econometrica 57(2), 1989.
E. B. Fox, E. B. Sudderth, M. I. Jordan and A. S. Willsky, "A sticky HDP-HMM with
application to speaker diarization", Annals of Applied Statistics 5(2A), 2011.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch

from bayes_moe.data.windows import ExpertInputs
from bayes_moe.inference.hmm import stationary_distribution


@dataclass(frozen=True)
class GateOutput:
    """The gate's contribution to the likelihood.

    Attributes
    ----------
    log_init : Tensor, shape ``S + (K,)``
    log_trans : Tensor, shape ``S + (K, K)``; ``[i, j] = log P(z_t = j | z_{t-1} = i)``
    log_weights : Tensor, shape ``S + (N, K, M)``; ``log g_{t,k,m}``
    """

    log_init: torch.Tensor
    log_trans: torch.Tensor
    log_weights: torch.Tensor


def horizon_preference(groups: Sequence[str], horizon: int, strength: float) -> torch.Tensor:
    """Prior mean of the gate bias per expert (see the module docstring), shape ``(M,)``."""
    a = min(1.0, math.log(horizon) / math.log(20.0))
    tilt = strength * (1.0 - 2.0 * a)
    sign = {"short": 1.0, "long": -1.0}
    return torch.tensor([sign.get(g, 0.0) * tilt for g in groups], dtype=torch.float64)


class MarkovGate:
    r"""Regime-switching gate with a sticky Dirichlet prior on the transition rows.

    Parameters
    ----------
    n_regimes : int
        ``K``.
    stickiness : float
        :math:`\kappa`, extra prior pseudo-counts on staying in the same regime.
    concentration : float
        :math:`\alpha`, pseudo-counts on every transition.
    input_dependent : bool
        Include :math:`u(X_t)`.
    assignment : sequence of int, optional
        Fix regime ``k`` to expert ``assignment[k]`` (no learned weights).
    horizon_strength : float
        :math:`\lambda` of the horizon-group prior.
    """

    def __init__(
        self,
        n_regimes: int = 3,
        *,
        stickiness: float = 10.0,
        concentration: float = 1.0,
        input_dependent: bool = True,
        assignment: Sequence[int] | None = None,
        horizon_strength: float = 0.5,
    ):
        if n_regimes < 1:
            raise ValueError(f"n_regimes must be >= 1, got {n_regimes}")
        if assignment is not None and len(assignment) != n_regimes:
            raise ValueError(
                f"assignment has {len(assignment)} entries but there are {n_regimes} regimes"
            )
        self.n_regimes = n_regimes
        self.stickiness = float(stickiness)
        self.concentration = float(concentration)
        self.input_dependent = bool(input_dependent) and assignment is None
        self.assignment = None if assignment is None else tuple(int(a) for a in assignment)
        self.horizon_strength = float(horizon_strength)

    def config(self) -> dict:
        """JSON-serializable constructor arguments."""
        return {
            "n_regimes": self.n_regimes,
            "stickiness": self.stickiness,
            "concentration": self.concentration,
            "input_dependent": self.input_dependent,
            "assignment": None if self.assignment is None else list(self.assignment),
            "horizon_strength": self.horizon_strength,
        }

    def transition_prior(self, dtype: torch.dtype) -> dist.Distribution:
        """Sticky Dirichlet prior on the rows of the transition matrix, event ``(K, K)``."""
        K = self.n_regimes
        conc = self.concentration + self.stickiness * torch.eye(K, dtype=dtype)
        return dist.Dirichlet(conc).to_event(1)

    def model(self, inputs: ExpertInputs, groups: Sequence[str]) -> GateOutput:
        """Sample the gate's parameters and return its log probabilities.

        Sites: ``transition`` ``(K, K)``; ``bias`` ``(K, M)`` and ``coef`` ``(M, V)``
        unless the assignment is fixed.

        Parameters
        ----------
        inputs : ExpertInputs
        groups : sequence of str
            Horizon group of each of the ``M`` experts.
        """
        dtype = inputs.series.dtype
        K, M = self.n_regimes, len(groups)
        if K > 1:
            trans = pyro.sample("transition", self.transition_prior(dtype))
            log_trans = trans.clamp_min(torch.finfo(dtype).tiny).log()
            log_init = stationary_distribution(trans).clamp_min(torch.finfo(dtype).tiny).log()
        else:
            log_trans = torch.zeros(1, 1, dtype=dtype)
            log_init = torch.zeros(1, dtype=dtype)
        n = inputs.n_origins
        if self.assignment is not None:
            if max(self.assignment) >= M:
                raise ValueError(f"assignment {self.assignment} refers to experts beyond {M}")
            mask = torch.full((K, M), -math.inf, dtype=dtype)
            mask[torch.arange(K), torch.tensor(self.assignment)] = 0.0
            return GateOutput(log_init, log_trans, mask.expand(n, K, M))
        prior_mean = horizon_preference(groups, inputs.horizon, self.horizon_strength).to(dtype)
        bias = pyro.sample(
            "bias", dist.Normal(prior_mean.expand(K, M), torch.ones((), dtype=dtype)).to_event(2)
        )  # S + (K, M)
        logits = bias.unsqueeze(-3)  # S + (1, K, M)
        if self.input_dependent:
            features = inputs.origin_vol[:, 0, :]  # (N, V) of the first target
            coef = pyro.sample(
                "coef",
                dist.Normal(torch.zeros((), dtype=dtype), torch.tensor(0.5, dtype=dtype))
                .expand([M, features.shape[-1]])
                .to_event(2),
            )  # S + (M, V)
            u = torch.einsum("nv,...mv->...nm", features, coef)  # S + (N, M)
            logits = logits + u.unsqueeze(-2)
        else:
            logits = logits.expand(logits.shape[:-3] + (n, K, M))
        return GateOutput(log_init, log_trans, torch.log_softmax(logits, dim=-1))
