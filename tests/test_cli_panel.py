"""``bayes-moe fit`` on a panel file: long and wide CSVs, the per-asset report, bad input."""

import json

import pandas as pd
import pytest

from bayes_moe.cli import main
from tests.models.test_panel import synthetic_panel

TINY = ["--experts", "ar,cross_sectional", "--regimes", "2", "--window", "8"]
TINY += ["--num-steps", "30", "--num-draws", "10"]


@pytest.fixture(scope="module")
def long_csv(tmp_path_factory):
    """SYNTHETIC panel (tests/models/test_panel.py) as a long CSV: date, ticker, r."""
    frame = synthetic_panel(n_days=200)
    long = frame.stack().rename("r").reset_index().rename(columns={"asset": "ticker"})
    path = tmp_path_factory.mktemp("panel") / "panel.csv"
    long.to_csv(path, index=False)
    return path


def test_fit_on_a_long_panel_writes_the_per_asset_report(long_csv, tmp_path, capsys):
    out = tmp_path / "report"
    assert (
        main(["fit", "--data", str(long_csv), "--asset-col", "ticker", *TINY, "--out", str(out)])
        == 0
    )
    forecast = pd.read_csv(out / "forecast.csv", index_col="asset")
    assert list(forecast.index) == ["A", "B", "C", "D"]
    assert (forecast["q0.05"] < forecast["q0.95"]).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["assets"] == ["A", "B", "C", "D"]
    # D is listed on day 60 and C misses days 120-124: fewer scored days than A.
    in_sample = pd.read_csv(out / "in_sample.csv", index_col="asset")["scored_days"]
    assert in_sample["A"] > in_sample["C"] > in_sample["D"]
    assert metrics["data"]["scored_asset_days"] == in_sample.sum()
    report = (out / "report.md").read_text()
    assert "| A |" in report and "Market regimes" in report
    for name in ("regimes.png", "embeddings.csv", "inference_data.nc", "manifest.json"):
        assert (out / name).exists()
    assert "market regime on" in capsys.readouterr().out


def test_wide_panel_file_gives_the_same_forecast(long_csv, tmp_path):
    wide = pd.read_csv(long_csv).pivot(index="date", columns="ticker", values="r")
    path = tmp_path / "wide.csv"
    wide.reset_index().to_csv(path, index=False)
    outs = [tmp_path / "a", tmp_path / "b"]
    assert (
        main(
            ["fit", "--data", str(long_csv), "--asset-col", "ticker", *TINY, "--out", str(outs[0])]
        )
        == 0
    )
    assert main(["fit", "--data", str(path), "--panel", *TINY, "--out", str(outs[1])]) == 0
    a, b = (pd.read_csv(o / "forecast.csv", index_col="asset") for o in outs)
    pd.testing.assert_frame_equal(a, b)


def test_duplicate_asset_date_fails_before_fitting_and_writes_nothing(long_csv, tmp_path, capsys):
    long = pd.read_csv(long_csv)
    bad = pd.concat([long, long.iloc[[5]]])
    path = tmp_path / "dup.csv"
    bad.to_csv(path, index=False)
    out = tmp_path / "never"
    assert (
        main(["fit", "--data", str(path), "--asset-col", "ticker", *TINY, "--out", str(out)]) == 2
    )
    err = capsys.readouterr().err
    row = long.iloc[5]
    assert "duplicate" in err and repr(row["ticker"]) in err and row["date"] in err
    assert not out.exists()


def test_forecast_command_reads_the_panel_checkpoint_of_the_report(long_csv, tmp_path, capsys):
    out = tmp_path / "report"
    args = ["fit", "--data", str(long_csv), "--asset-col", "ticker", *TINY, "--out", str(out)]
    assert main(args) == 0
    written = pd.read_csv(out / "forecast.csv", index_col="asset")
    assert (
        main(
            ["forecast", "--model", str(out / "fit.safetensors"), "--out", str(tmp_path / "fc.csv")]
        )
        == 0
    )
    again = pd.read_csv(tmp_path / "fc.csv", index_col="asset")
    pd.testing.assert_frame_equal(again, written)
    # the same days as a wide file: filtering them with the fitted draws changes nothing
    wide = pd.read_csv(long_csv).pivot(index="date", columns="ticker", values="r")
    wide.reset_index().to_csv(tmp_path / "wide.csv", index=False)
    model = ["--model", str(out / "fit.safetensors")]
    fc = str(tmp_path / "fc_data.csv")
    assert main(["forecast", *model, "--data", str(tmp_path / "wide.csv"), "--out", fc]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(fc, index_col="asset"), written)
    capsys.readouterr()
    assert main(["regimes", *model, "--out", str(tmp_path / "regimes")]) == 2
    assert "is a panel fit" in capsys.readouterr().err
