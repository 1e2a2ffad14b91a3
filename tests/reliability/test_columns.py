"""User files with extra columns: the model reads only the columns its experts read.

Issue 13, defect 3. The data are real (the last 400 days of the S&P 500 with NASDAQ from
``arch.data``), written as a user's export with columns no default expert reads: a
``Ticker`` text column and a ``Volume`` column with one missing value. Two other return
series (``ret_ndx``, the NASDAQ return, and ``ret_gap``, the S&P 500 overnight return)
are read by the VAR expert, which reads every ``ret_*`` column offered to it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayes_moe as bm
from bayes_moe.cli import main
from bayes_moe.data.errors import DataError

#: The day whose Volume (and, in one test, NASDAQ return) is missing.
GAP_DATE = "2018-03-01"
TINY = {"num_steps": 4, "num_draws": 4, "seed": 0, "progress": False}
CLI_TINY = ["--num-steps", "4", "--num-draws", "4", "--window", "16", "--regimes", "2"]


@pytest.fixture(scope="module")
def user_csv(sp500, tmp_path_factory):
    """A user's CSV of real prices with a text column, a gap in Volume and two return series."""
    days = sp500.iloc[-400:]
    export = pd.DataFrame(
        {
            "Ticker": "SPX",
            "Close": days["adj_close"],
            "Volume": days["volume"].where(days.index != GAP_DATE),
            "ret_ndx": days["ret_nasdaq"],
            "ret_gap": 100 * np.log(days["open"] / days["close"].shift(1)),
        }
    ).iloc[1:]
    path = tmp_path_factory.mktemp("user") / "spx.csv"
    export.rename_axis("Date").to_csv(path)
    return path


@pytest.fixture(scope="module")
def user_frame(user_csv):
    frame = bm.data.read_frame(user_csv, date_col="Date", price_col="Close")
    assert not pd.api.types.is_numeric_dtype(frame["Ticker"].dtype)
    assert frame["Volume"].isna().sum() == 1
    return frame


@pytest.mark.parametrize(
    ("experts", "columns"),
    [(["ar"], ("ret",)), (["ar", "var"], ("ret", "ret_ndx", "ret_gap"))],
)
def test_a_fit_reads_only_the_columns_its_experts_read(user_frame, experts, columns):
    """Ticker (text) and Volume (one NaN) are not read, so they do not stop the fit.

    Oracle: the same fit on a frame of the read columns alone, same seed, has the same
    losses and the same posterior draws; the extra columns change nothing.
    """
    model = bm.BayesianMoE(experts=experts, n_regimes=2, window=16)
    fit = model.fit(user_frame, "ret", **TINY)
    assert fit.data.inputs.columns == columns
    assert fit.data.preprocessor.columns == columns
    alone = model.fit(user_frame.loc[:, list(columns)], "ret", **TINY)
    np.testing.assert_array_equal(fit.diagnostics.losses, alone.diagnostics.losses)
    for site, draws in alone.draws.items():
        np.testing.assert_array_equal(fit.draws[site].numpy(), draws.numpy())


def test_covariates_narrow_the_offer(user_frame):
    model = bm.BayesianMoE(experts=["ar", "var"], n_regimes=2, window=16)
    data = model.prepare(user_frame, "ret", covariates=["Ticker", "ret_gap"])
    assert data.inputs.columns == ("ret", "ret_gap")
    assert model.column_readers("ret", ["Volume", "ret_ndx", "ret_gap"]) == {
        "ret_ndx": ["var"],
        "ret_gap": ["var"],
    }


def _with_nan(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    out = frame.copy()
    out.loc[GAP_DATE, column] = np.nan
    return out


@pytest.mark.parametrize(
    ("experts", "column", "problem", "readers"),
    [
        (
            ["ar", "var"],
            "ret_ndx",
            f"1 NaN and 0 inf value(s), the first on {GAP_DATE}",
            "expert 'var'",
        ),
        (
            ["ar", {"name": "cnn", "columns": ["ret", "Volume"]}],
            "Volume",
            f"1 NaN and 0 inf value(s), the first on {GAP_DATE}",
            "expert 'cnn'",
        ),
        (
            ["var", {"name": "cnn", "columns": ["ret", "ret_ndx"]}],
            "ret_ndx",
            "NaN",
            "experts 'var', 'cnn'",
        ),
        (
            ["ar", {"name": "cnn", "columns": ["ret", "Ticker"]}],
            "Ticker",
            "non-numeric",
            "expert 'cnn'",
        ),
    ],
)
def test_a_bad_column_that_is_read_names_its_experts(user_frame, experts, column, problem, readers):
    """The bad column is the only one besides the return series, so no other can fail."""
    frame = user_frame.loc[:, list(dict.fromkeys(["ret", "ret_ndx", "ret_gap", column]))]
    if column != "Ticker":
        frame = _with_nan(frame, column)
    model = bm.BayesianMoE(experts=experts, n_regimes=2, window=16)
    with pytest.raises(DataError) as err:
        model.fit(frame, "ret", **TINY)
    message = str(err.value)
    assert repr(column) in message and problem in message
    assert f"; read by {readers}" in message


def test_a_column_an_expert_reads_must_be_offered(user_frame):
    model = bm.BayesianMoE(experts=["ar", {"name": "cnn", "columns": ["ret", "vix"]}], window=16)
    with pytest.raises(DataError, match=r"expert 'cnn' reads column\(s\) \['vix'\]"):
        model.prepare(user_frame, "ret")
    with pytest.raises(DataError, match=r"expert 'cnn' reads column\(s\) \['ret_ndx'\]"):
        model = bm.BayesianMoE(experts=[{"name": "cnn", "columns": ["ret_ndx"]}], window=16)
        model.prepare(user_frame, "ret", covariates=["ret_gap"])


class _Stop(Exception):
    """Raised once the command has prepared the model's data, before any work starts."""


def _run(argv: list[str], monkeypatch) -> dict:
    """Run the CLI up to its first :meth:`BayesianMoE.prepare`; return its frame and data."""
    seen: dict = {}
    prepare = bm.BayesianMoE.prepare

    def prepare_then_stop(model, frame, target="ret", *, covariates=None, horizon=1, **options):
        data = prepare(model, frame, target, covariates=covariates, horizon=horizon, **options)
        seen.update(frame=frame, covariates=covariates, data=data)
        raise _Stop

    monkeypatch.setattr(bm.BayesianMoE, "prepare", prepare_then_stop)
    with pytest.raises(_Stop):
        main(argv)
    return seen


def _fit_args(csv, out, *flags) -> list[str]:
    data = ["--data", str(csv), "--date-col", "Date", "--price-col", "Close"]
    return ["fit", *data, "--experts", "ar,var", "--out", str(out), *CLI_TINY, *flags]


@pytest.mark.parametrize(
    ("flags", "frame_columns", "model_columns"),
    [
        (
            [],
            ["Ticker", "Close", "Volume", "ret_ndx", "ret_gap", "ret"],
            ("ret", "ret_ndx", "ret_gap"),
        ),
        (["--columns", "ret_gap,Volume"], None, ("ret", "ret_gap")),
        (["--columns", "ret,Close"], None, ("ret",)),
        (
            ["--drop-columns", "Ticker,ret_ndx"],
            ["Close", "Volume", "ret_gap", "ret"],
            ("ret", "ret_gap"),
        ),
        (
            ["--drop-columns", "ret_gap", "--columns", "ret_ndx,Volume"],
            ["Ticker", "Close", "Volume", "ret_ndx", "ret"],
            ("ret", "ret_ndx"),
        ),
    ],
)
def test_fit_columns_and_drop_columns_select_what_they_say(
    user_csv, tmp_path, monkeypatch, flags, frame_columns, model_columns
):
    seen = _run(_fit_args(user_csv, tmp_path / "run", *flags), monkeypatch)
    assert seen["data"].inputs.columns == model_columns
    if frame_columns is not None:
        assert list(seen["frame"].columns) == frame_columns


def test_backtest_columns_and_drop_columns(user_csv, tmp_path, monkeypatch):
    source = ["--data", str(user_csv), "--date-col", "Date", "--price-col", "Close"]
    argv = [
        "backtest",
        *source,
        "--experts",
        "ar,var",
        "--test-start",
        "2018-06-01",
        "--baselines",
        "none",
        "--drop-columns",
        "Volume",
        "--columns",
        "ret_ndx,Ticker",
        "--out",
        str(tmp_path / "bt"),
        *CLI_TINY,
    ]
    seen = _run(argv, monkeypatch)
    assert list(seen["frame"].columns) == ["Ticker", "Close", "ret_ndx", "ret_gap", "ret"]
    assert seen["covariates"] == ["Ticker", "ret_ndx"]
    assert seen["data"].inputs.columns == ("ret", "ret_ndx")


@pytest.mark.parametrize("flag", ["--columns", "--drop-columns"])
def test_unknown_column_names_are_refused_with_the_available_ones(user_csv, tmp_path, capsys, flag):
    out = tmp_path / "run"
    assert main(_fit_args(user_csv, out, flag, "ret_ndx,Vol,tick")) == 2
    err = capsys.readouterr().err
    assert f"{flag}: unknown column(s) ['Vol', 'tick']" in err
    assert "['Ticker', 'Close', 'Volume', 'ret_ndx', 'ret_gap', 'ret']" in err
    assert not out.exists()


def test_dropping_the_target_is_refused(user_csv, tmp_path, capsys):
    assert main(_fit_args(user_csv, tmp_path / "run", "--drop-columns", "ret")) == 2
    assert "--drop-columns removes the target column 'ret'" in capsys.readouterr().err
