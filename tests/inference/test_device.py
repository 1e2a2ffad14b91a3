"""A fit's device and dtype: ``fit(..., device=, dtype=)``.

Every tensor the model makes while fitting is made on the device and in the dtype of
the fit. On a CPU-only machine this is checked by watching torch's factory functions
(a call from the package without ``device=`` would put a tensor on the CPU under a GPU
fit) and by the dtype of every sample site and log density of a float32 trace; the
``cuda`` test fits the demo configuration on a GPU where there is one.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from pyro import poutine
from torch.overrides import TorchFunctionMode

import bayes_moe as bm
from bayes_moe.data.placement import as_fit_dtype, place
from bayes_moe.inference import pretrain, svi
from bayes_moe.inference.svi_options import SVIOptions

PACKAGE = Path(bm.__file__).parent
FACTORIES = {
    torch.tensor,
    torch.as_tensor,
    torch.zeros,
    torch.ones,
    torch.full,
    torch.empty,
    torch.arange,
    torch.eye,
    torch.linspace,
    torch.rand,
    torch.randn,
    torch.randint,
    torch.randperm,
}
#: Module construction: parameters are moved with the module (``program.to(device)``).
BUILDING = {"__init__", "build", "_build", "build_panel"}


class FactoryWatch(TorchFunctionMode):
    """Records the package's calls of torch factories that do not name a device."""

    def __init__(self):
        super().__init__()
        self.undeviced: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            copies_a_tensor = func in (torch.tensor, torch.as_tensor) and isinstance(
                args[0] if args else None, torch.Tensor
            )
            caller = self._caller()
            if caller is not None and not copies_a_tensor:
                self.undeviced[caller] += 1
        return func(*args, **kwargs)

    @staticmethod
    def _caller() -> str | None:
        """``file:line`` of the package code that called, None outside it or when building."""
        frame = sys._getframe(2)
        while frame is not None and "/torch/" in frame.f_code.co_filename:
            frame = frame.f_back
        if frame is None or not frame.f_code.co_filename.startswith(str(PACKAGE)):
            return None
        outer = frame
        while outer is not None:
            if outer.f_code.co_name in BUILDING:
                return None
            outer = outer.f_back
        return f"{Path(frame.f_code.co_filename).relative_to(PACKAGE)}:{frame.f_lineno}"


@pytest.fixture()
def watch(monkeypatch):
    """Watch every SVI step (pretraining, the fit, its initialisation) for factories."""
    spy = FactoryWatch()
    step = svi.svi_step

    def watched(*args, **kwargs):
        with spy:
            return step(*args, **kwargs)

    monkeypatch.setattr(svi, "svi_step", watched)
    monkeypatch.setattr(pretrain, "svi_step", watched)
    return spy


@pytest.mark.parametrize(
    "experts, options",
    [
        (["ar", "var", "kalman"], {}),
        (["garch", "volatility", "tcn", "hyena"], {"energy_gate": True}),
        (["macro", "gru"], {"n_regimes": 1}),
    ],
    ids=["default", "feature-neural-energy", "macro-gru"],
)
def test_a_fit_makes_every_tensor_on_its_device(sp500, watch, experts, options):
    model = bm.BayesianMoE(experts=experts, **{"n_regimes": 2, "window": 20, **options})
    fit = model.fit(
        sp500.loc["2016-01-01":"2017-12-29"],
        num_steps=3,
        num_draws=2,
        pretrain_steps=2,
        progress=False,
        dtype="float32",
    )
    assert dict(watch.undeviced) == {}
    assert np.isfinite(fit.diagnostics.losses).all()


def test_a_panel_fit_makes_every_tensor_on_its_device(watch):
    pytest.importorskip("skfolio", reason="pip install 'bayes-moe[panel]'")
    stocks = bm.data.load_sp500_stocks().iloc[-400:, :4]
    model = bm.BayesianMoE(experts=["ar", "cross_sectional", "kalman"], n_regimes=2, window=10)
    fit = model.fit(stocks, panel=True, num_steps=3, num_draws=2, progress=False, dtype="float32")
    assert dict(watch.undeviced) == {}
    assert np.isfinite(fit.diagnostics.losses).all()


def _trace(program, inputs, response, values=None):
    model = program if values is None else poutine.condition(program, data=values)
    trace = poutine.trace(model).get_trace(inputs, response)
    trace.compute_log_prob()
    return trace


def test_float32_model_is_float32_and_agrees_with_float64(sp500):
    """At the same parameter values, the float32 log joint equals the float64 one to ~1e-6."""
    model = bm.BayesianMoE(experts=["ar", "var", "kalman", "garch"], n_regimes=3, window=20)
    data = model.prepare(sp500.loc["2015-01-01":"2018-12-31"])
    inputs, response = (
        data.inputs.at(data.inputs.origins[: data.n_observed]),
        data.observed_response,
    )
    program = model.program().build(inputs)
    reference = _trace(program, inputs, response)  # float64, parameters drawn from the priors
    values = {
        name: site["value"].float()
        for name, site in reference.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    }
    inputs32, response32 = (
        place(inputs, "cpu", torch.float32),
        place(response, "cpu", torch.float32),
    )
    trace32 = _trace(program, inputs32, response32, values)
    for name, site in trace32.nodes.items():
        if site["type"] == "sample":
            assert site["value"].dtype == torch.float32, name
            assert site["log_prob"].dtype == torch.float32, name
    log64, log32 = float(reference.log_prob_sum()), float(trace32.log_prob_sum())
    assert abs(log32 - log64) < 1e-5 * abs(log64)


def test_a_float32_fit_finds_the_float64_posterior(sp500, fit_one_expert, tmp_path):
    """An AR(2) fitted to convergence in either precision: the same posterior.

    The two runs draw different random numbers (torch samples float32 and float64
    differently), so they agree up to the optimisation's noise, within a posterior
    standard deviation (measured over float32 seeds 0-3: 0.42-0.65 sd). The steps are
    what the volatility coefficients need: the volatility features are nearly collinear,
    and after 400 steps those directions had not settled in either precision (float64
    seeds alone differed by up to 0.5 sd, float32 seeds by up to 3 sd).
    """
    frame = sp500.loc["2014-01-01":"2018-12-31"]
    spec = {"name": "ar", "order": 2}
    fit64 = fit_one_expert(frame, spec, window=8, num_steps=1500)
    fit32 = fit_one_expert(frame, spec, window=8, num_steps=1500, dtype=torch.float32)
    assert all(d.dtype == torch.float64 and d.device.type == "cpu" for d in fit32.draws.values())
    for name in ("ar/intercept", "ar/coef", "ar/scale", "ar/vol_coef", "ar/df"):
        gap = (fit32.draws[name].mean(0) - fit64.draws[name].mean(0)).abs()
        assert (gap < fit64.draws[name].std(0)).all(), name
    assert fit32.forecast().std == pytest.approx(fit64.forecast().std, rel=0.05)
    assert (fit32.diagnostics.device, fit32.diagnostics.dtype) == ("cpu", "float32")
    fit32.save(tmp_path / "fit.safetensors")  # where and how it ran travels with the fit
    assert bm.load_fit(tmp_path / "fit.safetensors").diagnostics.to_dict()["dtype"] == "float32"


def test_bad_device_or_dtype_is_refused_before_any_work(sp500, monkeypatch):
    model = bm.BayesianMoE(experts=["ar"], n_regimes=2, window=8)
    frame = sp500.loc["2017-01-01":"2017-12-29"]
    with pytest.raises(ValueError, match=r"dtype must be one of \['float32', 'float64'\]"):
        SVIOptions(dtype=torch.float16)
    with pytest.raises(ValueError, match="device must name a torch device.*'gpu'"):
        model.fit(frame, device="gpu")
    assert SVIOptions(dtype="float32").dtype is torch.float32
    assert as_fit_dtype("torch.float64") is torch.float64
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(svi, "make_guide", lambda *a, **k: pytest.fail("fitting started"))
    with pytest.raises(ValueError, match=r"device='cuda'.*no CUDA device.*device='cpu'"):
        model.fit(frame, device="cuda", progress=False)


def test_place_moves_floating_tensors_and_keeps_the_rest(sp500):
    data = bm.BayesianMoE(experts=["ar"], window=8).prepare(sp500.loc["2017-01-01":"2017-12-29"])
    placed = place(data.inputs, "cpu", torch.float32)
    assert placed.series.dtype == torch.float32 and placed.vol.dtype == torch.float32
    assert placed.origins.dtype == torch.long and placed.origins is data.inputs.origins
    assert placed.columns == data.inputs.columns and data.inputs.series.dtype == torch.float64
    np.testing.assert_allclose(placed.series.numpy(), data.inputs.series.numpy(), rtol=1e-7)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_demo_configuration_fits_on_a_gpu(sp500):
    """The demo's mixture (AR, VAR with NASDAQ, Kalman; 3 regimes, L = 64) on a GPU.

    CUDA draws other random numbers than the CPU under the same seed, so the two fits
    are compared as two runs of one optimisation: the same loss level at the end, the
    same forecast spread; the draws come back to the CPU in float64. (Two CPU fits
    under seeds 0 and 1, the second in float32, differ by 0.1% in the final loss and 9%
    in the forecast sd.)
    """
    frame = sp500.loc["2010-01-01":"2018-12-31"]
    model = bm.BayesianMoE(experts=["ar", "var", "kalman"], n_regimes=3, window=64)
    common = dict(num_steps=300, num_draws=50, seed=0, progress=False, convergence_tol=None)
    on_cpu = model.fit(frame, **common)
    on_gpu = model.fit(frame, **common, device="cuda")
    assert on_gpu.diagnostics.device.startswith("cuda")
    assert all(d.device.type == "cpu" and d.dtype == torch.float64 for d in on_gpu.draws.values())
    end_cpu, end_gpu = (np.mean(f.diagnostics.losses[-30:]) for f in (on_cpu, on_gpu))
    assert end_gpu == pytest.approx(end_cpu, rel=0.02)
    assert on_gpu.forecast().std == pytest.approx(on_cpu.forecast().std, rel=0.25)
    regimes = on_gpu.regimes().filtered
    np.testing.assert_allclose(regimes.sum(axis=1), 1.0, atol=1e-9)
