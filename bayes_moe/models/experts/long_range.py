r"""The long-range window experts: attention, its linear-cost approximations, SSM, FFT.

Each is a :class:`~bayes_moe.models.experts.window.WindowExpert`: a trunk of
:mod:`bayes_moe.models.nets` over the last ``L`` rows and a Bayesian head giving the
location and a log-scale term of a Student-t (or Normal) predictive. Keyword options
beyond those of the base class go to the trunk. "Causal" says how the trunk keeps to
the past inside the window (:mod:`bayes_moe.models.nets`): ``masked`` trunks give
each step a state that reads earlier steps only, ``last`` trunks give the last step's
state only; the window always ends at the forecast origin.

===================  ==================================================  ======  ========  ======
registry name        trunk (seed item)                                   group   capacity  causal
===================  ==================================================  ======  ========  ======
``attention``        exact softmax attention, causal mask (4.1);         long    2         masked
                     the quadratic reference of the three below
``performer``        FAVOR+ positive orthogonal random features,         long    2         masked
                     prefix sums (4.2)
``linformer``        keys and values projected along time to rank r      long    2         last
                     (4.3)
``nystromformer``    landmark Nystrom approximation, iterative           long    2         last
                     pseudo-inverse (4.4)
``timesnet``         learned filter on the window's Fourier transform,   medium  2         last
                     then an MLP (6.1)
``mamba``            selective state space, zero-order hold, scan (6.2)  long    2         masked
``hyena``            implicit long filters, FFT convolution, gating      long    2         masked
                     (6.3)
===================  ==================================================  ======  ========  ======
"""

from __future__ import annotations

from bayes_moe.models.experts.window import WindowExpert
from bayes_moe.models.nets.attention import ATTENTION_TRUNKS
from bayes_moe.models.nets.spectral import SPECTRAL_TRUNKS
from bayes_moe.models.nets.ssm import SSM_TRUNKS


class AttentionExpert(WindowExpert):
    """Exact causal softmax self-attention (seed 4.1): the quadratic reference."""

    name = "attention"
    group = "long"
    capacity = 2
    trunk_class = ATTENTION_TRUNKS["attention"]


class PerformerExpert(WindowExpert):
    """Performer: FAVOR+ linear attention (seed 4.2, Choromanski et al. 2021)."""

    name = "performer"
    group = "long"
    capacity = 2
    trunk_class = ATTENTION_TRUNKS["performer"]


class LinformerExpert(WindowExpert):
    """Linformer: low-rank projection of keys and values along time (seed 4.3)."""

    name = "linformer"
    group = "long"
    capacity = 2
    trunk_class = ATTENTION_TRUNKS["linformer"]


class NystromformerExpert(WindowExpert):
    """Nystromformer: landmark approximation of softmax attention (seed 4.4)."""

    name = "nystromformer"
    group = "long"
    capacity = 2
    trunk_class = ATTENTION_TRUNKS["nystromformer"]


class TimesNetExpert(WindowExpert):
    """Learned frequency-domain filter over the window, then an MLP (seed 6.1)."""

    name = "timesnet"
    group = "medium"
    capacity = 2
    trunk_class = SPECTRAL_TRUNKS["timesnet"]


class MambaExpert(WindowExpert):
    """Mamba: selective state space with a parallel scan (seed 6.2, Gu and Dao 2023)."""

    name = "mamba"
    group = "long"
    capacity = 2
    trunk_class = SSM_TRUNKS["mamba"]


class HyenaExpert(WindowExpert):
    """Hyena: implicit long convolutions by FFT with gating (seed 6.3, Poli et al. 2023)."""

    name = "hyena"
    group = "long"
    capacity = 2
    trunk_class = SPECTRAL_TRUNKS["hyena"]


LONG_RANGE_EXPERTS: tuple[type[WindowExpert], ...] = (
    AttentionExpert,
    PerformerExpert,
    LinformerExpert,
    NystromformerExpert,
    TimesNetExpert,
    MambaExpert,
    HyenaExpert,
)
