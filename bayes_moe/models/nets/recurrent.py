r"""Recurrent trunks: GRU, MinimalRNN and SRU.

Each maps a channels-last window batch ``x`` ``(N, L, c)`` to hidden states
``(N, L, H)`` from a zero initial state, so the state at step ``t`` reads inputs
``<= t`` only. Layers stack: layer ``l + 1`` reads the states of layer ``l``.

The GRU's gates read the previous state, so it runs step by step. MinimalRNN and
SRU here have gates that read the input only, so each layer is a *linear*
recurrence in its state,

.. math:: c_t = a_t \odot c_{t-1} + b_t, \qquad c_0 = 0,

which is a prefix product under the associative operator
:math:`(a_1, b_1) \otimes (a_2, b_2) = (a_1 a_2,\ a_2 b_1 + b_2)` and runs as a
parallel scan (Martin and Cundy 2018) with
:func:`~bayes_moe.kernels.scan.associative_scan` in ``2 log2 L`` sequential steps
(``mode="scan"``), or step by step (``mode="loop"``); both give the same states.

Which is faster depends on the hardware. On a CPU the loop wins at every window
length measured: one thread, ``N = 5000``, ``H = 32``, forward + backward, float32,
the bare recurrence :func:`linear_recurrence` takes 0.30 s (scan) against 0.07 s
(loop) at ``L = 64`` and 3.7 s against 0.7 s at ``L = 256``, and at ``L = 1024``
(``N = 1250``) 4.0 s against 0.6 s. The scan makes ``O(log L)`` passes over
tensors of the whole window, the loop ``L`` passes over one step's ``(N, H)`` slab,
which stays in cache; a CPU runs either at memory speed, and the many small steps
cost little. So the default is the loop, and the loop does all of a step's
elementwise work (gates, state, output) on that slab. The scan is kept
(``mode="scan"``) for hardware where a step's launch cost dominates and the
``O(log L)`` depth pays off.

All trunks work time-major inside and return the states as an ``(N, L, H)``
view of a time-major tensor (the last state ``h[:, -1]`` is contiguous).

Every trunk has ``config()``, ``receptive_field`` (None: a recurrence reaches the
whole window) and ``n_params(in_channels, **options)``, and can be evaluated under
:func:`torch.func.vmap` over stacked parameter draws with
:func:`torch.func.functional_call`.

References
----------
K. Cho et al., "Learning phrase representations using RNN encoder-decoder for
statistical machine translation", EMNLP 2014.

M. Chen, "MinimalRNN: toward more interpretable and trainable recurrent neural
networks", arXiv:1711.06788, 2017.

T. Lei, Y. Zhang, S. I. Wang, H. Dai and Y. Artzi, "Simple recurrent units for
highly parallelizable recurrence", EMNLP 2018.

E. Martin and C. Cundy, "Parallelizing linear recurrent neural nets over sequence
length", ICLR 2018.

G. E. Blelloch, "Prefix sums and their applications", CMU-CS-90-190, 1990.
"""

from __future__ import annotations

from typing import ClassVar, cast

import torch
from torch import nn

from bayes_moe.kernels.scan import associative_scan
from bayes_moe.models.nets.options import positive_int

#: Ways a linear recurrence is evaluated.
MODES: tuple[str, ...] = ("scan", "loop")
#: Ways the GRU is evaluated.
GRU_MODES: tuple[str, ...] = ("fused", "loop")


def _check_mode(mode: str, modes: tuple[str, ...]) -> str:
    if mode not in modes:
        raise ValueError(f"mode must be one of {modes}, got {mode!r}")
    return mode


def _combine(first, second):
    """``(a1, b1) (x) (a2, b2) = (a1 a2, a2 b1 + b2)``: apply step 1, then step 2."""
    a1, b1 = first
    a2, b2 = second
    return a1 * a2, torch.addcmul(b2, a2, b1)


def _scan_time_major(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """:math:`c_t = a_t c_{t-1} + b_t` by the associative scan; ``a, b`` ``(L, ...)``."""
    return associative_scan(_combine, (a, b))[1]


def linear_recurrence(a: torch.Tensor, b: torch.Tensor, mode: str = "scan") -> torch.Tensor:
    r"""States of :math:`c_t = a_t \odot c_{t-1} + b_t` from :math:`c_0 = 0`.

    .. math::

        c_t = \sum_{s \le t} \Big(\prod_{s < u \le t} a_u\Big) \odot b_s.

    Parameters
    ----------
    a, b : Tensor, shape ``(N, L, H)``
    mode : {"scan", "loop"}
        Parallel prefix scan over time (prefix products of :math:`(a_t, b_t)` under
        :math:`(a_1, b_1) \otimes (a_2, b_2) = (a_1 a_2, a_2 b_1 + b_2)`), or the
        step-by-step recursion.

    Returns
    -------
    Tensor, shape ``(N, L, H)``: :math:`c_1, \dots, c_L`.
    """
    _check_mode(mode, MODES)
    if mode == "scan":
        return _scan_time_major(a.transpose(0, 1), b.transpose(0, 1)).transpose(0, 1)
    # unbind, not a[:, t]: the backward of L selects writes L full-size zero tensors
    # (quadratic in L); the backward of unbind is one stack.
    a_t, b_t = a.unbind(1), b.unbind(1)
    c = b_t[0]  # c_1 = a_1 c_0 + b_1 with c_0 = 0
    states = [c]
    for t in range(1, len(b_t)):
        c = torch.addcmul(b_t[t], a_t[t], c)
        states.append(c)
    return torch.stack(states, dim=1)


class _Recurrent(nn.Module):
    """Shared options of the recurrent trunks."""

    out_features: int
    #: Each state reads inputs up to its own step only (see :mod:`bayes_moe.models.nets`).
    causal: ClassVar[str] = "masked"
    #: The weights do not depend on the window length.
    window_dependent: ClassVar[bool] = False

    def __init__(self, in_channels: int, hidden: int, layers: int, mode: str, modes: tuple):
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.hidden = positive_int("hidden", hidden)
        self.layers = positive_int("layers", layers)
        self.modes = modes
        self.mode = _check_mode(mode, modes)
        self.out_features = self.hidden

    def config(self) -> dict:
        """Constructor options (all but ``in_channels``)."""
        return {"hidden": self.hidden, "layers": self.layers, "mode": self.mode}

    def _widths(self) -> list[int]:
        """Input width of each layer."""
        return [self.in_channels] + [self.hidden] * (self.layers - 1)

    def _mode(self, mode: str | None) -> str:
        return self.mode if mode is None else _check_mode(mode, self.modes)

    @property
    def receptive_field(self) -> None:
        """None: every step of the window can reach the last state."""
        return None

    def forward_sequential(self, x: torch.Tensor) -> torch.Tensor:
        """``forward(x, mode="loop")``: the step-by-step recursion (the reference)."""
        return self(x, mode="loop")


class GRU(_Recurrent):
    r"""Gated recurrent unit in PyTorch's convention.

    .. math::

        r_t &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}), \\
        z_t &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}), \\
        n_t &= \tanh\big(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})\big), \\
        h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}, \qquad h_0 = 0.

    The seed's equation 3.1 is the same cell with :math:`z \to 1 - z`; note that the
    reset gate multiplies :math:`W_{hn} h_{t-1} + b_{hn}`, bias included (Cho et al.
    put it before the product). The weights live in a ``torch.nn.GRU`` (``cell``:
    ``weight_ih_l{k}`` ``(3H, c)`` in r, z, n order, ``weight_hh_l{k}`` ``(3H, H)``,
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` ``(3H,)``) with its initialisation.

    Two evaluations, the same states: ``mode="fused"`` (default) runs PyTorch's fused
    GRU kernel, ``mode="loop"`` the equations above step by step (the input
    projections of all steps in one matrix product, one ``(N, H) x (H, 3H)`` product
    per step). Under :func:`torch.func.vmap` (weight draws or inputs batched), which
    the fused kernel does not support, the loop is used.

    Parameters
    ----------
    in_channels : int
    hidden : int
        ``H`` (``out_features``).
    layers : int
    mode : {"fused", "loop"}

    Notes
    -----
    Shapes ``(N, L, c) -> (N, L, H)``. Parameters:
    :math:`\sum_l 3H(c_l + H + 2)`, with :math:`c_0 = c`, else ``H``. One CPU thread,
    forward + backward over ``(5000, 64, 1)``, ``H = 32``: fused 0.3-0.45 s, loop
    0.4-0.55 s (a shared machine; the loop was 14 times slower before it stepped
    over time-major slabs).
    """

    def __init__(self, in_channels: int, *, hidden: int = 32, layers: int = 1, mode: str = "fused"):
        super().__init__(in_channels, hidden, layers, mode, GRU_MODES)
        self.cell = nn.GRU(self.in_channels, self.hidden, self.layers, batch_first=True)

    @staticmethod
    def n_params(
        in_channels: int, *, hidden: int = 32, layers: int = 1, mode: str = "fused"
    ) -> int:
        r""":math:`\sum_l 3H(c_l + H + 2)`."""
        widths = [in_channels] + [hidden] * (layers - 1)
        return sum(3 * hidden * (w + hidden + 2) for w in widths)

    def forward(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """Hidden states ``(N, L, H)`` of a batch ``(N, L, c)``; ``mode`` overrides the trunk's."""
        fused = self._mode(mode) == "fused"
        if fused and not (
            _is_batched(cast(torch.Tensor, self.cell.weight_ih_l0)) or _is_batched(x)
        ):
            return self.cell(x)[0]
        x = x.transpose(0, 1)
        for k in range(self.layers):
            x = self._loop_layer(x, k)
        return x.transpose(0, 1)

    def _loop_layer(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """One layer, time-major: ``(L, N, c_k) -> (L, N, H)``."""
        cell, H = self.cell, self.hidden
        w_hh, b_hh = getattr(cell, f"weight_hh_l{k}"), getattr(cell, f"bias_hh_l{k}")
        w_ih, b_ih = getattr(cell, f"weight_ih_l{k}"), getattr(cell, f"bias_ih_l{k}")
        # Input part of the three gates for all steps in one product; each step reads a
        # contiguous (N, 3H) slab, and unbind (not gi[t]) keeps the backward linear in L.
        gi = torch.nn.functional.linear(x, w_ih, b_ih)  # (L, N, 3H)
        w_hh_t = w_hh.t()
        h = x.new_zeros(x.shape[1], H)
        states = []
        for gi_t in gi.unbind(0):
            gh = torch.addmm(b_hh, h, w_hh_t)  # (N, 3H): W_h h + b_h
            rz = torch.sigmoid(gi_t[:, : 2 * H] + gh[:, : 2 * H])
            r, z = rz[:, :H], rz[:, H:]
            n = torch.tanh(torch.addcmul(gi_t[:, 2 * H :], r, gh[:, 2 * H :]))
            h = torch.lerp(n, h, z)  # (1 - z) n + z h
            states.append(h)
        return torch.stack(states, dim=0)


def _is_batched(tensor: torch.Tensor) -> bool:
    """True inside :func:`torch.func.vmap` when ``tensor`` carries the mapped dimension."""
    return torch._C._functorch.is_batchedtensor(tensor)


class MinimalRNN(_Recurrent):
    r"""MinimalRNN with an input-driven update gate (a linear recurrence).

    .. math::

        u_t = \tanh(W_u x_t + b_u), \qquad
        f_t = \sigma(W_f x_t + b_f), \qquad
        h_t = f_t \odot h_{t-1} + (1 - f_t) \odot u_t, \qquad h_0 = 0,

    the seed's equations 3.2 (:math:`c_t = f_t c_{t-1} + (1 - f_t) u_t`) with the
    state as output: :math:`a_t = f_t`, :math:`b_t = (1 - f_t) \odot u_t`. Chen's
    MinimalRNN also feeds :math:`h_{t-1}` to the gate,
    :math:`f_t = \sigma(U_h h_{t-1} + U_z u_t + b)`; reading the input only is what
    makes the recurrence linear in :math:`h` and lets it run as a scan (Martin and
    Cundy 2018). :math:`h_t` is an input-weighted exponential average of :math:`u`,
    with a memory :math:`1 / (1 - f_t)` set by the data; stacked layers give the
    nonlinear interaction between steps. ``projections[l]`` is one ``nn.Linear``
    ``(2H, c_l)`` with rows ``[W_u; W_f]``.

    Parameters
    ----------
    in_channels : int
    hidden : int
        ``H`` (``out_features``).
    layers : int
    mode : {"loop", "scan"}
        How the recurrence is evaluated (same result; the loop is faster on a CPU,
        see the module notes).

    Notes
    -----
    Shapes ``(N, L, c) -> (N, L, H)``. Parameters: :math:`\sum_l 2H(c_l + 1)`. One
    CPU thread, forward + backward over ``(5000, 64, 1)``, defaults: loop 0.4-0.6 s,
    scan 1.3-1.7 s (a shared machine).
    """

    def __init__(self, in_channels: int, *, hidden: int = 32, layers: int = 2, mode: str = "loop"):
        super().__init__(in_channels, hidden, layers, mode, MODES)
        self.projections = nn.ModuleList(nn.Linear(w, 2 * self.hidden) for w in self._widths())

    @staticmethod
    def n_params(in_channels: int, *, hidden: int = 32, layers: int = 2, mode: str = "loop") -> int:
        r""":math:`\sum_l 2H(c_l + 1)`."""
        widths = [in_channels] + [hidden] * (layers - 1)
        return sum(2 * hidden * (w + 1) for w in widths)

    def forward(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """Hidden states ``(N, L, H)``; ``mode`` overrides the trunk's."""
        mode, H = self._mode(mode), self.hidden
        x = x.transpose(0, 1)  # time-major (L, N, c)
        for projection in self.projections:
            pre = projection(x)  # (L, N, 2H)
            if mode == "scan":
                f = torch.sigmoid(pre[..., H:])
                x = _scan_time_major(f, (1 - f) * torch.tanh(pre[..., :H]))
                continue
            h = x.new_zeros(x.shape[1], H)
            states = []
            for pre_t in pre.unbind(0):
                # h = f h + (1 - f) u, as lerp(u, h, f) = u + f (h - u)
                h = torch.lerp(torch.tanh(pre_t[:, :H]), h, torch.sigmoid(pre_t[:, H:]))
                states.append(h)
            x = torch.stack(states, dim=0)
        return x.transpose(0, 1)


class SRU(_Recurrent):
    r"""Simple recurrent unit (Lei et al. 2018) with input-only gates.

    .. math::

        \tilde x_t &= W x_t, \quad
        f_t = \sigma(W_f x_t + b_f), \quad
        r_t = \sigma(W_r x_t + b_r), \\
        c_t &= f_t \odot c_{t-1} + (1 - f_t) \odot \tilde x_t, \qquad c_0 = 0, \\
        h_t &= r_t \odot \tanh(c_t) + (1 - r_t) \odot x'_t,

    with the highway input :math:`x'_t = x_t` when the layer's input width equals
    ``H`` and a bias-free projection :math:`x'_t = W_s x_t` otherwise (the first layer
    over a few columns). Lei et al.'s final version adds peephole terms
    :math:`v \odot c_{t-1}` to the gates; they make the recurrence nonlinear in
    :math:`c` and defeat the scan, so they are left out (the form of the seed's 3.2
    and of their first version). Per layer ``l``: ``inputs[l]`` (:math:`W`, no bias),
    ``gates[l]`` (rows ``[W_f; W_r]``, biases ``[b_f; b_r]``) and ``highways[l]``
    (:math:`W_s`, or the identity).

    Parameters
    ----------
    in_channels : int
    hidden : int
        ``H`` (``out_features``).
    layers : int
    mode : {"loop", "scan"}
        How the recurrence is evaluated (same result; the loop is faster on a CPU,
        see the module notes).

    Notes
    -----
    Shapes ``(N, L, c) -> (N, L, H)``. Parameters:
    :math:`\sum_l \big(3H c_l + 2H + [c_l \ne H]\, H c_l\big)`. One CPU thread,
    forward + backward over ``(5000, 64, 1)``, defaults: loop 0.65-0.8 s, scan
    2.1-2.6 s (a shared machine).
    """

    def __init__(self, in_channels: int, *, hidden: int = 32, layers: int = 2, mode: str = "loop"):
        super().__init__(in_channels, hidden, layers, mode, MODES)
        H = self.hidden
        self.inputs = nn.ModuleList(nn.Linear(w, H, bias=False) for w in self._widths())
        self.gates = nn.ModuleList(nn.Linear(w, 2 * H) for w in self._widths())
        self.highways = nn.ModuleList(
            nn.Identity() if w == H else nn.Linear(w, H, bias=False) for w in self._widths()
        )

    @staticmethod
    def n_params(in_channels: int, *, hidden: int = 32, layers: int = 2, mode: str = "loop") -> int:
        r""":math:`\sum_l (3H c_l + 2H + [c_l \ne H] H c_l)`."""
        widths = [in_channels] + [hidden] * (layers - 1)
        return sum(3 * hidden * w + 2 * hidden + (hidden * w if w != hidden else 0) for w in widths)

    def forward(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """Hidden states ``(N, L, H)``; ``mode`` overrides the trunk's."""
        mode, H = self._mode(mode), self.hidden
        x = x.transpose(0, 1)  # time-major (L, N, c)
        for inp, gate, highway in zip(self.inputs, self.gates, self.highways):
            u, g, skip = inp(x), gate(x), highway(x)  # (L, N, H), (L, N, 2H), (L, N, H)
            if mode == "scan":
                f, r = torch.sigmoid(g).chunk(2, dim=-1)
                c = _scan_time_major(f, (1 - f) * u)
                x = torch.lerp(skip, torch.tanh(c), r)  # r tanh(c) + (1 - r) x'
                continue
            c = x.new_zeros(x.shape[1], H)
            states = []
            for u_t, g_t, skip_t in zip(u.unbind(0), g.unbind(0), skip.unbind(0)):
                fr = torch.sigmoid(g_t)
                c = torch.lerp(u_t, c, fr[:, :H])  # f c + (1 - f) u
                states.append(torch.lerp(skip_t, torch.tanh(c), fr[:, H:]))
            x = torch.stack(states, dim=0)
        return x.transpose(0, 1)


RECURRENT_TRUNKS: dict[str, type[nn.Module]] = {"gru": GRU, "minimalrnn": MinimalRNN, "sru": SRU}
