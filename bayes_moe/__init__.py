"""bayes_moe: a Bayesian mixture of experts for financial time series.

Every expert is a Pyro model with a predictive distribution; a latent market regime
with a sticky Markov prior decides how the experts are mixed; the model is fit by
stochastic variational inference and forecasts are posterior predictive
distributions.

>>> import bayes_moe as bm
>>> bm.list_experts()  # doctest: +SKIP
['ar', 'kalman', 'var']
"""

from bayes_moe import data
from bayes_moe.evaluation.comparison import compare
from bayes_moe.inference.checkpoint import CheckpointError
from bayes_moe.inference.divergence import NonFiniteLossError
from bayes_moe.inference.multi_horizon import MultiHorizonFit
from bayes_moe.inference.panel_fit import PanelFit
from bayes_moe.inference.pretrain_cache import PretrainCache
from bayes_moe.inference.results import MoEFit
from bayes_moe.inference.svi import fit_svi
from bayes_moe.inference.svi_options import SVIOptions
from bayes_moe.models import experts
from bayes_moe.models.energy import EnergyGate
from bayes_moe.models.experts import list_experts, make_expert, register_expert
from bayes_moe.models.gate import MarkovGate
from bayes_moe.models.moe import BayesianMoE
from bayes_moe.models.ms_garch import ms_garch

load_fit = MoEFit.load
load_panel_fit = PanelFit.load

__all__ = [
    "BayesianMoE",
    "CheckpointError",
    "EnergyGate",
    "MarkovGate",
    "MoEFit",
    "MultiHorizonFit",
    "NonFiniteLossError",
    "PanelFit",
    "PretrainCache",
    "SVIOptions",
    "compare",
    "data",
    "experts",
    "fit_svi",
    "list_experts",
    "load_fit",
    "load_panel_fit",
    "make_expert",
    "ms_garch",
    "register_expert",
]
__version__ = "0.1.0"
