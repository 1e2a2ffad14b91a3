"""The compiled regime/expert reductions against the torch expressions they replace.

Oracle: the formulas written out with torch broadcasting and ``logsumexp`` (and, for
the moments, by hand for one draw), on random arrays with broadcast inputs and
``-inf`` gate weights (an expert a regime never uses); scipy's Student-t and Normal
densities for the regime emissions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from bayes_moe.kernels.mixture_kernels import (
    causal_mixture,
    outer_log_softmax,
    pick_components,
    regime_location_scale_log_prob,
    regime_mixture,
)
from bayes_moe.models.gate import log_softmax_of_sum

S, N, K, M = 3, 11, 2, 4


def _arrays(seed: int):
    gen = torch.Generator().manual_seed(seed)
    log_w = torch.randn(S, 1, K, M, generator=gen, dtype=torch.float64).log_softmax(-1)
    log_w = log_w.expand(S, N, K, M).clone()
    log_w[:, :, 0, 1] = -math.inf  # regime 0 never uses expert 1
    log_w = log_w - torch.logsumexp(log_w, -1, keepdim=True)
    log_p = 3 * torch.randn(S, N, K, M, generator=gen, dtype=torch.float64)
    means = torch.randn(S, N, M, generator=gen, dtype=torch.float64)
    variances = torch.rand(S, N, M, generator=gen, dtype=torch.float64) + 0.1
    log_scale = 0.3 * torch.randn(S, K, generator=gen, dtype=torch.float64)
    return log_w, log_p, means, variances, log_scale


@pytest.mark.parametrize("n_obs", [N, N - 2])
def test_regime_mixture_equals_the_torch_formulas(n_obs):
    log_w, log_p, means, variances, log_scale = _arrays(0)
    mu, var, log_emit = regime_mixture(log_w, log_p, means, variances, log_scale, n_obs)
    g = log_w.exp()
    stretch = (2 * log_scale).exp()[:, None, :, None]
    expected_mu = (g * means.unsqueeze(-2)).sum(-1)
    second = (g * (stretch * variances.unsqueeze(-2) + means.square().unsqueeze(-2))).sum(-1)
    torch.testing.assert_close(mu, expected_mu, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(var, second - expected_mu.square(), rtol=1e-12, atol=1e-13)
    expected_emit = torch.logsumexp(log_w + log_p, dim=-1)[:, :n_obs]
    assert log_emit.shape == (S, n_obs, K)
    torch.testing.assert_close(log_emit, expected_emit, rtol=1e-13, atol=1e-13)
    # By hand for one draw, origin and regime: mu = sum_m g mu_m.
    hand = sum(g[1, 4, 1, m] * means[1, 4, m] for m in range(M))
    assert mu[1, 4, 1].item() == pytest.approx(hand.item(), rel=1e-14)


@pytest.mark.parametrize("n_obs", [N, 1])
def test_causal_mixture_equals_the_torch_formulas(n_obs):
    log_w, log_p, *_ = _arrays(1)
    gen = torch.Generator().manual_seed(2)
    log_regime = torch.randn(S, N, K, generator=gen, dtype=torch.float64).log_softmax(-1)
    log_mix, log_density = causal_mixture(log_regime, log_w[:1], log_p, n_obs)  # broadcast
    expected_mix = log_regime.unsqueeze(-1) + log_w[:1]
    torch.testing.assert_close(log_mix, expected_mix.expand(S, N, K, M), rtol=0, atol=0)
    expected = torch.logsumexp((expected_mix + log_p).flatten(-2), dim=-1)[:, :n_obs]
    assert log_density.shape == (S, n_obs)
    torch.testing.assert_close(log_density, expected, rtol=1e-13, atol=1e-13)


def test_an_impossible_day_gives_minus_infinity():
    log_w, log_p, means, variances, log_scale = _arrays(3)
    log_p[0, 2] = -math.inf  # every expert gives the value zero density
    _, _, log_emit = regime_mixture(log_w, log_p, means, variances, log_scale, N)
    assert torch.isneginf(log_emit[0, 2]).all() and torch.isfinite(log_emit[1:]).all()
    log_regime = torch.full((S, N, K), -math.log(K), dtype=torch.float64)
    _, log_density = causal_mixture(log_regime, log_w, log_p, N)
    assert torch.isneginf(log_density[0, 2]) and torch.isfinite(log_density[1]).all()


def test_pick_components_is_the_inverse_cdf_and_draws_the_weights():
    # Oracle: searchsorted on the normalised cumulative weights, for fixed u; and a
    # chi-square test of 200,000 uniform draws against the weights (scipy).
    log_w = torch.tensor([[0.0, -math.inf, math.log(3.0), -1.0]], dtype=torch.float64)
    probs = torch.softmax(log_w, -1)[0]
    u = torch.tensor([0.0, 0.1, 0.2, 0.25 - 1e-12, 0.9, 0.999999], dtype=torch.float64)
    picks = pick_components(log_w.expand(6, 4), u)
    expected = torch.searchsorted(probs.cumsum(0), u).clamp_max(3)
    expected[0] = 0  # u = 0: the first component with positive weight
    torch.testing.assert_close(picks, expected)
    assert not (picks == 1).any()  # the impossible component is never picked
    gen = torch.Generator().manual_seed(0)
    draws = pick_components(
        log_w.expand(200_000, 4), torch.rand(200_000, generator=gen, dtype=torch.float64)
    )
    counts = np.bincount(draws.numpy(), minlength=4)
    keep = probs.numpy() > 0
    result = stats.chisquare(counts[keep], probs.numpy()[keep] * counts.sum())
    assert result.pvalue > 1e-3 and counts[1] == 0


def test_outer_log_softmax_equals_torch_log_softmax_with_broadcast_batches():
    gen = torch.Generator().manual_seed(4)
    rows = 2 * torch.randn(S, 1, K, M, generator=gen, dtype=torch.float64)  # batch (S, 1)
    cols = 2 * torch.randn(1, 2, N, M, generator=gen, dtype=torch.float64)  # batch (1, 2)
    cols[0, 1, 3, 2] = -math.inf  # an expert the gate switches off on a day
    expected = torch.log_softmax(rows[..., None, :, :] + cols[..., :, None, :], dim=-1)
    got = outer_log_softmax(rows, cols)
    assert got.shape == (S, 2, N, K, M)
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-13)
    # The gate's function takes this route without a gradient, torch's with one.
    torch.testing.assert_close(log_softmax_of_sum(rows, cols), got, rtol=0, atol=0)
    with_grad = log_softmax_of_sum(rows.requires_grad_(), cols)
    assert with_grad.grad_fn is not None
    torch.testing.assert_close(with_grad.detach(), got, rtol=1e-13, atol=1e-13)


def test_outer_log_softmax_when_the_two_maxima_are_far_apart():
    # Row maximum at expert 0, column maximum at expert 1, 800 nats apart: the
    # factorised normaliser underflows to 0 and the stable log-sum-exp takes over.
    rows = torch.tensor([[[0.0, -800.0], [0.0, 0.0]]], dtype=torch.float64)  # (1, K=2, M=2)
    cols = torch.tensor([[[-800.0, 0.0]]], dtype=torch.float64)  # (1, N=1, M=2)
    got = outer_log_softmax(rows, cols)[0, 0]
    expected = torch.log_softmax(rows[0] + cols[0], dim=-1)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)  # 800 nats: 800 eps
    assert got[0].tolist() == pytest.approx([-math.log(2.0)] * 2, abs=1e-12)


@pytest.mark.parametrize("family", ["studentt", "normal"])
def test_regime_emissions_equal_scipy_densities(family):
    # log p_k(y) = sum_j log f(y_j; mu_j, s_j e^{lambda_k}) with scipy's densities.
    gen = torch.Generator().manual_seed(5)
    D = 2
    value = torch.randn(N, D, generator=gen, dtype=torch.float64)
    loc = 0.3 * torch.randn(S, N, D, generator=gen, dtype=torch.float64)
    scale = 0.5 + torch.rand(S, N, D, generator=gen, dtype=torch.float64)
    df = (3 + 10 * torch.rand(S, 1, 1, generator=gen, dtype=torch.float64)).expand(S, N, D)
    log_scale = 0.4 * torch.randn(S, K, generator=gen, dtype=torch.float64)
    nu = df if family == "studentt" else None
    got = regime_location_scale_log_prob(value, loc, scale, nu, log_scale)
    assert got.shape == (S, N, K)
    for k in range(K):
        stretched = scale * log_scale[:, k, None, None].exp()
        if family == "studentt":
            density = stats.t(df.numpy(), loc.numpy(), stretched.numpy())
        else:
            density = stats.norm(loc.numpy(), stretched.numpy())
        expected = density.logpdf(value.expand(S, N, D).numpy()).sum(-1)
        np.testing.assert_allclose(got[..., k].numpy(), expected, rtol=1e-12, atol=1e-12)
