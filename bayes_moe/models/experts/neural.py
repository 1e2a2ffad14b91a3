r"""The convolutional and recurrent window experts (seed items 2.1-3.2).

Each is a :class:`~bayes_moe.models.experts.window.WindowExpert`: a causal trunk of
:mod:`bayes_moe.models.nets` over the last ``L`` rows and a Bayesian head giving the
location and a log-scale term of a Student-t (or Normal) predictive. Keyword options
beyond those of the base class go to the trunk.

======================  =================================================  ========  ========
registry name           trunk                                              group     capacity
======================  =================================================  ========  ========
``cnn``                 plain causal 1D CNN                                short     0
``depthwise``           depthwise-separable convolutions                   short     0
``mobilenet``           MobileNet-1D inverted residual blocks              short     0
``efficientnet_lite``   EfficientNet-Lite blocks (optional squeeze-excite) short     0
``tcn``                 dilated residual convolutions, dilations 2^l       medium    0
``gru``                 gated recurrent unit                               medium    1
``minimalrnn``          MinimalRNN with an input gate (parallel scan)      long      1
``sru``                 simple recurrent unit (parallel scan)              long      1
======================  =================================================  ========  ========
"""

from __future__ import annotations

from bayes_moe.models.experts.window import WindowExpert
from bayes_moe.models.nets.conv import CONV_TRUNKS
from bayes_moe.models.nets.recurrent import RECURRENT_TRUNKS


class CNNExpert(WindowExpert):
    """Plain causal 1D CNN expert (seed 2.1)."""

    name = "cnn"
    group = "short"
    capacity = 0
    trunk_class = CONV_TRUNKS["cnn"]


class DepthwiseExpert(WindowExpert):
    """Depthwise-separable convolution expert (seed 2.2)."""

    name = "depthwise"
    group = "short"
    capacity = 0
    trunk_class = CONV_TRUNKS["depthwise"]


class MobileNetExpert(WindowExpert):
    """MobileNet-1D inverted residual expert (seed item 4)."""

    name = "mobilenet"
    group = "short"
    capacity = 0
    trunk_class = CONV_TRUNKS["mobilenet"]


class EfficientNetLiteExpert(WindowExpert):
    """EfficientNet-Lite expert: inverted residuals with expansion (seed item 4)."""

    name = "efficientnet_lite"
    group = "short"
    capacity = 0
    trunk_class = CONV_TRUNKS["efficientnet_lite"]


class TCNExpert(WindowExpert):
    """Temporal convolutional network expert (seed 2.3)."""

    name = "tcn"
    group = "medium"
    capacity = 0
    trunk_class = CONV_TRUNKS["tcn"]


class GRUExpert(WindowExpert):
    """GRU expert (seed 3.1)."""

    name = "gru"
    group = "medium"
    capacity = 1
    trunk_class = RECURRENT_TRUNKS["gru"]


class MinimalRNNExpert(WindowExpert):
    """MinimalRNN expert with an input-driven gate (seed 3.2)."""

    name = "minimalrnn"
    group = "long"
    capacity = 1
    trunk_class = RECURRENT_TRUNKS["minimalrnn"]


class SRUExpert(WindowExpert):
    """Simple recurrent unit expert (seed 3.2, Lei et al. 2018)."""

    name = "sru"
    group = "long"
    capacity = 1
    trunk_class = RECURRENT_TRUNKS["sru"]


NEURAL_EXPERTS: tuple[type[WindowExpert], ...] = (
    CNNExpert,
    DepthwiseExpert,
    MobileNetExpert,
    EfficientNetLiteExpert,
    TCNExpert,
    GRUExpert,
    MinimalRNNExpert,
    SRUExpert,
)
