"""Checkpoints: exact round trip, clear errors for bad files, atomic writes, no pickle."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import bayes_moe as bm
from bayes_moe.inference import checkpoint


@pytest.fixture(scope="module")
def saved(small_fit, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "fit.safetensors"
    small_fit.save(path)
    return path


def test_round_trip_reproduces_forecasts_and_regimes(small_fit, saved):
    loaded = bm.load_fit(saved)
    assert loaded.model.config() == small_fit.model.config()
    for name, value in small_fit.draws.items():
        torch.testing.assert_close(loaded.draws[name], value, rtol=0, atol=0)
    a, b = small_fit.forecast(num_samples=500, seed=3), loaded.forecast(num_samples=500, seed=3)
    # equal up to rounding: the CPU's vector kernels may differ by 1 ulp from run to run
    np.testing.assert_allclose(a.samples, b.samples, rtol=1e-13, atol=1e-13)
    assert a.log_prob(0.5) == pytest.approx(b.log_prob(0.5), rel=1e-12)
    np.testing.assert_allclose(
        small_fit.regimes().filtered.to_numpy(), loaded.regimes().filtered.to_numpy(), rtol=1e-12
    )
    np.testing.assert_array_equal(small_fit.diagnostics.losses, loaded.diagnostics.losses)


def test_round_trip_of_a_gate_reading_a_column_with_gaps(sp500, tmp_path):
    # The VIX (from 2014 in the embedded data) drives the switches with gaps before it
    # starts; the loaded fit reads it the same way, on its data and on newer rows.
    frame = bm.data.add_vix(sp500).loc["2013-07-01":"2014-09-30"]
    gate = bm.MarkovGate(2, transition_features=["log_rv_22", "vix"])
    model = bm.BayesianMoE(experts=["ar"], window=8, gate=gate)
    fit = model.fit(frame.iloc[:-40], num_steps=5, num_draws=4, progress=False)
    assert fit.data.preprocessor.optional == ("vix",)
    path = tmp_path / "vix.safetensors"
    fit.save(path)
    loaded = bm.load_fit(path)
    assert loaded.model.gate.transition_features == ("log_rv_22", "vix")
    np.testing.assert_allclose(
        loaded.regimes().filtered.to_numpy(), fit.regimes().filtered.to_numpy(), rtol=1e-12
    )
    newer_a, newer_b = fit.update(frame), loaded.update(frame)
    a, b = newer_a.forecast(num_samples=50, seed=1), newer_b.forecast(num_samples=50, seed=1)
    np.testing.assert_array_equal(a.samples, b.samples)


def test_missing_file(tmp_path):
    with pytest.raises(bm.CheckpointError, match="does not exist"):
        bm.load_fit(tmp_path / "nothing.safetensors")


def test_malformed_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x00\x01 this is not a safetensors file at all")
    with pytest.raises(bm.CheckpointError, match="not a bayes-moe checkpoint"):
        bm.load_fit(path)


def test_pickle_file_is_rejected_without_unpickling(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(3)}, path)  # a pickle-based torch file
    with pytest.raises(bm.CheckpointError, match="not a bayes-moe checkpoint"):
        bm.load_fit(path)


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(bm.CheckpointError, match="not a bayes-moe checkpoint.*'pt'"):
        bm.load_fit(path)


def _rewrite(saved, tmp_path, *, metadata=None, drop=()):
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(saved), framework="pt") as handle:
        meta = dict(handle.metadata())
    tensors = {k: v for k, v in load_file(str(saved)).items() if k not in drop}
    meta.update(metadata or {})
    path = tmp_path / "edited.safetensors"
    save_file(tensors, str(path), metadata=meta)
    return path


def test_unsupported_version(saved, tmp_path):
    path = _rewrite(saved, tmp_path, metadata={"format_version": "99"})
    with pytest.raises(bm.CheckpointError, match="version 99"):
        bm.load_fit(path)


def test_version_1_checkpoints_load_as_gates_without_levels(sp500, tmp_path):
    # Format 1 (before regime volatility levels and input-output transitions) wrote gate
    # configurations without those keys; such a file must load as the model it was: a
    # homogeneous chain whose regimes differ only in their expert weights.
    model = bm.BayesianMoE(
        experts=["ar"],
        window=8,
        gate=bm.MarkovGate(2, volatility_levels=False, transition_features=(), stickiness=10.0),
    )
    fit = model.fit(sp500.iloc[-300:], num_steps=5, num_draws=4, progress=False)
    path = tmp_path / "new.safetensors"
    fit.save(path)
    config = fit.model.config()
    old_gate = {
        k: config["gate"][k]
        for k in (
            "n_regimes",
            "stickiness",
            "concentration",
            "input_dependent",
            "assignment",
            "horizon_strength",
        )
    }
    config["gate"] = old_gate
    old = _rewrite(path, tmp_path, metadata={"format_version": "1", "model": json.dumps(config)})
    loaded = bm.load_fit(old)
    assert not loaded.model.gate.volatility_levels and loaded.model.gate.transition_features == ()
    np.testing.assert_allclose(
        loaded.regimes().filtered.to_numpy(), fit.regimes().filtered.to_numpy(), rtol=1e-12
    )
    a, b = fit.forecast(num_samples=100, seed=1), loaded.forecast(num_samples=100, seed=1)
    np.testing.assert_array_equal(a.samples, b.samples)


def test_missing_pieces_are_named(saved, tmp_path):
    path = _rewrite(saved, tmp_path, drop=("data/values",))
    with pytest.raises(bm.CheckpointError, match="malformed.*data/values"):
        bm.load_fit(path)
    path = _rewrite(saved, tmp_path, metadata={"model": json.dumps({"experts": 3})})
    with pytest.raises(bm.CheckpointError, match="malformed"):
        bm.load_fit(path)


def test_failed_write_leaves_the_old_file_intact(small_fit, saved, tmp_path, monkeypatch):
    path = tmp_path / "fit.safetensors"
    path.write_bytes(saved.read_bytes())
    before = path.read_bytes()

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        small_fit.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.safetensors"]
