r"""Evaluate the mixture at every posterior draw: regimes, predictive, log-likelihood.

For each draw :math:`\theta^{(s)}` of the global parameters this module computes,
over all origins, the experts' predictive distributions, the gate weights, the
regime posteriors (filtered, smoothed, Viterbi) and the one-step predictive
density of every observed day. Regime 0 is the calmest and regime ``K-1`` the most
turbulent in every draw: with volatility levels the labels are ordered by
construction (:mod:`bayes_moe.models.gate`); without them (Hamilton's model with a
fixed assignment) they are relabelled per draw by the mean predictive volatility.
Either way summaries do not suffer label switching.

Causal regime probabilities at origin ``n`` (horizon ``h``):

.. math::

    P(z_n = k \mid \mathcal F_n) = \big[\,p(z_{n-h} \mid y_{1:n-h})\, \Pi^{h}\big]_k,

the filtered distribution of the last day whose response is known at ``n``,
propagated ``h`` steps (for ``h = 1``, the one-step prediction of the forward
filter). The predictive is a mixture over regimes and experts with weights
:math:`w_{n,k,m} = P(z_n = k \mid \mathcal F_n)\, g_{n,k,m}` of the experts'
predictives at regime ``k``'s volatility level.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch
from tqdm.auto import tqdm

from bayes_moe._runtime import torch_threads
from bayes_moe.data.windows import ModelData
from bayes_moe.inference.hmm import hmm_smoother, hmm_viterbi, log_matmul_exp
from bayes_moe.inference.predictive import sample_mixture
from bayes_moe.models.distributions import (
    cat_batch,
    index_batch,
    mean_and_variance,
    regime_log_prob,
)
from bayes_moe.models.moe import MoEProgram


@dataclass(frozen=True)
class PosteriorEvaluation:
    r"""Per-draw quantities over all origins (``S`` draws, ``N`` origins, ``N_obs`` observed).

    Attributes
    ----------
    regime_order : LongTensor ``(S, K)``
        Original regime index of each relabelled regime.
    transition : Tensor ``(S, K, K)``
        Relabelled transition matrices (with transition features: the baseline
        :math:`\Pi` at average conditions).
    log_trans_last : Tensor ``(S, K, K)``
        Log transition into the last origin's regime (equal to ``log(transition)``
        without transition features).
    log_filtered, log_smoothed : Tensor ``(S, N_obs, K)``
        log p(z_n | y_{1:n}) and log p(z_n | y_{1:N_obs}).
    viterbi : LongTensor ``(S, N_obs)``
        Most probable regime path of each draw.
    log_causal_regime : Tensor ``(S, N, K)``
        log P(z_n | F_n) at every origin (module docstring).
    log_mix_weights : Tensor ``(S, N, K, M)``
        log w_{n,k,m} = log P(z_n = k | F_n) + log g_{n,k,m}, the predictive mixture
        weights of expert ``m`` at regime ``k``'s volatility level.
    log_regime_scale : Tensor ``(S, K)``
        The regimes' log volatility levels :math:`\lambda_k` (zeros without levels).
    regime_expert_weights : Tensor ``(S, K, M)``
        Gate weights of each regime averaged over observed origins.
    regime_volatility : Tensor ``(S, K)``
        Predictive standard deviation in regime ``k`` (first target, standardized
        units), averaged over the days the regime occupies:
        :math:`\sqrt{\sum_n P(z_n = k \mid y)\, v_{n,k} / \sum_n P(z_n = k \mid y)}`
        with smoothed probabilities and the regime's predictive variance
        :math:`v_{n,k}`; for constant-variance regimes (Hamilton's model) it is
        :math:`\sigma_k`.
    regime_mean : Tensor ``(S, K)``
        Predictive mean in regime ``k`` averaged the same way (standardized units).
    regime_duration : Tensor ``(S, K)``
        Expected stay in regime ``k`` in days, :math:`1 / (1 - \Pi_{kk})`; with
        transition features the stay depends on the conditions, and this is
        :math:`1 / (1 - \Pi_{n,kk})` averaged the same way over the days the regime
        occupies.
    log_predictive_density : Tensor ``(S, N_obs)``
        log p(y_n | F_n, theta_s) in standardized units.
    experts : list of Distribution
        Each expert's predictive at its own scale, batch ``(S, N)``.
    posterior_predictive : Tensor ``(S, N_obs, d_y)``
        One draw of y_n from the causal predictive per posterior draw (standardized).
    """

    regime_order: torch.Tensor
    transition: torch.Tensor
    log_trans_last: torch.Tensor
    log_filtered: torch.Tensor
    log_smoothed: torch.Tensor
    viterbi: torch.Tensor
    log_causal_regime: torch.Tensor
    log_mix_weights: torch.Tensor
    log_regime_scale: torch.Tensor
    regime_expert_weights: torch.Tensor
    regime_volatility: torch.Tensor
    regime_mean: torch.Tensor
    regime_duration: torch.Tensor
    log_predictive_density: torch.Tensor
    experts: list
    posterior_predictive: torch.Tensor


def conditioned_components(program: MoEProgram, draws: dict, inputs):
    """Run the program's components with every latent site set to ``draws`` (batch ``S``)."""
    with torch.no_grad(), pyro.poutine.condition(data=draws):
        return program.components(inputs)


def regime_moments(log_weights, log_scale, means, variances):
    r"""Mean and variance of each regime's mixture of rescaled experts.

    .. math:: \mu_k = \sum_m g_{k,m} \mu_m, \qquad
              \sigma_k^2 = \sum_m g_{k,m} (e^{2\lambda_k} \sigma_m^2 + \mu_m^2) - \mu_k^2

    Parameters
    ----------
    log_weights : Tensor ``(..., N, K, M)``
    log_scale : Tensor ``(..., K)``
        Regime volatility levels :math:`\lambda_k`.
    means, variances : Tensor ``(..., N, M)``

    Returns
    -------
    tuple of Tensor ``(..., N, K)``
    """
    g = log_weights.exp()
    stretch = (2 * log_scale).exp()[..., None, :, None]  # (..., 1, K, 1)
    mu = (g * means.unsqueeze(-2)).sum(-1)
    second = (g * (stretch * variances.unsqueeze(-2) + means.square().unsqueeze(-2))).sum(-1)
    return mu, (second - mu.square()).clamp_min(0.0)


def relabel_matrices(log_trans: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Permute rows and columns of ``(S, ..., K, K)`` matrices by ``order`` ``(S, K)``."""
    index = order.view(order.shape[:1] + (1,) * (log_trans.dim() - 3) + order.shape[1:])
    rows = torch.take_along_dim(log_trans, index.unsqueeze(-1), dim=-2)
    return torch.take_along_dim(rows, index.unsqueeze(-2), dim=-1)


def causal_regime(log_init, log_filtered, step_trans, horizon: int) -> torch.Tensor:
    r"""Regime probabilities at every origin from the information at its close.

    .. math::

        P(z_n \mid \mathcal F_n) = p(z_{n-h} \mid y_{1:n-h})\,
        \Pi_{n-h+1} \Pi_{n-h+2} \cdots \Pi_n,

    with :math:`\Pi_m` the transition into origin ``m``'s regime (known at the close
    of ``m``, so at ``n``); the first ``h`` origins start from the initial distribution.

    Parameters
    ----------
    log_init : Tensor ``(S, K)``
    log_filtered : Tensor ``(S, N - h, K)``
        Filtered probabilities of the observed origins.
    step_trans : Tensor ``(S, N, K, K)``
    horizon : int

    Returns
    -------
    Tensor ``(S, N, K)``
    """
    N = step_trans.shape[1]
    n_obs = log_filtered.shape[1]

    def step(log_p, trans):
        return log_matmul_exp(log_p.unsqueeze(-2), trans).squeeze(-2)

    early = [log_init]
    for n in range(1, min(horizon, N)):
        early.append(step(early[-1], step_trans[:, n]))
    late = log_filtered
    for j in range(1, horizon + 1):
        late = step(late, step_trans[:, j : j + n_obs])
    return torch.cat([torch.stack(early, dim=1), late], dim=1)


def expected_stay(log_trans: torch.Tensor) -> torch.Tensor:
    r"""Expected duration of each regime, :math:`1 / (1 - \Pi_{kk})`.

    ``(..., K, K)`` log transitions to ``(..., K)`` days.
    """
    stay = torch.diagonal(log_trans, dim1=-2, dim2=-1).exp()
    return 1.0 / (1.0 - stay).clamp_min(1e-12)


def occupancy_average(probs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    r"""Average of ``values`` over days weighted by regime probabilities.

    .. math:: \bar v_k = \sum_n p_{n,k} v_{n,k} \big/ \sum_n p_{n,k}

    Parameters
    ----------
    probs, values : Tensor ``(..., N, K)``

    Returns
    -------
    Tensor ``(..., K)``
    """
    total = probs.sum(-2).clamp_min(torch.finfo(probs.dtype).tiny)
    return (probs * values).sum(-2) / total


def evaluate_posterior(
    program: MoEProgram,
    draws: dict,
    data: ModelData,
    *,
    chunk_size: int = 50,
    num_threads: int | None = 1,
) -> PosteriorEvaluation:
    """Evaluate every draw (in chunks of ``chunk_size`` to bound memory)."""
    n_draws = next(iter(draws.values())).shape[0]
    starts = range(0, n_draws, chunk_size)
    # disable=None: a bar on a terminal, silence in logs and captured output.
    bar = tqdm(starts, desc="posterior draws", unit="chunk", disable=None, leave=False)
    with torch_threads(num_threads):
        parts = [
            _evaluate_chunk(program, {k: v[i : i + chunk_size] for k, v in draws.items()}, data)
            for i in bar
        ]
    fields = {}
    for name in PosteriorEvaluation.__dataclass_fields__:
        values = [p[name] for p in parts]
        fields[name] = cat_experts(values) if name == "experts" else torch.cat(values, dim=0)
    return PosteriorEvaluation(**fields)


def cat_experts(chunks: list[list]) -> list:
    """Join per-chunk lists of expert distributions along the draw dimension."""
    return [cat_batch(list(per_expert), dim=0) for per_expert in zip(*chunks)]


def _evaluate_chunk(program: MoEProgram, draws: dict, data: ModelData) -> dict:
    inputs = data.inputs
    n_obs, h = data.n_observed, inputs.horizon
    response = torch.nan_to_num(data.response, nan=0.0)  # unobserved rows are padding
    comps = conditioned_components(program, draws, inputs)
    S = next(iter(draws.values())).shape[0]
    K = program.gate.n_regimes
    gate = comps.gate
    log_w = gate.log_weights.expand(S, *gate.log_weights.shape[-3:])
    log_init = gate.log_init.expand(S, K)
    N = inputs.n_origins
    log_trans = gate.log_trans.expand(S, K, K)
    # Transition into each origin's regime, (S, N, K, K): time-varying or repeated.
    step_trans = gate.hmm_trans.expand(S, N, K, K) if gate.time_varying else log_trans[:, None]
    log_scale = gate.log_scale.expand(S, K)
    moments = [mean_and_variance(d) for d in comps.experts]
    shape = (S, inputs.n_origins, len(comps.experts))
    means = torch.stack([m[..., 0] for m, _ in moments], dim=-1).expand(shape)
    variances = torch.stack([v[..., 0] for _, v in moments], dim=-1).expand(shape)
    regime_mu, regime_var = regime_moments(log_w, log_scale, means, variances)

    # Labels: by volatility level where the gate has levels (ordered by construction,
    # so this keeps the sampled order), else by the mean predictive sd over all days.
    if program.gate.volatility_levels:
        order = log_scale.argsort(dim=-1)
    else:
        order = regime_var[:, :n_obs].sqrt().mean(dim=1).argsort(dim=-1)
    log_w = torch.take_along_dim(log_w, order[:, None, :, None], dim=2)
    log_init = torch.take_along_dim(log_init, order, dim=1)
    log_trans = relabel_matrices(log_trans, order)
    step_trans = relabel_matrices(step_trans, order)
    log_scale = torch.take_along_dim(log_scale, order, dim=1)
    regime_mu = torch.take_along_dim(regime_mu, order[:, None, :], dim=2)
    regime_var = torch.take_along_dim(regime_var, order[:, None, :], dim=2)

    log_p = torch.stack(
        [regime_log_prob(d, response, log_scale) for d in comps.experts], dim=-1
    )  # (S, N, K, M)
    log_emit = torch.logsumexp(log_w[:, :n_obs] + log_p[:, :n_obs], dim=-1)
    timed = {"time_varying": gate.time_varying}
    hmm_trans = step_trans[:, :n_obs] if gate.time_varying else log_trans
    smoothed = hmm_smoother(log_init, hmm_trans, log_emit, **timed)
    path, _ = hmm_viterbi(log_init, hmm_trans, log_emit, **timed)
    occupancy = smoothed.log_smoothed.exp()  # (S, N_obs, K)

    # Causal regime probabilities at every origin (module docstring).
    log_causal = causal_regime(log_init, smoothed.log_filtered, step_trans.expand(S, N, K, K), h)
    log_mix = log_causal.unsqueeze(-1) + log_w  # (S, N, K, M)
    log_density = torch.logsumexp((log_mix + log_p)[:, :n_obs].flatten(-2), dim=-1)

    return {
        "regime_order": order,
        "transition": log_trans.exp(),
        "log_trans_last": step_trans[:, -1],
        "log_filtered": smoothed.log_filtered,
        "log_smoothed": smoothed.log_smoothed,
        "viterbi": path,
        "log_causal_regime": log_causal,
        "log_mix_weights": log_mix,
        "log_regime_scale": log_scale,
        "regime_expert_weights": log_w[:, :n_obs].exp().mean(dim=1),
        "regime_volatility": occupancy_average(occupancy, regime_var[:, :n_obs]).sqrt(),
        "regime_mean": occupancy_average(occupancy, regime_mu[:, :n_obs]),
        "regime_duration": occupancy_average(occupancy, expected_stay(step_trans[:, :n_obs]))
        if gate.time_varying
        else expected_stay(log_trans),
        "log_predictive_density": log_density,
        "experts": comps.experts,
        "posterior_predictive": sample_mixture(
            log_mix[:, :n_obs],
            log_scale,
            [index_batch(d, (slice(None), slice(0, n_obs))) for d in comps.experts],
        ),
    }
