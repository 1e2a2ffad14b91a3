"""Issue 13, defect 4: a failing part never discards finished work.

- ``stationary_distribution`` is defined for every stochastic matrix (reducible, nearly
  reducible): oracles are closed forms (two states, block-diagonal chains, absorbing
  states) and the invariance :math:`\\pi P = \\pi`.
- ``bayes-moe backtest`` checks the baselines' inputs and the output folder before any
  fit, records a failing baseline or refit in metrics.json and report.md while the other
  models are written, and exits non-zero after writing.
- Report folders are written whole: a crash (an exception, or ``kill -9``) while writing
  leaves the old report as it was and no mixture of two runs.

Real S&P 500 closes (arch.data) clipped to a few hundred days; the mixture is tiny
(``ar`` only, a few SVI steps).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from bayes_moe import io as bayes_io
from bayes_moe.cli import main
from bayes_moe.evaluation.backtest import BacktestError, backtest
from bayes_moe.evaluation.baselines import ConstantNormal, check_baselines
from bayes_moe.evaluation.baselines.garch import ArchT
from bayes_moe.io import MANIFEST, OutputError, atomic_folder, check_output_folder
from bayes_moe.kernels.hmm import STATIONARY_RESTART, stationary_distribution

TINY = ["--experts", "ar", "--num-steps", "5", "--num-draws", "5", "--window", "16"]
TINY += ["--regimes", "2", "--refit-every", "30"]


# ------------------------------------------------------------ stationary distribution
def _assert_stationary(pi: torch.Tensor, trans: torch.Tensor) -> None:
    assert (pi >= 0).all()
    torch.testing.assert_close(pi.sum(-1), torch.ones_like(pi.sum(-1)), rtol=0, atol=1e-12)
    residual = (pi.unsqueeze(-2) @ trans).squeeze(-2) - pi
    assert residual.abs().max().item() < 1e-6


def test_identity_gives_the_uniform_start():
    # Every distribution is stationary; the Cesaro limit from the uniform start is uniform.
    # (The linear solve of the old code found this system singular.)
    trans = torch.eye(3, dtype=torch.float64)
    pi = stationary_distribution(trans)
    _assert_stationary(pi, trans)
    torch.testing.assert_close(pi, torch.full((3,), 1 / 3, dtype=torch.float64))


def test_block_diagonal_chain_weights_each_class_by_its_share_of_the_start():
    # Two closed classes {0, 1} and {2}: from the uniform start, 2/3 of the mass stays in
    # the first class, distributed as its own stationary distribution (q, p) / (p + q).
    p, q = 0.2, 0.6
    trans = torch.tensor([[1 - p, p, 0.0], [q, 1 - q, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    pi = stationary_distribution(trans)
    _assert_stationary(pi, trans)
    expected = torch.tensor([2 / 3 * q / (p + q), 2 / 3 * p / (p + q), 1 / 3], dtype=torch.float64)
    torch.testing.assert_close(pi, expected, rtol=0, atol=1e-9)


def test_absorbing_states_get_their_absorption_probabilities():
    # States 0 and 2 absorb; state 1 is transient and moves to 0 or 2 with probabilities
    # 0.3 and 0.1 (stays with 0.6). From the uniform start, state 0 ends up with
    # 1/3 + 1/3 * 0.3 / 0.4 and state 2 with 1/3 + 1/3 * 0.1 / 0.4.
    trans = torch.tensor([[1.0, 0.0, 0.0], [0.3, 0.6, 0.1], [0.0, 0.0, 1.0]], dtype=torch.float64)
    pi = stationary_distribution(trans)
    _assert_stationary(pi, trans)
    expected = torch.tensor([1 / 3 + 0.25, 0.0, 1 / 3 + 1 / 12], dtype=torch.float64)
    torch.testing.assert_close(pi, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("p", "q"),
    [(0.1, 0.3), (0.5, 0.5), (1e-3, 0.9), (1e-12, 0.3), (1e-12, 1e-12), (0.0, 0.4)],
)
def test_two_state_chains_match_the_closed_form(p, q):
    # Closed form: P = [[1 - p, p], [q, 1 - q]] has pi = (q, p) / (p + q); the diagonal
    # 1 - 1e-12 is the nearly reducible case the Markov-switching fit reached.
    trans = torch.tensor([[1 - p, p], [q, 1 - q]], dtype=torch.float64)
    pi = stationary_distribution(trans)
    _assert_stationary(pi, trans)
    expected = torch.tensor([q, p], dtype=torch.float64) / (p + q)
    torch.testing.assert_close(pi, expected, rtol=0, atol=1e-6)


def test_nearly_reducible_batch_in_float32_is_a_probability_vector():
    # 1 - 1e-12 on the diagonal rounds to 1 in float32: the identity, a cycle of tiny
    # leaks, and a sticky chain, batched as the gate batches posterior draws.
    leak = 1e-12
    cycle = torch.tensor([[1 - leak, leak, 0.0], [0.0, 1 - leak, leak], [leak, 0.0, 1 - leak]])
    sticky = torch.tensor([[0.98, 0.01, 0.01], [0.02, 0.97, 0.01], [0.005, 0.005, 0.99]])
    trans = torch.stack([torch.eye(3), cycle, sticky]).to(torch.float32)
    pi = stationary_distribution(trans)
    assert pi.dtype == torch.float32 and pi.shape == (3, 3)
    assert (pi >= 0).all()
    torch.testing.assert_close(pi.sum(-1), torch.ones(3))
    torch.testing.assert_close((pi.unsqueeze(-2) @ trans).squeeze(-2), pi)
    torch.testing.assert_close(pi[1], torch.full((3,), 1 / 3))  # symmetric cycle: uniform


def test_gradient_is_finite_next_to_a_reducible_matrix():
    # The gate differentiates through the stationary distribution inside SVI.
    logits = torch.tensor([[30.0, 0.0], [0.0, 30.0]], dtype=torch.float64, requires_grad=True)
    pi = stationary_distribution(torch.softmax(logits, -1))
    pi[0].log().backward()
    assert torch.isfinite(logits.grad).all()
    trans = torch.tensor([[0.9, 0.1], [0.3, 0.7]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(stationary_distribution, (trans,))
    assert STATIONARY_RESTART <= 1e-9  # the residual bound 2 * delta stays far below 1e-6


# ------------------------------------------------------------------ data and helpers
@pytest.fixture(scope="module")
def closes_file(sp500, tmp_path_factory):
    """The last 330 days of real S&P 500 closes, as a closes-only user file."""
    frame = sp500.iloc[-330:][["adj_close"]].rename(columns={"adj_close": "close"})
    path = tmp_path_factory.mktemp("closes") / "closes.csv"
    frame.rename_axis("date").to_csv(path)
    return path


def _backtest_args(closes_file, out, *extra) -> list[str]:
    frame = pd.read_csv(closes_file, parse_dates=["date"], index_col="date")
    start = str(frame.index[-60].date())  # 60 test days: two refits of 30
    return [
        "backtest",
        "--data",
        str(closes_file),
        "--price-col",
        "close",
        "--test-start",
        start,
        "--out",
        str(out),
        *TINY,
        *extra,
    ]


@pytest.fixture
def no_fitting(monkeypatch):
    """Make any mixture fit fail the test: the checks must come before the work."""

    def refuse(*args, **kwargs):
        pytest.fail("a fit started before the input checks refused the run")

    monkeypatch.setattr("bayes_moe.models.moe.BayesianMoE.fit", refuse)
    monkeypatch.setattr("bayes_moe.inference.svi.fit_svi", refuse)


# -------------------------------------------------------------------- checks up front
def test_har_on_closes_only_is_refused_before_any_fit(closes_file, tmp_path, no_fitting, capsys):
    out = tmp_path / "bt"
    assert main(_backtest_args(closes_file, out, "--baselines", "har")) == 2
    err = capsys.readouterr().err
    assert "'har'" in err and "'high'" in err and "'low'" in err
    assert not out.exists()


def test_check_baselines_names_every_missing_input():
    frame = pd.DataFrame({"ret": [0.1, -0.2], "close": [100.0, 99.8]})
    with pytest.raises(ValueError, match="unknown baselines"):
        check_baselines(["garch_t", "prophet"], frame)
    with pytest.raises(ValueError, match="'har_vix' needs columns 'high' and 'low'.*'vix'"):
        check_baselines(["garch_t", "har_vix"], frame)
    check_baselines(["garch_t", "ms2", "ewma"], frame)  # closes are enough for these


def test_output_folder_under_a_file_is_refused_before_any_fit(
    closes_file, tmp_path, no_fitting, capsys
):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    out = blocker / "bt"
    assert main(_backtest_args(closes_file, out, "--baselines", "ewma")) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "not a folder" in err
    assert blocker.read_text() == "not a folder\n"


def test_fit_checks_its_output_folder_before_fitting(closes_file, tmp_path, no_fitting, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x\n")
    code = main(
        ["fit", "--data", str(closes_file), "--price-col", "close"]
        + ["--out", str(blocker / "run"), *TINY[:8]]
    )
    assert code == 2
    assert str(blocker / "run") in capsys.readouterr().err


def test_a_folder_of_other_files_is_never_replaced(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me\n")
    with pytest.raises(OutputError, match="notes.txt"):
        check_output_folder(mine)
    with pytest.raises(OutputError, match="notes.txt"):
        with atomic_folder(mine) as folder:
            (folder / "metrics.json").write_text("{}\n")
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]
    assert (mine / "notes.txt").read_text() == "keep me\n"


def test_a_report_holding_more_than_its_files_is_kept_aside(tmp_path):
    out = tmp_path / "run"
    with atomic_folder(out) as folder:
        (folder / "metrics.json").write_text('{"run": 1}\n')
    (out / "regimes").mkdir()  # another command's output inside the report folder
    (out / "regimes" / "regime_summary.csv").write_text("regime\n0\n")
    with pytest.warns(UserWarning, match="kept as"):
        with atomic_folder(out) as folder:
            (folder / "metrics.json").write_text('{"run": 2}\n')
    assert json.loads((out / "metrics.json").read_text()) == {"run": 2}
    assert not (out / "regimes").exists()  # no mixture of two runs
    (kept,) = [p for p in tmp_path.iterdir() if p.name.startswith("run.previous-")]
    assert (kept / "regimes" / "regime_summary.csv").read_text() == "regime\n0\n"
    assert json.loads((kept / "metrics.json").read_text()) == {"run": 1}


# ----------------------------------------------------------------- failures isolated
def test_a_failing_baseline_is_reported_with_the_others(closes_file, tmp_path, monkeypatch, capsys):
    def broken_fit(self, train):
        raise RuntimeError("simulated optimizer breakdown")

    monkeypatch.setattr(ArchT, "__call__", broken_fit)
    out = tmp_path / "bt"
    code = main(_backtest_args(closes_file, out, "--baselines", "garch_t,ewma"))
    assert code == 1  # non-zero, but only after everything was written
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"bayes_moe", "ewma"}
    assert metrics["models"]["ewma"]["n_days"] == 60
    assert metrics["failed_models"] == ["garch_t"]
    failures = metrics["failures"]
    assert [f["model"] for f in failures] == ["garch_t", "garch_t"]  # both refits
    assert {f["error_type"] for f in failures} == {"RuntimeError"}
    assert failures[0]["message"] == "simulated optimizer breakdown"
    assert [f["n_days"] for f in failures] == [30, 30]
    assert failures[0]["refit_date"] < failures[1]["refit_date"]
    report = (out / "report.md").read_text()
    assert "## Failures" in report and "simulated optimizer breakdown" in report
    assert (out / "scores_ewma.csv").exists() and not (out / "scores_garch_t.csv").exists()
    assert "garch_t failed" in capsys.readouterr().err


def test_a_failed_refit_leaves_only_its_days_missing(sp500):
    # ConstantNormal fails on its second refit only; the first block is still scored, the
    # record names the refit, and the scores are exactly those of the first block.
    frame = sp500.iloc[-200:][["ret"]]
    start = frame.index[-40]

    def flaky(train):
        if len(train) > 170:
            raise np.linalg.LinAlgError("Singular matrix")
        return ConstantNormal()(train)

    def run(forecaster, **options):
        return backtest(
            frame, forecaster, test_start=start, refit_every=20, progress=False, **options
        )

    result = run(flaky, name="flaky", on_error="record")
    complete = run(ConstantNormal(), name="constant_normal")
    assert len(result.table) == 20
    pd.testing.assert_frame_equal(result.table, complete.table.iloc[:20])
    (failure,) = result.failures
    assert (failure.model, failure.error_type) == ("flaky", "LinAlgError")
    assert failure.message == "Singular matrix" and failure.n_days == 20
    assert failure.refit_date == frame.index[-21]  # the last training day of refit 2
    assert failure.first_day == frame.index[-20] and failure.last_day == frame.index[-1]


def test_every_refit_failing_raises_with_the_records(sp500):
    frame = sp500.iloc[-200:][["ret"]]

    def broken(train):
        raise ValueError("no")

    with pytest.raises(BacktestError) as info:
        backtest(
            frame,
            broken,
            test_start=frame.index[-40],
            refit_every=20,
            name="broken",
            progress=False,
            on_error="record",
        )
    assert [f.n_days for f in info.value.failures] == [20, 20]
    with pytest.raises(ValueError, match="no"):  # the default still raises at once
        backtest(frame, broken, test_start=frame.index[-40], refit_every=20, progress=False)


# ------------------------------------------------------------------ report folders
def test_a_report_folder_is_replaced_whole(tmp_path):
    out = tmp_path / "report"
    with atomic_folder(out) as folder:
        (folder / "old_only.csv").write_text("old\n")
        (folder / "metrics.json").write_text('{"run": 1}\n')
    with atomic_folder(out) as folder:  # a report folder: replaced, nothing of run 1 stays
        (folder / "metrics.json").write_text('{"run": 2}\n')
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "metrics.json"]
    assert json.loads((out / "metrics.json").read_text()) == {"run": 2}
    assert json.loads((out / MANIFEST).read_text())["files"] == ["metrics.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no temporary left


def test_an_error_while_writing_leaves_the_old_report(tmp_path):
    out = tmp_path / "report"
    with atomic_folder(out) as folder:
        (folder / "metrics.json").write_text('{"run": 1}\n')
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_folder(out) as folder:
            (folder / "metrics.json").write_text('{"run": 2}\n')
            raise RuntimeError("disk full")
    assert json.loads((out / "metrics.json").read_text()) == {"run": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_kill_9_while_writing_leaves_the_old_report_and_no_hidden_files(tmp_path):
    out = tmp_path / "report"
    with atomic_folder(out) as folder:
        (folder / "metrics.json").write_text('{"run": 1}\n')
    script = textwrap.dedent(
        f"""
        import importlib.util, os, signal
        spec = importlib.util.spec_from_file_location("io_alone", {bayes_io.__file__!r})
        io = importlib.util.module_from_spec(spec)  # bayes_moe.io alone: a fast start
        spec.loader.exec_module(io)
        with io.atomic_folder({str(out)!r}) as folder:
            io.write_json({{"run": 2}}, folder / "metrics.json")
            (folder / "report.md").write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], check=False, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "metrics.json"]
    assert json.loads((out / "metrics.json").read_text()) == {"run": 1}
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != "report")
    assert len(leftovers) == 1 and leftovers[0].startswith("report.incomplete-")
    assert not any(name.startswith(".") for name in os.listdir(out))
