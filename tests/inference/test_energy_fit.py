"""The energy of a fitted mixture: ``fit.energy()``, the InferenceData group, checkpoints.

Real S&P 500 data, briefly fitted (these are bookkeeping properties of the fitted
object, not of convergence): the frame is the posterior mean and spread of the draws
that :attr:`MoEFit.energy_draws` holds, its parts add up, the ``energy`` group of the
InferenceData holds the same numbers, and a checkpoint keeps the energy gate.
"""

import numpy as np
import pytest

import bayes_moe as bm
from bayes_moe.inference.arviz import group_names


@pytest.fixture(scope="module")
def energy_fit(sp500):
    # ar is light (class 0), gru medium (class 1): the tilt moves weight between them
    model = bm.BayesianMoE(experts=["ar", "gru"], n_regimes=2, window=16, energy_gate=True)
    frame = sp500.iloc[-500:]
    return model.fit(frame, target="ret", num_steps=60, num_draws=20, seed=0, progress=False)


def test_energy_frame_is_the_mean_and_spread_of_the_draws(energy_fit):
    table = energy_fit.energy()
    draws = energy_fit.energy_draws
    assert table.index.equals(energy_fit.data.origin_dates)
    np.testing.assert_allclose(table["energy"], draws.total.mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(
        table["regime_entropy_sd"], draws.regime.std(0, correction=0).numpy(), rtol=1e-12
    )
    # E = H[predictive] + H[regime], draw by draw, so also in the mean
    np.testing.assert_allclose(
        table["energy"], table["predictive_entropy"] + table["regime_entropy"], rtol=1e-10
    )
    assert (table["regime_entropy"] >= 0).all() and (table["regime_entropy"] <= np.log(2)).all()
    assert ((table["heavy_weight"] > 0) & (table["heavy_weight"] < 1)).all()
    # the shift to data units is log of the response scale
    assert table.attrs["predictive_entropy_shift"] == pytest.approx(
        np.log(energy_fit.data.preprocessor.target_scale[0])
    )


def test_inference_data_carries_the_energy_group(energy_fit):
    idata = energy_fit.to_inference_data()
    group = idata["energy"]
    table = energy_fit.energy()
    np.testing.assert_allclose(group["energy_mean"].values, table["energy"].values, rtol=1e-10)
    # the gate's fitted beta and tau are ordinary posterior variables
    beta = idata["posterior"]["energy.beta"].values.ravel()
    np.testing.assert_allclose(beta, energy_fit.draws["energy/beta"].numpy().ravel())
    assert "energy.tau" in idata["posterior"]


def test_checkpoint_keeps_the_energy_gate(energy_fit, tmp_path):
    energy_fit.save(tmp_path / "fit")
    loaded = bm.MoEFit.load(tmp_path / "fit")
    assert loaded.model.config()["energy_gate"] == energy_fit.model.config()["energy_gate"]
    np.testing.assert_allclose(
        loaded.energy()["energy"].values, energy_fit.energy()["energy"].values, rtol=1e-6
    )


def test_plain_fit_has_an_energy_too(small_fit):
    """Without an energy gate the energy is still defined (untilted mixture); one class
    of experts means the heavy class is all of them."""
    table = small_fit.energy()
    assert len(table) == len(small_fit.data.origin_dates)
    np.testing.assert_allclose(table["heavy_weight"], 1.0, rtol=1e-12)
    assert "energy" not in group_names(small_fit.to_inference_data(keep_draws=5))
