"""The GARCH expert and the Markov-switching GARCH on the real S&P 500 meet their targets.

Runs ``benchmarks/garch_sp500.py`` on the embedded 1999-2018 returns (100 posterior
draws, no plot) and checks the JSON it writes against arch's GARCH(1,1)-t MLE. About
45 seconds.
"""

import json
import runpy
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "garch_sp500.py"


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("garch") / "garch.json"
    sys.path.insert(0, str(SCRIPT.parent))  # as `python benchmarks/garch_sp500.py` has it
    try:
        module = runpy.run_path(str(SCRIPT), run_name="garch_benchmark")
        assert module["main"](["--num-draws", "100", "--no-plot", "--out", str(out)]) == 0
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return json.loads(out.read_text())


def test_the_scan_is_archs_recursion(result):
    assert result["recursion_rel_diff_max"] < 1e-8


def test_posterior_means_of_alpha_and_beta_are_within_002_of_archs_mle(result):
    params = result["garch"]["parameters"]
    for name in ("alpha", "beta"):
        assert params[name]["abs_diff"] < 0.02, (name, params[name])
        # and the MLE lies in (or at the edge of) the posterior's bulk
        assert params[name]["q3"] - 0.01 < params[name]["mle"] < params[name]["q97"] + 0.01
    assert abs(params["nu"]["mean"] - params["nu"]["mle"]) < 1.0


def test_ms_garch_regimes_differ_in_persistence_and_unconditional_variance(result):
    ms = result["ms_garch"]
    assert ms["distinct"] == {"persistence": True, "unconditional_variance": True}
    rows = ms["rows"]
    assert rows[0]["unconditional_variance"]["mean"] < rows[1]["unconditional_variance"]["mean"]
    assert all(r["persistence"]["q97"] < 1.0 for r in rows)
    assert all(r["expected_duration"]["mean"] > 20 for r in rows)  # regimes, not noise
    # The switching model fits the returns better in sample than one GARCH.
    track = result["tracking"]
    assert (
        track["ms_garch (Bayesian)"]["log_predictive_density_per_day"]
        > track["garch (Bayesian)"]["log_predictive_density_per_day"]
    )
