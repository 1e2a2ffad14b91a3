"""The Mamba trunk and its selective scan against closed forms and their own properties.

Oracles: the selective scan summed term by term from its documented equation; the
exact solution of the continuous system :math:`\\dot h = A h + B u` (closed form for a
constant input, the matrix exponential of the augmented system for a piecewise-constant
one); the step-by-step recursion for the parallel scan; a Python loop of
``functional_call`` for ``vmap``; closed-form parameter counts against ``sum(p.numel())``.
Properties: causality (a perturbation at step ``t0`` leaves every earlier output bit for
bit unchanged, in both modes), the paper's initialisation, memory linear in ``L``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from bayes_moe.models.nets.ssm import (
    MODES,
    SSM_TRUNKS,
    Mamba,
    selective_scan,
    zoh_discretize,
)

DT = torch.float64


def _kernel_inputs(n, length, channels, states, dtype=DT, seed=0):
    """Random inputs of :func:`selective_scan`: x, delta, A, B, C, D."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, length, channels, generator=gen, dtype=dtype)
    delta = 0.001 + 0.5 * torch.rand(n, length, channels, generator=gen, dtype=dtype)
    A = -torch.exp(torch.randn(channels, states, generator=gen, dtype=dtype))
    B = torch.randn(n, length, states, generator=gen, dtype=dtype)
    C = torch.randn(n, length, states, generator=gen, dtype=dtype)
    D = torch.randn(channels, generator=gen, dtype=dtype)
    return x, delta, A, B, C, D


def _make(options=None, in_channels=2, dtype=DT, seed=0):
    torch.manual_seed(seed)
    return Mamba(in_channels, **(options or {})).to(dtype)


# ---------------------------------------------------------------------- the kernel


@pytest.mark.parametrize("mode", MODES)
def test_selective_scan_equals_the_equation_summed_term_by_term(mode):
    # y_t = sum_s C_ts h_tds + D_d x_td with
    # h_t = sum_{u <= t} prod_{u < v <= t} exp(delta_v A) (exp(delta_u A) - 1) / A B_u x_u.
    x, delta, A, B, C, D = _kernel_inputs(2, 9, 3, 4)
    n, length, channels = x.shape
    expected = torch.zeros_like(x)
    for i in range(n):
        for t in range(length):
            h = torch.zeros_like(A)
            for u in range(t + 1):
                decay = torch.ones_like(A)
                for v in range(u + 1, t + 1):
                    decay = decay * torch.exp(delta[i, v, :, None] * A)
                gain = (torch.exp(delta[i, u, :, None] * A) - 1) / A
                h = h + decay * gain * B[i, u] * x[i, u, :, None]
            expected[i, t] = h @ C[i, t] + D * x[i, t]
    torch.testing.assert_close(
        selective_scan(x, delta, A, B, C, D, mode), expected, rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("length", [1, 7, 64, 257])
def test_parallel_scan_equals_the_sequential_recurrence(dtype, tol, length):
    inputs = _kernel_inputs(3, length, 5, 8, dtype=dtype, seed=length)
    scan = selective_scan(*inputs, mode="scan")
    loop = selective_scan(*inputs, mode="loop")
    assert scan.dtype == dtype and scan.shape == (3, length, 5)
    torch.testing.assert_close(scan, loop, rtol=tol, atol=tol)


@pytest.mark.parametrize("mode", MODES)
def test_selective_scan_is_causal(mode):
    # The scan's reduction tree depends on shapes only, so earlier outputs are bit-identical.
    x, delta, A, B, C, D = _kernel_inputs(2, 37, 3, 4, dtype=torch.float32)
    t0 = 20
    before = selective_scan(x, delta, A, B, C, D, mode)
    for name in ("x", "delta", "B", "C"):
        moved = dict(x=x, delta=delta, B=B, C=C)
        moved[name] = moved[name].clone()
        moved[name][:, t0] += 0.5
        after = selective_scan(moved["x"], moved["delta"], A, moved["B"], moved["C"], D, mode)
        assert torch.equal(before[:, :t0], after[:, :t0]), name
        assert (before[:, t0:] - after[:, t0:]).abs().max() > 1e-3, name


def test_bad_mode():
    with pytest.raises(ValueError, match="mode must be one of"):
        selective_scan(*_kernel_inputs(1, 3, 2, 2), mode="parallel")


# ------------------------------------------------------- zero-order hold vs the ODE


@pytest.mark.parametrize("mode", MODES)
def test_constant_input_reproduces_the_exact_ode_solution(mode):
    # dh/dt = A h + B u, h(0) = 0, u constant: h(t) = (exp(A t) - 1) / A B u, sampled at
    # t = k delta. One state per channel (S = 1), C = 1 and D = 0, so y reads h.
    delta, u, b = 0.3, 0.8, 1.7
    A = torch.tensor([[-0.05], [-1.0], [-2.0], [-7.5]], dtype=DT)
    length = 50
    x = torch.full((1, length, 4), u, dtype=DT)
    steps = torch.full((1, length, 4), delta, dtype=DT)
    B = torch.full((1, length, 1), b, dtype=DT)
    C = torch.ones(1, length, 1, dtype=DT)
    y = selective_scan(x, steps, A, B, C, torch.zeros(4, dtype=DT), mode)[0]
    t = delta * torch.arange(1, length + 1, dtype=DT)[:, None]
    exact = torch.expm1(A[:, 0] * t) / A[:, 0] * b * u
    torch.testing.assert_close(y, exact, rtol=0, atol=1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_piecewise_constant_input_matches_the_matrix_exponential(mode):
    # Over step k the input is held at u_k: [h; 1]' = [[A, B u_k], [0, 0]] [h; 1], so
    # [h_k; 1] = expm(delta M_k) [h_{k-1}; 1] exactly (Van Loan), with no use of A being
    # diagonal. Several states per channel: batch row s reads state s (C = e_s).
    gen = torch.Generator().manual_seed(3)
    length, channels, states, delta = 30, 2, 3, 0.2
    A = -torch.tensor([[0.5, 1.0, 3.0], [0.1, 2.0, 6.0]], dtype=DT)
    b = torch.tensor([0.7, -1.2, 2.0], dtype=DT)
    u = torch.randn(length, channels, generator=gen, dtype=DT)
    x = u.expand(states, length, channels)
    steps = torch.full((states, length, channels), delta, dtype=DT)
    B = b.expand(states, length, states)
    C = torch.eye(states, dtype=DT)[:, None, :].expand(states, length, states)
    y = selective_scan(x, steps, A, B, C, torch.zeros(channels, dtype=DT), mode)
    for d in range(channels):
        h = torch.zeros(states + 1, dtype=DT)
        h[-1] = 1.0
        for k in range(length):
            M = torch.zeros(states + 1, states + 1, dtype=DT)
            M[:states, :states] = torch.diag(A[d])
            M[:states, -1] = b * u[k, d]
            h = torch.linalg.matrix_exp(delta * M) @ h
            torch.testing.assert_close(y[:, k, d], h[:states], rtol=0, atol=1e-10)


def test_zoh_differs_from_the_euler_step_the_reference_code_uses():
    # The ODE tests above can tell the two apart: Delta B is off by far more than 1e-10.
    delta = torch.tensor([0.3], dtype=DT)
    A = torch.tensor([[-2.0]], dtype=DT)
    one = torch.ones(1, dtype=DT)
    a, b = zoh_discretize(delta, A, one, one)
    torch.testing.assert_close(a, torch.exp(-0.6 * one)[:, None])
    torch.testing.assert_close(b, ((1 - math.exp(-0.6)) / 2.0 * one)[:, None])
    assert (b - delta).abs().item() > 1e-2


# ---------------------------------------------------------------------- the trunk


def test_registry_and_contract_attributes():
    assert SSM_TRUNKS == {"mamba": Mamba}
    assert Mamba.causal == "masked" and Mamba.window_dependent is False
    trunk = Mamba(1)
    assert trunk.out_features == 16 and trunk.receptive_field is None
    assert trunk.mode == "loop" and trunk.inner == 32 and trunk.d_state == 8


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"layers": 2},
        {"d_model": 8, "d_state": 3, "expand": 3, "d_conv": 2, "dt_rank": 4, "layers": 3},
        {"d_model": 40},  # dt_rank = ceil(40 / 16) = 3
    ],
)
@pytest.mark.parametrize("in_channels", [1, 4])
def test_parameter_count_matches_the_formula(options, in_channels):
    trunk = Mamba(in_channels, **options)
    assert sum(p.numel() for p in trunk.parameters()) == Mamba.n_params(in_channels, **options)
    assert Mamba.n_params(1, **options) < 40_000
    y = trunk(torch.randn(2, 6, in_channels))
    assert y.shape == (2, 6, trunk.out_features) and y.dtype == torch.float32
    # Every parameter is used: the gradient reaches each one.
    y.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trunk.parameters())


def test_default_size():
    assert Mamba.n_params(1) == 2656
    assert Mamba(40).dt_rank == 1 and Mamba(1, d_model=40).dt_rank == 3


def test_initialisation_follows_the_paper():
    dt_min, dt_max = 0.002, 0.05
    trunk = _make({"layers": 2, "dt_min": dt_min, "dt_max": dt_max}, dtype=torch.float32)
    for block in trunk.blocks:
        # S4D-real: A_n = -(n + 1) in every channel; skip D = 1; gains 1 + 0.
        A = -torch.exp(block.A_log)
        torch.testing.assert_close(A, -torch.arange(1.0, 9.0).expand(32, 8))
        assert torch.equal(block.D, torch.ones(32)) and torch.equal(block.norm, torch.zeros(16))
        # The step-size bias is the inverse softplus of a step in [dt_min, dt_max].
        dt = F.softplus(block.dt_proj.bias)
        assert dt.min() >= dt_min * (1 - 1e-5) and dt.max() <= dt_max * (1 + 1e-5)
        assert dt.max() / dt.min() > 2  # spread log-uniformly, not a constant
        assert block.dt_proj.weight.abs().max() <= 1.0  # uniform in +-R^{-1/2}, R = 1
    assert torch.equal(trunk.norm, torch.zeros(16))


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("length", [1, 7, 64, 257])
def test_trunk_scan_equals_loop(dtype, tol, length):
    trunk = _make({"layers": 2, "d_state": 4}, dtype=dtype, seed=length)
    x = torch.randn(3, length, 2, dtype=dtype)
    torch.testing.assert_close(trunk(x, mode="scan"), trunk(x, mode="loop"), rtol=tol, atol=tol)
    torch.testing.assert_close(trunk.forward_sequential(x), trunk(x), rtol=0, atol=0)


@pytest.mark.parametrize("mode", MODES)
def test_trunk_is_causal(mode):
    # Perturbing step t0 leaves every earlier state bit-identical and moves a later one.
    trunk = _make({"layers": 2, "mode": mode})
    x = torch.randn(4, 30, 2, dtype=DT)
    t0 = 17
    moved = x.clone()
    moved[:, t0] += 1.0
    before, after = trunk(x), trunk(moved)
    assert torch.equal(before[:, :t0], after[:, :t0])
    assert (before[:, t0:] - after[:, t0:]).abs().max() > 1e-6
    assert (before[:, -1] - after[:, -1]).abs().max() > 1e-6  # reaches the last state


@pytest.mark.parametrize("mode", MODES)
def test_vmap_over_weight_draws_equals_a_loop(mode):
    trunk = _make({"layers": 2, "d_state": 4, "mode": mode}, seed=3)
    x = torch.randn(4, 12, 2, dtype=DT)
    draws = {
        name: torch.stack([p + 0.1 * torch.randn_like(p) for _ in range(3)])
        for name, p in trunk.named_parameters()
    }
    batched = vmap(lambda w: functional_call(trunk, w, (x,)))(draws)
    for s in range(3):
        single = functional_call(trunk, {k: v[s] for k, v in draws.items()}, (x,))
        torch.testing.assert_close(batched[s], single, rtol=1e-10, atol=1e-10)


def test_chunked_evaluation_equals_one_pass(monkeypatch):
    from bayes_moe.models.nets import ssm

    trunk = _make({"d_state": 2})
    x = torch.randn(7, 10, 2, dtype=DT)
    whole = trunk(x)
    # 2 windows per chunk: 10 steps x 32 channels x 2 states x 2 windows.
    monkeypatch.setattr(ssm, "CHUNK_STATE_ELEMENTS", 10 * 32 * 2 * 2)
    # Equal up to rounding: matrix products may block differently for 2 and 7 rows.
    torch.testing.assert_close(trunk(x), whole, rtol=1e-13, atol=1e-13)


def test_gradients_of_scan_and_loop_agree():
    trunk = _make({"layers": 2, "d_state": 4})
    x = torch.randn(3, 20, 2, dtype=DT)
    grads = []
    for mode in MODES:
        trunk.zero_grad()
        trunk(x, mode=mode)[:, -1].square().sum().backward()
        grads.append({k: p.grad.clone() for k, p in trunk.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_memory_saved_for_backward_is_linear_in_length(mode):
    # Elements autograd keeps for the backward at L, 2L, 4L: ratio 2 (linear, not L log L
    # or L^2), so the cost in L is linear.
    trunk = _make({"d_state": 4}, dtype=torch.float32)

    def saved(length):
        total = []

        def pack(t):
            total.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            trunk(torch.randn(2, length, 2), mode=mode)
        return sum(total)

    counts = [saved(length) for length in (64, 128, 256)]
    for small, large in zip(counts, counts[1:]):
        assert 1.9 < large / small < 2.1


def test_config_rebuilds_the_same_trunk():
    trunk = _make({"d_model": 8, "d_state": 3, "layers": 2, "mode": "scan", "dt_min": 0.01})
    rebuilt = Mamba(2, **json.loads(json.dumps(trunk.config()))).to(DT)
    rebuilt.load_state_dict(trunk.state_dict())
    x = torch.randn(3, 9, 2, dtype=DT)
    torch.testing.assert_close(rebuilt(x), trunk(x), rtol=0, atol=0)
    assert rebuilt.config() == trunk.config()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"d_model": 0}, "d_model must be an integer >= 1"),
        ({"d_state": 2.5}, "d_state must be an integer >= 1"),
        ({"expand": 0}, "expand must be an integer >= 1"),
        ({"d_conv": -1}, "d_conv must be an integer >= 1"),
        ({"dt_rank": 0}, "dt_rank must be an integer >= 1"),
        ({"layers": True}, "layers must be an integer >= 1"),
        ({"dt_min": 0.0}, "dt_min must be a positive number"),
        ({"dt_max": float("inf")}, "dt_max must be finite"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min must be <= dt_max"),
        ({"mode": "fused"}, "mode must be one of"),
    ],
)
def test_bad_options_raise_naming_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        Mamba(1, **options)


def test_bad_in_channels_unknown_options_and_forward_mode():
    with pytest.raises(ValueError, match="in_channels must be an integer >= 1"):
        Mamba(0)
    with pytest.raises(TypeError):
        Mamba(1, hidden=8)
    with pytest.raises(ValueError, match="mode must be one of"):
        Mamba(1)(torch.randn(1, 3, 1), mode="fast")
