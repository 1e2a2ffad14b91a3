"""Shared fixtures: real S&P 500 data and one small fitted mixture reused by many tests."""

from __future__ import annotations

import pytest
import torch

import bayes_moe as bm

# The mixture works on small tensors: one intra-op thread is fastest and keeps the
# suite steady on shared machines (see bayes_moe._runtime.torch_threads).
torch.set_num_threads(1)


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
