r"""Markov-switching GARCH: one GARCH(1,1) expert per regime of a Markov gate.

.. math::

    y_{t+1} = \mu_{z_{t+1}} + \sigma_{z_{t+1}, t+1}\, \eta_{t+1}, \qquad
    \sigma^2_{k, t+1} = \omega_k + \alpha_k\, \varepsilon_{k,t}^2 + \beta_k\, \sigma^2_{k, t},
    \qquad P(z_{t+1} = j \mid z_t = i) = \Pi_{ij},

with :math:`\varepsilon_{k,t} = y_t - \mu_k`. Every regime ``k`` runs its own
GARCH recursion on the observed returns, whatever the regime path was: the model of
Haas, Mittnik and Paolella (2004), which avoids the path dependence of Gray's and
Klaassen's switching GARCH, so the likelihood is an ordinary hidden Markov model and
the regime path is marginalised exactly by the forward algorithm. Differences from
their paper: each regime has its own constant mean and Student-t degrees of freedom,
and the fit is Bayesian (SVI) with the priors of
:class:`~bayes_moe.models.experts.garch.GARCH` and the gate's sticky Dirichlet rows.

The regimes are identified by their priors: regime ``k``'s unconditional variance
has a LogNormal prior centred at :math:`\exp(m_k)`, with the :math:`m_k` evenly
spaced on ``[-spread, spread]`` (calm to turbulent); fitting starts from the prior
medians, so it starts with the regimes in that order. The gate is
:class:`~bayes_moe.models.gate.MarkovGate` with the fixed ``assignment``
``[0, 1, ..., K-1]``: regime ``k`` uses GARCH expert ``k`` alone, and the chain is
time-homogeneous unless ``transition_features`` are given.

References
----------
M. Haas, S. Mittnik and M. S. Paolella, "A new approach to Markov-switching GARCH
models", J. Financial Econometrics 2(4), 2004.
"""

from __future__ import annotations

import numpy as np

from bayes_moe.models.experts.garch import GARCH
from bayes_moe.models.gate import MarkovGate
from bayes_moe.models.moe import BayesianMoE


def ms_garch(
    n_regimes: int = 2,
    *,
    family: str = "studentt",
    variance_spread: float = 1.0,
    variance_scale: float = 1.0,
    window: int = 64,
    **gate_options,
) -> BayesianMoE:
    """A Markov-switching GARCH(1,1) model (module docstring) as a :class:`BayesianMoE`.

    Parameters
    ----------
    n_regimes : int
        ``K >= 2``.
    family : {"studentt", "normal"}
        Innovation family of every regime.
    variance_spread : float
        Half-width of the range of the regimes' prior log unconditional variances
        (standardized units).
    variance_scale : float
        Standard deviation of each regime's prior log unconditional variance.
    window : int
        Days before the first forecast origin (the backcast reads up to the first origin).
    **gate_options
        Further :class:`~bayes_moe.models.gate.MarkovGate` arguments (``stickiness``,
        ``concentration``, ``transition_features``).

    Returns
    -------
    BayesianMoE
        Experts labelled ``garch_1, ..., garch_K``; regime ``k`` is ``garch_{k+1}``.
    """
    if n_regimes < 2:
        raise ValueError(f"a Markov-switching GARCH needs n_regimes >= 2, got {n_regimes}")
    if variance_spread < 0 or variance_scale <= 0:
        raise ValueError(
            "variance_spread must be >= 0 and variance_scale > 0, got "
            f"{variance_spread} and {variance_scale}"
        )
    for name in ("assignment", "volatility_levels", "input_dependent"):
        if name in gate_options:
            raise ValueError(f"ms_garch fixes the gate's {name}; it cannot be given")
    centres = np.linspace(-variance_spread, variance_spread, n_regimes)
    experts = [GARCH(family=family, variance_prior=(float(m), variance_scale)) for m in centres]
    gate = MarkovGate(n_regimes, assignment=list(range(n_regimes)), **gate_options)
    return BayesianMoE(experts=experts, gate=gate, window=window)
