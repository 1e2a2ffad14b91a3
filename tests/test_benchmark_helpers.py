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


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_workers_of_a_killed_run_stop_instead_of_computing_on(tmp_path):
    # A run of two slow tasks in worker processes; its parent is killed (SIGKILL, as an
    # out-of-memory kill or a closed terminal would): the workers must not run on.
    import os
    import signal
    import subprocess
    import time

    (tmp_path / "slow_task.py").write_text(
        "import os, time\n"
        "def slow(name, folder):\n"
        "    open(os.path.join(folder, name + '.pid'), 'w').write(str(os.getpid()))\n"
        "    time.sleep(120)\n"
        "    return name, None, None\n"
    )
    (tmp_path / "run.py").write_text(
        "import sys\n"
        f"sys.path[:0] = [{str(BENCHMARKS)!r}, {str(tmp_path)!r}]\n"
        "from _parallel import run_tasks\n"
        "from slow_task import slow\n"
        "if __name__ == '__main__':\n"
        f"    run_tasks(slow, [('a', {str(tmp_path)!r}), ('b', {str(tmp_path)!r})], "
        "jobs=2, desc='slow')\n"
    )
    parent = subprocess.Popen([sys.executable, str(tmp_path / "run.py")], stderr=subprocess.DEVNULL)
    files = [tmp_path / "a.pid", tmp_path / "b.pid"]
    deadline = time.monotonic() + 120
    while not all(f.exists() and f.read_text() for f in files):
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.2)
    workers = [int(f.read_text()) for f in files]
    assert all(_running(pid) for pid in workers)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 15
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = [pid for pid in workers if _running(pid)]
    for pid in survivors:  # leave nothing behind, then fail
        os.kill(pid, signal.SIGKILL)
    assert not survivors


def test_p1_transition_features_reach_the_mixture_gate_only(tmp_path):
    # P1's --transition-features sets the gate of the --experts mixture; the experts
    # alone keep one regime, and 'none' gives a homogeneous chain.
    sys.path.insert(0, str(BENCHMARKS))
    from p1_sp500 import make_forecaster, model_specs, parse_args

    argv = ["--experts", "ar,garch", "--models", "bayes_moe,experts", "--out", str(tmp_path)]
    for flag, expected in [
        ("log_rv_22,credit_spread", ("log_rv_22", "credit_spread")),
        ("none", ()),
    ]:
        args = parse_args([*argv, "--transition-features", flag])
        specs = model_specs(args)
        assert specs["bayes_moe"][-1] == expected
        assert specs["expert_ar"][-1] is None and specs["expert_ar"][2] == 1
        mixture = make_forecaster("bayes_moe", specs["bayes_moe"], args, None, None)
        assert mixture.model.gate.transition_features == expected
    default = model_specs(parse_args(argv))["bayes_moe"]
    gate = make_forecaster("bayes_moe", default, parse_args(argv), None, None).model.gate
    assert gate.transition_features == bm.MarkovGate(3).transition_features


def test_p1_periods_and_the_returns_only_frame():
    # --vix-validation tests on 2014 (the one validation year with the VIX), never on
    # the test years; --returns-only offers the mixtures no range, VIX or macro column.
    sys.path.insert(0, str(BENCHMARKS))
    from p1_sp500 import TEST, load_frame, main, parse_args, protocol_name, test_period

    assert test_period(parse_args([])) == TEST and protocol_name(parse_args([])) == "P1"
    vix = parse_args(["--vix-validation", "--refit-every", "63"])
    start, end = test_period(vix)
    assert (start[:4], end[:4]) == ("2014", "2014") and end < TEST[0]
    assert protocol_name(vix) == "P1-vix-validation"
    assert test_period(parse_args(["--validation"]))[1] < TEST[0]
    with pytest.raises(SystemExit, match="one of"):
        main(["--validation", "--vix-validation", "--models", "ewma"])
    frame, covariates = load_frame(returns_only=True)
    assert list(frame.columns) == ["ret", "ret_nasdaq"] and covariates == ["ret_nasdaq"]
    full, offered = load_frame()
    assert {"var_parkinson", "vix"} <= set(offered)
    assert frame.index.equals(full.index)
