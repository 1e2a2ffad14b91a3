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
import pytest
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


def test_the_log_score_lost_is_measured_against_the_control():
    """``left_out_table``: control minus without-m when the control ran, full otherwise.

    Oracle: paired daily differences built by hand (a constant difference has mean equal
    to it), and the ``vs_full`` entry always against the full mixture.
    """
    import pandas as pd

    sys.path.insert(0, str(BENCHMARKS))
    from expert_selection import SavedRun, left_out_table

    days = pd.bdate_range("2015-01-01", periods=60)
    base = pd.Series(torch.linspace(-1.5, -0.5, 60).numpy(), index=days)

    pit = torch.linspace(0.01, 0.99, 60).numpy()

    def run(shift):  # a score table as runs/<name>.csv holds it
        table = pd.DataFrame({"log_score": base + shift, "pit": pit}, index=days)
        for column in ("crps", "covered_90", "covered_95", "interval_score_90"):
            table[column] = 1.0
        table["interval_score_95"] = 1.0
        return SavedRun(table)

    full, control = run(0.0), run(0.02)
    runs = {"ar": run(0.01), "var": run(0.03)}
    table = left_out_table(full, control, runs)
    assert table["ar"]["log_score"] == pytest.approx(float((base + 0.01).mean()))
    assert table["ar"]["mean_diff"] == pytest.approx(0.01)  # control - without_ar
    assert table["var"]["mean_diff"] == pytest.approx(-0.01)
    assert table["ar"]["vs_full"]["mean_diff"] == pytest.approx(-0.01)  # full - without_ar
    no_control = left_out_table(full, None, runs)
    assert no_control["var"]["mean_diff"] == pytest.approx(-0.03)
