"""Attention trunks against exact softmax attention, direct loops and their own properties.

Oracles: the softmax formula summed position by position in a Python loop;
``torch.nn.MultiheadAttention`` with a causal mask for the whole exact trunk; exact
softmax attention for FAVOR+ (error falling with the number of random features),
Linformer (exact with ``r = L`` and identity projections) and the Nystrom
approximation (exact with one landmark per step); ``torch.linalg.pinv`` and the
Penrose conditions for the iterative pseudo-inverse; Monte Carlo for the unbiasedness
of the positive random features; FLOP counts at ``L``, ``2L``, ``4L``
(``FlopCounterMode``) for the cost in ``L``; a Python loop of ``functional_call`` for
``vmap``; closed-form parameter counts; perturbation at step ``t0`` for causality.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap
from torch.utils.flop_counter import FlopCounterMode

from bayes_moe.models.nets import attention
from bayes_moe.models.nets.attention import (
    ATTENTION_TRUNKS,
    ExactAttention,
    Linformer,
    Nystromformer,
    Performer,
    age_encoding,
    causal_linear_attention,
    iterative_pinv,
    linformer_attention,
    nystrom_attention,
    nystrom_kernels,
    orthogonal_random_features,
    positive_random_features,
    segment_matrix,
    segment_means,
    softmax_attention,
)

DT = torch.float64
L = 24  # window length of the trunk tests

# (registry key, options): the defaults and non-default variants of each trunk.
VARIANTS = {
    "attention": ("attention", {}),
    "attention-2-layers": ("attention", {"layers": 2}),
    "attention-4-heads": ("attention", {"d_model": 8, "heads": 4, "layers": 3, "ffn": 8}),
    "performer": ("performer", {}),
    "performer-odd-chunk": (
        "performer",
        {"d_model": 8, "layers": 2, "features": 12, "chunk": 5, "seed": 3},
    ),
    "linformer": ("linformer", {"length": L}),
    "linformer-2-layers": ("linformer", {"length": L, "layers": 2}),
    "linformer-none": (
        "linformer",
        {"length": L, "rank": 5, "sharing": "none", "heads": 4, "layers": 2},
    ),
    "linformer-headwise": ("linformer", {"length": L, "sharing": "headwise", "layers": 3}),
    "linformer-layerwise": ("linformer", {"length": L, "sharing": "layerwise", "layers": 1}),
    "nystromformer": ("nystromformer", {}),
    "nystromformer-2-layers": ("nystromformer", {"layers": 2}),
    "nystromformer-uneven": ("nystromformer", {"landmarks": 5, "iterations": 3, "layers": 3}),
}
MASKED = [v for v, (key, _) in VARIANTS.items() if ATTENTION_TRUNKS[key].causal == "masked"]
LAST = [v for v, (key, _) in VARIANTS.items() if ATTENTION_TRUNKS[key].causal == "last"]


def _make(variant, in_channels=2, dtype=DT, seed=0):
    key, options = VARIANTS[variant]
    torch.manual_seed(seed)
    return ATTENTION_TRUNKS[key](in_channels, **options).to(dtype)


def _qkv(shape, seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(shape, generator=gen, dtype=DT) for _ in range(3)]


def _loop_attention(q, k, v, causal):
    """softmax(q_t . k_s / sqrt(d)) over s (<= t), summed position by position."""
    out = torch.zeros(q.shape[:-1] + v.shape[-1:], dtype=q.dtype)
    n_q, n_k, d = q.shape[-2], k.shape[-2], q.shape[-1]
    for t in range(n_q):
        stop = n_k - n_q + t + 1 if causal else n_k
        weights = [
            torch.exp((q[..., t, :] * k[..., s, :]).sum(-1) / math.sqrt(d)) for s in range(stop)
        ]
        total = sum(weights)
        for s in range(stop):
            out[..., t, :] += (weights[s] / total)[..., None] * v[..., s, :]
    return out


def test_registry():
    assert ATTENTION_TRUNKS == {
        "attention": ExactAttention,
        "performer": Performer,
        "linformer": Linformer,
        "nystromformer": Nystromformer,
    }
    assert {k: c.causal for k, c in ATTENTION_TRUNKS.items()} == {
        "attention": "masked",
        "performer": "masked",
        "linformer": "last",
        "nystromformer": "last",
    }
    assert [k for k, c in ATTENTION_TRUNKS.items() if c.window_dependent] == ["linformer"]


# ---------------------------------------------------------------------- exact attention


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("n_q", [7, 3])
def test_softmax_attention_equals_a_loop_over_positions(causal, n_q):
    q = _qkv((2, 3, n_q, 4), 0)[0]
    k, v = _qkv((2, 3, 7, 4), 1)[:2]
    expected = _loop_attention(q, k, v, causal)
    torch.testing.assert_close(softmax_attention(q, k, v, causal), expected, rtol=1e-12, atol=1e-12)


def _reference_exact_trunk(trunk, x):
    """The exact trunk rebuilt from torch.nn.MultiheadAttention (causal mask) and F.linear."""
    h = trunk.embed(x) + age_encoding(x.shape[1], trunk.d_model, dtype=x.dtype)
    mask = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)  # True: not allowed
    for block in trunk.blocks:
        mha = torch.nn.MultiheadAttention(trunk.d_model, trunk.heads, batch_first=True).to(x.dtype)
        mha.in_proj_weight.data.copy_(block.qkv.weight)
        mha.in_proj_bias.data.copy_(block.qkv.bias)
        mha.out_proj.weight.data.copy_(block.out.weight)
        mha.out_proj.bias.data.copy_(block.out.bias)
        u = F.layer_norm(h, (trunk.d_model,))
        h = h + mha(u, u, u, attn_mask=mask, need_weights=False)[0]
        u = F.layer_norm(h, (trunk.d_model,))
        h = h + F.linear(
            F.gelu(F.linear(u, block.up.weight, block.up.bias)), block.down.weight, block.down.bias
        )
    return h


@pytest.mark.parametrize("variant", ["attention", "attention-4-heads"])
def test_exact_trunk_equals_torch_multihead_attention_blocks(variant):
    trunk = _make(variant, in_channels=3)
    x = torch.randn(4, 13, 3, dtype=DT)
    with torch.no_grad():
        expected = _reference_exact_trunk(trunk, x)
    torch.testing.assert_close(trunk(x), expected, rtol=1e-10, atol=1e-10)


def test_age_encoding_counts_back_from_the_last_step():
    short, long = age_encoding(5, 6, dtype=DT), age_encoding(9, 6, dtype=DT)
    torch.testing.assert_close(long[-5:], short, rtol=0, atol=0)
    torch.testing.assert_close(short[-1], torch.tensor([0.0, 1.0] * 3, dtype=DT))
    age, omega = 3.0, 10_000 ** (-2 / 6)  # step t = 1 of 5 has age 3; second frequency
    torch.testing.assert_close(
        short[1, 2:4], torch.tensor([math.sin(age * omega), math.cos(age * omega)], dtype=DT)
    )
    assert age_encoding(4, 5).shape == (4, 5)


# ---------------------------------------------------------------------- causality, all trunks


@pytest.mark.parametrize("variant", MASKED)
def test_masked_trunks_are_causal(variant):
    # Perturbing step t0 leaves every earlier state bit for bit unchanged and moves a later one.
    trunk = _make(variant)
    x = torch.randn(3, L, 2, dtype=DT)
    for t0 in (0, 11, L - 1):
        moved = x.clone()
        moved[:, t0] += 1.0
        before, after = trunk(x), trunk(moved)
        assert before.shape == (3, L, trunk.out_features)
        assert torch.equal(before[:, :t0], after[:, :t0])
        assert (before[:, t0:] - after[:, t0:]).abs().amax(dim=(0, 2)).min() > 1e-8


@pytest.mark.parametrize("variant", LAST)
def test_last_trunks_read_the_whole_window(variant):
    # Only the last state, and every step of the window reaches it (receptive field None).
    trunk = _make(variant)
    x = torch.randn(3, L, 2, dtype=DT)
    before = trunk(x)
    assert before.shape == (3, 1, trunk.out_features)
    assert trunk.receptive_field is None
    for t0 in range(L):
        moved = x.clone()
        moved[:, t0] += 1.0
        assert (trunk(moved) - before).abs().amax() > 1e-8, t0


# ---------------------------------------------------------------------- Performer


def test_orthogonal_random_features_blocks_and_norms():
    d, m = 4, 10
    w = orthogonal_random_features(m, d, generator=torch.Generator().manual_seed(0))
    assert w.shape == (m, d)
    for block in (w[:4], w[4:8], w[8:]):
        gram = block @ block.T
        torch.testing.assert_close(gram, torch.diag(gram.diagonal()), rtol=0, atol=1e-12)
    # Row norms are chi_d draws: E|w| = sqrt(2) Gamma((d + 1)/2) / Gamma(d/2).
    many = orthogonal_random_features(20_000, d, generator=torch.Generator().manual_seed(1))
    chi_mean = math.sqrt(2) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))
    assert abs(many.norm(dim=-1).mean().item() - chi_mean) < 0.02
    assert abs(many.square().mean().item() - 1.0) < 0.02  # each coordinate has unit variance


def test_positive_random_features_are_unbiased_for_the_softmax_kernel():
    # E[phi(x)^T phi(y)] = exp(x^T y): a Monte Carlo mean over 2^17 orthogonal features.
    gen = torch.Generator().manual_seed(2)
    x, y = 0.5 * torch.randn(2, 3, generator=gen, dtype=DT)
    w = orthogonal_random_features(2**17, 3, generator=gen)
    estimate = positive_random_features(x, w) @ positive_random_features(y, w)
    assert abs(estimate.item() / math.exp(x @ y) - 1) < 0.01
    phi = positive_random_features(torch.stack([x, y]), w, "bound")
    assert phi.max() <= 1 / math.sqrt(2**17)  # the bound stabiliser caps every feature
    with pytest.raises(ValueError, match="stabilizer must be one of"):
        positive_random_features(x, w, "max")


@pytest.mark.parametrize("chunk", [None, 1, 4, 7, 40])
def test_causal_linear_attention_equals_the_direct_sum(chunk):
    # out_t = sum_{s<=t} (phi_q_t . phi_k_s) v_s / sum_{s<=t} phi_q_t . phi_k_s, step by step.
    gen = torch.Generator().manual_seed(3)
    phi_q, phi_k = torch.rand(2, 2, 3, 13, 5, generator=gen, dtype=DT)
    v = torch.randn(2, 3, 13, 4, generator=gen, dtype=DT)
    expected = torch.zeros_like(v)
    for t in range(13):
        weights = (phi_q[..., t : t + 1, :] * phi_k[..., : t + 1, :]).sum(-1)  # (2, 3, t + 1)
        expected[..., t, :] = (weights[..., None] * v[..., : t + 1, :]).sum(-2) / weights.sum(
            -1, keepdim=True
        )
    got = causal_linear_attention(phi_q, phi_k, v, chunk)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_stabilisers_cancel_in_the_attention():
    q, k, v = _qkv((2, 9, 4), 4)
    w = orthogonal_random_features(16, 4, generator=torch.Generator().manual_seed(5))
    plain = causal_linear_attention(
        positive_random_features(q, w), positive_random_features(k, w), v
    )
    stable = causal_linear_attention(
        positive_random_features(q, w, "row"), positive_random_features(k, w, "bound"), v, chunk=4
    )
    torch.testing.assert_close(stable, plain, rtol=1e-12, atol=1e-12)


def _favor(q, k, v, m, seed):
    w = orthogonal_random_features(m, q.shape[-1], generator=torch.Generator().manual_seed(seed))
    s = q.shape[-1] ** -0.25
    phi_q, phi_k = (
        positive_random_features(s * q, w, "row"),
        positive_random_features(s * k, w, "bound"),
    )
    return causal_linear_attention(phi_q, phi_k, v, chunk=8)


@pytest.mark.parametrize(("scale", "largest_over_smallest"), [(0.5, 0.25), (1.0, 0.6)])
def test_favor_error_falls_as_the_number_of_features_grows(scale, largest_over_smallest):
    # Mean (over 8 feature draws) absolute error to exact causal softmax attention. The
    # estimator's variance grows like exp(|q + k|^2 / sqrt(d)): at scale 0.5 the error is in
    # its m^-1/2 regime (1/8 from m = 16 to 1024 in theory), at scale 1 it falls more slowly.
    q, k, v = _qkv((4, 32, 8), 6)
    q, k = scale * q, scale * k
    exact = softmax_attention(q, k, v, causal=True)
    errors = []
    for m in (16, 64, 256, 1024):
        errors.append(sum((_favor(q, k, v, m, s) - exact).abs().mean() for s in range(8)) / 8)
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < largest_over_smallest * errors[0], errors


def test_performer_features_are_a_seeded_buffer_in_the_state_dict():
    one, same, other = Performer(1, seed=7), Performer(1, seed=7), Performer(1, seed=8)
    assert "random_features" in one.state_dict()
    assert "random_features" not in dict(one.named_parameters())
    assert one.random_features.shape == (one.layers, one.features, one.head_width)
    assert torch.equal(one.random_features, same.random_features)
    assert not torch.equal(one.random_features, other.random_features)
    other.load_state_dict(one.state_dict())
    x = torch.randn(2, 10, 1)
    torch.testing.assert_close(other(x), one(x), rtol=0, atol=0)


# ---------------------------------------------------------------------- Linformer


def test_linformer_with_identity_projections_is_exact_attention():
    q, k, v = _qkv((2, 3, 11, 4), 7)
    eye = torch.eye(11, dtype=DT)
    got = linformer_attention(q[..., -1:, :], k, v, eye, eye)
    expected = softmax_attention(q, k, v, causal=True)[..., -1:, :]
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(
        linformer_attention(q, k, v, eye, eye), _loop_attention(q, k, v, False)
    )


def test_linformer_kernel_projects_keys_and_values():
    # softmax(q (E k)^T / sqrt(d)) (F v), with E, F of rank 3, against the loop on E k, F v.
    q, k, v = _qkv((2, 5, 4), 8)
    e, f = _qkv((3, 5), 9)[:2]
    expected = _loop_attention(q, e @ k, f @ v, causal=False)
    torch.testing.assert_close(linformer_attention(q, k, v, e, f), expected)


def test_linformer_trunk_with_identity_projections_equals_the_exact_trunk():
    # One layer, r = L, E = F = I: the last state is the exact trunk's last state.
    torch.manual_seed(10)
    exact = ExactAttention(2, layers=1).double()
    linformer = Linformer(2, length=L, rank=L, layers=1, sharing="headwise").double()
    state = {**exact.state_dict(), **{f"projections.{i}": torch.eye(L, dtype=DT) for i in range(2)}}
    linformer.load_state_dict(state)
    x = torch.randn(5, L, 2, dtype=DT)
    torch.testing.assert_close(linformer(x), exact(x)[:, -1:], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sharing", attention.SHARING)
def test_linformer_sharing_uses_the_documented_matrices(sharing):
    trunk = Linformer(1, length=6, rank=2, layers=2, heads=2, d_model=4, sharing=sharing)
    count = {"none": 8, "headwise": 4, "key-value": 2, "layerwise": 1}[sharing]
    assert len(trunk.projections) == count
    assert all(p.shape == (2, 6) for p in trunk.projections)
    for layer in range(2):
        e, f = trunk.projection(layer)
        assert e.shape[-2:] == f.shape[-2:] == (2, 6)
        assert (e is f or torch.equal(e, f)) == (sharing in ("key-value", "layerwise"))


def test_linformer_refuses_another_window_length():
    with pytest.raises(ValueError, match="window length 9 != the trunk's length 8"):
        Linformer(1, length=8)(torch.randn(2, 9, 1))


# ---------------------------------------------------------------------- Nystromformer


def test_segment_means_by_hand_when_landmarks_do_not_divide_the_window():
    # L = 10, m = 4: boundaries floor(i 10 / 4) = 0, 2, 5, 7, 10, segment sizes 2, 3, 2, 3.
    x = torch.arange(10, dtype=DT)[:, None] ** 2
    expected = torch.tensor(
        [[0.5], [(4 + 9 + 16) / 3], [(25 + 36) / 2], [(49 + 64 + 81) / 3]], dtype=DT
    )
    torch.testing.assert_close(segment_means(x, 4), expected)
    assert segment_matrix(10, 4).sum(dim=0).eq(segment_matrix(10, 4).amax(dim=0)).all()
    # Equal segments (a reshape) agree with the averaging matrix.
    y = torch.randn(2, 12, 3, dtype=DT)
    torch.testing.assert_close(segment_means(y, 4), segment_matrix(12, 4, dtype=DT) @ y)


def test_nystrom_kernels_are_the_three_softmaxes():
    q, k, _ = _qkv((7, 4), 11)
    ql, kl = segment_means(q, 3), segment_means(k, 3)
    f, a, b = nystrom_kernels(q, k, ql, kl)
    for got, (rows, cols) in zip((f, a, b), ((q, kl), (ql, kl), (ql, k))):
        expected = torch.softmax(rows @ cols.T / 2.0, dim=-1)  # sqrt(d) = 2
        torch.testing.assert_close(got, expected, rtol=1e-14, atol=1e-14)


def test_iterative_pinv_converges_to_the_pseudo_inverse():
    q, k, _ = _qkv((3, 6, 4), 12, scale=1.5)
    a = torch.softmax(q @ k.transpose(-1, -2) / 2, dim=-1)
    z = iterative_pinv(a, iterations=30)
    torch.testing.assert_close(z, torch.linalg.pinv(a), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(a @ z @ a, a)  # Penrose conditions
    torch.testing.assert_close(z @ a @ z, z)
    # Z_0 = A^T / (||A||_1 ||A||_inf) by hand; with zero iterations that is the result.
    norm_1 = a.sum(dim=-2).amax(dim=-1)  # largest column sum
    z0 = a.transpose(-1, -2) / (norm_1 * 1.0)[:, None, None]  # ||A||_inf = 1 (rows sum to 1)
    torch.testing.assert_close(iterative_pinv(a, iterations=0), z0)
    errors = [(iterative_pinv(a, n) - torch.linalg.pinv(a)).abs().max() for n in (1, 3, 6)]
    assert errors[0] > errors[1] > errors[2]


def test_nystrom_with_a_landmark_per_step_is_exact_attention():
    q, k, v = _qkv((2, 3, 10, 4), 13, scale=1.5)
    exact = softmax_attention(q, k, v, causal=False)
    pinv = nystrom_attention(q, k, v, landmarks=10, pinv=torch.linalg.pinv)
    torch.testing.assert_close(pinv, exact, rtol=1e-10, atol=1e-10)
    iterated = nystrom_attention(q, k, v, landmarks=10, iterations=40, last=True)
    torch.testing.assert_close(iterated, exact[..., -1:, :], rtol=1e-6, atol=1e-6)
    more = nystrom_attention(q, k, v, landmarks=50, pinv=torch.linalg.pinv)  # min(m, L) = L
    torch.testing.assert_close(more, exact, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    ("pinv", "largest_over_smallest"), [(None, 0.25), (torch.linalg.pinv, 1e-7)]
)
def test_nystrom_error_falls_as_landmarks_grow(pinv, largest_over_smallest):
    # Smooth (random-walk) queries and keys, like features of a time series; mean absolute
    # error over 6 draws; the paper's 6 pseudo-inverse iterations, or the exact pinv (then
    # m = L is exact). On rough data the exact pinv of an ill-conditioned A can make the error
    # grow with m before it vanishes at m = L; 6 iterations act as a regulariser there.
    errors = {m: 0.0 for m in (1, 2, 4, 8, 16, 32)}
    for seed in range(6):
        q, k, v = _qkv((2, 32, 4), 20 + seed, scale=0.3)
        q, k = q.cumsum(-2) / 2, k.cumsum(-2) / 2
        exact = softmax_attention(q, k, v, causal=False)
        for m in errors:
            approx = nystrom_attention(q, k, v, landmarks=m, iterations=6, pinv=pinv)
            errors[m] += (approx - exact).abs().mean().item() / 6
    values = list(errors.values())
    assert all(a > b for a, b in zip(values, values[1:])), errors
    assert values[-1] < largest_over_smallest * values[0], errors


def test_nystrom_trunk_with_a_landmark_per_step_equals_the_exact_trunk():
    torch.manual_seed(14)
    exact = ExactAttention(2, layers=1).double()
    nystrom = Nystromformer(2, layers=1, landmarks=L, iterations=40).double()
    nystrom.load_state_dict(exact.state_dict())
    x = torch.randn(5, L, 2, dtype=DT)
    torch.testing.assert_close(nystrom(x), exact(x)[:, -1:], rtol=1e-6, atol=1e-6)


def test_nystrom_trunk_takes_any_window_length():
    trunk = Nystromformer(1, landmarks=8).double()
    for length in (3, 8, 13, 40):
        out = trunk(torch.randn(2, length, 1, dtype=DT))
        assert out.shape == (2, 1, 16) and torch.isfinite(out).all()


# ---------------------------------------------------------------------- cost in L


def _flops(trunk, length):
    x = torch.randn(2, length, 1)
    with FlopCounterMode(display=False) as counter:
        trunk(x)
    return counter.get_total_flops()


def _increments(flops):
    """f(2L) / f(L) and the ratio of successive increments (2 for a + bL, 4 for a + cL^2)."""
    ratios = [b / a for a, b in zip(flops, flops[1:])]
    return ratios, (flops[2] - flops[1]) / (flops[1] - flops[0])


@pytest.mark.parametrize("key", ["performer", "linformer", "nystromformer"])
def test_approximations_cost_linear_flops_in_the_window(key):
    # FLOPs at L, 2L, 4L are exactly affine in L (constant parts: the landmark pseudo-inverse,
    # the last layer's single query), so doubling L at most doubles them.
    flops = []
    for length in (64, 128, 256):
        options = {"length": length, "layers": 2} if key == "linformer" else {"layers": 2}
        flops.append(_flops(ATTENTION_TRUNKS[key](1, **options), length))
    ratios, increments = _increments(flops)
    assert abs(increments - 2) < 1e-9, flops
    assert all(1.5 < r <= 2 for r in ratios), ratios


def test_exact_attention_costs_quadratic_flops_in_the_window():
    trunk = ExactAttention(1, layers=2)
    flops = [_flops(trunk, length) for length in (256, 512, 1024)]
    ratios, increments = _increments(flops)
    assert all(3.5 < r < 4.0 for r in ratios), ratios
    assert 3.7 < increments < 4.0, flops
    assert _flops(Performer(1, layers=2), 1024) < 0.5 * flops[-1]


# ---------------------------------------------------------------------- contract


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("in_channels", [1, 3])
def test_parameter_count_matches_the_formula(variant, in_channels):
    key, options = VARIANTS[variant]
    cls = ATTENTION_TRUNKS[key]
    trunk = cls(in_channels, **options)
    assert sum(p.numel() for p in trunk.parameters()) == cls.n_params(in_channels, **options)
    assert trunk.out_features == options.get("d_model", 16)
    assert (
        cls.n_params(1, **{**options, "length": 64} if cls.window_dependent else options) < 15_000
    )


def test_parameter_count_by_hand():
    # D = 16, F = 32, c = 1: embed 2 * 16 = 32; a block 4*16*17 + 32*17 + 16*33 = 2160.
    assert ExactAttention.n_params(1) == 32 + 2160 == 2192
    assert ExactAttention.n_params(1, layers=2) == 32 + 2 * 2160
    assert Performer.n_params(1) == Nystromformer.n_params(1) == 2192
    assert Linformer.n_params(1, length=64) == 2192 + 16 * 64  # E = F, one layer
    assert Linformer.n_params(1, length=64, layers=2, sharing="none") == 4352 + 8 * 16 * 64


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_config_rebuilds_the_same_trunk(variant):
    trunk = _make(variant, dtype=torch.float32)
    key, options = VARIANTS[variant]
    config = json.loads(json.dumps(trunk.config()))
    assert "length" not in config and "in_channels" not in config
    extra = {"length": options["length"]} if "length" in options else {}
    rebuilt = ATTENTION_TRUNKS[key](2, **config, **extra)
    rebuilt.load_state_dict(trunk.state_dict())
    x = torch.randn(3, L, 2)
    out = trunk(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(rebuilt(x), out, rtol=0, atol=0)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_vmap_over_weight_draws_equals_a_loop(variant):
    trunk = _make(variant, seed=15)
    x = torch.randn(4, L, 2, dtype=DT)
    draws = {
        name: torch.stack([p + 0.1 * torch.randn_like(p) for _ in range(3)])
        for name, p in trunk.named_parameters()
    }
    batched = vmap(lambda w: functional_call(trunk, w, (x,)))(draws)
    for s in range(3):
        single = functional_call(trunk, {k: v[s] for k, v in draws.items()}, (x,))
        torch.testing.assert_close(batched[s], single, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradients_reach_every_parameter(variant):
    trunk = _make(variant, dtype=torch.float32, seed=16)
    trunk(torch.randn(4, L, 2))[:, -1].square().sum().backward()
    for name, p in trunk.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("variant", ["attention", "performer", "linformer", "nystromformer"])
def test_chunked_batch_equals_one_pass(variant, monkeypatch):
    trunk = _make(variant)
    x = torch.randn(7, L, 2, dtype=DT)
    whole = trunk(x)
    monkeypatch.setattr(attention, "BATCH_STEPS", 2 * L)  # chunks of 2 windows
    torch.testing.assert_close(trunk(x), whole, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("cls", "options", "message"),
    [
        (ExactAttention, {"d_model": 0}, "d_model must be an integer >= 1"),
        (ExactAttention, {"heads": 3}, "heads must divide d_model"),
        (ExactAttention, {"layers": 0}, "layers must be an integer >= 1"),
        (ExactAttention, {"ffn": 2.5}, "ffn must be an integer >= 1"),
        (Performer, {"features": 0}, "features must be an integer >= 1"),
        (Performer, {"chunk": 0}, "chunk must be an integer >= 1"),
        (Performer, {"seed": -1}, "seed must be an integer >= 0"),
        (Linformer, {"length": 0}, "length must be an integer >= 1"),
        (Linformer, {"length": 8, "rank": True}, "rank must be an integer >= 1"),
        (Linformer, {"length": 8, "sharing": "all"}, "sharing must be one of"),
        (Nystromformer, {"landmarks": 0}, "landmarks must be an integer >= 1"),
        (Nystromformer, {"iterations": 0}, "iterations must be an integer >= 1"),
    ],
)
def test_bad_options_raise_naming_the_option(cls, options, message):
    with pytest.raises(ValueError, match=message):
        cls(1, **options)


def test_unknown_options_raise_type_error():
    for cls in (ExactAttention, Performer, Nystromformer):
        with pytest.raises(TypeError):
            cls(1, kernel_size=3)
    with pytest.raises(TypeError):
        Linformer(1, length=8, landmarks=4)
    with pytest.raises(TypeError):
        Linformer(1)  # length is required
