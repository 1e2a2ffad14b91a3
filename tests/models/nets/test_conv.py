"""The causal convolutional trunks against hand computations and their own properties.

Oracles: a causal convolution summed lag by lag (the documented equation); blocks
recomputed with ``torch.nn.functional.conv1d`` on channels-first tensors and explicit
matrix products; the squeeze-excite running mean as ``h[:, : t + 1].mean(1)``; a Python
loop of ``functional_call`` for ``vmap``; closed-form parameter counts against
``sum(p.numel())``. Properties: causality (a perturbation at step ``t0`` leaves every
earlier state bit for bit unchanged), the receptive field (exactly where a perturbation
stops reaching the last state), chunked evaluation equal to one pass.
"""

from __future__ import annotations

import inspect
import json
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call, vmap

from bayes_moe.models.nets import conv
from bayes_moe.models.nets.conv import (
    CONV_TRUNKS,
    TCN,
    CausalSqueezeExcite,
    DepthwiseSeparableBlock,
    EfficientNetLite1d,
    InvertedResidual,
    causal_conv1d,
)

DT = torch.float64

# (registry key, options): the defaults and one non-default variant of each trunk.
VARIANTS = {
    "cnn": ("cnn", {}),
    "cnn-gelu": ("cnn", {"channels": 8, "layers": 3, "kernel_size": 3, "activation": "gelu"}),
    "depthwise": ("depthwise", {}),
    "depthwise-plain": ("depthwise", {"channels": 8, "blocks": 2, "residual": False}),
    "mobilenet": ("mobilenet", {}),
    "mobilenet-t1": ("mobilenet", {"channels": 8, "expansion": 1, "blocks": 2, "kernel_size": 4}),
    "efficientnet_lite": ("efficientnet_lite", {}),
    "efficientnet_lite-se": ("efficientnet_lite", {"squeeze_excite": True}),
    "tcn": ("tcn", {}),
    "tcn-tanh": ("tcn", {"channels": 8, "levels": 3, "kernel_size": 2, "activation": "tanh"}),
}


def _make(variant, in_channels=2, dtype=DT, seed=0):
    key, options = VARIANTS[variant]
    torch.manual_seed(seed)
    return CONV_TRUNKS[key](in_channels, **options).to(dtype)


def _count(module):
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------- interface


def test_registry_keys():
    assert list(CONV_TRUNKS) == ["cnn", "depthwise", "mobilenet", "efficientnet_lite", "tcn"]


@pytest.mark.parametrize("key", list(CONV_TRUNKS))
@pytest.mark.parametrize("in_channels", [1, 2, 3, 4])
def test_defaults_are_small_and_counted_by_the_formula(key, in_channels):
    cls = CONV_TRUNKS[key]
    trunk = cls(in_channels)
    assert _count(trunk) == cls.n_params(in_channels) < 40_000
    x = torch.randn(3, 11, in_channels)
    y = trunk(x)
    assert y.shape == (3, 11, trunk.out_features) and y.dtype == torch.float32
    # Every parameter is used: the gradient reaches each one.
    y.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trunk.parameters())


@pytest.mark.parametrize("key", list(CONV_TRUNKS))
def test_n_params_defaults_are_the_constructors(key):
    cls = CONV_TRUNKS[key]
    init = inspect.signature(cls.__init__).parameters
    count = inspect.signature(cls.n_params).parameters
    options = [n for n, p in init.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert options == [n for n, p in count.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert all(init[n].default == count[n].default for n in options)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_config_is_json_and_rebuilds_the_same_trunk(variant):
    trunk = _make(variant, in_channels=3)
    config = json.loads(json.dumps(trunk.config()))
    rebuilt = type(trunk)(3, **config).to(DT)
    assert rebuilt.config() == trunk.config()
    shapes = {n: p.shape for n, p in trunk.named_parameters()}
    assert {n: p.shape for n, p in rebuilt.named_parameters()} == shapes
    rebuilt.load_state_dict(trunk.state_dict())
    x = torch.randn(2, 9, 3, dtype=DT)
    assert torch.equal(rebuilt(x), trunk(x))
    assert rebuilt.receptive_field == trunk.receptive_field
    assert rebuilt.out_features == trunk.out_features


def test_float32_and_float64():
    for variant in VARIANTS:
        x = torch.randn(2, 7, 1)
        trunk = _make(variant, in_channels=1, dtype=torch.float32)
        y32 = trunk(x)
        y64 = trunk.to(DT)(x.to(DT))
        assert y32.dtype == torch.float32 and y64.dtype == DT
        torch.testing.assert_close(y32.to(DT), y64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("key", "options", "error"),
    [
        ("cnn", {"channels": 0}, ValueError),
        ("cnn", {"activation": "sigmoidal"}, ValueError),
        ("depthwise", {"blocks": 1.5}, ValueError),
        ("mobilenet", {"expansion": 0}, ValueError),
        ("efficientnet_lite", {"channels": [16, 24], "expansions": [1]}, ValueError),
        ("efficientnet_lite", {"se_ratio": 0.0}, ValueError),
        ("tcn", {"levels": 0}, ValueError),
        ("tcn", {"kernel_sizes": 3}, TypeError),  # the window expert's check relies on it
    ],
)
def test_bad_options(key, options, error):
    with pytest.raises(error):
        CONV_TRUNKS[key](1, **options)


# ---------------------------------------------------------------------- parameter counts


@settings(max_examples=25, deadline=None)
@given(
    c=st.integers(1, 4),
    channels=st.integers(1, 12),
    depth=st.integers(1, 4),
    k=st.integers(1, 6),
)
def test_parameter_counts_match_the_formulas(c, channels, depth, k):
    # Reference: sum(p.numel()) of the built trunk, for arbitrary small options.
    cases = [
        ("cnn", {"channels": channels, "layers": depth, "kernel_size": k}),
        ("depthwise", {"channels": channels, "blocks": depth, "kernel_size": k}),
        ("depthwise", {"channels": channels, "blocks": depth, "residual": False}),
        ("mobilenet", {"channels": channels, "expansion": depth, "blocks": 2, "kernel_size": k}),
        ("tcn", {"channels": channels, "levels": depth, "kernel_size": k}),
    ]
    for key, options in cases:
        cls = CONV_TRUNKS[key]
        assert _count(cls(c, **options)) == cls.n_params(c, **options), (key, options)


@settings(max_examples=25, deadline=None)
@given(
    c=st.integers(1, 4),
    stem=st.integers(1, 12),
    blocks=st.lists(
        st.tuples(st.integers(1, 12), st.integers(1, 4), st.integers(1, 5)), min_size=1, max_size=3
    ),
    head=st.integers(1, 12),
    se=st.booleans(),
    ratio=st.sampled_from([0.05, 0.25, 0.5, 1.0]),
)
def test_efficientnet_parameter_count_matches_the_formula(c, stem, blocks, head, se, ratio):
    options = {
        "stem_channels": stem,
        "channels": [b[0] for b in blocks],
        "expansions": [b[1] for b in blocks],
        "kernel_sizes": [b[2] for b in blocks],
        "head_channels": head,
        "squeeze_excite": se,
        "se_ratio": ratio,
    }
    assert _count(EfficientNetLite1d(c, **options)) == EfficientNetLite1d.n_params(c, **options)


def test_parameter_counts_by_hand():
    # The documented closed forms, written out for the defaults at one input column.
    assert CONV_TRUNKS["cnn"].n_params(1) == (1 * 5 + 1) * 32 + (32 * 5 + 1) * 32
    assert CONV_TRUNKS["depthwise"].n_params(1) == 2 * 24 + 3 * (5 + 24 + 1) * 24
    # MobileNet block, C = 16, t C = 32, k = 3: expansion, depthwise, projection.
    block = (16 + 1) * 32 + (3 + 1) * 32 + (32 + 1) * 16
    assert CONV_TRUNKS["mobilenet"].n_params(1) == 2 * 16 + 4 * block
    assert TCN.n_params(1) == 2 * 24 + 5 * (24 * 3 + 1) * 24
    # EfficientNet-Lite: stem, blocks (16 -> 16, t 1, k 3), (16 -> 16, t 2, k 3),
    # (16 -> 24, t 2, k 5), head 24 -> 32; squeeze-excite adds 2 H r + H + r per block.
    stem = (1 * 3 + 1) * 16
    b1 = (3 + 1) * 16 + (16 + 1) * 16
    b2 = (16 + 1) * 32 + (3 + 1) * 32 + (32 + 1) * 16
    b3 = (16 + 1) * 32 + (5 + 1) * 32 + (32 + 1) * 24
    head = (24 + 1) * 32
    assert EfficientNetLite1d.n_params(1) == stem + b1 + b2 + b3 + head
    se = (2 * 16 * 4 + 16 + 4) + 2 * (2 * 32 * 4 + 32 + 4)
    assert EfficientNetLite1d.n_params(1, squeeze_excite=True) == stem + b1 + b2 + b3 + head + se


# ---------------------------------------------------------------------- oracles


@pytest.mark.parametrize(("k", "dilation", "groups"), [(1, 1, 1), (3, 1, 1), (3, 4, 1), (4, 2, 3)])
def test_causal_conv1d_is_the_lag_sum(k, dilation, groups):
    # Reference: y_t = b + sum_i W[..., k - 1 - i] x_{t - d i}, x_t = 0 before the window,
    # with channel groups summed by hand.
    torch.manual_seed(0)
    N, L, c_in, c_out = 2, 13, 6, 9
    x = torch.randn(N, L, c_in, dtype=DT)
    w = torch.randn(c_out, c_in // groups, k, dtype=DT)
    b = torch.randn(c_out, dtype=DT)
    expected = b.expand(N, L, c_out).clone()
    per_in, per_out = c_in // groups, c_out // groups
    for t in range(L):
        for i in range(k):
            s = t - dilation * i
            if s < 0:
                continue
            for g in range(groups):
                xs = x[:, s, g * per_in : (g + 1) * per_in]  # (N, per_in)
                ws = w[g * per_out : (g + 1) * per_out, :, k - 1 - i]  # (per_out, per_in)
                expected[:, t, g * per_out : (g + 1) * per_out] += xs @ ws.T
    y = causal_conv1d(x, w, b, dilation=dilation, groups=groups)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


def _grouped_conv(h, weight, bias=None, dilation=1):
    """Channels-first grouped conv1d after the causal left padding, back to (N, L, C)."""
    pad = dilation * (weight.shape[-1] - 1)
    out = F.conv1d(F.pad(h.transpose(1, 2), (pad, 0)), weight, bias, groups=weight.shape[0])
    return out.transpose(1, 2)


@pytest.mark.parametrize("residual", [True, False])
def test_depthwise_block_is_grouped_conv_then_pointwise(residual):
    # Reference: F.conv1d(groups=C) on the left-padded channels-first input, then the
    # 1x1 convolution as a matrix product with the same weights, activation, residual.
    torch.manual_seed(0)
    C, k = 5, 4
    block = DepthwiseSeparableBlock(C, k, "gelu", residual).to(DT)
    assert _count(block) == (k + C + 1) * C
    h = torch.randn(3, 17, C, dtype=DT)
    u = _grouped_conv(h, block.depthwise.weight)
    pointwise = torch.einsum("nlc,oc->nlo", u, block.pointwise.weight) + block.pointwise.bias
    expected = F.gelu(pointwise) + (h if residual else 0)
    torch.testing.assert_close(block(h), expected, rtol=1e-12, atol=1e-12)

    # The trunk is the 1x1 lift followed by the blocks.
    trunk = CONV_TRUNKS["depthwise"](2, channels=C, blocks=2, kernel_size=k, residual=residual)
    trunk = trunk.to(DT)
    x = torch.randn(3, 17, 2, dtype=DT)
    state = x @ trunk.lift.weight.T + trunk.lift.bias
    for layer in trunk.layers:
        state = layer(state)
    torch.testing.assert_close(trunk(x), state, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("expansion", "out", "se"), [(3, 4, False), (1, 4, True), (2, 6, True)])
def test_inverted_residual_by_hand(expansion, out, se):
    # Reference: expansion, ReLU6, grouped conv1d, ReLU6, squeeze-excite with the running
    # mean h[:, :t + 1].mean(1) step by step, linear projection, residual when 4 -> 4.
    torch.manual_seed(0)
    C, k = 4, 3
    block = InvertedResidual(C, out, expansion=expansion, kernel_size=k, squeeze_excite=se)
    block = block.to(DT)
    h = torch.randn(2, 9, C, dtype=DT)
    e = h if expansion == 1 else F.relu6(h @ block.expand.weight.T + block.expand.bias)
    d = F.relu6(_grouped_conv(e, block.depthwise.weight, block.depthwise.bias))
    if se:
        s = torch.stack([d[:, : t + 1].mean(1) for t in range(d.shape[1])], 1)
        z = F.relu(s @ block.se.reduce.weight.T + block.se.reduce.bias)
        d = d * torch.sigmoid(z @ block.se.expand.weight.T + block.se.expand.bias)
    expected = d @ block.project.weight.T + block.project.bias
    if out == C:
        expected = expected + h
    torch.testing.assert_close(block(h), expected, rtol=1e-12, atol=1e-12)
    assert _count(block) == InvertedResidual.n_params(
        C, out, expansion=expansion, kernel_size=k, squeeze_excite=se
    )


def test_squeeze_excite_width():
    # EfficientNet: r = max(1, floor(ratio * block input width)).
    block = InvertedResidual(16, 16, expansion=2, kernel_size=3, squeeze_excite=True)
    assert isinstance(block.se, CausalSqueezeExcite)
    assert block.se.reduce.weight.shape == (4, 32)
    tiny = InvertedResidual(2, 2, expansion=2, kernel_size=3, squeeze_excite=True, se_ratio=0.25)
    assert tiny.se.reduce.weight.shape == (1, 4)


def test_tcn_is_the_documented_recursion():
    # Reference: h0 = A x + a, h_l = h_{l-1} + relu(conv_{d = 2^(l-1)}(h_{l-1})), written
    # with the channels-first conv1d of PyTorch and explicit dilations.
    torch.manual_seed(0)
    trunk = TCN(2, channels=6, levels=3, kernel_size=3).to(DT)
    x = torch.randn(2, 20, 2, dtype=DT)
    h = x @ trunk.lift.weight.T + trunk.lift.bias
    for level, layer in enumerate(trunk.convs):
        d = 2**level
        out = F.conv1d(F.pad(h.transpose(1, 2), (2 * d, 0)), layer.weight, layer.bias, dilation=d)
        h = h + F.relu(out.transpose(1, 2))
    torch.testing.assert_close(trunk(x), h, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------- causality


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("seed", [0, 1])
def test_causal(variant, seed):
    # A perturbation at a random step t0 leaves every state before t0 bit for bit
    # unchanged and changes some state at or after t0.
    trunk = _make(variant, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    L = 30
    x = torch.randn(4, L, 2, dtype=DT, generator=gen)
    t0 = int(torch.randint(1, L - 1, (), generator=gen))
    bumped = x.clone()
    bumped[:, t0] += torch.randn(4, 2, dtype=DT, generator=gen)
    y, y_bumped = trunk(x), trunk(bumped)
    assert torch.equal(y[:, :t0], y_bumped[:, :t0])
    assert (y[:, t0:] != y_bumped[:, t0:]).any()
    # Samples are independent: the other windows of the batch are unaffected too.
    only_first = x.clone()
    only_first[0, t0] += 1.0
    assert torch.equal(trunk(only_first)[1:], y[1:])


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "efficientnet_lite-se"])
def test_receptive_field_is_exact(variant):
    # The last state reads exactly the last `receptive_field` steps: a perturbation at
    # L - 1 - RF does not change it at all, one at L - RF does.
    trunk = _make(variant)
    rf = trunk.receptive_field
    L = rf + 4
    x = torch.randn(3, L, 2, dtype=DT)
    last = trunk(x)[:, -1]
    outside, inside = x.clone(), x.clone()
    outside[:, L - 1 - rf] += 1.0
    inside[:, L - rf] += 1.0
    assert torch.equal(trunk(outside)[:, -1], last)
    assert (trunk(inside)[:, -1] != last).any()


def test_tcn_receptive_field_formula():
    assert TCN(1).receptive_field == 63  # levels 5, kernel 3: fits a 64-day window
    assert TCN(1, levels=3, kernel_size=2).receptive_field == 1 + 1 * 7
    assert TCN(1, levels=4, kernel_size=5).receptive_field == 1 + 4 * 15


def test_squeeze_excite_reads_the_whole_past():
    # The running-mean squeeze reaches back to the first step: no finite receptive field.
    trunk = _make("efficientnet_lite-se")
    assert trunk.receptive_field == sys.maxsize
    assert _make("efficientnet_lite").receptive_field == 3 + 2 + 2 + 4
    x = torch.randn(3, 40, 2, dtype=DT)
    bumped = x.clone()
    bumped[:, 0] += 1.0
    assert (trunk(bumped)[:, -1] != trunk(x)[:, -1]).any(-1).all()  # every window


# ---------------------------------------------------------------------- vmap, chunks


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_vmap_over_stacked_parameters_equals_a_loop(variant, monkeypatch):
    # Reference: functional_call with each of 3 perturbed parameter sets in a Python loop.
    # Chunks of 2 windows (CHUNK_STEPS // L) so vmap also runs through the chunked path.
    monkeypatch.setattr(conv, "CHUNK_STEPS", 2 * 12)
    trunk = _make(variant)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5, 12, 2, dtype=DT, generator=gen)
    draws = [
        {
            n: p.detach() + 0.1 * torch.randn(p.shape, dtype=DT, generator=gen)
            for n, p in trunk.named_parameters()
        }
        for _ in range(3)
    ]
    stacked = {n: torch.stack([d[n] for d in draws]) for n in draws[0]}
    batched = vmap(lambda w: functional_call(trunk, w, (x,)))(stacked)
    loop = torch.stack([functional_call(trunk, d, (x,)) for d in draws])
    assert batched.shape == (3, 5, 12, trunk.out_features)
    torch.testing.assert_close(batched, loop, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("variant", ["cnn", "efficientnet_lite-se", "tcn"])
def test_chunked_forward_equals_one_pass(variant, monkeypatch):
    trunk = _make(variant)
    x = torch.randn(7, 10, 2, dtype=DT)
    whole = trunk(x)
    monkeypatch.setattr(conv, "CHUNK_STEPS", 3 * 10)  # chunks of 3, 3 and 1 windows
    torch.testing.assert_close(trunk(x), whole, rtol=1e-12, atol=1e-12)
