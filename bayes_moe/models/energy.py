r"""Energy: how uncertain the mixture is about the day ahead, and the gate it drives.

Energy of origin ``n`` (the close of day :math:`t_n`):

.. math::

    E_n = H\big[p_L(y_{n} \mid \mathcal F_n)\big] + H\big[P_L(z_n \mid \mathcal F_n)\big],

the entropy of the predictive of the first target (standardized units, in nats) plus
the entropy of the regime distribution, both made by the *light* experts
:math:`L` (those of the lowest capacity class present, :attr:`Expert.capacity`) with
the information available at :math:`t_n` only:

.. math::

    P_L(z_n = k \mid \mathcal F_n) = r_{n,k} \quad
    (\text{the forward filter of the light mixture at } n - h \text{ carried }
    h \text{ transitions ahead, :func:`~bayes_moe.kernels.hmm.causal_regime`}),

    p_L(y_n \mid \mathcal F_n) = \sum_k r_{n,k} \sum_{m \in L} \tilde g_{n,k,m}\,
    p^{(k)}_m(y_n \mid X_n), \qquad
    \tilde g_{n,k,m} = g_{n,k,m} \Big/ \sum_{m' \in L} g_{n,k,m'}.

The predictive is a mixture of Normal and Student-t densities with no closed-form
entropy; :func:`~bayes_moe.kernels.entropy.mixture_entropy` integrates it (error
below 1e-3 nats, documented there). The regime part is a categorical entropy (closed
form, at most :math:`\log K`). A wide predictive (a volatile market) and an unsure
regime both raise the energy. When every expert has the same class, :math:`L` is the
whole mixture.

Energy-based gating tilts the gate's weights by energy and capacity class
:math:`c_m \in \{0, 1, 2\}` (light, medium, heavy):

.. math::

    \log g'_{n,k,m} = \log g_{n,k,m} + \beta\,(E_n - \tau)\, c_m
    - \log \sum_{m'} g_{n,k,m'}\, e^{\beta (E_n - \tau) c_{m'}},

so with :math:`\beta > 0` a high energy moves weight to the heavy long-range experts
and a low one to the light experts; :math:`\beta = 0` is the untilted gate.

The circularity (the predictive at ``n`` depends on the weights at ``n``) is resolved
by measuring the energy with the light experts' untilted mixture, in a first pass:
their emissions, the forward filter (in parallel over time where a gradient is
needed: :func:`~bayes_moe.kernels.hmm.hmm_filter`) carried ``h`` steps ahead, and the
two entropies; the second pass scores the tilted mixture of all experts with the
regime path marginalised exactly, as without the tilt. Why the light experts: they
are evaluated on every day anyway, so the energy that decides whether the heavy
experts are needed on a day can be known before any heavy expert runs, which is what
sparse inference needs (below). The other choice the issue names, the predictive
made at ``n - 1``, would use yesterday's inputs and lag a volatility jump by a day.
Nothing after :math:`t_n` enters :math:`E_n` or the tilted weights of ``n``
(``tests/models/test_energy.py`` perturbs the data after ``t`` and checks).

Sparse inference (``EnergyGate(sparse=threshold)``) uses this order at evaluation
time: light experts and the energy first, then each heavier expert only at the
origins where its tilted causal weight :math:`\sum_k r_{n,k} g'_{n,k,m}` reaches the
threshold in some draw of the chunk; elsewhere it is not evaluated and the weights of
that origin are renormalised over the experts that were
(:func:`~bayes_moe.inference.posterior.evaluate_posterior`). Fitting stays dense.

Priors: :math:`\beta \sim \mathcal N(0, \sigma_\beta^2)` (zero-centred: the data say
whether and in which direction uncertainty should move weight), and
:math:`\tau \sim \mathcal N(\tau_0, \sigma_\tau^2)` with
:math:`\tau_0 = \tfrac12 \log(2\pi e h) + \tfrac12 \log K`, the entropy of a Gaussian
forecast of the standardized ``h``-day response with the training variance plus half
the largest regime entropy. Either can be fixed instead. Note that
:math:`-\beta\tau c_m` is a constant per expert, which the gate's biases
:math:`b_{k,m}` can also carry: :math:`\tau` is identified by its prior only, and what
the data inform is :math:`\beta`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch

from bayes_moe.kernels.entropy import DEFAULT_ENTROPY_NODES, categorical_entropy, mixture_entropy
from bayes_moe.kernels.hmm import causal_regime, hmm_filter
from bayes_moe.models.distributions import first_marginal

#: Threshold of ``EnergyGate(sparse=True)``: heavier experts whose tilted weight on a
#: day is below 5% (in every draw) are not evaluated that day.
DEFAULT_SPARSE_THRESHOLD: float = 0.05


@dataclass(frozen=True)
class EnergyParts:
    r"""The energy of every origin, and the causal regime probabilities behind it.

    Attributes
    ----------
    predictive : Tensor ``S + (N,)``
        Entropy of the light experts' untilted causal predictive of the first target
        (standardized units, nats).
    regime : Tensor ``S + (N,)``
        Entropy of :math:`P(z_n \mid \mathcal F_n)`.
    log_causal_regime : Tensor ``S + (N, K)``
        :math:`\log P_L(z_n = k \mid \mathcal F_n)`.
    """

    predictive: torch.Tensor
    regime: torch.Tensor
    log_causal_regime: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        """:math:`E_n`: ``predictive + regime``, shape ``S + (N,)``."""
        return self.predictive + self.regime


@dataclass(frozen=True)
class EnergyTilt:
    r"""The tilt's parameters for one set of draws: :math:`\beta`, :math:`\tau` ``S + ()``."""

    beta: torch.Tensor
    tau: torch.Tensor


def reference_energy(horizon: int, n_regimes: int) -> float:
    r""":math:`\tau_0 = \tfrac12 \log(2\pi e h) + \tfrac12 \log K` (module docstring)."""
    return 0.5 * math.log(2.0 * math.pi * math.e * horizon) + 0.5 * math.log(n_regimes)


def tilt_weights(
    log_weights: torch.Tensor, energy: torch.Tensor, tilt: EnergyTilt, capacity: torch.Tensor
) -> torch.Tensor:
    r"""The tilted log weights :math:`\log g'_{n,k,m}` (module docstring).

    Parameters
    ----------
    log_weights : Tensor ``S + (N, K, M)``
    energy : Tensor ``S + (N,)``
    tilt : EnergyTilt
        ``beta`` and ``tau`` of batch ``S`` (or scalars).
    capacity : Tensor ``(M,)``
        :math:`c_m`.

    Returns
    -------
    Tensor ``S + (N, K, M)``; every ``(n, k)`` row sums to one in probability.
    """
    beta = tilt.beta[..., None, None, None]
    shift = (energy - tilt.tau[..., None])[..., None, None]  # S + (N, 1, 1)
    return torch.log_softmax(log_weights + beta * shift * capacity, dim=-1)


def energy_parts(
    log_init: torch.Tensor,
    hmm_trans: torch.Tensor,
    time_varying: bool,
    log_weights: torch.Tensor,
    log_p: torch.Tensor,
    scored: torch.Tensor,
    experts: Sequence,
    log_scale: torch.Tensor,
    horizon: int,
    light: Sequence[int] | None = None,
    n_nodes: int = DEFAULT_ENTROPY_NODES,
) -> EnergyParts:
    r"""The energy of every origin from the light experts' untilted mixture (module docstring).

    Parameters
    ----------
    log_init : Tensor ``S + (K,)``
    hmm_trans : Tensor ``S + (K, K)``, or ``S + (N, K, K)`` when ``time_varying``
        The transition into each origin's regime (:attr:`GateOutput.hmm_trans`).
    time_varying : bool
    log_weights : Tensor ``S + (N, K, M)``
        The untilted gate weights of all ``M`` experts.
    log_p : Tensor ``S + (N, K, M_L)``
        :math:`\log p^{(k)}_m(y_n)` of the responses under the light experts; only the
        first ``N - h`` rows are read (the responses known at the last origin's close).
    scored : BoolTensor ``(N,)``
        Origins whose response enters the likelihood (the others emit 1).
    experts : list of Distribution
        The light experts' predictives, batch ``S + (N,)``.
    log_scale : Tensor ``S + (K,)``
        The regimes' volatility levels :math:`\lambda_k`.
    horizon : int
        ``h``.
    light : sequence of int, optional
        Positions of the light experts among the ``M`` (default: all of them).
    n_nodes : int
        Quadrature nodes of :func:`~bayes_moe.kernels.entropy.mixture_entropy`.

    Returns
    -------
    EnergyParts
    """
    if light is not None and len(light) < log_weights.shape[-1]:
        log_weights = log_weights[..., list(light)]
        log_weights = log_weights - torch.logsumexp(log_weights, dim=-1, keepdim=True)
    N, K, M = log_weights.shape[-3:]
    if log_p.shape[-1] != M or len(experts) != M:
        raise ValueError(
            f"energy_parts needs the light experts' log_p and predictives ({M}), got "
            f"{log_p.shape[-1]} and {len(experts)}"
        )
    known = N - horizon
    if known < 1:
        raise ValueError(f"the energy needs more than h = {horizon} origins, got {N}")
    batch = torch.broadcast_shapes(
        log_weights.shape[:-3], log_p.shape[:-3], log_init.shape[:-1], log_scale.shape[:-1]
    )
    S = math.prod(batch)
    log_init = log_init.expand(batch + (K,)).reshape(S, K)
    step_trans = hmm_trans if time_varying else hmm_trans.unsqueeze(-3)  # (N or 1, K, K)
    step_trans = step_trans.expand(batch + step_trans.shape[-3:]).reshape(S, -1, K, K)
    log_w = log_weights.expand(batch + (N, K, M)).reshape(S, N, K, M)
    log_p = log_p.expand(batch + (N, K, M)).reshape(S, N, K, M)
    log_emit = torch.logsumexp(log_w[:, :known] + log_p[:, :known], dim=-1)  # (S, known, K)
    log_emit = log_emit.masked_fill(~scored[:known].unsqueeze(-1), 0.0)
    filtered = hmm_filter(
        log_init,
        step_trans[:, :known] if time_varying else step_trans[:, 0],
        log_emit,
        time_varying=time_varying,
    )
    log_causal = causal_regime(
        log_init,
        filtered.log_filtered,
        step_trans,
        horizon,
        filtered.log_predicted if horizon == 1 else None,
    )  # (S, N, K)
    marginals = [first_marginal(d) for d in experts]
    df = (
        torch.stack(
            [
                torch.full_like(loc, math.inf) if nu is None else nu.expand_as(loc)
                for nu, loc, _ in marginals
            ],
            dim=-1,
        )
        .expand(batch + (N, M))
        .reshape(S, N, 1, M)
    )
    loc = torch.stack([loc for _, loc, _ in marginals], dim=-1)
    loc = loc.expand(batch + (N, M)).reshape(S, N, 1, M)
    scale = torch.stack([s for _, _, s in marginals], dim=-1).expand(batch + (N, M))
    stretch = log_scale.expand(batch + (K,)).reshape(S, 1, K, 1).exp()
    scale = scale.reshape(S, N, 1, M) * stretch  # (S, N, K, M)
    log_comp_weights = log_causal.unsqueeze(-1) + log_w  # (S, N, K, M)
    predictive = mixture_entropy(
        log_comp_weights.reshape(S, N, K * M),
        df.expand(S, N, K, M).reshape(S, N, K * M),
        loc.expand(S, N, K, M).reshape(S, N, K * M),
        scale.reshape(S, N, K * M),
        n_nodes=n_nodes,
    )
    regime = categorical_entropy(log_causal)
    return EnergyParts(
        predictive.reshape(batch + (N,)),
        regime.reshape(batch + (N,)),
        log_causal.reshape(batch + (N, K)),
    )


class EnergyGate:
    r"""Energy-based gating: tilt the gate's weights by energy and capacity.

    Parameters
    ----------
    beta : float, optional
        Fix :math:`\beta` (``0`` is the untilted gate); default: fitted with the
        prior :math:`\mathcal N(0, \mathrm{beta\_scale}^2)`.
    tau : float, optional
        Fix :math:`\tau`; default: fitted with the prior
        :math:`\mathcal N(\tau_0, \mathrm{tau\_scale}^2)` (:func:`reference_energy`).
    beta_scale, tau_scale : float
        Prior standard deviations.
    n_nodes : int
        Quadrature nodes of the predictive entropy.
    sparse : float or bool, optional
        Sparse inference: when forecasting and evaluating the posterior, an expert
        heavier than the light class is evaluated at an origin only if its tilted
        weight there reaches this threshold (``True``: :data:`DEFAULT_SPARSE_THRESHOLD`;
        ``0`` evaluates everything through the same code, equal to dense). Fitting is
        always dense.
    """

    def __init__(
        self,
        beta: float | None = None,
        tau: float | None = None,
        *,
        beta_scale: float = 1.0,
        tau_scale: float = 1.0,
        n_nodes: int = DEFAULT_ENTROPY_NODES,
        sparse: float | bool | None = None,
    ):
        if beta_scale <= 0 or tau_scale <= 0:
            raise ValueError(
                f"beta_scale and tau_scale must be positive, got {beta_scale} and {tau_scale}"
            )
        if n_nodes < 8:
            raise ValueError(f"n_nodes must be >= 8, got {n_nodes}")
        for name, value in (("beta", beta), ("tau", tau)):
            if value is not None and not math.isfinite(value):
                raise ValueError(f"energy gate {name} must be finite, got {value}")
        self.beta = None if beta is None else float(beta)
        self.tau = None if tau is None else float(tau)
        self.beta_scale = float(beta_scale)
        self.tau_scale = float(tau_scale)
        self.n_nodes = int(n_nodes)
        self.sparse = sparse_threshold(sparse)

    def config(self) -> dict:
        """JSON-serializable constructor arguments."""
        return {
            "beta": self.beta,
            "tau": self.tau,
            "beta_scale": self.beta_scale,
            "tau_scale": self.tau_scale,
            "n_nodes": self.n_nodes,
            "sparse": self.sparse,
        }

    def model(
        self, horizon: int, n_regimes: int, dtype: torch.dtype, device: torch.device | None = None
    ) -> EnergyTilt:
        r"""Sample (or fix) :math:`\beta` and :math:`\tau`: sites ``beta``, ``tau`` ``()``."""

        def site(name: str, fixed: float | None, centre: float, scale: float):
            if fixed is not None:
                return torch.tensor(fixed, dtype=dtype, device=device)
            loc, sd = (torch.tensor(v, dtype=dtype, device=device) for v in (centre, scale))
            return pyro.sample(name, dist.Normal(loc, sd))

        beta = site("beta", self.beta, 0.0, self.beta_scale)
        tau = site("tau", self.tau, reference_energy(horizon, n_regimes), self.tau_scale)
        return EnergyTilt(beta, tau)


def sparse_threshold(sparse: float | bool | None) -> float | None:
    """The threshold of ``EnergyGate(sparse=...)``: None (dense) or a weight in ``[0, 1)``."""
    if sparse is None or sparse is False:
        return None
    if sparse is True:
        return DEFAULT_SPARSE_THRESHOLD
    value = float(sparse)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"sparse threshold must be a weight in [0, 1), got {sparse}")
    return value


def as_energy_gate(energy_gate: EnergyGate | bool | dict | None) -> EnergyGate | None:
    """``EnergyGate()`` for True, ``EnergyGate(**d)`` for a dict, None for None / False."""
    if energy_gate is None or energy_gate is False:
        return None
    if energy_gate is True:
        return EnergyGate()
    if isinstance(energy_gate, dict):
        return EnergyGate(**energy_gate)
    if isinstance(energy_gate, EnergyGate):
        return energy_gate
    raise TypeError(
        f"energy_gate must be an EnergyGate, a dict of its options, True or None, "
        f"got {type(energy_gate).__name__}"
    )
