r"""The Markov gate: a latent market regime that decides how experts are mixed.

.. math::

    P(z_t = j \mid z_{t-1} = i, x_t) = \frac{\Pi_{ij}\, e^{\beta_j^\top x_t}}
    {\sum_l \Pi_{il}\, e^{\beta_l^\top x_t}}, \qquad \beta_0 = 0, \qquad
    \Pi_k \sim \mathrm{Dirichlet}(\alpha \mathbf 1 + \kappa e_k), \qquad
    \beta_j \sim \mathcal N(0, I),

    g_{t,k} = \mathrm{softmax}_m\big(b_{k,m} + u_m(X_t)\big), \qquad
    u_m(X_t) = w_m^\top f_t,

    p(y_{t+h} \mid z_t = k, X_t) = \sum_m g_{t,k,m}\, p_m^{(k)}(y_{t+h} \mid X_t),

    p_m^{(k)}(y) = e^{-d_y \lambda_k}\, p_m\big(\mu_m + e^{-\lambda_k}(y - \mu_m)\big),
    \qquad
    \lambda_0 = 0,\quad \lambda_k = \lambda_{k-1} + \delta_k,\quad
    \delta_k \sim \mathrm{Gamma}(a, b).

:math:`f_t` are centered volatility summaries of the first target at the close of
``t`` (:data:`~bayes_moe.data.windows.VOL_FEATURES`), :math:`\kappa` the stickiness.
The initial regime follows the stationary distribution of the baseline :math:`\Pi`.

Input-output transitions (Bengio and Frasconi 1995): by default the chain's switches
respond to :math:`x_t` = the weekly, monthly and EWMA log realized variance
(:data:`~bayes_moe.data.windows.TRANSITION_FEATURES`); with ``transition_features=()``
the chain is time-homogeneous (:math:`\beta = 0`). Any model column can drive them
too (``transition_features=["log_rv_22", "credit_spread", "vix"]``): a name that is
not a volatility summary is a column of the frame, read standardized with the
training constants at the close of ``t``. On a day such a column has no value (the
VIX before 2014) it is read as its training mean, 0 in standardized units, so that
day's transition is the baseline for that covariate (:math:`\beta^\top x_t` loses
that term); the fallback is built from the column's mask, never from a filled value.
Written as :math:`\log \Pi_t = \mathrm{logsoftmax_{row}}(\log \Pi + \mathbf 1
(B x_t)^\top)` with :math:`B = (\beta_0, \dots, \beta_{K-1})^\top`, it is the
``softmax_row(A + B x_t)`` of an input-output HMM whose covariate effect depends on
the destination regime only (an effect per origin-destination pair is not
identified from one path without strong priors). The transition into origin ``t``'s
regime uses the inputs at the close of ``t`` only, so the filter stays causal, and a
forecast made at ``t`` propagates the regime with the inputs known at ``t``.
What a constant :math:`\Pi` gave before is then reported at the baseline or as an
average: the stationary start and the ``transition`` table are those of the
baseline :math:`\Pi` (all inputs at their training means); expected durations are
:math:`1/(1 - \Pi_{t,kk})` averaged over the days spent in regime ``k``
(:mod:`bayes_moe.inference.posterior`).
The slow summaries among them (22-day and EWMA variance) then belong to the regimes:
the experts' scales and the weights :math:`u(X_t)` read the others by default
(:attr:`MarkovGate.expert_features`). This division of labour is what makes the
regimes volatility states: if the experts' scales also read the slow level, the
likelihood prefers them to carry it and the regimes decay into small residual
corrections with a nearly uniform posterior (measured on the S&P 500 and recorded in
``benchmarks/README.md``).

Regime volatility levels: in regime ``k`` every expert's predictive is stretched
about its location :math:`\mu_m` by :math:`e^{\lambda_k}` (its scale, or Cholesky
factor, times :math:`e^{\lambda_k}`), so regimes are market states that differ in
their level of volatility, not only in which experts they trust. The levels are
ordered by construction (:math:`\lambda_0 = 0 < \lambda_1 < \dots`), which
identifies the labels: regime 0 is the calmest, regime ``K-1`` the most turbulent,
in every posterior draw. Regime 0 is the experts' own scale. With homoscedastic
constant-mean experts this is Hamilton's (1989) switching-variance model; with the
experts' GARCH/HAR-type scales it is a Markov-switching volatility model in the
spirit of Haas, Mittnik and Paolella (2004): a persistent regime level multiplies
the conditional scale. (The Kalman expert's filter runs at the experts' scale; the
level stretches its predictive, not its gain.)

Horizon groups: the prior mean of :math:`b_{k,m}` favours short-horizon experts at
``h = 1`` and long-horizon ones at ``h = 20``,
:math:`\mathbb E\, b_{k,m} = \lambda\,(1 - 2a)\,\mathbb 1[\text{short}] -
\lambda\,(1 - 2a)\,\mathbb 1[\text{long}]` with :math:`a = \min(1, \log h / \log 20)`.

A fixed ``assignment`` (regime ``k`` uses expert ``assignment[k]`` alone) reduces the
gate to Hamilton's Markov-switching model over those experts; the experts then carry
the regimes' scales and the gate has no volatility levels.

References
----------
J. D. Hamilton, "A new approach to the economic analysis of nonstationary time
series and the business cycle", Econometrica 57(2), 1989.
M. Haas, S. Mittnik and M. S. Paolella, "A new approach to Markov-switching GARCH
models", J. Financial Econometrics 2(4), 2004.
Y. Bengio and P. Frasconi, "An input output HMM architecture", NIPS 7, 1995.
E. B. Fox, E. B. Sudderth, M. I. Jordan and A. S. Willsky, "A sticky HDP-HMM with
application to speaker diarization", Annals of Applied Statistics 5(2A), 2011.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import torch

from bayes_moe.data.windows import (
    SLOW_VOL_FEATURES,
    TRANSITION_FEATURES,
    VOL_FEATURES,
    ExpertInputs,
    select_vol_features,
    vol_feature_names,
)
from bayes_moe.kernels.dispatch import choose_method
from bayes_moe.kernels.hmm import stationary_distribution
from bayes_moe.kernels.mixture_kernels import outer_log_softmax


def log_softmax_of_sum(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    r"""``log_softmax`` over the last dimension of an outer sum, without the big reduction.

    .. math::

        \ell_{n,k,m} = a_{k,m} + b_{n,m} - \log \sum_{m'} e^{a_{k,m'} + b_{n,m'}},
        \qquad
        \sum_{m'} e^{a_{k,m'} + b_{n,m'}} = e^{\bar a_k + \bar b_n}
        \big(e^{b - \bar b}\, (e^{a - \bar a})^\top\big)_{n,k}

    with :math:`\bar a_k = \max_m a_{k,m}` and :math:`\bar b_n = \max_m b_{n,m}`: the
    normaliser is one batched ``(N, M) @ (M, K)`` matrix product instead of a reduction
    over a short last dimension of the ``(N, K, M)`` tensor (several times slower in
    torch). Equal to ``torch.log_softmax(a[..., None, :, :] + b[..., :, None, :], -1)``;
    that is computed instead if a normaliser comes out below the smallest normal number
    (only possible when the two factors' maxima sit at experts ~700 nats apart).
    Without a gradient to compute, on the CPU, it is the compiled loop
    :func:`~bayes_moe.kernels.mixture_kernels.outer_log_softmax` (one pass, no
    ``(N, K, M)`` temporaries; :func:`~bayes_moe.kernels.dispatch.choose_method`).

    Parameters
    ----------
    rows : Tensor ``S + (K, M)``
        :math:`a`, finite in at least one entry of every row.
    cols : Tensor ``S + (N, M)``
        :math:`b`, finite.

    Returns
    -------
    Tensor ``S + (N, K, M)``
    """
    if choose_method("auto", rows, cols) == "sequential":
        return outer_log_softmax(rows, cols)
    row_max = rows.detach().amax(-1, keepdim=True)  # S + (K, 1)
    col_max = cols.detach().amax(-1, keepdim=True)  # S + (N, 1)
    total = (cols - col_max).exp() @ (rows - row_max).exp().transpose(-1, -2)  # S + (N, K)
    logits = rows.unsqueeze(-3) + cols.unsqueeze(-2)
    if not bool((total >= torch.finfo(total.dtype).tiny).all()):
        return torch.log_softmax(logits, dim=-1)
    log_norm = total.log() + col_max + row_max.transpose(-1, -2)
    return logits - log_norm.unsqueeze(-1)


def transition_input_names(names: Sequence[str]) -> tuple[str, ...]:
    """Validate ``transition_features``; return them in the order the gate reads them.

    Volatility summaries first (in :data:`~bayes_moe.data.windows.VOL_FEATURES`
    order), then columns as given. ValueError for an empty choice, a name that is not
    a non-empty string, or a repeat.
    """
    names = list(names)
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad or not names:
        raise ValueError(
            f"transition_features must be non-empty names of volatility summaries "
            f"{list(VOL_FEATURES)} or model columns, got {names}"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"transition_features names {repeated} more than once")
    summaries = [f for f in VOL_FEATURES if f in names]
    return tuple(summaries) + tuple(n for n in names if n not in VOL_FEATURES)


@dataclass(frozen=True)
class GateOutput:
    r"""The gate's contribution to the likelihood.

    Attributes
    ----------
    log_init : Tensor, shape ``S + (K,)``
    log_trans : Tensor, shape ``S + (K, K)``; ``[i, j] = log P(z_t = j | z_{t-1} = i)``
    log_weights : Tensor, shape ``S + (N, K, M)``; ``log g_{t,k,m}``
    log_scale : Tensor, shape ``S + (K,)``; the volatility levels :math:`\lambda_k`
        (zeros when the gate has none)
    log_trans_t : Tensor, shape ``S + (N, K, K)``, or None
        With transition features: entry ``n`` is the transition into origin ``n``'s
        regime (an input-output HMM; see :mod:`bayes_moe.kernels.hmm`), and
        ``log_trans`` is the baseline :math:`\Pi` at average conditions.
    """

    log_init: torch.Tensor
    log_trans: torch.Tensor
    log_weights: torch.Tensor
    log_scale: torch.Tensor
    log_trans_t: torch.Tensor | None = None

    @property
    def time_varying(self) -> bool:
        """Whether the transitions vary over origins."""
        return self.log_trans_t is not None

    @property
    def hmm_trans(self) -> torch.Tensor:
        """The transitions the forward algorithm uses (``log_trans_t`` if there is one)."""
        return self.log_trans if self.log_trans_t is None else self.log_trans_t


def horizon_preference(
    groups: Sequence[str],
    horizon: int,
    strength: float,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Prior mean of the gate bias per expert (see the module docstring), shape ``(M,)``."""
    a = min(1.0, math.log(horizon) / math.log(20.0))
    tilt = strength * (1.0 - 2.0 * a)
    sign = {"short": 1.0, "long": -1.0}
    return torch.tensor([sign.get(g, 0.0) * tilt for g in groups], dtype=dtype, device=device)


class MarkovGate:
    r"""Regime-switching gate with a sticky Dirichlet prior on the transition rows.

    Parameters
    ----------
    n_regimes : int
        ``K``.
    stickiness : float
        :math:`\kappa`, extra prior pseudo-counts on staying in the same regime
        (default 100: regimes are states that last months, not days).
    concentration : float
        :math:`\alpha`, pseudo-counts on every transition.
    input_dependent : bool
        Include :math:`u(X_t)`.
    assignment : sequence of int, optional
        Fix regime ``k`` to expert ``assignment[k]`` (no learned weights).
    horizon_strength : float
        :math:`\lambda` of the horizon-group prior.
    volatility_levels : bool, optional
        Give each regime a volatility level :math:`\lambda_k` (module docstring).
        Default: on when ``n_regimes > 1`` and no ``assignment`` is fixed.
    level_prior : (float, float)
        Shape :math:`a` and rate :math:`b` of the Gamma prior on the steps
        :math:`\delta_k` between consecutive log levels (default mean 1, sd 0.35: a
        factor of about e in volatility per regime, with no mass at 0 so that regimes
        stay distinct).
    bias_scale : float
        Prior standard deviation of the regime biases :math:`b_{k,m}` around the
        horizon-group mean.
    features : sequence of str, optional
        Volatility summaries :math:`f_t` of the input-dependent term (a subset of
        :data:`~bayes_moe.data.windows.VOL_FEATURES`); default :attr:`expert_features`.
    transition_features : sequence of str, optional
        Inputs :math:`x_t` that drive the transitions (an input-output HMM, module
        docstring): volatility summaries of the first target
        (:data:`~bayes_moe.data.windows.VOL_FEATURES`) and model columns (any other
        name: a covariate of the frame such as ``"credit_spread"`` or ``"vix"``, which
        may have gaps); empty for a time-homogeneous chain. Default
        (:data:`~bayes_moe.data.windows.TRANSITION_FEATURES`): the weekly, monthly and
        EWMA log variances when the regimes have volatility levels, else none. The slow
        ones among them then belong to the regimes: the experts' scales and the gate
        weights read the others by default (:attr:`expert_features`).
    """

    def __init__(
        self,
        n_regimes: int = 3,
        *,
        stickiness: float = 100.0,
        concentration: float = 1.0,
        input_dependent: bool = True,
        assignment: Sequence[int] | None = None,
        horizon_strength: float = 0.5,
        volatility_levels: bool | None = None,
        level_prior: Sequence[float] = (8.0, 8.0),
        bias_scale: float = 1.0,
        features: Sequence[str] | None = None,
        transition_features: Sequence[str] | None = None,
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
        if volatility_levels is None:
            volatility_levels = n_regimes > 1 and assignment is None
        self.volatility_levels = bool(volatility_levels) and n_regimes > 1
        if len(level_prior) != 2 or min(level_prior) <= 0:
            raise ValueError(f"level_prior must be two positive numbers, got {level_prior}")
        self.level_prior = (float(level_prior[0]), float(level_prior[1]))
        if bias_scale <= 0:
            raise ValueError(f"bias_scale must be positive, got {bias_scale}")
        self.bias_scale = float(bias_scale)
        self.features = None if features is None else vol_feature_names(features, "features")
        if transition_features is None:
            transition_features = TRANSITION_FEATURES if self.volatility_levels else ()
        self.transition_features = (
            ()
            if not transition_features or n_regimes == 1
            else transition_input_names(transition_features)
        )

    def config(self) -> dict:
        """JSON-serializable constructor arguments."""
        return {
            "n_regimes": self.n_regimes,
            "stickiness": self.stickiness,
            "concentration": self.concentration,
            "input_dependent": self.input_dependent,
            "assignment": None if self.assignment is None else list(self.assignment),
            "horizon_strength": self.horizon_strength,
            "volatility_levels": self.volatility_levels,
            "level_prior": list(self.level_prior),
            "bias_scale": self.bias_scale,
            "features": None if self.features is None else list(self.features),
            "transition_features": list(self.transition_features),
        }

    @property
    def transition_columns(self) -> tuple[str, ...]:
        """The model columns among :attr:`transition_features` (not volatility summaries)."""
        return tuple(f for f in self.transition_features if f not in VOL_FEATURES)

    def reads(self) -> tuple[str, ...]:
        """Covariate columns the gate reads (besides the targets): :attr:`transition_columns`.

        The mixture offers them like an expert's columns and accepts gaps in them
        (module docstring: the baseline transition on a day without a value).
        """
        return self.transition_columns

    def transition_inputs(self, inputs: ExpertInputs) -> torch.Tensor:
        """:math:`x_n` at every origin, in :attr:`transition_features` order: ``(N, V_x)``.

        Volatility summaries of the first target, then the columns (standardized, 0 on
        a day the column has no value: :meth:`ExpertInputs.mean_filled`).
        """
        summaries = [f for f in self.transition_features if f in VOL_FEATURES]
        parts = [select_vol_features(inputs.origin_vol[:, 0, :], summaries)] if summaries else []
        if self.transition_columns:
            parts.append(inputs.mean_filled(self.transition_columns)[inputs.origins])
        return torch.cat(parts, dim=-1)

    @property
    def expert_features(self) -> tuple[str, ...]:
        """The summaries the gate leaves to the experts' scales and its own weights.

        All but the slow ones (:data:`~bayes_moe.data.windows.SLOW_VOL_FEATURES`) that
        drive the transitions: those carry the volatility level, which is the regimes'.
        """
        taken = set(self.transition_features) & set(SLOW_VOL_FEATURES)
        return tuple(f for f in VOL_FEATURES if f not in taken)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The volatility summaries :math:`f_t` of the input-dependent term."""
        chosen = self.features if self.features is not None else self.expert_features
        return vol_feature_names(chosen)

    def initial_levels(self, response: torch.Tensor) -> torch.Tensor | None:
        r"""Starting values of the level steps :math:`\delta_k` for SVI, from the data.

        The log ratios of the :math:`(k + 1/2)/K` quantiles of the 22-day rolling
        standard deviation of the (first) response to its lowest one, so that fitting
        starts from regimes that already differ in volatility (as k-means starts a
        mixture), floored at 0.05. ``None`` when the gate has no levels.

        Parameters
        ----------
        response : Tensor ``(N, d_y)``
        """
        if not self.volatility_levels:
            return None
        sq = pd.Series(response[:, 0].double().cpu().numpy() ** 2)
        vol = np.sqrt(sq.rolling(22, min_periods=5).mean().dropna().to_numpy())
        K = self.n_regimes
        q = np.quantile(vol, (np.arange(K) + 0.5) / K)
        steps = np.maximum(np.diff(np.log(q)), 0.05)
        return torch.as_tensor(steps, dtype=response.dtype, device=response.device)

    def transition_prior(
        self, dtype: torch.dtype, device: torch.device | str | None = None
    ) -> dist.TorchDistribution:
        """Sticky Dirichlet prior on the rows of the transition matrix, event ``(K, K)``."""
        K = self.n_regimes
        conc = self.concentration + self.stickiness * torch.eye(K, dtype=dtype, device=device)
        return dist.Dirichlet(conc).to_event(1)

    def model(self, inputs: ExpertInputs, groups: Sequence[str]) -> GateOutput:
        """Sample the gate's parameters and return its log probabilities.

        Sites: ``transition`` ``(K, K)``, ``transition_coef`` ``(K - 1, V_x)`` with
        transition features; ``level_step`` ``(K - 1,)`` with volatility levels;
        ``bias`` ``(K, M)`` and ``coef`` ``(M, V)`` unless the assignment is fixed.

        Parameters
        ----------
        inputs : ExpertInputs
        groups : sequence of str
            Horizon group of each of the ``M`` experts.
        """
        dtype, device = inputs.series.dtype, inputs.series.device
        K, M = self.n_regimes, len(groups)
        log_init, log_trans, timed = self._transitions(inputs, dtype)
        log_scale = self._levels(dtype, device)
        n = inputs.n_origins
        if self.assignment is not None:
            if max(self.assignment) >= M:
                raise ValueError(f"assignment {self.assignment} refers to experts beyond {M}")
            mask = torch.full((K, M), -math.inf, dtype=dtype, device=device)
            mask[torch.arange(K, device=device), torch.tensor(self.assignment, device=device)] = 0.0
            return GateOutput(log_init, log_trans, mask.expand(n, K, M), log_scale, timed)
        prior_mean = horizon_preference(
            groups, inputs.horizon, self.horizon_strength, dtype=dtype, device=device
        )
        bias = pyro.sample(
            "bias",
            dist.Normal(
                prior_mean.expand(K, M), torch.tensor(self.bias_scale, dtype=dtype, device=device)
            ).to_event(2),
        )  # S + (K, M)
        if self.input_dependent:
            features = select_vol_features(inputs.origin_vol[:, 0, :], self.feature_names)
            coef = pyro.sample(
                "coef",
                dist.Normal(
                    torch.zeros((), dtype=dtype, device=device),
                    torch.tensor(0.5, dtype=dtype, device=device),
                )
                .expand([M, features.shape[-1]])
                .to_event(2),
            )  # S + (M, V)
            u = torch.einsum("nv,...mv->...nm", features, coef)  # S + (N, M)
            return GateOutput(log_init, log_trans, log_softmax_of_sum(bias, u), log_scale, timed)
        log_weights = torch.log_softmax(bias, dim=-1).unsqueeze(-3)  # S + (1, K, M)
        log_weights = log_weights.expand(log_weights.shape[:-3] + (n, K, M))
        return GateOutput(log_init, log_trans, log_weights, log_scale, timed)

    def _transitions(self, inputs: ExpertInputs, dtype: torch.dtype):
        r"""Sample the transition sites; return ``log_init``, ``log_trans``, ``log_trans_t``.

        ``log_trans`` is :math:`\log \Pi`, ``S + (K, K)``. With transition features,
        :math:`\Pi_n[i, j] \propto \Pi[i, j] \exp(\beta_j^\top x_n)` with
        :math:`\beta_0 = 0` and :math:`x_n` the features at origin ``n``'s close,
        ``log_trans_t`` ``S + (N, K, K)`` (else None; :meth:`transition_inputs`). The
        initial regime follows the stationary distribution of :math:`\Pi`.
        """
        K, device = self.n_regimes, inputs.series.device
        if K == 1:
            log_init = torch.zeros(1, dtype=dtype, device=device)
            return log_init, torch.zeros(1, 1, dtype=dtype, device=device), None
        tiny = torch.finfo(dtype).tiny
        trans = pyro.sample("transition", self.transition_prior(dtype, device))
        log_init = stationary_distribution(trans).clamp_min(tiny).log()
        log_trans = trans.clamp_min(tiny).log()
        if not self.transition_features:
            return log_init, log_trans, None
        x = self.transition_inputs(inputs)  # (N, V_x)
        one = torch.ones((), dtype=dtype, device=device)
        beta = pyro.sample(
            "transition_coef",
            dist.Normal(0 * one, one).expand([K - 1, x.shape[-1]]).to_event(2),
        )  # S + (K - 1, V)
        tilt = torch.einsum("nv,...kv->...nk", x, beta)  # S + (N, K - 1)
        tilt = torch.cat([torch.zeros_like(tilt[..., :1]), tilt], dim=-1)  # S + (N, K)
        return log_init, log_trans, log_softmax_of_sum(log_trans, tilt)  # S + (N, K, K)

    def _levels(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        r"""Sample the steps :math:`\delta` and return :math:`\lambda`: shape ``S + (K,)``."""
        K = self.n_regimes
        if not self.volatility_levels:
            return torch.zeros(K, dtype=dtype, device=device)
        a, b = (torch.tensor(v, dtype=dtype, device=device) for v in self.level_prior)
        step = pyro.sample("level_step", dist.Gamma(a, b).expand([K - 1]).to_event(1))
        zero = torch.zeros(step.shape[:-1] + (1,), dtype=dtype, device=device)
        return torch.cat([zero, step.cumsum(-1)], dim=-1)
