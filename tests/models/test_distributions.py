"""index_batch / cat_batch / decompose on the four predictive families experts return.

Oracle: the distribution itself. Selecting origins or draws with :func:`index_batch`
and then scoring must equal scoring first and indexing the result; joining halves
with :func:`cat_batch` must give back the whole. Parameters are given with partly
broadcast shapes (a df per draw, one scale matrix for all), the case where naive
indexing of the raw parameters goes wrong.
"""

from __future__ import annotations

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from scipy import stats

from bayes_moe.models.distributions import (
    cat_batch,
    decompose,
    index_batch,
    location,
    mean_and_variance,
    regime_log_prob,
    regime_log_prob_margins,
    rescale,
    sample_picked,
    sample_rows,
)

DT = torch.float64
S, N, D = 3, 6, 2


def _tril(gen: torch.Generator, *shape: int) -> torch.Tensor:
    a = torch.randn(*shape, D, D, generator=gen, dtype=DT)
    return torch.linalg.cholesky(a @ a.mT + 0.5 * torch.eye(D, dtype=DT))


def _make(family: str) -> dist.Distribution:
    gen = torch.Generator().manual_seed(0)
    loc = torch.randn(S, N, D, generator=gen, dtype=DT)
    if family == "normal":
        scale = torch.rand(1, N, D, generator=gen, dtype=DT) + 0.5  # shared across draws
        return dist.Normal(loc, scale).to_event(1)
    if family == "studentt":
        df = 2.5 + 10 * torch.rand(S, 1, D, generator=gen, dtype=DT)  # per draw and target
        scale = torch.rand(N, D, generator=gen, dtype=DT) + 0.5
        return dist.StudentT(df, loc, scale).to_event(1)
    if family == "mvn":
        return dist.MultivariateNormal(loc, scale_tril=_tril(gen, N))  # tril shared over S
    if family == "mvt":
        df = 2.5 + 10 * torch.rand(S, 1, generator=gen, dtype=DT)
        return dist.MultivariateStudentT(df, loc, _tril(gen, S, N))
    raise AssertionError(family)


FAMILIES = ["normal", "studentt", "mvn", "mvt"]
INDICES = {
    "draw": (1,),
    "draws-slice": (slice(0, 2),),
    "origins": (slice(None), torch.tensor([0, 2, 5])),
    "one-origin": (slice(None), torch.tensor([4])),
    "draw-and-origin": (2, 3),
    "paired": (torch.tensor([0, 2]), torch.tensor([5, 1])),
}


def _value() -> torch.Tensor:
    return torch.randn(S, N, D, generator=torch.Generator().manual_seed(1), dtype=DT)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("index", list(INDICES.values()), ids=list(INDICES))
def test_index_then_log_prob_equals_log_prob_then_index(family, index):
    d = _make(family)
    value = _value()
    picked = index_batch(d, index)
    assert type(picked) is type(d)
    assert picked.event_shape == d.event_shape
    expected = d.log_prob(value)[index]
    assert picked.batch_shape == expected.shape
    torch.testing.assert_close(picked.log_prob(value[index]), expected, rtol=1e-14, atol=0)
    torch.testing.assert_close(picked.mean, d.mean.expand(S, N, D)[index], rtol=0, atol=0)
    torch.testing.assert_close(
        picked.variance, d.variance.expand(S, N, D)[index], rtol=1e-14, atol=0
    )


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dim", [0, 1])
def test_cat_of_two_halves_equals_the_whole(family, dim):
    d = _make(family)
    value = _value()
    cut = 1 if dim == 0 else 4
    first = index_batch(d, (slice(0, cut),) if dim == 0 else (slice(None), slice(0, cut)))
    second = index_batch(d, (slice(cut, None),) if dim == 0 else (slice(None), slice(cut, None)))
    whole = cat_batch([first, second], dim=dim)
    assert type(whole) is type(d)
    assert whole.batch_shape == d.batch_shape and whole.event_shape == d.event_shape
    torch.testing.assert_close(whole.log_prob(value), d.log_prob(value), rtol=1e-14, atol=0)
    torch.testing.assert_close(whole.mean, d.mean.expand(S, N, D), rtol=0, atol=0)
    # Single draws joined back in order (how posterior chunks are put together).
    if dim == 0:
        joined = cat_batch([index_batch(d, (slice(i, i + 1),)) for i in range(S)], dim=0)
        torch.testing.assert_close(joined.log_prob(value), d.log_prob(value), rtol=1e-14, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_decompose_rebuilds_an_equal_distribution_with_full_batch_params(family):
    d = _make(family)
    build, params = decompose(d)
    for p in params:
        assert p.shape[:2] == d.batch_shape  # every parameter carries the full batch shape
    rebuilt = build(*params)
    assert type(rebuilt) is type(d)
    value = _value()
    torch.testing.assert_close(rebuilt.log_prob(value), d.log_prob(value), rtol=1e-14, atol=0)
    torch.testing.assert_close(rebuilt.variance, d.variance.expand(S, N, D), rtol=1e-14, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_mean_and_variance_closed_forms(family):
    # Reference: Normal sigma^2; Student-t sigma^2 nu / (nu - 2); MVN diag(L L');
    # MVT diag(L L') nu / (nu - 2).
    d = _make(family)
    mean, variance = mean_and_variance(d)
    assert mean.shape == variance.shape == (S, N, D)
    torch.testing.assert_close(mean, d.mean.expand(S, N, D), rtol=0, atol=0)
    if family in ("normal", "studentt"):
        base = d.base_dist
        expected = base.scale.square().expand(S, N, D)
        if family == "studentt":
            expected = expected * base.df / (base.df - 2)
    else:
        expected = d.scale_tril.square().sum(-1).expand(S, N, D)
        if family == "mvt":
            expected = expected * (d.df / (d.df - 2)).unsqueeze(-1)
    torch.testing.assert_close(variance, expected, rtol=1e-14, atol=0)


@pytest.mark.parametrize(
    "d",
    [
        dist.Laplace(torch.zeros(3, 2), torch.ones(3, 2)).to_event(1),
        dist.Gamma(torch.ones(3), torch.ones(3)),
        dist.LowRankMultivariateNormal(torch.zeros(3, 2), torch.ones(3, 2, 1), torch.ones(3, 2)),
    ],
    ids=["laplace", "gamma", "lowrank-mvn"],
)
def test_unsupported_family_raises_type_error(d):
    with pytest.raises(TypeError, match="unsupported predictive family"):
        decompose(d)
    with pytest.raises(TypeError, match="unsupported predictive family"):
        index_batch(d, (0,))
    with pytest.raises(TypeError, match="unsupported predictive family"):
        cat_batch([d, d])


@pytest.mark.parametrize("family", FAMILIES)
def test_rescale_stretches_about_the_location(family):
    # Y' = mu + c (Y - mu): same location, covariance times c^2, log density by the
    # change of variables log p(mu + (y - mu) / c) - D log c.
    d = _make(family)
    lam = torch.tensor([0.0, 0.4, -0.3], dtype=DT)[:, None]  # one level per draw, (S, 1)
    stretched = rescale(d, lam)
    assert type(stretched) is type(d) and stretched.batch_shape == d.batch_shape
    torch.testing.assert_close(location(stretched), location(d), rtol=0, atol=0)
    _, var = mean_and_variance(d)
    _, var_c = mean_and_variance(stretched)
    torch.testing.assert_close(var_c, var * (2 * lam).exp()[..., None], rtol=1e-13, atol=0)
    y, mu = _value(), location(d)
    by_hand = d.log_prob(mu + (y - mu) * (-lam).exp()[..., None]) - D * lam
    torch.testing.assert_close(stretched.log_prob(y), by_hand, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("family", FAMILIES)
def test_regime_log_prob_equals_rescaled_distributions(family):
    # regime_log_prob evaluates K stretched copies without building them: it must equal
    # rescale(d, lambda_k).log_prob for every regime, with draws as a batch dimension.
    d = _make(family)
    levels = torch.tensor([[0.0, 0.5, 1.1], [0.0, 0.2, 0.3], [0.0, 0.9, 1.0]], dtype=DT)
    y = _value()[0]  # (N, D), the observed response shared by all draws
    out = regime_log_prob(d, y, levels)
    assert out.shape == (S, N, 3)
    for k in range(3):
        expected = rescale(d, levels[:, k : k + 1]).log_prob(y)
        torch.testing.assert_close(out[..., k], expected, rtol=1e-13, atol=1e-13)


def test_rescaled_student_t_matches_scipy():
    # Reference: scipy.stats.t(df, loc, scale * exp(lambda)).logpdf.
    df, loc, scale = (torch.tensor(v, dtype=DT) for v in (5.0, 0.3, 1.7))
    d = dist.StudentT(df, loc, scale).expand([1]).to_event(1)
    y = np.array([-4.0, -0.2, 0.3, 2.5, 9.0])
    lam = 0.6
    got = regime_log_prob(d, torch.as_tensor(y[:, None]), torch.tensor([0.0, lam], dtype=DT))
    np.testing.assert_allclose(got[:, 0].numpy(), stats.t(5.0, 0.3, 1.7).logpdf(y), rtol=1e-12)
    np.testing.assert_allclose(
        got[:, 1].numpy(), stats.t(5.0, 0.3, 1.7 * np.exp(lam)).logpdf(y), rtol=1e-12
    )


def test_regime_log_prob_margins_are_the_per_target_terms():
    # Oracle: scipy per margin, and their sum is regime_log_prob (torch and compiled routes).
    df = torch.tensor([4.0, 9.0], dtype=DT)
    loc = torch.tensor([[0.1, -0.4], [0.3, 0.2], [-0.5, 0.0]], dtype=DT)  # (N, D) = (3, 2)
    scale = torch.tensor([[1.0, 2.0], [0.5, 1.5], [1.2, 0.7]], dtype=DT)
    y = torch.tensor([[1.5, -2.0], [0.0, 0.4], [-3.0, 1.1]], dtype=DT)
    levels = torch.tensor([0.0, 0.45, 1.2], dtype=DT)
    for d, ref in (
        (
            dist.StudentT(df, loc, scale).to_event(1),
            lambda k: stats.t(df.numpy(), loc.numpy(), scale.numpy() * k),
        ),
        (dist.Normal(loc, scale).to_event(1), lambda k: stats.norm(loc.numpy(), scale.numpy() * k)),
    ):
        margins = regime_log_prob_margins(d, y, levels[:, None].expand(3, 2))
        assert margins.shape == (3, 3, 2)
        for k, lam in enumerate(levels.tolist()):
            expected = ref(np.exp(lam)).logpdf(y.numpy())
            np.testing.assert_allclose(margins[:, k].numpy(), expected, rtol=1e-12)
        torch.testing.assert_close(
            margins.sum(-1), regime_log_prob(d, y, levels), rtol=1e-13, atol=0
        )
        # a level per regime and target: the second target's levels doubled
        per_target = torch.stack([levels, 2 * levels], dim=-1)  # (K, D)
        margins = regime_log_prob_margins(d, y, per_target)
        for k, lam in enumerate(levels.tolist()):
            expected = ref(np.exp(np.array([lam, 2 * lam]))).logpdf(y.numpy())
            np.testing.assert_allclose(margins[:, k].numpy(), expected, rtol=1e-12)
    with pytest.raises(TypeError, match="independent margins"):
        regime_log_prob_margins(
            dist.MultivariateNormal(loc, torch.eye(2, dtype=DT)), y, levels[:, None]
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_sample_rows_follows_the_distribution(family):
    # Oracle: the family's own CDF. 4,000 rows of one origin's distribution, each row
    # drawn with its own generator; every margin standardised by its location and scale
    # must be Student-t(df) or Normal (Kolmogorov-Smirnov, scipy), and the multivariate
    # families' sample covariance must be their covariance.
    d = index_batch(_make(family), (slice(0, 1), slice(0, 1)))  # batch (1, 1)
    rows = 4_000
    big = index_batch(d, (torch.zeros(rows, dtype=torch.long),))  # batch (rows, 1)
    generators = [torch.Generator().manual_seed(i) for i in range(rows)]
    x = sample_rows(big, generators)[:, 0]  # (rows, D)
    assert x.shape == (rows, D) and x.dtype == DT
    mean, variance = mean_and_variance(d)
    for j in range(D):
        if family in ("normal", "studentt"):
            params = decompose(d)[1]
            scale = params[-1][0, 0, j]
            df = params[0][0, 0, j].item() if family == "studentt" else None
        else:
            scale = decompose(d)[1][-1][0, 0, j].norm()  # sd of the margin / sqrt(df/(df-2))
            df = d.df.reshape(-1)[0].item() if family == "mvt" else None
        z = ((x[:, j] - location(d)[0, 0, j]) / scale).numpy()
        reference = stats.norm if df is None else stats.t(df)
        assert stats.kstest(z, reference.cdf).pvalue > 1e-3
    if family in ("mvn", "mvt"):
        cov = d.covariance_matrix[0, 0] if family == "mvn" else None
        if cov is not None:
            np.testing.assert_allclose(np.cov(x.numpy().T), cov.numpy(), rtol=0.1, atol=0.05)


def test_sample_rows_row_depends_on_its_own_generator_only():
    d = _make("studentt")  # batch (S, N)
    seeds = [5, 6, 7]
    full = sample_rows(d, [torch.Generator().manual_seed(k) for k in seeds])
    alone = sample_rows(index_batch(d, (slice(1, 2),)), [torch.Generator().manual_seed(6)])
    torch.testing.assert_close(full[1:2], alone, rtol=0, atol=0)
    # The global generator is neither used nor moved.
    state = torch.random.get_rng_state()
    sample_rows(d, [torch.Generator().manual_seed(k) for k in seeds])
    assert torch.equal(torch.random.get_rng_state(), state)


def test_sample_picked_draws_each_entry_from_its_chosen_distribution():
    # Oracle: scipy's CDFs. Every entry of a (rows, 1) batch picks one of the four
    # families (by rows cyclically); the entries of each family, standardised by
    # that family's location and scale, must follow it (Kolmogorov-Smirnov), so the
    # noise of one family is never read with another's parameters.
    rows = 8_000
    one = [
        index_batch(_make(f), (torch.zeros(rows, dtype=torch.long), slice(0, 1))) for f in FAMILIES
    ]
    choice = (torch.arange(rows) % len(FAMILIES)).unsqueeze(-1)  # (rows, 1)
    generators = [torch.Generator().manual_seed(10 + i) for i in range(rows)]
    x = sample_picked(one, choice, generators)[:, 0]  # (rows, D)
    for m, (family, d) in enumerate(zip(FAMILIES, one)):
        picked = x[choice[:, 0] == m]
        params = decompose(d)[1]
        j = 0  # the first margin
        if family in ("normal", "studentt"):
            scale = params[-1][0, 0, j]
            df = params[0][0, 0, j].item() if family == "studentt" else None
        else:
            scale = params[-1][0, 0, j].norm()
            df = d.df.reshape(-1)[0].item() if family == "mvt" else None
        z = ((picked[:, j] - location(d)[0, 0, j]) / scale).numpy()
        reference = stats.norm if df is None else stats.t(df)
        assert stats.kstest(z, reference.cdf).pvalue > 1e-3, family
    # Row s depends on its own generator and choices only.
    alone = sample_picked(
        [index_batch(d, (slice(3, 4),)) for d in one],
        choice[3:4],
        [torch.Generator().manual_seed(13)],
    )
    torch.testing.assert_close(x[3:4], alone[:, 0], rtol=0, atol=0)
