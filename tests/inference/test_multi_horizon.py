"""Several horizons from one fit call: ``fit(..., horizon=[1, 5, 20])``.

Real S&P 500 data, briefly fitted. The call is exactly the separate fits (same draws,
seed for seed), each fitted to its own h-day response; every horizon's data are
validated before the first fit starts; forecasts come back per horizon and a folder
of checkpoints round-trips.
"""

import numpy as np
import pandas as pd
import pytest
import torch

import bayes_moe as bm
import bayes_moe.inference.svi as svi_module
from bayes_moe.data.errors import DataError

FIT = {"target": "ret", "num_steps": 10, "num_draws": 6, "seed": 0, "progress": False}


def _model():
    return bm.BayesianMoE(experts=["ar"], n_regimes=2, window=8)


@pytest.fixture(scope="module")
def frame(sp500):
    return sp500.iloc[-300:]


@pytest.fixture(scope="module")
def multi(frame):
    return _model().fit(frame, horizon=[5, 1], **FIT)


def test_one_call_equals_the_separate_fits(frame, multi):
    assert isinstance(multi, bm.MultiHorizonFit) and multi.horizons == (1, 5)
    for h in (1, 5):
        alone = _model().fit(frame, horizon=h, **FIT)
        assert multi[h].horizon == h
        for site, value in alone.draws.items():
            torch.testing.assert_close(multi[h].draws[site], value, rtol=0, atol=0)
    # each fit's response is its own h-day sum of returns (standardized)
    r = frame["ret"].to_numpy()
    data = multi[5].data
    origin = int(data.inputs.origins[0])
    expected = r[origin + 1 : origin + 6].sum()
    got = data.unstandardize(data.observed_response[:1].numpy())[0, 0]
    assert got == pytest.approx(expected, rel=1e-10)


def test_forecasts_per_horizon_and_errors(multi):
    both = multi.forecast(horizon=[1, 5], num_samples=500)
    assert list(both) == [1, 5] and both[5].horizon == 5
    one = multi.forecast(5, num_samples=500)
    np.testing.assert_allclose(one.samples, both[5].samples)
    assert both[1].origin_date == both[5].origin_date == pd.Timestamp("2018-12-31")
    with pytest.raises(
        ValueError, match=r"no fit for horizon\(s\) \[20\].*fitted horizons: \[1, 5\]"
    ):
        multi.forecast([1, 20])
    table = multi.to_frame(num_samples=500)
    assert list(table.index) == [(1, "ret"), (5, "ret")]
    assert (table["q0.05"] < table["q0.95"]).all()


def test_bad_horizons_and_bad_data_fail_before_any_fit(frame, monkeypatch):
    calls = []
    real = svi_module.fit_svi
    monkeypatch.setattr(svi_module, "fit_svi", lambda *a, **k: calls.append(1) or real(*a, **k))
    for bad, message in (([], "at least one"), ([1, 0], "positive integer"), ([5, 5], "distinct")):
        with pytest.raises(ValueError, match=message):
            _model().fit(frame, horizon=bad, **FIT)
    # h = 290 leaves too few origins in 300 rows: refused before h = 1 is fitted
    with pytest.raises(DataError):
        _model().fit(frame, horizon=[1, 290], **FIT)
    assert calls == []


def test_checkpoint_folder_round_trips(multi, tmp_path):
    multi.save(tmp_path / "fits")
    names = {p.name for p in (tmp_path / "fits").iterdir()}
    assert names == {"h1.safetensors", "h5.safetensors", "manifest.json"}
    loaded = bm.MultiHorizonFit.load(tmp_path / "fits")
    assert loaded.horizons == (1, 5)
    a, b = multi.to_frame(num_samples=300), loaded.to_frame(num_samples=300)
    pd.testing.assert_frame_equal(a, b, rtol=1e-10)


def test_horizons_fitted_at_once_on_a_dask_cluster_equal_the_serial_fits(frame, multi, tmp_path):
    pytest.importorskip(
        "distributed", reason="the dask extra is not installed (pip install 'bayes-moe[dask]')"
    )
    from bayes_moe.evaluation.fanout import local_cluster

    checkpoint = tmp_path / "svi.safetensors"
    with local_cluster(2) as client:
        parallel = _model().fit(frame, horizon=[1, 5], client=client, checkpoint=checkpoint, **FIT)
        # both horizons ran as tasks on the workers, not here
        assert {key.split("-")[1] for key in client.run_on_scheduler(_task_keys)} >= {"h1", "h5"}
    for h in (1, 5):
        for site, value in multi[h].draws.items():
            torch.testing.assert_close(parallel[h].draws[site], value, rtol=1e-12, atol=1e-12)
        assert (tmp_path / f"svi.h{h}.safetensors").exists()  # each horizon its own state


def _task_keys(dask_scheduler):
    """The keys of every task the scheduler has run (recorded in its transition log)."""
    return {
        str(entry[0]) for entry in dask_scheduler.transition_log if str(entry[0]).startswith("fit-")
    }
