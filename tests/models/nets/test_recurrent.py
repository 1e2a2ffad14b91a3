"""Recurrent trunks: GRU equals torch.nn.GRU; the scan form equals the step-by-step recurrence.

Oracles: ``torch.nn.GRU`` on the same weights; the step-by-step loop of each linear
recurrence; the closed-form parameter counts; a Python loop of ``functional_call``
for the vmapped evaluation of weight draws; unperturbed inputs for causality.
"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call, vmap

from bayes_moe.models.nets.recurrent import (
    GRU,
    GRU_MODES,
    MODES,
    RECURRENT_TRUNKS,
    SRU,
    MinimalRNN,
    linear_recurrence,
)

VARIANTS = [
    pytest.param(GRU, {}, id="gru"),
    pytest.param(GRU, {"hidden": 8, "layers": 2}, id="gru-2-layers"),
    pytest.param(MinimalRNN, {}, id="minimalrnn"),
    pytest.param(MinimalRNN, {"hidden": 8, "layers": 1}, id="minimalrnn-1-layer"),
    pytest.param(SRU, {}, id="sru"),
    pytest.param(SRU, {"hidden": 8, "layers": 3}, id="sru-3-layers"),
]
# The other evaluation of each trunk: the step-by-step GRU, the scan of the others.
OTHER_MODES = [
    pytest.param(GRU, {"hidden": 8, "layers": 2, "mode": "loop"}, id="gru-loop"),
    pytest.param(MinimalRNN, {"hidden": 8, "mode": "scan"}, id="minimalrnn-scan"),
    pytest.param(SRU, {"hidden": 8, "layers": 3, "mode": "scan"}, id="sru-scan"),
]


def test_registry():
    assert RECURRENT_TRUNKS == {"gru": GRU, "minimalrnn": MinimalRNN, "sru": SRU}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layers", [1, 2])
def test_gru_loop_equals_torch_gru_on_the_same_weights(dtype, layers):
    torch.manual_seed(0)
    trunk = GRU(3, hidden=16, layers=layers).to(dtype)
    reference = torch.nn.GRU(3, 16, layers, batch_first=True).to(dtype)
    reference.load_state_dict({k[len("cell.") :]: v for k, v in trunk.state_dict().items()})
    x = torch.randn(7, 41, 3, dtype=dtype)
    expected = reference(x)[0]
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(trunk(x, mode="loop"), expected, rtol=tol, atol=tol)
    torch.testing.assert_close(trunk(x), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("cls", [MinimalRNN, SRU])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("length", [1, 2, 64, 257])
def test_scan_form_equals_step_by_step_recurrence(cls, dtype, tol, length):
    torch.manual_seed(length)
    trunk = cls(2, hidden=12).to(dtype)
    x = 2 * torch.randn(5, length, 2, dtype=dtype)
    torch.testing.assert_close(trunk(x, mode="scan"), trunk(x, mode="loop"), rtol=tol, atol=tol)


def test_linear_recurrence_by_hand():
    # c_1 = b_1, c_2 = a_2 b_1 + b_2, c_3 = a_3 (a_2 b_1 + b_2) + b_3.
    a = torch.tensor([[[0.5], [0.2], [-1.0]]], dtype=torch.float64)
    b = torch.tensor([[[1.0], [2.0], [3.0]]], dtype=torch.float64)
    expected = torch.tensor([[[1.0], [0.2 + 2.0], [-(2.2) + 3.0]]], dtype=torch.float64)
    for mode in ("scan", "loop"):
        torch.testing.assert_close(linear_recurrence(a, b, mode), expected)
    with pytest.raises(ValueError, match="mode must be one of"):
        linear_recurrence(a, b, "fast")


def test_minimalrnn_is_an_input_gated_exponential_average():
    # One layer, H = 1, weights set by hand: h_t = f h_{t-1} + (1 - f) tanh(u).
    trunk = MinimalRNN(1, hidden=1, layers=1).double()
    with torch.no_grad():
        trunk.projections[0].weight.copy_(torch.tensor([[1.0], [0.0]]))
        trunk.projections[0].bias.copy_(torch.tensor([0.0, 2.0]))
    x = torch.tensor([[[0.3], [-0.7], [1.1]]], dtype=torch.float64)
    f = torch.sigmoid(torch.tensor(2.0, dtype=torch.float64))
    h, expected = torch.zeros((), dtype=torch.float64), []
    for value in x[0, :, 0]:
        h = f * h + (1 - f) * torch.tanh(value)
        expected.append(h)
    torch.testing.assert_close(trunk(x)[0, :, 0], torch.stack(expected))


@pytest.mark.parametrize(("cls", "options"), VARIANTS)
@pytest.mark.parametrize("in_channels", [1, 4])
def test_parameter_count_matches_the_formula(cls, options, in_channels):
    trunk = cls(in_channels, **options)
    assert sum(p.numel() for p in trunk.parameters()) == cls.n_params(in_channels, **options)
    assert cls.n_params(in_channels, **options) < 40_000
    assert trunk.out_features == options.get("hidden", 32)
    assert trunk.receptive_field is None


@pytest.mark.parametrize(("cls", "options"), VARIANTS + OTHER_MODES)
def test_config_rebuilds_the_same_trunk(cls, options):
    torch.manual_seed(1)
    trunk = cls(2, **options)
    rebuilt = cls(2, **json.loads(json.dumps(trunk.config())))
    rebuilt.load_state_dict(trunk.state_dict())
    x = torch.randn(3, 9, 2)
    torch.testing.assert_close(rebuilt(x), trunk(x), rtol=0, atol=0)


@pytest.mark.parametrize(("cls", "options"), VARIANTS + OTHER_MODES)
def test_causal(cls, options):
    # Perturbing step t0 leaves every earlier state exactly unchanged and moves a later one.
    torch.manual_seed(2)
    trunk = cls(2, **options).double()
    x = torch.randn(4, 30, 2, dtype=torch.float64)
    t0 = 17
    moved = x.clone()
    moved[:, t0] += 1.0
    before, after = trunk(x), trunk(moved)
    assert torch.equal(before[:, :t0], after[:, :t0])
    assert (before[:, t0:] - after[:, t0:]).abs().max() > 1e-6


@pytest.mark.parametrize(("cls", "options"), VARIANTS + OTHER_MODES)
def test_vmap_over_weight_draws_equals_a_loop(cls, options):
    torch.manual_seed(3)
    trunk = cls(2, **options).double()
    x = torch.randn(4, 12, 2, dtype=torch.float64)
    draws = {
        name: torch.stack([p + 0.1 * torch.randn_like(p) for _ in range(3)])
        for name, p in trunk.named_parameters()
    }
    batched = vmap(lambda w: functional_call(trunk, w, (x,)))(draws)
    for s in range(3):
        single = functional_call(trunk, {k: v[s] for k, v in draws.items()}, (x,))
        torch.testing.assert_close(batched[s], single, rtol=1e-10, atol=1e-10)


def test_bad_options():
    with pytest.raises(ValueError, match="hidden must be an integer >= 1"):
        GRU(1, hidden=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        SRU(1, mode="fused")
    with pytest.raises(TypeError):
        MinimalRNN(1, kernel_size=3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gru_under_vmap_over_inputs_equals_torch_gru(dtype):
    # Batched inputs with fixed weights: the fused kernel cannot run under vmap, the loop does.
    torch.manual_seed(4)
    trunk = GRU(2, hidden=8).to(dtype)
    reference = torch.nn.GRU(2, 8, batch_first=True).to(dtype)
    reference.load_state_dict({k[len("cell.") :]: v for k, v in trunk.state_dict().items()})
    x = torch.randn(3, 4, 10, 2, dtype=dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    expected = torch.stack([reference(x[s])[0] for s in range(3)])
    torch.testing.assert_close(vmap(trunk)(x), expected, rtol=tol, atol=tol)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 4),
    length=st.integers(1, 70),
    width=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_linear_recurrence_scan_and_loop_equal_the_closed_form(n, length, width, seed):
    # c_t = sum_{s <= t} (prod_{s < u <= t} a_u) b_s, with a in (-1.2, 1.2).
    gen = torch.Generator().manual_seed(seed)
    a = 2.4 * torch.rand(n, length, width, generator=gen, dtype=torch.float64) - 1.2
    b = torch.randn(n, length, width, generator=gen, dtype=torch.float64)
    expected = torch.zeros_like(b)
    for t in range(length):
        for s in range(t + 1):
            expected[:, t] += a[:, s + 1 : t + 1].prod(dim=1) * b[:, s]
    for mode in ("scan", "loop"):
        torch.testing.assert_close(linear_recurrence(a, b, mode), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_recurrence_scan_equals_loop_on_a_long_window(dtype):
    torch.manual_seed(5)
    a = torch.rand(6, 257, 5, dtype=dtype)
    b = torch.randn(6, 257, 5, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(
        linear_recurrence(a, b, "scan"), linear_recurrence(a, b, "loop"), rtol=tol, atol=tol
    )


@pytest.mark.parametrize("mode", ["loop", "scan"])
def test_sru_equations_by_hand(mode):
    # One layer, c = H = 1 (identity highway): u = w x, f = sigmoid(b_f), r = sigmoid(b_r),
    # c_t = f c_{t-1} + (1 - f) u_t, h_t = r tanh(c_t) + (1 - r) x_t.
    trunk = SRU(1, hidden=1, layers=1).double()
    assert isinstance(trunk.highways[0], torch.nn.Identity)
    with torch.no_grad():
        trunk.inputs[0].weight.fill_(1.5)
        trunk.gates[0].weight.zero_()
        trunk.gates[0].bias.copy_(torch.tensor([0.7, -0.4]))
    x = torch.tensor([[[0.3], [-0.7], [1.1], [0.2]]], dtype=torch.float64)
    f, r = torch.sigmoid(torch.tensor([0.7, -0.4], dtype=torch.float64))
    c, expected = torch.zeros((), dtype=torch.float64), []
    for value in x[0, :, 0]:
        c = f * c + (1 - f) * 1.5 * value
        expected.append(r * torch.tanh(c) + (1 - r) * value)
    torch.testing.assert_close(trunk(x, mode=mode)[0, :, 0], torch.stack(expected))


def test_sru_projects_the_highway_only_when_widths_differ():
    trunk = SRU(3, hidden=8, layers=2)
    assert isinstance(trunk.highways[0], torch.nn.Linear)
    assert trunk.highways[0].weight.shape == (8, 3) and trunk.highways[0].bias is None
    assert isinstance(trunk.highways[1], torch.nn.Identity)
    assert isinstance(SRU(8, hidden=8).highways[0], torch.nn.Identity)


@pytest.mark.parametrize("cls", [GRU, MinimalRNN, SRU])
def test_forward_sequential_is_the_loop(cls):
    torch.manual_seed(6)
    trunk = cls(2, hidden=8)
    x = torch.randn(3, 20, 2)
    torch.testing.assert_close(trunk.forward_sequential(x), trunk(x, mode="loop"), rtol=0, atol=0)
    assert trunk(x).shape == (3, 20, 8)
    assert trunk.mode == ("fused" if cls is GRU else "loop")
    with pytest.raises(ValueError, match="mode must be one of"):
        trunk(x, mode="parallel")


def test_gradients_reach_every_parameter_in_both_modes():
    torch.manual_seed(7)
    x = torch.randn(4, 16, 3)
    for cls, modes in ((GRU, GRU_MODES), (MinimalRNN, MODES), (SRU, MODES)):
        trunk = cls(3, hidden=8, layers=2)
        grads = []
        for mode in modes:
            trunk.zero_grad()
            trunk(x, mode=mode)[:, -1].square().sum().backward()
            grads.append({k: p.grad.clone() for k, p in trunk.named_parameters()})
            assert all(g.abs().sum() > 0 for g in grads[-1].values())
        for name, g in grads[0].items():
            torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-5)
