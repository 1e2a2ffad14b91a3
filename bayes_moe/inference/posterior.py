r"""Evaluate the mixture at every posterior draw: regimes, predictive, log-likelihood.

For each draw :math:`\theta^{(s)}` of the global parameters this module computes,
over all origins, the experts' predictive distributions, the gate weights, the
regime posteriors (filtered, smoothed, Viterbi) and the one-step predictive
density of every observed day. Regimes are relabelled per draw so that regime 0
has the lowest and regime ``K-1`` the highest predictive volatility, which makes
regime labels identifiable across draws (no label switching in summaries).

Causal regime probabilities at origin ``n`` (horizon ``h``):

.. math::

    P(z_n = k \mid \mathcal F_n) = \big[\,p(z_{n-h} \mid y_{1:n-h})\, \Pi^{h}\big]_k,

the filtered distribution of the last day whose response is known at ``n``,
propagated ``h`` steps (for ``h = 1``, the one-step prediction of the forward
filter). The predictive mixture weights are
:math:`w_{n,m} = \sum_k P(z_n = k \mid \mathcal F_n)\, g_{n,k,m}`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch
from tqdm.auto import tqdm

from bayes_moe._runtime import torch_threads
from bayes_moe.data.windows import ModelData
from bayes_moe.inference.hmm import hmm_propagate, hmm_smoother, hmm_viterbi
from bayes_moe.models.distributions import cat_batch, mean_and_variance
from bayes_moe.models.moe import MoEProgram


@dataclass(frozen=True)
class PosteriorEvaluation:
    """Per-draw quantities over all origins (``S`` draws, ``N`` origins, ``N_obs`` observed).

    Attributes
    ----------
    regime_order : LongTensor ``(S, K)``
        Original regime index of each relabelled regime.
    transition : Tensor ``(S, K, K)``
        Relabelled transition matrices.
    log_filtered, log_smoothed : Tensor ``(S, N_obs, K)``
        log p(z_n | y_{1:n}) and log p(z_n | y_{1:N_obs}).
    viterbi : LongTensor ``(S, N_obs)``
        Most probable regime path of each draw.
    log_causal_regime : Tensor ``(S, N, K)``
        log P(z_n | F_n) at every origin (module docstring).
    log_mix_weights : Tensor ``(S, N, M)``
        log w_{n,m}, the predictive mixture weights at every origin.
    regime_expert_weights : Tensor ``(S, K, M)``
        Gate weights of each regime averaged over observed origins.
    regime_volatility : Tensor ``(S, K)``
        Mean predictive standard deviation of each regime (standardized units, first target).
    log_predictive_density : Tensor ``(S, N_obs)``
        log p(y_n | F_n, theta_s) in standardized units.
    experts : list of Distribution
        Each expert's predictive, batch ``(S, N)``.
    posterior_predictive : Tensor ``(S, N_obs, d_y)``
        One draw of y_n from the causal predictive per posterior draw (standardized).
    """

    regime_order: torch.Tensor
    transition: torch.Tensor
    log_filtered: torch.Tensor
    log_smoothed: torch.Tensor
    viterbi: torch.Tensor
    log_causal_regime: torch.Tensor
    log_mix_weights: torch.Tensor
    regime_expert_weights: torch.Tensor
    regime_volatility: torch.Tensor
    log_predictive_density: torch.Tensor
    experts: list
    posterior_predictive: torch.Tensor


def conditioned_components(program: MoEProgram, draws: dict, inputs):
    """Run the program's components with every latent site set to ``draws`` (batch ``S``)."""
    with torch.no_grad(), pyro.poutine.condition(data=draws):
        return program.components(inputs)


def regime_moments(log_weights, means, variances):
    r"""Mean and variance of each regime's mixture.

    .. math:: \mu_k = \sum_m g_{k,m} \mu_m, \qquad
              \sigma_k^2 = \sum_m g_{k,m} (\sigma_m^2 + \mu_m^2) - \mu_k^2

    Parameters
    ----------
    log_weights : Tensor ``(..., N, K, M)``
    means, variances : Tensor ``(..., N, M)``

    Returns
    -------
    tuple of Tensor ``(..., N, K)``
    """
    g = log_weights.exp()
    mu = (g * means.unsqueeze(-2)).sum(-1)
    second = (g * (variances + means.square()).unsqueeze(-2)).sum(-1)
    return mu, (second - mu.square()).clamp_min(0.0)


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

    log_p = comps.expert_log_probs(response)  # (S, N, M)
    log_w = comps.gate.log_weights.expand(S, *comps.gate.log_weights.shape[-3:])
    log_init = comps.gate.log_init.expand(S, K)
    log_trans = comps.gate.log_trans.expand(S, K, K)

    # Order regimes by their mean predictive standard deviation (first target).
    moments = [mean_and_variance(d) for d in comps.experts]
    means = torch.stack([m[..., 0] for m, _ in moments], dim=-1).expand(log_p.shape)
    variances = torch.stack([v[..., 0] for _, v in moments], dim=-1).expand(log_p.shape)
    _, regime_var = regime_moments(log_w[:, :n_obs], means[:, :n_obs], variances[:, :n_obs])
    volatility = regime_var.sqrt().mean(dim=1)  # (S, K)
    order = volatility.argsort(dim=-1)
    log_w = torch.take_along_dim(log_w, order[:, None, :, None], dim=2)
    log_init = torch.take_along_dim(log_init, order, dim=1)
    log_trans = torch.take_along_dim(log_trans, order[:, :, None], dim=1)
    log_trans = torch.take_along_dim(log_trans, order[:, None, :], dim=2)
    volatility = torch.take_along_dim(volatility, order, dim=1)

    log_emit = torch.logsumexp(log_w[:, :n_obs] + log_p[:, :n_obs].unsqueeze(-2), dim=-1)
    smoothed = hmm_smoother(log_init, log_trans, log_emit)
    path, _ = hmm_viterbi(log_init, log_trans, log_emit)

    # Causal regime probabilities at every origin (module docstring).
    early = [hmm_propagate(log_init, log_trans, n) for n in range(min(h, inputs.n_origins))]
    late = hmm_propagate(smoothed.log_filtered, log_trans.unsqueeze(1), h)  # origins h..N-1
    log_causal = torch.cat([torch.stack(early, dim=1), late], dim=1)
    log_mix = torch.logsumexp(log_causal.unsqueeze(-1) + log_w, dim=-2)  # (S, N, M)
    log_density = torch.logsumexp(log_mix + log_p, dim=-1)[:, :n_obs]

    # One posterior predictive draw per (draw, day): pick an expert, sample from it.
    picks = torch.distributions.Categorical(logits=log_mix[:, :n_obs]).sample()  # (S, N_obs)
    samples = torch.stack([d.sample()[:, :n_obs] for d in comps.experts], dim=2)
    predictive = torch.take_along_dim(samples, picks[..., None, None], dim=2).squeeze(2)

    return {
        "regime_order": order,
        "transition": log_trans.exp(),
        "log_filtered": smoothed.log_filtered,
        "log_smoothed": smoothed.log_smoothed,
        "viterbi": path,
        "log_causal_regime": log_causal,
        "log_mix_weights": log_mix,
        "regime_expert_weights": log_w[:, :n_obs].exp().mean(dim=1),
        "regime_volatility": volatility,
        "log_predictive_density": log_density,
        "experts": comps.experts,
        "posterior_predictive": predictive,
    }
