"""Run every script in ``examples/`` with tiny settings and check what it produced.

Each script runs in this process through :func:`runpy.run_path` with ``sys.argv``
patched, so the suite's warning filters (warnings are errors) apply to it too. The
checks go beyond "it ran": the numbers a script prints and records must obey the
constraints of what they are (stochastic matrices, Jensen's inequality for the mean
duration, monotone quantiles, filtered = smoothed on the last day) and agree with the
InferenceData it wrote.
"""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from bayes_moe.inference.arviz import from_netcdf, group_names

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"

# Tiny arguments for every example script (each also gets ``--out <tmp folder>``).
TINY_ARGS = {
    "sp500_regimes.py": [
        "--num-steps",
        "15",
        "--num-draws",
        "8",
        "--num-samples",
        "500",
        "--start",
        "2016-01-01",
        "--no-progress",
    ],
}

_RUNS: dict[str, tuple[Path, str]] = {}


def run_example(name: str, out: Path) -> str:
    """Run ``examples/<name>`` as ``__main__`` with its tiny arguments; return its stdout."""
    script = EXAMPLES_DIR / name
    argv = [str(script), *TINY_ARGS[name], "--out", str(out)]
    saved = sys.argv
    stdout = io.StringIO()
    sys.argv = argv
    try:
        with contextlib.redirect_stdout(stdout):
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = saved
    return stdout.getvalue()


@pytest.fixture(scope="module")
def example_runs(tmp_path_factory):
    """Run each example at most once per module: ``name -> (out folder, stdout)``."""

    def get(name: str) -> tuple[Path, str]:
        if name not in _RUNS:
            out = tmp_path_factory.mktemp(Path(name).stem) / "out"
            _RUNS[name] = (out, run_example(name, out))
        return _RUNS[name]

    yield get
    _RUNS.clear()


def test_every_example_has_tiny_settings():
    scripts = {p.name for p in EXAMPLES_DIR.glob("*.py")}
    assert scripts, "no example scripts found"
    assert scripts == set(TINY_ARGS), "add tiny arguments for new examples to TINY_ARGS"


@pytest.mark.parametrize("name", sorted(TINY_ARGS))
def test_example_writes_its_outputs(example_runs, name):
    out, stdout = example_runs(name)
    written = sorted(p.name for p in out.iterdir())
    assert written, f"{name} wrote nothing into --out"
    assert not [p for p in written if p.endswith(".tmp") or p.startswith(".")], written
    assert stdout.strip(), f"{name} printed nothing"


# ------------------------------------------------------------------- sp500_regimes.py


@pytest.fixture(scope="module")
def sp500_regimes(example_runs):
    out, stdout = example_runs("sp500_regimes.py")
    summary = json.loads((out / "summary.json").read_text())
    return out, stdout, summary


def test_sp500_regimes_files(sp500_regimes):
    out, stdout, summary = sp500_regimes
    expected = {
        "fan_chart.png",
        "regimes.png",
        "expert_weights.png",
        "inference_data.nc",
        "summary.json",
    }
    assert {p.name for p in out.iterdir()} == expected
    assert set(summary["files"]) == expected
    for name in ("fan_chart.png", "regimes.png", "expert_weights.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width = matplotlib.image.imread(out / name).shape[:2]
        assert height > 150 and width > 150, (name, height, width)
    assert f"written to {out}/" in stdout


def test_sp500_regimes_regime_posterior(sp500_regimes):
    _, stdout, summary = sp500_regimes
    trans = np.asarray(summary["transition"])
    K = summary["model"]["gate"]["n_regimes"]
    assert trans.shape == (K, K) == (3, 3)
    assert np.all((trans >= 0) & (trans <= 1))
    np.testing.assert_allclose(trans.sum(axis=1), 1.0, atol=1e-9)

    duration = summary["expected_duration_days"]
    mean = np.asarray(duration["mean"])
    assert np.all(np.asarray(duration["q3%"]) <= np.asarray(duration["q97%"]))
    assert np.all(np.asarray(duration["sd"]) >= 0)
    # A stay lasts at least the day it starts; the report's duration is the same number.
    assert np.all(mean >= 1.0)
    report = summary["regime_summary"]
    np.testing.assert_allclose([r["expected_duration"] for r in report], mean, rtol=1e-12)
    assert [r["regime"] for r in report] == list(range(K))
    assert all(r["volatility_q3"] <= r["volatility"] <= r["volatility_q97"] for r in report)
    assert "regime report" in stdout and "volatility %/day" in stdout

    # Regimes are labelled from calmest to most turbulent in every draw, so the
    # posterior mean volatilities are sorted too; daily S&P 500 sd is around 1%.
    vol = np.asarray(summary["regime_volatility"])
    assert np.all(np.diff(vol) >= 0)
    assert np.all((vol > 0.1) & (vol < 10))

    weights = summary["expert_weights"]
    assert weights["experts"] == ["ar", "var", "kalman"]
    by_regime = np.asarray(weights["by_regime"])
    assert by_regime.shape == (K, 3)
    np.testing.assert_allclose(by_regime.sum(axis=1), 1.0, atol=1e-9)

    now = summary["regime_now"]
    assert now["regime"] in range(K)
    # The reported regime is the argmax of the filtered probabilities on the last day.
    last_filtered = np.asarray(summary["filtered_vs_smoothed"]["filtered"][-1])
    assert now["regime"] == int(last_filtered.argmax())
    assert now["filtered_probability"] == pytest.approx(last_filtered[now["regime"]])
    assert 1.0 / K <= now["filtered_probability"] <= 1.0
    assert now["filtered_probability_sd"] >= 0
    assert now["date"] == summary["period"]["last_response_date"] == "2018-12-31"

    # The printed report says the same as the recorded one.
    assert "transition matrix" in stdout
    assert f"regime {now['regime']} of {K}" in stdout
    assert f"filtered probability {now['filtered_probability']:.3f}" in stdout


def test_sp500_regimes_forecast(sp500_regimes):
    _, stdout, summary = sp500_regimes
    fc = summary["forecast"]
    assert fc["origin_date"] == "2018-12-31"  # the last close of the data
    levels = sorted(fc["quantiles"], key=float)
    values = np.asarray([fc["quantiles"][q] for q in levels])
    assert np.all(np.diff(values) > 0)
    lo, hi = fc["interval_90"]
    assert lo == pytest.approx(fc["quantiles"]["0.05"])
    assert hi == pytest.approx(fc["quantiles"]["0.95"])
    assert lo < fc["quantiles"]["0.5"] < hi
    assert fc["quantiles"]["0.01"] < fc["mean"] < fc["quantiles"]["0.99"]
    assert 0.1 < fc["std"] < 10  # percent per day
    assert sum(fc["regime_probabilities"]) == pytest.approx(1.0)
    assert sum(fc["expert_weights"].values()) == pytest.approx(1.0)
    assert f"mean {fc['mean']:+.4f}" in stdout


def test_sp500_regimes_filtered_vs_smoothed(sp500_regimes):
    _, stdout, summary = sp500_regimes
    fs = summary["filtered_vs_smoothed"]
    filtered, smoothed = np.asarray(fs["filtered"]), np.asarray(fs["smoothed"])
    assert filtered.shape == smoothed.shape == (5, 3)
    np.testing.assert_allclose(filtered.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(smoothed.sum(axis=1), 1.0, atol=1e-9)
    # Nothing comes after the last day, so smoothing cannot change it.
    np.testing.assert_allclose(filtered[-1], smoothed[-1], atol=1e-9)
    assert 0.0 <= fs["share_days_argmax_differs"] <= 1.0
    assert fs["dates"][-1] == "2018-12-31"
    assert "filtered (causal) vs smoothed (look-ahead)" in stdout


def test_sp500_regimes_inference_data(sp500_regimes):
    out, _, summary = sp500_regimes
    idata = from_netcdf(out / "inference_data.nc")  # InferenceData or DataTree
    groups = set(group_names(idata))
    assert {"posterior", "posterior_predictive", "log_likelihood", "observed_data"} <= groups
    assert "regime_posterior" in groups

    trans = idata.posterior["gate.transition"]
    assert trans.dims == ("chain", "draw", "regime_from", "regime_to")
    assert trans.shape == (1, 8, 3, 3)  # --num-draws 8
    np.testing.assert_allclose(trans.sum("regime_to"), 1.0, atol=1e-9)
    # The recorded transition matrix is the posterior mean of the saved draws.
    np.testing.assert_allclose(
        trans.mean(("chain", "draw")).values, summary["transition"], atol=1e-12
    )
    np.testing.assert_allclose(
        idata.posterior["regime_duration"].mean(("chain", "draw")).values,
        summary["expected_duration_days"]["mean"],
        rtol=1e-9,
    )

    n_days = summary["period"]["n_days"]
    assert idata.observed_data["y"].shape == (n_days,)
    assert idata.log_likelihood["y"].shape == (1, 8, n_days)
    assert np.isfinite(idata.log_likelihood["y"].values).all()
    filtered = idata.regime_posterior["filtered"]
    np.testing.assert_allclose(filtered.sum("regime"), 1.0, atol=1e-9)
    # ``--start 2016-01-01``: the first response comes after the 64-day window.
    first = np.datetime64(summary["period"]["first_response_date"])
    assert first > np.datetime64("2016-03-01")
    assert idata.observed_data["y"]["date"].values[0] == first
