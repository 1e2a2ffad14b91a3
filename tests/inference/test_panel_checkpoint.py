"""Panel fits saved and loaded: the loaded fit is the fitted one, bad files are refused.

SYNTHETIC panel (tests.models.test_panel.synthetic_panel: a listing and a gap, so the
saved panel holds NaN), with the cross-sectional expert so that embeddings and network
weights travel too.
"""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import bayes_moe as bm
from bayes_moe.inference.checkpoint_checks import CheckpointError
from tests.models.test_panel import WINDOW, synthetic_panel


@pytest.fixture(scope="module")
def frame():
    return synthetic_panel(n_days=260)


@pytest.fixture(scope="module")
def fitted(frame):
    model = bm.BayesianMoE(experts=["ar", "cross_sectional"], n_regimes=2, window=WINDOW)
    return model.fit(
        frame.iloc[:220], panel=True, seed=0, num_steps=20, num_draws=8, progress=False
    )


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    path = tmp_path_factory.mktemp("panel") / "panel.safetensors"
    fitted.save(path)
    return path


def test_loaded_fit_forecasts_and_filters_as_the_fitted_one(fitted, saved):
    loaded = bm.load_panel_fit(saved)
    assert isinstance(loaded, bm.PanelFit) and loaded.assets == fitted.assets
    pd.testing.assert_frame_equal(loaded.data.frame, fitted.data.frame, check_names=False)
    assert loaded.data.frame.isna().to_numpy().sum() > 0  # the ragged panel kept its NaN
    for site, value in fitted.draws.items():
        torch.testing.assert_close(loaded.draws[site], value, rtol=0, atol=0)
    pd.testing.assert_frame_equal(
        loaded.forecast(num_samples=500).to_frame(), fitted.forecast(num_samples=500).to_frame()
    )
    pd.testing.assert_frame_equal(loaded.regimes().filtered, fitted.regimes().filtered)
    pd.testing.assert_frame_equal(
        loaded.pointwise_log_likelihood(), fitted.pointwise_log_likelihood()
    )
    pd.testing.assert_frame_equal(loaded.embeddings(), fitted.embeddings())
    np.testing.assert_array_equal(loaded.diagnostics.losses, fitted.diagnostics.losses)
    assert loaded.diagnostics.to_dict() == fitted.diagnostics.to_dict()


def test_loaded_fit_applies_its_draws_to_newer_days(fitted, saved, frame):
    later, loaded_later = fitted.apply(frame), bm.load_panel_fit(saved).apply(frame)
    day = frame.index[240]
    y = np.array([0.5])
    np.testing.assert_allclose(
        loaded_later.predictive("A", day, day).log_prob(y),
        later.predictive("A", day, day).log_prob(y),
        rtol=1e-12,
    )


def test_a_file_of_the_other_kind_names_its_loader(fitted, saved, sp500, tmp_path):
    with pytest.raises(CheckpointError, match="read it with bm.load_panel_fit"):
        bm.load_fit(saved)
    single = bm.BayesianMoE(experts=["ar"], n_regimes=2, window=8).fit(
        sp500.iloc[-200:], num_steps=5, num_draws=4, progress=False
    )
    single.save(tmp_path / "single.safetensors")
    with pytest.raises(CheckpointError, match="read it with bm.load_fit"):
        bm.load_panel_fit(tmp_path / "single.safetensors")


def _rewrite(saved, path, change_tensors=None, change_metadata=None):
    with safe_open(str(saved), framework="pt") as handle:
        metadata = dict(handle.metadata())
    tensors = load_file(str(saved))
    if change_tensors:
        change_tensors(tensors)
    if change_metadata:
        change_metadata(metadata)
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_malformed_files_are_refused_naming_what_is_wrong(saved, tmp_path):
    name = next(k for k in load_file(str(saved)) if k.startswith("draws/"))

    def short_draw(tensors):
        tensors[name] = (
            tensors[name][..., :1].contiguous()
            if tensors[name].ndim > 1
            else (tensors[name][:, None].contiguous())
        )

    with pytest.raises(CheckpointError, match=name.removeprefix("draws/")):
        bm.load_panel_fit(_rewrite(saved, tmp_path / "a.safetensors", short_draw))

    def drop_module(tensors):
        del tensors[next(k for k in tensors if k.startswith("module/"))]

    with pytest.raises(CheckpointError, match="module"):
        bm.load_panel_fit(_rewrite(saved, tmp_path / "b.safetensors", drop_module))

    def other_assets(metadata):
        metadata["assets"] = json.dumps(["A", "B", "C", "X"])

    with pytest.raises(CheckpointError, match="assets"):
        bm.load_panel_fit(_rewrite(saved, tmp_path / "c.safetensors", None, other_assets))

    def one_column(tensors):
        tensors["data/values"] = tensors["data/values"][:, :1].contiguous()

    with pytest.raises(CheckpointError, match="data/values"):
        bm.load_panel_fit(_rewrite(saved, tmp_path / "d.safetensors", one_column))
    with pytest.raises(CheckpointError, match="does not exist"):
        bm.load_panel_fit(tmp_path / "missing.safetensors")


def test_asset_levels_travel_in_the_checkpoint(frame, tmp_path):
    model = bm.BayesianMoE(experts=["ar"], n_regimes=2, window=WINDOW, asset_levels=True)
    fit = model.fit(frame, panel=True, seed=0, num_steps=10, num_draws=6, progress=False)
    fit.save(tmp_path / "levels.safetensors")
    loaded = bm.load_panel_fit(tmp_path / "levels.safetensors")
    assert loaded.model.asset_levels and "gate/asset_level_loading" in loaded.draws
    pd.testing.assert_frame_equal(
        loaded.forecast(num_samples=300).to_frame(), fit.forecast(num_samples=300).to_frame()
    )
