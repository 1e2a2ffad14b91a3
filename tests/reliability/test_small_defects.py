"""Issue 13, defect 6: the smaller defects, each with the behaviour that must hold.

(a) duplicate column names are a DataError naming the column; (b) a checkpoint whose
metadata or tensors disagree is refused naming the field or tensor (wrong shapes, a
forged ``date_unit``, a missing field); (c) a model with more latent parameters than
observations warns; (d) a ``--return-col`` fit saves without torch's read-only-array
warning; (e) output files get the umask's permissions; (f) the two regime
probabilities of the report say which day each is for. Real S&P 500 returns (arch.data)
throughout; tiny fits (one AR expert, a few SVI steps).
"""

import io
import json
import os
import re
import stat
import warnings
from contextlib import redirect_stdout

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import bayes_moe as bm
from bayes_moe.cli import main
from bayes_moe.data.errors import DataError
from bayes_moe.data.validation import validate_frame
from bayes_moe.io import atomic_path, write_json

TINY_FIT = {"num_steps": 5, "num_draws": 4, "seed": 0, "progress": False}
DATE_UNITS = ("datetime64[s]", "datetime64[ms]", "datetime64[us]", "datetime64[ns]")


@pytest.fixture(scope="module")
def returns_csv(sp500, tmp_path_factory):
    """200 days of real S&P 500 percentage returns in a user's file (column ``r``)."""
    path = tmp_path_factory.mktemp("user") / "returns.csv"
    sp500[["ret"]].iloc[-200:].rename(columns={"ret": "r"}).rename_axis("date").to_csv(path)
    return path


@pytest.fixture(scope="module")
def ar_fit(returns_csv):
    """A tiny real fit read through ``return_col`` (the path of ``--return-col``)."""
    frame = bm.data.read_frame(returns_csv, return_col="r")
    return bm.BayesianMoE(experts=["ar"], n_regimes=2, window=8).fit(frame, **TINY_FIT)


@pytest.fixture(scope="module")
def saved(ar_fit, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "fit.safetensors"
    ar_fit.save(path)
    return path


def _forge(saved, tmp_path, *, metadata=None, drop_fields=(), tensors=None):
    """Rewrite ``saved`` with safetensors: fields changed or dropped, tensors replaced."""
    with safe_open(str(saved), framework="pt") as handle:
        meta = dict(handle.metadata())
    meta.update(metadata or {})
    for name in drop_fields:
        del meta[name]
    content = load_file(str(saved))
    for name, value in (tensors or {}).items():
        if value is None:
            del content[name]
        else:
            content[name] = value
    path = tmp_path / "forged.safetensors"
    save_file(content, str(path), metadata=meta)
    return path


def _refused(path, *fragments):
    """Load ``path``: it must be refused with a message holding every fragment."""
    with pytest.raises(bm.CheckpointError, match="malformed") as info:
        bm.load_fit(path)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


# ------------------------------------------------------------- (a) duplicate columns
def test_duplicate_column_names_are_a_data_error(sp500):
    frame = sp500[["ret", "ret_nasdaq"]].iloc[-120:]
    twice = pd.concat([frame, frame[["ret"]]], axis=1)  # two columns named "ret"
    assert list(twice.columns) == ["ret", "ret_nasdaq", "ret"]
    with pytest.raises(DataError, match=r"duplicate column name\(s\): 'ret' \(2 times\)"):
        validate_frame(twice, columns=["ret"], min_length=10)
    with pytest.raises(DataError, match="duplicate column.*'ret'"):
        bm.BayesianMoE(experts=["ar"], window=8).prepare(twice)


def test_a_csv_with_a_repeated_header_is_refused_naming_the_column(sp500, tmp_path):
    # pandas would read the second 'Close' as 'Close.1' without a word.
    rows = sp500[["adj_close", "high", "adj_close"]].iloc[-60:]
    path = tmp_path / "prices.csv"
    rows.set_axis(["Close", "High", "Close"], axis=1).rename_axis("Date").to_csv(path)
    assert pd.read_csv(path).columns.tolist() == ["Date", "Close", "High", "Close.1"]
    with pytest.raises(DataError, match=r"'Close' \(2 times\)"):
        bm.data.read_frame(path, date_col="Date", price_col="Close")


def test_a_parquet_file_with_a_repeated_column_is_refused_naming_it(sp500, tmp_path):
    rows = sp500["ret"].iloc[-60:]
    dates = pa.array(rows.index.strftime("%Y-%m-%d"))
    table = pa.table(
        [dates, pa.array(rows.to_numpy()), pa.array(rows.to_numpy())], ["date"] + ["ret"] * 2
    )
    path = tmp_path / "returns.parquet"
    pq.write_table(table, path)
    with pytest.raises(DataError, match=r"'ret' \(2 times\)"):
        bm.data.read_frame(path)


# ------------------------------------------------------------- (d) read-only arrays
# Before (b): torch warns once per process, and the fixture `saved` saves such a fit too.
def test_a_return_col_fit_saves_without_a_read_only_array_warning(returns_csv, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns (once per process) on read-only arrays
        frame = bm.data.read_frame(returns_csv, return_col="r")
        fit = bm.BayesianMoE(experts=["ar"], n_regimes=1, window=8).fit(frame, **TINY_FIT)
        fit.save(tmp_path / "fit.safetensors")
    stored = load_file(str(tmp_path / "fit.safetensors"))["data/values"].numpy()[:, 0]
    np.testing.assert_array_equal(stored, frame["ret"].to_numpy())


# ----------------------------------------------------------------- (b) checkpoints
def test_a_draw_of_the_wrong_shape_is_refused_naming_the_tensor(saved, tmp_path):
    draws = load_file(str(saved))["draws/ar/coef"]  # (S, d_y, order)
    wider = torch.cat([draws, draws[..., :1]], dim=-1)
    path = _forge(saved, tmp_path, tensors={"draws/ar/coef": wider})
    _refused(path, "'draws/ar/coef'", f"shape {tuple(draws.shape)}", f"found {tuple(wider.shape)}")


def test_the_data_tensor_must_match_the_columns(saved, tmp_path):
    values = load_file(str(saved))["data/values"]  # (T, 1): the column 'ret'
    path = _forge(saved, tmp_path, tensors={"data/values": torch.cat([values, values], dim=1)})
    _refused(path, "'data/values'", "shape (T, 1)", f"found ({values.shape[0]}, 2)")


def test_missing_and_foreign_draws_are_named(saved, tmp_path):
    path = _forge(saved, tmp_path, tensors={"draws/ar/coef": None})
    _refused(path, "missing ['draws/ar/coef']")
    path = _forge(saved, tmp_path, tensors={"draws/gate/extra": torch.zeros(4, 2)})
    _refused(path, "unexpected ['draws/gate/extra']")
    nan = load_file(str(saved))["draws/gate/transition"].clone()
    nan[0, 0, 0] = float("nan")
    path = _forge(saved, tmp_path, tensors={"draws/gate/transition": nan})
    _refused(path, "'draws/gate/transition'", "NaN")


def test_draws_outside_their_prior_support_are_refused_at_load(saved, tmp_path):
    """Found by the checkpoint fuzzer: a negative degrees of freedom loaded silently and
    failed inside the first forecast with a 30-line tensor dump; a float16 draw failed
    with a dtype clash, a draw of 1e30 forecast an infinite standard deviation."""
    tensors = load_file(str(saved))
    negative = tensors["draws/ar/df"].clone()
    negative[1] = -3.0
    path = _forge(saved, tmp_path, tensors={"draws/ar/df": negative})
    message = _refused(path, "'draws/ar/df'", "outside the support of its prior", "GreaterThan")
    assert "tensor(" not in message
    rows = tensors["draws/gate/transition"].clone()
    rows[0, 0] = rows[0, 0] * 2  # a transition row that sums to 2
    _refused(_forge(saved, tmp_path, tensors={"draws/gate/transition": rows}), "Simplex")
    half = tensors["draws/ar/coef"].to(torch.float16)
    _refused(_forge(saved, tmp_path, tensors={"draws/ar/coef": half}), "dtype torch.float64")
    huge = tensors["draws/ar/intercept"].clone()
    huge.view(-1)[0] = 1e30
    _refused(_forge(saved, tmp_path, tensors={"draws/ar/intercept": huge}), "magnitude 1e+30")


def test_network_weights_of_the_wrong_shape_are_refused(sp500, tmp_path):
    frame = sp500[["ret"]].iloc[-150:]
    fit = bm.BayesianMoE(experts=["cnn"], n_regimes=1, window=8).fit(
        frame, pretrain_steps=3, **TINY_FIT
    )
    saved = tmp_path / "cnn.safetensors"
    fit.save(saved)
    name, weight = next((k, v) for k, v in load_file(str(saved)).items() if k.startswith("module/"))
    path = _forge(saved, tmp_path, tensors={name: weight[:1]})
    _refused(path, repr(name), f"shape {tuple(weight.shape)}", f"found {tuple(weight[:1].shape)}")


def test_a_forged_date_unit_is_refused_instead_of_dating_forecasts_1970(ar_fit, saved, tmp_path):
    with safe_open(str(saved), framework="pt") as handle:
        unit = handle.metadata()["date_unit"]
    finer = DATE_UNITS[(DATE_UNITS.index(unit) + 1) % len(DATE_UNITS)]
    path = _forge(saved, tmp_path, metadata={"date_unit": finer})
    message = _refused(path, "'date_unit'", repr(finer), ar_fit.data.dates[-1].isoformat())
    if DATE_UNITS.index(finer) > DATE_UNITS.index(unit):  # read 1000 times too small: 1970
        assert "1970-01" in message
    path = _forge(saved, tmp_path, metadata={"date_unit": "datetime64[D]"})
    _refused(path, "'date_unit' must be one of", "'datetime64[D]'")


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("horizon", "0", "'horizon' must be an integer >= 1, found '0'"),
        ("columns", '["ret", "vix"]', "'columns' must equal the preprocessor's columns"),
        ("model", "[1, 2]", "'model' must be a JSON object, found list"),
        ("diagnostics", "{not json", "'diagnostics' is not valid JSON"),
    ],
)
def test_each_metadata_field_is_checked(saved, tmp_path, field, value, fragment):
    _refused(_forge(saved, tmp_path, metadata={field: value}), fragment)


def test_fields_inside_the_json_metadata_are_checked(saved, tmp_path):
    with safe_open(str(saved), framework="pt") as handle:
        meta = handle.metadata()
    model, pre, diag = (json.loads(meta[k]) for k in ("model", "preprocessor", "diagnostics"))
    cases = [
        ("model", {**model, "window": "8"}, "'model' window must be an integer >= 1"),
        ("model", {**model, "experts": ["no_such_expert"]}, "'model' does not describe a model"),
        ("preprocessor", {**pre, "scale": [-1.0]}, "'preprocessor' scale must be 1 finite"),
        ("diagnostics", {**diag, "guide": "laplace"}, "'diagnostics' guide must be one of"),
        ("diagnostics", {**diag, "num_steps": 7}, "'diagnostics/losses' must have shape (7,)"),
    ]
    for field, value, fragment in cases:
        _refused(_forge(saved, tmp_path, metadata={field: json.dumps(value)}), fragment)


def test_a_removed_field_is_named(saved, tmp_path):
    for field in ("date_unit", "horizon"):
        _refused(_forge(saved, tmp_path, drop_fields=(field,)), f"missing ['{field}']")
    _refused(_forge(saved, tmp_path, drop_fields=("last_date",)), "'last_date' is missing")


def test_an_untouched_checkpoint_still_loads(ar_fit, saved):
    loaded = bm.load_fit(saved)
    assert loaded.data.dates.equals(ar_fit.data.dates)
    np.testing.assert_array_equal(
        loaded.forecast(num_samples=50, seed=1).samples,
        ar_fit.forecast(num_samples=50, seed=1).samples,
    )


# ------------------------------------------------------- (c) parameters vs observations
def test_more_parameters_than_observations_warns_with_the_counts(sp500):
    frame = sp500[["ret"]].iloc[-120:]
    model = bm.BayesianMoE(experts=["ar"], n_regimes=12, window=8)  # 144 transitions alone
    with pytest.warns(UserWarning, match="latent parameters") as record:
        fit = model.fit(frame, **TINY_FIT)
    message = str(record[0].message)
    n_latent, n_obs = (
        int(x) for x in re.findall(r"(\d+) (?:latent parameters|observations)", message)
    )
    # Oracle: the scalars of one posterior draw of every site, and the observed days.
    assert n_latent == sum(draw[0].numel() for draw in fit.draws.values())
    assert n_obs == fit.data.n_observed == 120 - 8
    assert "'gate/transition' 144" in message


def test_a_model_smaller_than_its_data_does_not_warn(sp500):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bm.BayesianMoE(experts=["ar"], n_regimes=2, window=8).fit(
            sp500[["ret"]].iloc[-120:], **TINY_FIT
        )


def test_the_cli_prints_the_warning(returns_csv, tmp_path, monkeypatch, capsys):
    def stop(*args, **kwargs):
        raise DataError("stopped after the fit")  # the report is not under test here

    monkeypatch.setattr("bayes_moe.report.write_report", stop)
    argv = ["fit", "--data", str(returns_csv), "--return-col", "r", "--experts", "ar"]
    argv += ["--regimes", "50", "--window", "8", "--num-steps", "2", "--num-draws", "2"]
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert re.search(
        r"bayes-moe fit: warning: the model has \d+ latent parameters but only 192 ", err
    )


# -------------------------------------------------------------------- (e) the umask
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_output_files_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        write_json({"a": 1}, tmp_path / "new.json")
        (tmp_path / "old.csv").write_text("x\n")
        os.chmod(tmp_path / "old.csv", 0o600)
        with atomic_path(tmp_path / "old.csv") as tmp:  # replacing an existing file
            tmp.write_text("y\n")
    finally:
        os.umask(previous)
    for name in ("new.json", "old.csv"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.json", "old.csv"]


# ------------------------------------------------- (f) which day each probability is for
def test_the_report_says_which_day_each_regime_probability_is_for(returns_csv, tmp_path):
    out = tmp_path / "run"
    argv = ["fit", "--data", str(returns_csv), "--return-col", "r", "--experts", "ar"]
    argv += ["--regimes", "2", "--window", "8", "--num-steps", "5", "--num-draws", "4"]
    printed = io.StringIO()
    with redirect_stdout(printed):
        assert main([*argv, "--out", str(out)]) == 0
    text = printed.getvalue()
    metrics = json.loads((out / "metrics.json").read_text())
    forecast = json.loads((out / "forecast.json").read_text())
    fit = bm.load_fit(out / "fit.safetensors")
    origin = str(fit.data.dates[-1].date())
    now, k = metrics["regime_now"], metrics["regime_now"]["regime"]

    # The filtered probability is for the origin (the last close) ...
    filtered = fit.regimes().filtered.iloc[-1]
    assert now["date"] == forecast["origin_date"] == origin
    assert now["filtered_probability"] == pytest.approx(filtered.iloc[k], rel=1e-9)
    np.testing.assert_allclose(forecast["filtered_regime_probabilities"], filtered, rtol=1e-9)
    # ... and the forecast's regime probabilities for the next trading day (h = 1).
    next_day = fit.regime_forecast(1)["mean"]
    assert forecast["regime_probabilities_days_after_origin"] == 1
    np.testing.assert_allclose(forecast["regime_probabilities"], next_day, rtol=1e-9)
    assert now["next_day_probability"] == pytest.approx(next_day.iloc[k], rel=1e-9)
    assert metrics["forecast"] == forecast

    assert (
        f"regime on {origin}, the forecast origin: {k} of 2 "
        f"(filtered probability {now['filtered_probability']:.3f}"
    ) in text
    assert (
        f"regime {k} on the next trading day after {origin}: predicted probability "
        f"{now['next_day_probability']:.3f}"
    ) in text
