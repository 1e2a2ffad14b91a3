"""The frequency-domain trunks (TimesNet's learned filter, Hyena) against references.

Oracles: the DFT summed as an explicit complex matrix product (no ``torch.fft``); a
circular convolution summed lag by lag with the impulse response from ``numpy.fft``;
the causal convolution as an ``L x L`` Toeplitz product (:func:`causal_direct_conv`)
and summed by hand; the whole Hyena trunk recomputed from its equations with loops
over time in float64; a Python loop of ``functional_call`` for ``vmap``; closed-form
parameter counts. Properties: an identity filter returns its input; a filter trained
on a SYNTHETIC mixture isolates the planted period; causality up to FFT rounding, with
the unpadded circular convolution as the negative control; every window step reaches
TimesNet's state; cost ``O(L log L)`` proven by counting, not timing: the largest
tensor any operation creates (forward and backward) grows linearly in ``L`` (the
detector sees the ``L x L`` tensor of the direct convolution), FlopCounterMode's FLOPs
of the dense parts double with ``L``, and the FFTs, which FlopCounterMode does not
count, are a fixed number of transforms of length ``2L``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call, vmap
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from bayes_moe.models.nets import spectral
from bayes_moe.models.nets.spectral import (
    DECAY_TARGET,
    FAST_DECAY,
    SLOW_DECAY,
    SPECTRAL_TRUNKS,
    Hyena,
    TimesNet,
    causal_direct_conv,
    causal_fft_conv,
    spectral_filter,
)

DT = torch.float64

VARIANTS = [
    pytest.param(TimesNet, {"length": 24}, id="timesnet"),
    pytest.param(
        TimesNet,
        {"length": 15, "channels": 3, "steps": 15, "hidden": 8, "layers": 1, "activation": "tanh"},
        id="timesnet-odd-L",
    ),
    pytest.param(Hyena, {}, id="hyena"),
    pytest.param(
        Hyena,
        {
            "width": 6,
            "order": 3,
            "layers": 1,
            "short_kernel": 4,
            "bands": 2,
            "filter_width": 5,
            "filter_layers": 3,
            "filter_scale": 20.0,
            "frequency": 3.0,
        },
        id="hyena-order-3",
    ),
]


def _make(cls, options, in_channels=2, dtype=DT, seed=0):
    torch.manual_seed(seed)
    return cls(in_channels, **options).to(dtype)


def _randomize_filter(trunk, seed=1):
    """Give a TimesNet a random frequency response (the identity reads only ``steps`` steps)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        trunk.filter_real.copy_(torch.randn(trunk.filter_real.shape, generator=gen))
        trunk.filter_imag.copy_(torch.randn(trunk.filter_imag.shape, generator=gen))


def _window(trunk, n=3, seed=2, dtype=DT):
    length = getattr(trunk, "length", 19)
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, length, trunk.in_channels, generator=gen, dtype=dtype)


def test_registry():
    assert SPECTRAL_TRUNKS == {"timesnet": TimesNet, "hyena": Hyena}
    assert TimesNet.causal == "last" and TimesNet.window_dependent is True
    assert Hyena.causal == "masked" and Hyena.window_dependent is False


# ---------------------------------------------------------------------- TimesNet kernel


@pytest.mark.parametrize("length", [1, 2, 7, 8, 63, 64])
def test_identity_filter_returns_the_input(length):
    x = torch.randn(3, length, 5, dtype=DT)
    ones = torch.ones(length // 2 + 1, 5, dtype=torch.complex128)
    torch.testing.assert_close(spectral_filter(x, ones), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("length", [9, 10])
def test_spectral_filter_is_a_circular_convolution_with_its_impulse_response(length):
    # g = numpy's inverse real FFT of G; x~_t = sum_s g_{(t - s) mod L} x_s, summed by hand.
    rng = np.random.default_rng(length)
    response = rng.normal(size=(length // 2 + 1, 2)) + 1j * rng.normal(size=(length // 2 + 1, 2))
    response[0].imag = 0.0
    if length % 2 == 0:
        response[-1].imag = 0.0
    g = np.fft.irfft(response, n=length, axis=0)  # (L, 2)
    x = rng.normal(size=(4, length, 2))
    expected = np.zeros_like(x)
    for t in range(length):
        for s in range(length):
            expected[:, t] += g[(t - s) % length] * x[:, s]
    got = spectral_filter(torch.from_numpy(x), torch.from_numpy(response))
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("length", [15, 16])
def test_frequency_response_is_real_at_dc_and_nyquist_with_L_numbers_per_channel(length):
    trunk = TimesNet(1, length=length, channels=3)
    _randomize_filter(trunk)
    response = trunk.frequency_response()
    assert response.shape == (length // 2 + 1, 3) and response.is_complex()
    assert torch.equal(response.imag[0], torch.zeros(3))
    if length % 2 == 0:
        assert torch.equal(response.imag[-1], torch.zeros(3))
    torch.testing.assert_close(response.real, trunk.filter_real, rtol=0, atol=0)
    interior = response.imag[1 : (length - 1) // 2 + 1]
    torch.testing.assert_close(interior, trunk.filter_imag, rtol=0, atol=0)
    assert trunk.filter_real.numel() + trunk.filter_imag.numel() == length * 3
    fresh = TimesNet(1, length=length, channels=3).frequency_response()
    assert torch.equal(fresh, torch.ones_like(fresh))  # initialised to the identity


def _dft_filter(u, response):
    """G applied with explicit DFT matrices (no torch.fft): ``u`` ``(N, L, d)``."""
    length = u.shape[1]
    t = torch.arange(length, dtype=DT)
    omega = torch.arange(length, dtype=DT)
    forward = torch.exp(-2j * math.pi * omega[:, None] * t[None, :] / length)  # (L, L)
    spectrum = torch.einsum("wt,ntd->nwd", forward, u.to(torch.complex128))
    bins = response.shape[0]
    full = torch.empty(length, response.shape[1], dtype=torch.complex128)
    full[:bins] = response
    full[bins:] = response[1 : length - bins + 1].flip(0).conj()  # G_{L - w} = conj(G_w)
    return torch.einsum("tw,nwd->ntd", forward.conj() / length, full * spectrum).real


@pytest.mark.parametrize("length", [11, 12])
def test_timesnet_equals_its_equations_with_an_explicit_dft(length):
    trunk = _make(TimesNet, {"length": length, "channels": 3, "steps": 2, "hidden": 5}, 2)
    _randomize_filter(trunk)
    x = _window(trunk, n=4)
    u = x @ trunk.project.weight.T + trunk.project.bias
    h = _dft_filter(u, trunk.frequency_response().detach())[:, -2:].flatten(1)
    for layer in trunk.mlp:
        z = h @ layer.weight.T + layer.bias
        h = 0.5 * z * (1 + torch.erf(z / math.sqrt(2)))  # exact GELU
    out = trunk(x)
    assert out.shape == (4, 1, 5)
    torch.testing.assert_close(out[:, 0], h, rtol=1e-10, atol=1e-12)


def test_filter_learns_to_isolate_a_planted_period():
    # SYNTHETIC, labelled: a sinusoid of period P = 8 (bin L / P = 8 of L = 64) in a mixture
    # with four other sinusoids (bins 2, 5, 13, 21) and white noise; the trunk's own filter
    # (one channel) is trained to return the clean sinusoid. The Wiener solution keeps bin 8
    # (gain ~ 1) and removes the rest (gain ~ 0).
    torch.manual_seed(0)
    length, period, batch = 64, 8, 128
    trunk = TimesNet(1, length=length, channels=1)
    optimiser = torch.optim.Adam([trunk.filter_real, trunk.filter_imag], lr=0.05)
    t = torch.arange(length, dtype=torch.float32)

    def wave(bin_, phase):
        return torch.sin(2 * math.pi * bin_ * t / length + phase)

    for _ in range(150):
        phases = 2 * math.pi * torch.rand(batch, 5, 1)
        clean = wave(length // period, phases[:, 0])
        noisy = clean + sum(wave(b, phases[:, i + 1]) for i, b in enumerate((2, 5, 13, 21)))
        noisy = noisy + 0.5 * torch.randn(batch, length)
        filtered = spectral_filter(noisy.unsqueeze(-1), trunk.frequency_response())
        loss = (filtered[..., 0] - clean).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    gain = trunk.frequency_response().detach().abs()[:, 0]
    planted = gain[length // period]
    others = torch.cat([gain[: length // period], gain[length // period + 1 :]])
    assert planted > 0.9
    assert planted > 100 * others.median()  # about 1e4 over seeds 0-4
    assert others.max() < 0.1 * planted


def test_every_step_of_the_window_reaches_the_state():
    trunk = _make(TimesNet, {"length": 20, "channels": 4, "steps": 3}, 2)
    x = _window(trunk)
    identity = trunk(x)
    _randomize_filter(trunk)
    base = trunk(x)
    for t0 in range(20):
        moved = x.clone()
        moved[:, t0] += 1.0
        assert (trunk(moved) - base).abs().max() > 1e-6, t0
    # With the initial identity filter the state reads the last ``steps`` steps only.
    trunk = _make(TimesNet, {"length": 20, "channels": 4, "steps": 3}, 2)
    torch.testing.assert_close(trunk(x), identity, rtol=0, atol=0)
    for t0 in range(20):
        moved = x.clone()
        moved[:, t0] += 1.0
        change = (trunk(moved) - identity).abs().max()
        assert (change > 1e-6) if t0 >= 17 else (change < 1e-12), t0


def test_timesnet_refuses_a_window_of_another_length():
    trunk = TimesNet(1, length=16)
    with pytest.raises(ValueError, match="window length 15 != the trunk's length 16"):
        trunk(torch.randn(2, 15, 1))


def test_timesnet_chunks_equal_one_pass(monkeypatch):
    trunk = _make(TimesNet, {"length": 16}, 1, dtype=torch.float32)
    _randomize_filter(trunk)
    x = torch.randn(50, 16, 1)
    whole = trunk(x)
    monkeypatch.setattr(spectral, "BATCH_STEPS", 100)  # chunks of 6 windows
    torch.testing.assert_close(trunk(x), whole, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------- Hyena kernels


def test_direct_conv_by_hand():
    # y_0 = u_0 h_0, y_1 = u_1 h_0 + u_0 h_1, y_2 = u_2 h_0 + u_1 h_1 + u_0 h_2.
    u = torch.tensor([[[1.0], [2.0], [3.0]]], dtype=DT)
    h = torch.tensor([[1.0], [0.5], [0.25]], dtype=DT)
    expected = torch.tensor([[[1.0], [2.5], [4.25]]], dtype=DT)
    torch.testing.assert_close(causal_direct_conv(u, h), expected, rtol=0, atol=0)
    torch.testing.assert_close(causal_fft_conv(u, h), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("length", [1, 2, 3, 17, 64, 100, 127, 250])
def test_fft_conv_equals_direct_conv_in_float32(length):
    torch.manual_seed(length)
    u = torch.randn(3, length, 4)
    h = torch.randn(length, 4) / math.sqrt(length)
    got, expected = causal_fft_conv(u, h), causal_direct_conv(u, h)
    assert got.shape == (3, length, 4) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(length=st.integers(1, 90), width=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_fft_conv_equals_the_sum_in_float64(length, width, seed):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(2, 2, length, width, generator=gen, dtype=DT)  # extra leading dims
    h = torch.randn(length, width, generator=gen, dtype=DT)
    expected = torch.zeros_like(u)
    for t in range(length):
        for s in range(t + 1):
            expected[..., t, :] += h[s] * u[..., t - s, :]
    torch.testing.assert_close(causal_fft_conv(u, h), expected, rtol=1e-10, atol=1e-10)


def _circular_fft_conv(u, h):
    """The negative control: the same product of spectra without zero padding."""
    length = u.shape[-2]
    spectrum = torch.fft.rfft(u, dim=-2) * torch.fft.rfft(h, dim=-2)
    return torch.fft.irfft(spectrum, n=length, dim=-2)


def test_fft_conv_is_causal_up_to_rounding_and_the_unpadded_one_leaks():
    torch.manual_seed(4)
    length, t0 = 100, 60
    u = torch.randn(3, length, 4)
    h = torch.randn(length, 4) / math.sqrt(length)
    moved = u.clone()
    moved[:, t0] += 1.0
    change = causal_fft_conv(moved, h) - causal_fft_conv(u, h)
    assert change[:, :t0].abs().max() < 1e-6  # float32 rounding of the FFT, not exact zeros
    assert change[:, t0:].abs().max() > 1e-2
    leak = _circular_fft_conv(moved, h) - _circular_fft_conv(u, h)
    assert leak[:, :t0].abs().max() > 1e-2  # wrap-around: the future reaches the past


# ---------------------------------------------------------------------- Hyena trunk


def _layer_norm(h):
    mean = h.mean(-1, keepdim=True)
    var = (h - mean).square().mean(-1, keepdim=True)
    return (h - mean) / torch.sqrt(var + 1e-5)


def _filters_by_hand(filt, length, scale):
    """h^n_d(t) from the equations, one lag at a time: ``(N, L, D)``."""
    order, width = filt.skip.shape
    target = abs(math.log(DECAY_TARGET))
    rates = np.linspace(target / SLOW_DECAY, target / FAST_DECAY, width)
    taps = torch.zeros(order, length, width, dtype=DT)
    for t in range(length):
        pe = [t / scale]
        pe += [math.cos(2 * math.pi * k * t / scale) for k in range(1, filt.bands + 1)]
        pe += [math.sin(2 * math.pi * k * t / scale) for k in range(1, filt.bands + 1)]
        z = torch.tensor(pe, dtype=DT)
        for layer in filt.layers:
            z = torch.sin(filt.frequency * (layer.weight @ z + layer.bias))
        window = torch.from_numpy(np.exp(-rates * t / scale))
        taps[:, t] = (filt.out.weight @ z).reshape(order, width) * window
    taps[:, 0] += filt.skip
    return taps


def _hyena_by_hand(trunk, x):
    """The trunk's equations with loops over time (no FFT): ``(N_b, L, D)``."""
    length, width = x.shape[1], trunk.width
    h = x @ trunk.lift.weight.T + trunk.lift.bias
    for block in trunk.blocks:
        p = _layer_norm(h) @ block.project.weight.T + block.project.bias  # (N_b, L, (N+1)D)
        kernel = block.short[:, 0]  # (C, k): PyTorch's cross-correlation order
        k = kernel.shape[1]
        branches = torch.zeros_like(p) + block.short_bias
        for t in range(length):
            for i in range(k):  # tap i reads step t - i, weight index k - 1 - i
                if t - i >= 0:
                    branches[:, t] += kernel[:, k - 1 - i] * p[:, t - i]
        *gates, z = branches.split(width, dim=-1)
        taps = _filters_by_hand(block.filters, length, trunk.filter_scale)
        for n, gate in enumerate(gates):
            conv = torch.zeros_like(z)
            for t in range(length):
                for s in range(t + 1):
                    conv[:, t] += taps[n, s] * z[:, t - s]
            z = gate * conv
        h = h + z @ block.out.weight.T + block.out.bias
    return h


@pytest.mark.parametrize(
    "options",
    [{"width": 4, "filter_scale": 8.0}, {"width": 3, "order": 3, "layers": 2, "short_kernel": 2}],
    ids=["order-2", "order-3"],
)
def test_hyena_equals_its_equations_summed_by_hand(options):
    trunk = _make(Hyena, {"bands": 2, "filter_width": 5, **options}, 2)
    x = _window(trunk, n=2, seed=5)[:, :13]
    with torch.no_grad():
        torch.testing.assert_close(trunk(x), _hyena_by_hand(trunk, x), rtol=1e-10, atol=1e-10)


def test_hyena_with_the_direct_convolution_gives_the_same_states(monkeypatch):
    trunk = _make(Hyena, {}, 2, dtype=torch.float32)
    x = torch.randn(5, 70, 2)
    fft = trunk(x)
    monkeypatch.setattr(spectral, "causal_fft_conv", causal_direct_conv)
    torch.testing.assert_close(trunk(x), fft, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_hyena_is_causal_up_to_fft_rounding(dtype, tol):
    # Earlier states move by rounding only (the FFT mixes all steps numerically), later ones
    # by O(1). Not bit-identical, unlike the convolutional trunks.
    trunk = _make(Hyena, {"width": 8}, 2, dtype=dtype, seed=6)
    x = torch.randn(4, 50, 2, dtype=dtype)
    t0 = 31
    moved = x.clone()
    moved[:, t0] += 1.0
    with torch.no_grad():
        before, after = trunk(x), trunk(moved)
    scale = before.abs().max()
    assert (after[:, :t0] - before[:, :t0]).abs().max() < tol * scale
    assert (after[:, t0:] - before[:, t0:]).abs().max() > 1e-3 * scale
    assert (after[:, -1] - before[:, -1]).abs().max() > 1e-6 * scale  # the long filter reaches


def test_hyena_filters_and_states_do_not_depend_on_the_window_length():
    trunk = _make(Hyena, {}, 2, seed=7)
    with torch.no_grad():
        long, short = trunk.implicit_filters(40), trunk.implicit_filters(25)
        for a, b in zip(long, short):
            torch.testing.assert_close(a[:, :25], b, rtol=0, atol=1e-14)
        x = torch.randn(3, 40, 2, dtype=DT)
        torch.testing.assert_close(trunk(x)[:, :25], trunk(x[:, :25]), rtol=1e-10, atol=1e-10)


def test_hyena_decay_window_reaches_its_target():
    window = spectral.decay_window(97, 5, 64.0, dtype=DT)
    # slowest channel: 1 % after 1.5 T = 96 steps; fastest: 1 % after 0.3 T = 19.2 steps
    torch.testing.assert_close(window[96, 0], torch.tensor(DECAY_TARGET, dtype=DT))
    torch.testing.assert_close(window[19, -1], torch.tensor(DECAY_TARGET ** (19 / 19.2), dtype=DT))
    assert torch.equal(window[0], torch.ones(5, dtype=DT))


class _LargestTensors(TorchDispatchMode):
    """Records every operation's outputs (forward and backward): the largest, and FFT sizes."""

    def __init__(self):
        super().__init__()
        self.largest = 0
        self.ffts = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, tuple | list) else (out,):
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel())
        if "fft" in func.__name__:
            self.ffts.append((func.__name__, args[0].shape))
        return out


def _record(fn, *args):
    with _LargestTensors() as mode:
        fn(*args)
    return mode


def _hyena_forward_backward(trunk, x):
    trunk(x).square().sum().backward()


@pytest.mark.parametrize("cls", [TimesNet, Hyena])
def test_no_operation_creates_an_L_by_L_tensor(cls):
    # Largest tensor of any operation, forward and backward, at L = 256, 512, 1024: it
    # doubles with L (linear), and stays far below L^2. The detector sees the direct
    # convolution's Toeplitz matrix (the positive control).
    largest = []
    for length in (256, 512, 1024):
        options = {"width": 4} if cls is Hyena else {"length": length, "channels": 4}
        trunk = _make(cls, options, 1, dtype=torch.float32)
        largest.append(_record(_hyena_forward_backward, trunk, torch.randn(1, length, 1)).largest)
        assert largest[-1] <= 16 * length < length**2 / 4
    assert largest[1] / largest[0] == pytest.approx(2, rel=0.02)
    assert largest[2] / largest[1] == pytest.approx(2, rel=0.02)
    u, h = torch.randn(1, 256, 4), torch.randn(256, 4)
    assert _record(causal_direct_conv, u, h).largest >= 256**2


def _saved_sizes(trunk, x):
    """Numbers of elements of the tensors autograd saves for the backward of ``trunk(x)``."""
    sizes = []

    def pack(tensor):
        sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = trunk(x)
    out.sum().backward()
    return sizes


def test_hyena_saved_activations_grow_linearly():
    saved = []
    for length in (128, 256, 512):
        trunk = _make(Hyena, {"width": 4}, 1, dtype=torch.float32)
        sizes = _saved_sizes(trunk, torch.randn(2, length, 1))
        saved.append((sum(sizes), max(sizes)))
    for (total_a, max_a), (total_b, max_b) in zip(saved[:-1], saved[1:]):
        assert total_b / total_a == pytest.approx(2, rel=0.05)
        assert max_b / max_a == pytest.approx(2, rel=0.05)


def test_hyena_flops_of_the_dense_parts_double_with_L_and_the_ffts_have_length_2L():
    # FlopCounterMode counts matrix products and convolutions but not FFTs (a lone FFT
    # convolution counts 0 FLOPs), so it proves the dense parts linear in L; the FFTs are
    # counted by the dispatch log: the same number of transforms at every L, each of length
    # 2L (the inverse's input has L + 1 bins), i.e. O(L log L).
    with FlopCounterMode(display=False) as counter:
        causal_fft_conv(torch.randn(2, 64, 3), torch.randn(64, 3))
    assert counter.get_total_flops() == 0
    flops, transforms = [], []
    for length in (64, 128, 256):
        trunk = _make(Hyena, {}, 1, dtype=torch.float32)
        x = torch.randn(2, length, 1)
        with FlopCounterMode(display=False) as counter:
            _hyena_forward_backward(trunk, x)
        flops.append(counter.get_total_flops())
        log = _record(_hyena_forward_backward, trunk, x).ffts
        transforms.append(len(log))
        for name, shape in log:
            assert shape[-1] in (2 * length, length + 1), (name, shape)
        assert any(shape[-1] == 2 * length for _, shape in log)
    assert flops[0] > 0
    assert flops[1] == 2 * flops[0] and flops[2] == 2 * flops[1]
    assert transforms[0] == transforms[1] == transforms[2] > 0


def test_hyena_chunks_equal_one_pass(monkeypatch):
    trunk = _make(Hyena, {}, 1, dtype=torch.float32)
    x = torch.randn(50, 16, 1)
    whole = trunk(x)
    monkeypatch.setattr(spectral, "BATCH_STEPS", 100)
    torch.testing.assert_close(trunk(x), whole, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------- both trunks


@pytest.mark.parametrize(("cls", "options"), VARIANTS)
@pytest.mark.parametrize("in_channels", [1, 4])
def test_parameter_count_matches_the_formula(cls, options, in_channels):
    trunk = cls(in_channels, **options)
    assert sum(p.numel() for p in trunk.parameters()) == cls.n_params(in_channels, **options)
    assert trunk.receptive_field is None
    assert not list(trunk.buffers())


def test_default_sizes():
    assert TimesNet.n_params(1, length=64) == 4192
    assert Hyena.n_params(1) == 4576
    assert TimesNet(1, length=64).out_features == 32 and Hyena(1).out_features == 16


@pytest.mark.parametrize(("cls", "options"), VARIANTS)
def test_config_rebuilds_the_same_trunk(cls, options):
    trunk = _make(cls, options, 2, dtype=torch.float32, seed=8)
    extra = {"length": options["length"]} if cls.window_dependent else {}
    config = json.loads(json.dumps(trunk.config()))
    assert "length" not in config and "in_channels" not in config
    rebuilt = cls(2, **config, **extra)
    rebuilt.load_state_dict(trunk.state_dict())
    x = _window(trunk, dtype=torch.float32)
    torch.testing.assert_close(rebuilt(x), trunk(x), rtol=0, atol=0)


@pytest.mark.parametrize(("cls", "options"), VARIANTS)
def test_output_shape_and_dtype(cls, options):
    trunk = _make(cls, options, 2, dtype=torch.float32)
    x = _window(trunk, n=3, dtype=torch.float32)
    out = trunk(x)
    steps = 1 if cls.causal == "last" else x.shape[1]
    assert out.shape == (3, steps, trunk.out_features) and out.dtype == torch.float32


@pytest.mark.parametrize(("cls", "options"), VARIANTS)
def test_vmap_over_weight_draws_equals_a_loop(cls, options):
    trunk = _make(cls, options, 2, seed=9)
    x = _window(trunk, n=4)
    draws = {
        name: torch.stack([p + 0.1 * torch.randn_like(p) for _ in range(3)])
        for name, p in trunk.named_parameters()
    }
    batched = vmap(lambda w: functional_call(trunk, w, (x,)))(draws)
    for s in range(3):
        single = functional_call(trunk, {k: v[s] for k, v in draws.items()}, (x,))
        torch.testing.assert_close(batched[s], single, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("cls", "options"), VARIANTS)
def test_gradients_reach_every_parameter(cls, options):
    trunk = _make(cls, options, 3, dtype=torch.float32, seed=10)
    if cls is TimesNet:
        _randomize_filter(trunk)
    trunk(_window(trunk, dtype=torch.float32))[:, -1].square().sum().backward()
    for name, p in trunk.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("cls", "options", "message"),
    [
        (TimesNet, {"length": 0}, "length must be an integer >= 1"),
        (TimesNet, {"length": 8, "steps": 9}, "steps must be <= length = 8"),
        (TimesNet, {"length": 8, "channels": 0}, "channels must be an integer"),
        (TimesNet, {"length": 8, "hidden": 2.5}, "hidden must be an integer"),
        (TimesNet, {"length": 8, "layers": True}, "layers must be an integer"),
        (TimesNet, {"length": 8, "activation": "swish"}, "activation must be one of"),
        (Hyena, {"width": 0}, "width must be an integer"),
        (Hyena, {"order": 0}, "order must be an integer"),
        (Hyena, {"short_kernel": -1}, "short_kernel must be an integer"),
        (Hyena, {"bands": 0}, "bands must be an integer"),
        (Hyena, {"filter_width": 0}, "filter_width must be an integer"),
        (Hyena, {"filter_layers": 0}, "filter_layers must be an integer"),
        (Hyena, {"filter_scale": 0.0}, "filter_scale must be a positive number"),
        (Hyena, {"filter_scale": math.inf}, "filter_scale must be finite"),
        (Hyena, {"frequency": "high"}, "frequency must be a positive number"),
        (Hyena, {"frequency": math.nan}, "frequency must be a positive number"),
    ],
)
def test_bad_options_raise_value_errors_naming_the_option(cls, options, message):
    with pytest.raises(ValueError, match=message):
        cls(1, **options)


def test_unknown_options_raise_type_errors():
    with pytest.raises(TypeError):
        TimesNet(1, length=8, kernel_size=3)
    with pytest.raises(TypeError):
        TimesNet(1)  # length is required
    with pytest.raises(TypeError):
        Hyena(1, length=8)


def test_layer_norm_by_hand_matches_torch():
    # The by-hand reference's normalisation is the trunk's (eps 1e-5, biased variance).
    h = torch.randn(3, 5, 6, dtype=DT)
    torch.testing.assert_close(_layer_norm(h), F.layer_norm(h, (6,)), rtol=1e-12, atol=1e-12)
