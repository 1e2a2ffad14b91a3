"""Helpers of the benchmark scripts that results depend on.

``expert_selection.without_expert`` turns the full mixture's posterior medians into
initial values of the mixture without one expert: every site must match the reduced
model's own site (name and shape; oracle: a trace of that model), and the remaining
experts' gate columns must be carried over unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyro
import torch
from pyro import poutine

import bayes_moe as bm

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _sites(model, frame):
    data = model.prepare(frame)
    inputs = data.inputs.at(data.inputs.origins[: data.n_observed])
    program = model.program().build(inputs)
    pyro.set_rng_seed(0)
    with torch.no_grad():
        trace = poutine.trace(program).get_trace(inputs, data.observed_response)
    return {
        name: site["value"]
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    }


def test_without_expert_gives_the_reduced_models_sites(sp500):
    sys.path.insert(0, str(BENCHMARKS))
    from expert_selection import without_expert

    frame = sp500.iloc[:200]
    labels = ["ar", "var", "kalman"]
    full = _sites(bm.BayesianMoE(experts=labels, n_regimes=2, window=16), frame)
    reduced = _sites(bm.BayesianMoE(experts=["ar", "kalman"], n_regimes=2, window=16), frame)
    values = without_expert(full, labels, "var")
    assert set(values) == set(reduced)
    for name, value in values.items():
        assert value.shape == reduced[name].shape, name
    torch.testing.assert_close(values["gate/bias"], full["gate/bias"][:, [0, 2]])
    torch.testing.assert_close(values["gate/coef"], full["gate/coef"][[0, 2]])
    torch.testing.assert_close(values["kalman/scale"], full["kalman/scale"])
