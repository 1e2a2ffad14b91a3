"""Entropies against closed forms (scipy) and adaptive quadrature."""

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from bayes_moe.kernels.entropy import (
    categorical_entropy,
    location_scale_entropy,
    location_scale_log_prob,
    mixture_entropy,
)

T = torch.float64


def _t(x):
    return torch.as_tensor(np.asarray(x, dtype=float), dtype=T)


@pytest.mark.parametrize("df", [2.5, 4.0, 30.0, np.inf])
def test_log_prob_and_entropy_match_scipy(df):
    y = np.linspace(-6, 6, 25)
    ref = stats.norm(0.3, 1.7) if np.isinf(df) else stats.t(df, 0.3, 1.7)
    got = location_scale_log_prob(_t(y), _t(df), _t(0.3), _t(1.7))
    np.testing.assert_allclose(got.numpy(), ref.logpdf(y), rtol=1e-12, atol=1e-12)
    h = location_scale_entropy(_t(df), _t(1.7))
    np.testing.assert_allclose(float(h), ref.entropy(), rtol=1e-12)


def _quad_entropy(w, df, loc, sc):
    def log_p(y):
        return special.logsumexp(
            [np.log(wi) + stats.t.logpdf(y, d, m, s) for wi, d, m, s in zip(w, df, loc, sc)]
        )

    def f(y):
        lp = log_p(y)
        return -np.exp(lp) * lp

    return integrate.quad(f, -np.inf, np.inf, limit=500, epsabs=1e-12)[0]


def test_mixture_entropy_matches_adaptive_quadrature():
    """Random mixtures of up to nine Normal / Student-t components (module docstring)."""
    rng = np.random.default_rng(0)
    errors, errors_64 = [], []
    for _ in range(25):
        C = int(rng.integers(1, 10))
        w = rng.dirichlet(np.ones(C))
        df = rng.choice([2.5, 3.0, 5.0, 10.0, np.inf], C)
        loc = rng.normal(0, 0.3, C)
        sc = np.exp(rng.uniform(-1, 1.5, C))
        ref = _quad_entropy(w, np.where(np.isinf(df), 1e12, df), loc, sc)
        args = (_t(np.log(w)), _t(df), _t(loc), _t(sc))
        errors.append(abs(float(mixture_entropy(*args)) - ref))  # the default, 32 nodes
        errors_64.append(abs(float(mixture_entropy(*args, n_nodes=64)) - ref))
    assert np.median(errors) < 1e-3
    assert max(errors) < 5e-3
    assert np.median(errors_64) < 2e-4
    assert max(errors_64) < 2e-3


def test_single_component_mixture_is_the_closed_form_and_batches():
    df = _t([3.0, np.inf, 7.0]).reshape(3, 1)
    sc = _t([0.5, 2.0, 1.0]).reshape(3, 1)
    zeros = torch.zeros(3, 1, dtype=T)
    exact = location_scale_entropy(df, sc)[:, 0].numpy()
    np.testing.assert_allclose(mixture_entropy(zeros, df, zeros, sc).numpy(), exact, atol=1e-3)
    got = mixture_entropy(zeros, df, zeros, sc, n_nodes=64, compute_dtype=None)
    np.testing.assert_allclose(got.numpy(), exact, atol=1e-4)


def test_mixture_entropy_gradient_is_finite_with_normal_components():
    loc = _t([0.0, 1.0]).requires_grad_()
    sc = _t([1.0, 3.0]).requires_grad_()
    h = mixture_entropy(_t(np.log([0.5, 0.5])), _t([np.inf, 4.0]), loc, sc)
    h.backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(sc.grad).all()
    # Scaling every component by c adds log c to the entropy.
    with torch.no_grad():
        h2 = mixture_entropy(_t(np.log([0.5, 0.5])), _t([np.inf, 4.0]), 2 * loc, 2 * sc)
    assert float(h2 - h.detach()) == pytest.approx(np.log(2.0), abs=1e-4)  # float32 rounding


def test_categorical_entropy():
    p = _t([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    got = categorical_entropy(p.log())
    np.testing.assert_allclose(got.numpy(), [stats.entropy([0.2, 0.3, 0.5]), 0.0], atol=1e-15)
