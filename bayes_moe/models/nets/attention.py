r"""Attention trunks: exact softmax attention and three linear-cost approximations.

Every trunk embeds a channels-last window batch ``x`` ``(N, L, c)`` to width
``D = d_model`` and adds a fixed sinusoidal encoding of each step's *age* (steps
back from the last, :func:`age_encoding`), so the last step has age 0 whatever
``L`` is. Then ``layers`` pre-norm residual blocks, each with a parameter-free layer
normalisation (no gain or bias, so the mean-field priors of a fully Bayesian window
expert need no special case),

.. math::

    h &\leftarrow h + W_O\,\mathrm{Concat}_{j=1}^{H}\Big(
        \mathcal A\big(\bar h W_Q^{(j)}, \bar h W_K^{(j)}, \bar h W_V^{(j)}\big)\Big) + b_O,
    \qquad \bar h = \mathrm{LN}(h), \\
    h &\leftarrow h + W_2\, \mathrm{GELU}\big(W_1\, \mathrm{LN}(h) + b_1\big) + b_2,

where :math:`\mathcal A` is the trunk's attention kernel on one head of width
``D / H`` (:math:`W_{Q,K,V}` with biases). The blocks are shared
(:class:`AttentionBlock`); a trunk only supplies its kernel (:meth:`AttentionTrunk.attend`):

=================  =========================  ==========  ===================================
registry key       class                      ``causal``  kernel, cost per layer
=================  =========================  ==========  ===================================
``attention``      :class:`ExactAttention`    masked      softmax, causal mask, ``O(L^2 D)``
``performer``      :class:`Performer`         masked      FAVOR+ by prefix sums, ``O(L m D)``
``linformer``      :class:`Linformer`         last        keys and values projected to ``r``
                                                          rows along time, ``O(L r D)``
``nystromformer``  :class:`Nystromformer`     last        Nystrom, ``m`` segment-mean
                                                          landmarks, ``O(L m D + H m^3)``
=================  =========================  ==========  ===================================

``causal="masked"`` trunks return every state ``(N, L, D)``, the state at step ``t``
reading inputs ``<= t`` only. Linformer's projection along time and Nystromformer's
landmarks mix the whole window, so they have no causal form: their trunks
(``causal="last"``) return the last step's state only, ``(N, 1, D)``: every layer but
the last attends from every step over the whole window, the last layer from the last
step only. The window ends at the forecast origin, so there is no look-ahead.

Each kernel is a pure function on ``(..., L, d)`` tensors (:func:`softmax_attention`,
:func:`positive_random_features`, :func:`causal_linear_attention`,
:func:`linformer_attention`, :func:`segment_means`, :func:`nystrom_kernels`,
:func:`iterative_pinv`, :func:`nystrom_attention`), so tests check it against
exact attention. Every trunk has ``config()``, ``receptive_field`` (None: every step
reaches the last state) and ``n_params(in_channels, **options)``, and runs under
:func:`torch.func.vmap` over stacked parameter draws with
:func:`torch.func.functional_call`. Batches are evaluated in chunks of about
:data:`BATCH_STEPS` window steps (cut by shape only; no operation mixes windows).

References
----------
A. Vaswani et al., "Attention is all you need", NeurIPS 2017.

K. Choromanski et al., "Rethinking attention with Performers", ICLR 2021.

S. Wang, B. Z. Li, M. Khabsa, H. Fang and H. Ma, "Linformer: self-attention with
linear complexity", arXiv:2006.04768, 2020.

Y. Xiong et al., "Nystromformer: a Nystrom-based algorithm for approximating
self-attention", AAAI 2021.

H. Razavi, et al., "A new iterative method for finding approximate inverses of
complex matrices", Abstract and Applied Analysis, 2014 (the pseudo-inverse iteration).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bayes_moe.models.nets.options import positive_int

#: Window steps ``N L`` a trunk evaluates at once; larger batches go in chunks.
BATCH_STEPS: int = 2**14
#: Base of the geometric frequencies of :func:`age_encoding`.
AGE_BASE: float = 10_000.0
#: Ways :class:`Linformer` shares its projections along time (Wang et al. 2020, sec. 4).
SHARING: tuple[str, ...] = ("none", "headwise", "key-value", "layerwise")
#: Stabilisers of :func:`positive_random_features`.
STABILIZERS: tuple[str, ...] = ("none", "row", "bound")


# ---------------------------------------------------------------------- kernels


def age_encoding(
    length: int, width: int, *, dtype: torch.dtype | None = None, device=None
) -> torch.Tensor:
    r"""Sinusoidal features of each step's age :math:`a_t = L - 1 - t`.

    .. math::

        P_{t, 2i} = \sin(a_t \omega_i), \qquad P_{t, 2i + 1} = \cos(a_t \omega_i),
        \qquad \omega_i = 10000^{-2i / D}

    (Vaswani et al. 2017, counted back from the last step so that it is the same at
    every window length).

    Returns
    -------
    Tensor, shape ``(L, D)`` with ``D = width``.
    """
    age = torch.arange(length - 1, -1, -1, dtype=dtype, device=device)
    freq = AGE_BASE ** (-torch.arange(0, width, 2, dtype=dtype, device=device) / width)
    angle = age[:, None] * freq
    return torch.stack((angle.sin(), angle.cos()), dim=-1).flatten(-2)[:, :width]


def softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool
) -> torch.Tensor:
    r"""Exact scaled dot-product attention.

    .. math::

        \mathcal A(Q, K, V)_t = \sum_s \frac{\exp(q_t^\top k_s / \sqrt d)}
        {\sum_{s'} \exp(q_t^\top k_{s'} / \sqrt d)}\, v_s,

    over all ``s`` (``causal=False``) or ``s <= t`` (``causal=True``; the ``L_q``
    queries are the last ``L_q`` of the ``L`` steps). Masked scores are
    :math:`-\infty`, so their weights are exactly zero.

    Parameters
    ----------
    q : Tensor, shape ``(..., L_q, d)``
    k, v : Tensor, shape ``(..., L, d)`` (``v`` may have another width ``d_v``)
    causal : bool

    Returns
    -------
    Tensor, shape ``(..., L_q, d_v)``.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    if not causal:
        return ((scale * q) @ k.transpose(-1, -2)).softmax(dim=-1) @ v
    n_q, n_k = q.shape[-2], k.shape[-2]
    # -inf above the diagonal, added inside the product (one pass over the L_q x L scores)
    mask = torch.full((n_q, n_k), float("-inf"), dtype=q.dtype, device=q.device).triu(n_k - n_q + 1)
    scores = torch.baddbmm(
        mask,
        q.reshape(-1, n_q, q.shape[-1]),
        k.reshape(-1, n_k, k.shape[-1]).transpose(1, 2),
        alpha=scale,
    )
    out = scores.softmax(dim=-1) @ v.reshape(-1, n_k, v.shape[-1])
    return out.reshape(*q.shape[:-1], v.shape[-1])


def orthogonal_random_features(
    m: int, d: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    r"""Orthogonal random features of FAVOR+ (Choromanski et al. 2021, sec. 2.4).

    Rows come in blocks of ``d`` exactly orthogonal directions (the QR factor of a
    ``d x d`` Gaussian matrix, signs fixed by :math:`\mathrm{diag}(R)` so that each
    block is Haar distributed); the blocks are independent, the last one truncated
    to fill ``m`` rows. Each row is then given the norm of an independent
    :math:`\mathcal N(0, I_d)` vector (a :math:`\chi_d` draw), so every row is
    marginally :math:`\mathcal N(0, I_d)` and the estimator stays unbiased.

    Returns
    -------
    Tensor, shape ``(m, d)``, float64.
    """
    blocks = []
    for _ in range(-(-m // d)):
        q, r = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
        blocks.append((q * torch.sign(torch.diagonal(r))).T)
    directions = torch.cat(blocks)[:m]
    norms = torch.randn(m, d, generator=generator, dtype=torch.float64).norm(dim=-1)
    return norms[:, None] * directions


def positive_random_features(
    x: torch.Tensor, w: torch.Tensor, stabilizer: str = "none"
) -> torch.Tensor:
    r"""Positive random features of the softmax kernel, FAVOR+ (Choromanski et al. 2021).

    .. math::

        \phi(x) = \frac{1}{\sqrt m}\, \exp\Big(W x - \frac{\lVert x \rVert^2}{2} - c\Big),
        \qquad \mathbb E_W\big[\phi(x)^\top \phi(y)\big] = e^{x^\top y - c_x - c_y}

    for rows :math:`w_j \sim \mathcal N(0, I_d)` (Lemma 1 of the paper). The
    stabiliser :math:`c` keeps the exponentials finite; it scales
    :math:`\phi(x)` by a constant, which cancels in the ratio of the attention:

    ``"none"``
        :math:`c = 0` (the paper's :math:`\phi`).
    ``"row"``
        :math:`c = \max_j (w_j^\top x - \lVert x \rVert^2 / 2)`, per row of ``x``: use
        for queries (one constant per query, so it cancels in that query's ratio).
    ``"bound"``
        :math:`c = \max_j \lVert w_j \rVert^2 / 2`, the same for every ``x``: use for
        keys. Since :math:`w^\top x - \lVert x\rVert^2/2 = (\lVert w\rVert^2 -
        \lVert x - w\rVert^2)/2`, every feature is then at most :math:`1/\sqrt m`.
        Unlike the paper's maximum over all keys, it is causal: a key's features do
        not depend on later keys.

    The stabilisers carry no gradient (the attention does not depend on them).

    Parameters
    ----------
    x : Tensor, shape ``(..., L, d)``
        Queries or keys, already scaled by :math:`d^{-1/4}` for softmax attention.
    w : Tensor, shape ``(m, d)``
    stabilizer : {"none", "row", "bound"}

    Returns
    -------
    Tensor, shape ``(..., L, m)``.
    """
    if stabilizer not in STABILIZERS:
        raise ValueError(f"stabilizer must be one of {STABILIZERS}, got {stabilizer!r}")
    logits = x @ w.T - x.square().sum(dim=-1, keepdim=True) / 2
    if stabilizer == "row":
        logits = logits - logits.detach().amax(dim=-1, keepdim=True)
    elif stabilizer == "bound":
        logits = logits - w.detach().square().sum(dim=-1).amax() / 2
    return logits.exp() / math.sqrt(w.shape[0])


def causal_linear_attention(
    phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    r"""Causal (unidirectional) kernelised attention by prefix sums over time.

    .. math::

        \mathcal A_t = \frac{\phi(q_t)^\top S_t}{\phi(q_t)^\top z_t}, \qquad
        S_t = \sum_{s \le t} \phi(k_s)\, v_s^\top, \qquad
        z_t = \sum_{s \le t} \phi(k_s)

    (Choromanski et al. 2021, sec. 2.6). :math:`z_t` is carried as one more column of
    :math:`v`. ``chunk=None`` forms every prefix sum :math:`S_t` (``(..., L, m, d +
    1)``, the paper's formulation). ``chunk=C`` gives the same values with ``C``
    times less memory: the window is cut into blocks of ``C`` steps (the last one
    padded with zeros at its end); prefix sums run over the blocks' states
    :math:`\sum_{s \in b} \phi(k_s) v_s^\top`, and inside a block the masked sum
    :math:`\sum_{s \le t,\, s \in b} (\phi(q_t)^\top \phi(k_s))\, v_s` is done
    directly. Either way ``O(L m d)`` (plus ``O(L C m)`` for the blocks), and the
    output at ``t`` reads steps ``<= t`` only. A zero denominator (every feature
    underflowed) gives a zero output, not NaN.

    Parameters
    ----------
    phi_q, phi_k : Tensor, shape ``(..., L, m)``
        Positive features (:func:`positive_random_features`).
    v : Tensor, shape ``(..., L, d)``
    chunk : int, optional

    Returns
    -------
    Tensor, shape ``(..., L, d)``.
    """
    v1 = torch.cat((v, torch.ones_like(v[..., :1])), dim=-1)  # (..., L, d + 1)
    if chunk is None:
        prefix = torch.cumsum(phi_k.unsqueeze(-1) * v1.unsqueeze(-2), dim=-3)
        out = (phi_q.unsqueeze(-2) @ prefix).squeeze(-2)
    else:
        out = _blockwise_causal(phi_q, phi_k, v1, chunk)
    return out[..., :-1] / (out[..., -1:] + torch.finfo(out.dtype).tiny)


def _blockwise_causal(phi_q, phi_k, v1, chunk: int) -> torch.Tensor:
    r""":math:`\phi(q_t)^\top \sum_{s \le t} \phi(k_s) v_s^\top` in blocks of ``chunk`` steps."""
    length = phi_q.shape[-2]
    blocks = -(-length // chunk)
    pad = blocks * chunk - length

    def split(t):  # (..., L, w) -> (..., blocks, chunk, w)
        return F.pad(t, (0, 0, 0, pad)).unflatten(-2, (blocks, chunk))

    q, k, v = split(phi_q), split(phi_k), split(v1)
    keep = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    inside = (q @ k.transpose(-1, -2)).masked_fill(~keep, 0.0) @ v
    states = k.transpose(-1, -2) @ v  # (..., blocks, m, d + 1)
    before = torch.cat(
        (torch.zeros_like(states[..., :1, :, :]), torch.cumsum(states[..., :-1, :, :], dim=-3)),
        dim=-3,
    )  # sum over the earlier blocks only
    return (inside + q @ before).flatten(-3, -2)[..., :length, :]


def linformer_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor, f: torch.Tensor
) -> torch.Tensor:
    r"""Linformer attention (Wang et al. 2020, eq. 7).

    .. math::

        \mathcal A(Q, K, V) = \mathrm{softmax}\Big(\frac{Q (E K)^\top}{\sqrt d}\Big)\, F V,

    softmax over the ``r`` projected keys; ``O(L r d)``.

    Parameters
    ----------
    q : Tensor, shape ``(..., L_q, d)``
    k, v : Tensor, shape ``(..., L, d)``
    e, f : Tensor, shape ``(..., r, L)``
        Projections along time of the keys and the values.

    Returns
    -------
    Tensor, shape ``(..., L_q, d)``.
    """
    return softmax_attention(q, e @ k, f @ v, causal=False)


def segment_matrix(
    length: int, segments: int, *, dtype: torch.dtype | None = None, device=None
) -> torch.Tensor:
    r"""Averaging matrix of ``segments`` contiguous segments of ``length`` steps.

    Segment :math:`i` covers steps :math:`\lfloor iL/m \rfloor \le t < \lfloor (i+1)L/m
    \rfloor`: when ``m`` divides ``L`` these are Xiong et al.'s segments of ``L / m``
    steps; otherwise segment sizes differ by at most one (:math:`\lfloor L/m \rfloor`
    or :math:`\lceil L/m \rceil`), and every step belongs to exactly one segment.

    Returns
    -------
    Tensor, shape ``(m, L)``: row ``i`` is :math:`1/|S_i|` on segment :math:`S_i`.
    """
    bounds = [(i * length) // segments for i in range(segments + 1)]
    steps = torch.arange(length, device=device)
    start = torch.tensor(bounds[:-1], device=device)[:, None]
    stop = torch.tensor(bounds[1:], device=device)[:, None]
    inside = (steps >= start) & (steps < stop)
    return inside.to(dtype) / (stop - start).to(dtype)


def segment_means(x: torch.Tensor, segments: int) -> torch.Tensor:
    r"""Landmarks: means of ``segments`` contiguous segments of the rows of ``x``.

    .. math:: \tilde x_i = \frac{1}{|S_i|} \sum_{t \in S_i} x_t

    with the segments of :func:`segment_matrix`.

    Parameters
    ----------
    x : Tensor, shape ``(..., L, d)``
    segments : int
        ``m <= L``.

    Returns
    -------
    Tensor, shape ``(..., m, d)``.
    """
    length = x.shape[-2]
    if length % segments == 0:  # equal segments: a reshape, no averaging matrix
        return x.unflatten(-2, (segments, length // segments)).mean(dim=-2)
    return segment_matrix(length, segments, dtype=x.dtype, device=x.device) @ x


def nystrom_kernels(
    q: torch.Tensor, k: torch.Tensor, q_landmarks: torch.Tensor, k_landmarks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The three softmax kernels of the Nystrom approximation (Xiong et al. 2021, eq. 14).

    .. math::

        \tilde F = \mathrm{softmax}\Big(\frac{Q \tilde K^\top}{\sqrt d}\Big), \quad
        \tilde A = \mathrm{softmax}\Big(\frac{\tilde Q \tilde K^\top}{\sqrt d}\Big), \quad
        \tilde B = \mathrm{softmax}\Big(\frac{\tilde Q K^\top}{\sqrt d}\Big),

    each softmax over its last dimension.

    Parameters
    ----------
    q : Tensor, shape ``(..., L_q, d)``
    k : Tensor, shape ``(..., L, d)``
    q_landmarks, k_landmarks : Tensor, shape ``(..., m, d)``

    Returns
    -------
    tuple of Tensor
        :math:`\tilde F` ``(..., L_q, m)``, :math:`\tilde A` ``(..., m, m)``,
        :math:`\tilde B` ``(..., m, L)``.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])

    def kernel(a, b):
        return (scale * a @ b.transpose(-1, -2)).softmax(dim=-1)

    return kernel(q, k_landmarks), kernel(q_landmarks, k_landmarks), kernel(q_landmarks, k)


def iterative_pinv(a: torch.Tensor, iterations: int = 6) -> torch.Tensor:
    r"""Iterative Moore-Penrose pseudo-inverse of Xiong et al. (2021, eq. 16).

    .. math::

        Z_0 = \frac{A^\top}{\lVert A \rVert_1 \lVert A \rVert_\infty}, \qquad
        Z_{j+1} = \tfrac14 Z_j \big(13 I - A Z_j (15 I - A Z_j (7 I - A Z_j))\big),

    with :math:`\lVert A\rVert_1` the largest absolute column sum and
    :math:`\lVert A\rVert_\infty` the largest absolute row sum of each matrix
    (per matrix, not over the batch, so windows stay independent). The paper uses
    6 iterations.

    Parameters
    ----------
    a : Tensor, shape ``(..., m, m)``
    iterations : int

    Returns
    -------
    Tensor, shape ``(..., m, m)``.
    """
    norms = a.abs().sum(dim=-2).amax(dim=-1) * a.abs().sum(dim=-1).amax(dim=-1)
    z = a.transpose(-1, -2) / norms[..., None, None]
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def nystrom_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    landmarks: int,
    iterations: int = 6,
    last: bool = False,
    pinv: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    r"""Nystrom approximation of softmax attention (Xiong et al. 2021, eq. 15).

    .. math::

        \mathcal A(Q, K, V) \approx \tilde F\, \tilde A^{+} (\tilde B V),

    with landmarks :math:`\tilde Q, \tilde K` the segment means of :math:`Q, K`
    (:func:`segment_means`, ``min(landmarks, L)`` segments), the kernels of
    :func:`nystrom_kernels` and :math:`\tilde A^+` by :func:`iterative_pinv`. With one
    landmark per step and the exact pseudo-inverse it is exact softmax attention.
    Cost ``O(L m d + m^3)``, evaluated right to left.

    Parameters
    ----------
    q, k, v : Tensor, shape ``(..., L, d)``
    landmarks : int
        ``m``.
    iterations : int
        Of the pseudo-inverse.
    last : bool
        Return the last query's row only.
    pinv : callable, optional
        Replaces :func:`iterative_pinv` (e.g. :func:`torch.linalg.pinv`, for tests).

    Returns
    -------
    Tensor, shape ``(..., L, d)``, or ``(..., 1, d)`` when ``last``.
    """
    m = min(landmarks, q.shape[-2])
    q_land, k_land = segment_means(q, m), segment_means(k, m)
    f, a, b = nystrom_kernels(q[..., -1:, :] if last else q, k, q_land, k_land)
    a_pinv = iterative_pinv(a, iterations) if pinv is None else pinv(a)
    return f @ (a_pinv @ (b @ v))


# ---------------------------------------------------------------------- trunks


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], torch.Tensor]


class AttentionBlock(nn.Module):
    r"""Pre-norm residual block: multi-head self-attention, then a GELU MLP.

    .. math::

        h' = h + W_O [\mathcal A_1; \dots; \mathcal A_H] + b_O, \qquad
        h'' = h' + W_2\,\mathrm{GELU}(W_1 \mathrm{LN}(h') + b_1) + b_2,

    with :math:`\mathcal A_j` the kernel on head ``j`` of ``qkv(LN(h))`` (rows
    :math:`[W_Q; W_K; W_V]`, head ``j`` the columns ``j D/H .. (j+1) D/H`` of each)
    and LN without parameters. With ``last`` only the last step's output is formed
    (the kernel still reads every step's keys and values).
    Shapes ``(N, L, D) -> (N, L, D)``, or ``(N, 1, D)`` with ``last``;
    :math:`4D(D + 1) + F(D + 1) + D(F + 1)` parameters.
    """

    def __init__(self, d_model: int, heads: int, ffn: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.up = nn.Linear(d_model, ffn)
        self.down = nn.Linear(ffn, d_model)

    def forward(self, h: torch.Tensor, attend: Attend, last: bool = False) -> torch.Tensor:
        """Block output; ``attend(q, k, v, last)`` maps heads ``(N, H, L, D/H)`` to outputs."""
        width = h.shape[-1]
        qkv = self.qkv(F.layer_norm(h, (width,)))  # (N, L, 3D)
        q, k, v = qkv.unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4).unbind(0)
        heads = attend(q, k, v, last)  # (N, H, L or 1, D/H)
        if last:
            h = h[:, -1:]
        h = h + self.out(heads.transpose(1, 2).flatten(2))
        return h + self.down(F.gelu(self.up(F.layer_norm(h, (width,)))))


class AttentionTrunk(nn.Module):
    """Base of the attention trunks: age-encoded embedding, then :class:`AttentionBlock` s.

    Subclasses implement :meth:`attend` (the attention kernel of one layer) and set
    :attr:`causal` (and :attr:`window_dependent` when they take ``length``).

    Parameters
    ----------
    in_channels : int
    d_model : int
        Width ``D`` of the states (``out_features``).
    heads : int
        ``H``; must divide ``d_model``.
    layers : int
    ffn : int
        Hidden width ``F`` of the feed-forward MLP.
    """

    causal: ClassVar[str]
    window_dependent: ClassVar[bool] = False
    out_features: int

    def __init__(self, in_channels: int, d_model: int, heads: int, layers: int, ffn: int):
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.d_model = positive_int("d_model", d_model)
        self.heads = positive_int("heads", heads)
        if self.d_model % self.heads:
            raise ValueError(f"heads must divide d_model = {self.d_model}, got {heads!r}")
        self.layers = positive_int("layers", layers)
        self.ffn = positive_int("ffn", ffn)
        self.out_features = self.d_model
        self.embed = nn.Linear(self.in_channels, self.d_model)
        self.blocks = nn.ModuleList(
            AttentionBlock(self.d_model, self.heads, self.ffn) for _ in range(self.layers)
        )

    @property
    def head_width(self) -> int:
        """``D / H``."""
        return self.d_model // self.heads

    def config(self) -> dict:
        """Constructor options (all but ``in_channels`` and ``length``)."""
        return {
            "d_model": self.d_model,
            "heads": self.heads,
            "layers": self.layers,
            "ffn": self.ffn,
        }

    @staticmethod
    def _blocks_params(in_channels: int, d_model: int, layers: int, ffn: int) -> int:
        r""":math:`(c + 1) D + n_\text{layers}\,(4D(D + 1) + F(D + 1) + D(F + 1))`."""
        D, F_ = d_model, ffn
        return (in_channels + 1) * D + layers * (4 * D * (D + 1) + F_ * (D + 1) + D * (F_ + 1))

    @property
    def receptive_field(self) -> None:
        """None: every step of the window can reach the last state."""
        return None

    def attend(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, last: bool
    ) -> torch.Tensor:
        """The attention kernel of layer ``layer``.

        Parameters
        ----------
        layer : int
        q, k, v : Tensor, shape ``(N, H, L, D/H)``
        last : bool
            True in the last layer of a ``causal="last"`` trunk: return the last
            step's output only.

        Returns
        -------
        Tensor, shape ``(N, H, L, D/H)``, or ``(N, H, 1, D/H)`` when ``last``.
        """
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """States ``(N, L, D)`` (``causal="masked"``) or ``(N, 1, D)`` (``"last"``) of ``x``."""
        rows = max(1, BATCH_STEPS // max(1, x.shape[1]))
        if x.shape[0] <= rows:
            return self._forward_chunk(x)
        return torch.cat([self._forward_chunk(part) for part in x.split(rows)])

    def _forward_chunk(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + age_encoding(x.shape[1], self.d_model, dtype=x.dtype, device=x.device)
        for layer, block in enumerate(self.blocks):
            last = self.causal == "last" and layer == self.layers - 1
            h = block(h, partial(self.attend, layer), last)
        return h


class ExactAttention(AttentionTrunk):
    r"""Transformer with exact causal softmax attention: the quadratic reference.

    :math:`\mathcal A` = :func:`softmax_attention` with a causal mask, so the state at
    step ``t`` reads inputs ``<= t`` only.

    Parameters
    ----------
    in_channels : int
    d_model : int
        ``D`` (``out_features``).
    heads : int
    layers : int
    ffn : int
        Hidden width of the MLP.

    Notes
    -----
    Shapes ``(N, L, c) -> (N, L, D)``. Parameters:
    :math:`(c + 1) D + n_\text{layers}(4D(D + 1) + F(D + 1) + D(F + 1))`, 2,192 at the
    defaults and ``c = 1``. Cost ``O(L^2 D)`` per layer. One CPU thread, forward +
    backward over ``(4945, 64, 1)``, float32, defaults: 0.6-0.7 s (the GRU: 0.42-0.46
    s in the same runs; a shared machine); with ``layers=2`` 1.2-1.4 s, hence one
    layer by default. The full sample in no_grad
    needs about 100 MB (chunks of :data:`BATCH_STEPS` steps).
    """

    causal: ClassVar[str] = "masked"

    def __init__(
        self, in_channels: int, *, d_model: int = 16, heads: int = 2, layers: int = 1, ffn: int = 32
    ):
        super().__init__(in_channels, d_model, heads, layers, ffn)

    @staticmethod
    def n_params(
        in_channels: int, *, d_model: int = 16, heads: int = 2, layers: int = 1, ffn: int = 32
    ) -> int:
        r""":math:`(c + 1) D + n_\text{layers}(4D(D + 1) + F(D + 1) + D(F + 1))`."""
        return AttentionTrunk._blocks_params(in_channels, d_model, layers, ffn)

    def attend(self, layer, q, k, v, last):
        """Causal softmax attention (:func:`softmax_attention`)."""
        return softmax_attention(q, k, v, causal=True)


class Performer(AttentionTrunk):
    r"""Performer: causal FAVOR+ attention (Choromanski et al. 2021).

    .. math::

        \mathcal A_t = \frac{\phi(q_t)^\top \sum_{s \le t} \phi(k_s) v_s^\top}
        {\phi(q_t)^\top \sum_{s \le t} \phi(k_s)}, \qquad
        \phi(x) = \frac{1}{\sqrt m} \exp\big(W x - \lVert x \rVert^2/2\big),

    on queries and keys scaled by :math:`d^{-1/4}` (so that :math:`\phi(q)^\top\phi(k)`
    estimates :math:`\exp(q^\top k / \sqrt d)`), with ``m`` orthogonal random
    features per layer (:func:`orthogonal_random_features`, shared by the heads of a
    layer, as in the paper's code) drawn once from ``seed`` at construction and kept
    in the buffer ``random_features`` ``(layers, m, D/H)``, so they are saved in the
    state dict and not trained. Queries are stabilised per row, keys by the bound
    :math:`\max_j \lVert w_j\rVert^2/2` (:func:`positive_random_features`), which
    keeps the trunk exactly causal. Prefix sums over time
    (:func:`causal_linear_attention`, in blocks of ``chunk`` steps): ``O(L m d)``.
    The paper's periodic redrawing of the features during training is left out: the
    features are part of the model, so a checkpoint restores the same function.

    Parameters
    ----------
    in_channels : int
    d_model, heads, layers, ffn : int
        As for :class:`ExactAttention`.
    features : int
        ``m``, random features per layer.
    chunk : int
        Block length of the prefix sums (memory and speed only; same values).
    seed : int
        Seed of the random features.

    Notes
    -----
    Shapes ``(N, L, c) -> (N, L, D)``. Parameters as :class:`ExactAttention` (2,192 at
    the defaults and ``c = 1``). One CPU thread, forward + backward over
    ``(4945, 64, 1)``, float32, defaults: 0.8-0.95 s with the default ``m = 16`` (the
    paper's ``m = d log d`` for ``d = D/H = 8``), 0.9-1.15 s with ``m = 32``: at
    ``L = 64`` FAVOR+ costs more than exact attention; its ``O(L m d)`` pays off for
    windows much longer than ``m``.
    """

    causal: ClassVar[str] = "masked"

    def __init__(
        self,
        in_channels: int,
        *,
        d_model: int = 16,
        heads: int = 2,
        layers: int = 1,
        ffn: int = 32,
        features: int = 16,
        chunk: int = 16,
        seed: int = 0,
    ):
        super().__init__(in_channels, d_model, heads, layers, ffn)
        self.features = positive_int("features", features)
        self.chunk = positive_int("chunk", chunk)
        self.seed = positive_int("seed", seed, minimum=0)
        generator = torch.Generator().manual_seed(self.seed)
        draws = [
            orthogonal_random_features(self.features, self.head_width, generator=generator)
            for _ in range(self.layers)
        ]
        self.register_buffer("random_features", torch.stack(draws).to(torch.get_default_dtype()))

    def config(self) -> dict:
        """Constructor options (all but ``in_channels``)."""
        return {
            **super().config(),
            "features": self.features,
            "chunk": self.chunk,
            "seed": self.seed,
        }

    @staticmethod
    def n_params(
        in_channels: int,
        *,
        d_model: int = 16,
        heads: int = 2,
        layers: int = 1,
        ffn: int = 32,
        features: int = 16,
        chunk: int = 16,
        seed: int = 0,
    ) -> int:
        """As :meth:`ExactAttention.n_params` (the random features are a buffer)."""
        return AttentionTrunk._blocks_params(in_channels, d_model, layers, ffn)

    def attend(self, layer, q, k, v, last):
        """Causal FAVOR+ attention with the layer's random features."""
        w = self.random_features[layer]
        scale = q.shape[-1] ** -0.25
        phi_q = positive_random_features(q * scale, w, "row")
        phi_k = positive_random_features(k * scale, w, "bound")
        return causal_linear_attention(phi_q, phi_k, v, self.chunk)


class Linformer(AttentionTrunk):
    r"""Linformer: keys and values projected along time to ``r`` rows (Wang et al. 2020).

    :math:`\mathcal A` = :func:`linformer_attention` with learned
    :math:`E, F \in \mathbb R^{r \times L}`, initialised
    :math:`\mathcal N(0, 1/L)` (the variance of the fully Bayesian prior). Each step of
    every layer but the last attends over the whole window; the last layer forms the
    last step's state only (``causal="last"``). Cost ``O(L r D)`` per layer.

    The projections are shared as in the paper's section 4 (``sharing``):

    ``"none"``
        :math:`E, F` per layer and head: ``2 H n_layers`` matrices.
    ``"headwise"``
        :math:`E, F` per layer, shared by its heads: ``2 n_layers``.
    ``"key-value"`` (default)
        :math:`E = F` per layer, shared by its heads: ``n_layers``.
    ``"layerwise"``
        One :math:`E = F` for every layer and head: 1.

    They live in ``projections`` (one ``(r, L)`` parameter each, in layer, then
    key/value, then head order).

    Parameters
    ----------
    in_channels : int
    length : int
        Window length ``L`` (the expert passes it).
    d_model, heads, layers, ffn : int
        As for :class:`ExactAttention`.
    rank : int
        ``r``.
    sharing : {"none", "headwise", "key-value", "layerwise"}

    Notes
    -----
    Shapes ``(N, L, c) -> (N, 1, D)``; ``L`` must equal ``length``. Parameters: those
    of :class:`ExactAttention` plus ``r L`` times the number of matrices above (3,216
    at the defaults, ``c = 1`` and ``L = 64``). One CPU thread, forward + backward
    over ``(4945, 64, 1)``, float32, defaults: 0.26-0.34 s.
    """

    causal: ClassVar[str] = "last"
    window_dependent: ClassVar[bool] = True

    def __init__(
        self,
        in_channels: int,
        *,
        length: int,
        d_model: int = 16,
        heads: int = 2,
        layers: int = 1,
        ffn: int = 32,
        rank: int = 16,
        sharing: str = "key-value",
    ):
        super().__init__(in_channels, d_model, heads, layers, ffn)
        self.length = positive_int("length", length)
        self.rank = positive_int("rank", rank)
        self.sharing = _choice("sharing", sharing, SHARING)
        count = _projection_count(self.sharing, self.layers, self.heads)
        self.projections = nn.ParameterList(
            nn.Parameter(torch.randn(self.rank, self.length) / math.sqrt(self.length))
            for _ in range(count)
        )

    def config(self) -> dict:
        """Constructor options (all but ``in_channels`` and ``length``)."""
        return {**super().config(), "rank": self.rank, "sharing": self.sharing}

    @staticmethod
    def n_params(
        in_channels: int,
        *,
        length: int,
        d_model: int = 16,
        heads: int = 2,
        layers: int = 1,
        ffn: int = 32,
        rank: int = 16,
        sharing: str = "key-value",
    ) -> int:
        """:meth:`ExactAttention.n_params` plus ``r L`` per projection matrix."""
        count = _projection_count(sharing, layers, heads)
        return (
            AttentionTrunk._blocks_params(in_channels, d_model, layers, ffn) + count * rank * length
        )

    def projection(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`E, F` of a layer, shape ``(H, r, L)`` or ``(1, r, L)`` (shared by the heads)."""
        p = self.projections
        if self.sharing == "layerwise":
            return p[0][None], p[0][None]
        if self.sharing == "key-value":
            return p[layer][None], p[layer][None]
        if self.sharing == "headwise":
            return p[2 * layer][None], p[2 * layer + 1][None]
        first = 2 * layer * self.heads
        e = torch.stack([p[first + j] for j in range(self.heads)])
        f = torch.stack([p[first + self.heads + j] for j in range(self.heads)])
        return e, f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Last state ``(N, 1, D)`` of a batch ``(N, L, c)`` with ``L = length``."""
        if x.shape[1] != self.length:
            raise ValueError(f"window length {x.shape[1]} != the trunk's length {self.length}")
        return super().forward(x)

    def attend(self, layer, q, k, v, last):
        """Linformer attention with the layer's projections."""
        e, f = self.projection(layer)
        return linformer_attention(q[..., -1:, :] if last else q, k, v, e, f)


def _projection_count(sharing: str, layers: int, heads: int) -> int:
    """Number of ``(r, L)`` projection matrices of a Linformer."""
    _choice("sharing", sharing, SHARING)
    return {"none": 2 * layers * heads, "headwise": 2 * layers, "key-value": layers}.get(sharing, 1)


class Nystromformer(AttentionTrunk):
    r"""Nystromformer: Nystrom approximation of softmax attention (Xiong et al. 2021).

    :math:`\mathcal A` = :func:`nystrom_attention` with ``landmarks`` segment-mean
    landmarks (``min(landmarks, L)``; when ``landmarks`` does not divide ``L`` the
    segments differ in length by at most one step, see :func:`segment_matrix`) and
    ``iterations`` steps of the iterative pseudo-inverse. Each step of every layer but
    the last attends over the whole window; the last layer forms the last step's
    state only (``causal="last"``). Cost ``O(L m D + m^3)`` per layer. Xiong et al.'s
    model also adds a depthwise convolution of :math:`V` to the attention output; it
    is not part of the approximation and is left out, so that the trunk differs from
    exact attention by the Nystrom approximation alone.

    Parameters
    ----------
    in_channels : int
    d_model, heads, layers, ffn : int
        As for :class:`ExactAttention`.
    landmarks : int
        ``m``.
    iterations : int
        Of the pseudo-inverse (the paper: 6).

    Notes
    -----
    Shapes ``(N, L, c) -> (N, 1, D)`` for any ``L``. Parameters as
    :class:`ExactAttention` (2,192 at the defaults and ``c = 1``). One CPU thread,
    forward + backward over ``(4945, 64, 1)``, float32, defaults: 0.4-0.5 s.
    """

    causal: ClassVar[str] = "last"

    def __init__(
        self,
        in_channels: int,
        *,
        d_model: int = 16,
        heads: int = 2,
        layers: int = 1,
        ffn: int = 32,
        landmarks: int = 8,
        iterations: int = 6,
    ):
        super().__init__(in_channels, d_model, heads, layers, ffn)
        self.landmarks = positive_int("landmarks", landmarks)
        self.iterations = positive_int("iterations", iterations)

    def config(self) -> dict:
        """Constructor options (all but ``in_channels``)."""
        return {**super().config(), "landmarks": self.landmarks, "iterations": self.iterations}

    @staticmethod
    def n_params(
        in_channels: int,
        *,
        d_model: int = 16,
        heads: int = 2,
        layers: int = 1,
        ffn: int = 32,
        landmarks: int = 8,
        iterations: int = 6,
    ) -> int:
        """As :meth:`ExactAttention.n_params`."""
        return AttentionTrunk._blocks_params(in_channels, d_model, layers, ffn)

    def attend(self, layer, q, k, v, last):
        """Nystrom attention with segment-mean landmarks."""
        return nystrom_attention(
            q, k, v, landmarks=self.landmarks, iterations=self.iterations, last=last
        )


ATTENTION_TRUNKS: dict[str, type[nn.Module]] = {
    "attention": ExactAttention,
    "performer": Performer,
    "linformer": Linformer,
    "nystromformer": Nystromformer,
}
