"""Shared fixtures: real S&P 500 data and one small fitted mixture reused by many tests."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, settings

import bayes_moe as bm

# The mixture works on small tensors: one intra-op thread is fastest and keeps the
# suite steady on shared machines (see bayes_moe._runtime.torch_threads).
torch.set_num_threads(1)

# Hypothesis: "ci" (the default) draws a fixed, reproducible set of examples, as many as
# each test asks for (100 unless it says fewer); "long" is for fuzzing sessions, e.g.
#   pytest -m fuzz --hypothesis-profile=long
# (10,000 examples per fuzzer where a test does not fix its own count).
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.register_profile(
    "long",
    deadline=None,
    max_examples=10_000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("ci")  # --hypothesis-profile, read after this file, overrides it


@pytest.fixture(scope="session")
def sp500():
    """Real S&P 500 (with NASDAQ) daily data from arch.data, with range features."""
    return bm.data.load_sp500()


@pytest.fixture(scope="session")
def small_fit(sp500):
    """The default experts with 2 regimes on 2014-2018 (real data), briefly fitted."""
    model = bm.BayesianMoE(experts=["ar", "var", "kalman"], n_regimes=2, window=32)
    frame = sp500.loc["2014-01-01":]
    return model.fit(frame, target="ret", num_steps=150, num_draws=40, seed=0, progress=False)


@pytest.fixture(scope="session")
def fit_one_expert():
    """Fit a one-regime mixture of a single expert to convergence (oracle comparisons).

    A high, fast-decaying learning rate and no early stopping make the posterior mean
    settle to the accuracy the statsmodels comparisons need in a few hundred steps.
    """

    def fit(frame, spec, *, window, num_steps, target="ret", **options):
        model = bm.BayesianMoE(experts=[spec], n_regimes=1, window=window)
        return model.fit(
            frame,
            target=target,
            num_steps=num_steps,
            learning_rate=0.1,
            final_lr_fraction=0.005,
            num_draws=200,
            seed=0,
            progress=False,
            convergence_tol=None,
            **options,
        )

    return fit
