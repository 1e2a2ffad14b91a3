r"""Stage one of two-stage fitting: each window expert trained alone on minibatches.

A window expert alone (no gate, no regimes) has the likelihood
:math:`\prod_n p_m(y_n \mid X_n; \theta_m)`, a product over origins, so SVI on random
minibatches :math:`B` of origins with the log-likelihood scaled by :math:`N/|B|` is an
unbiased estimate of its ELBO (Hoffman et al. 2013):

.. math:: \hat{\mathcal L} = \frac{N}{|B|} \sum_{n \in B}
          \mathbb E_q \log p_m(y_n \mid X_n; \theta_m) - \mathrm{KL}(q \,\|\, p).

The trunk weights are optimised with the guide of the head. What stage one hands to
stage two (:func:`bayes_moe.inference.svi.fit_svi`) is the trained trunk and the
guide's medians of the expert's sites, used to initialise the joint guide.

The approximation: the trunk is chosen for the expert alone, not for its place in
the mixture (it is then frozen), and stage two does not propagate the uncertainty of
the trunk weights (with ``bayesian="head"`` they are point estimates in any case).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormal, init_to_median
from pyro.optim.clipped_adam import ClippedAdam
from torch import nn
from tqdm.auto import tqdm

from bayes_moe.data.windows import ExpertInputs
from bayes_moe.models.experts.window import WindowExpert


@dataclass(frozen=True)
class PretrainResult:
    """What stage one produced for one expert.

    Attributes
    ----------
    losses : ndarray, shape ``(steps,)``
        Minibatch negative ELBO estimates per observation (nats).
    init_values : dict of str to Tensor
        Guide medians of the expert's sites (local names, e.g. ``"head"``).
    elapsed_s : float
    """

    losses: np.ndarray = field(repr=False)
    init_values: dict = field(repr=False)
    elapsed_s: float

    @property
    def final_loss(self) -> float:
        """Mean minibatch loss per observation over the last 50 steps."""
        return float(np.mean(self.losses[-50:]))


class _ExpertAlone(nn.Module):
    """Pyro model of one expert on a minibatch, likelihood scaled to the full sample."""

    def __init__(self, expert: WindowExpert):
        super().__init__()
        self.expert = expert

    def forward(self, inputs: ExpertInputs, response: torch.Tensor, scale: float):
        d = self.expert.model(inputs)
        pyro.factor("log_likelihood", scale * d.log_prob(response).sum())


def pretrain_expert(
    expert: WindowExpert,
    inputs: ExpertInputs,
    response: torch.Tensor,
    *,
    num_steps: int = 400,
    batch_size: int = 256,
    learning_rate: float = 0.01,
    init_scale: float = 0.02,
    seed: int = 0,
    progress: bool = True,
) -> PretrainResult:
    """Train ``expert`` (in place) alone by minibatch SVI; see the module docstring.

    Parameters
    ----------
    expert : WindowExpert
        Trained in place (its trunk weights change).
    inputs : ExpertInputs
        The observed origins ``N``.
    response : Tensor, shape ``(N, d_y)``
    num_steps, batch_size, learning_rate, init_scale, seed
        Optimisation settings; ``batch_size`` origins are drawn without replacement
        at each step (all of them when ``N <= batch_size``).
    progress : bool
        tqdm progress bar.
    """
    N = inputs.n_origins
    B = min(batch_size, N)
    generator = torch.Generator().manual_seed(seed)
    pyro.set_rng_seed(seed)
    expert.build(inputs)
    alone = _ExpertAlone(expert).train()
    with pyro.settings.context(module_local_params=True):
        guide = AutoNormal(alone, init_loc_fn=init_to_median(num_samples=15), init_scale=init_scale)
        elbo = Trace_ELBO()(alone, guide)
        first = torch.randperm(N, generator=generator)[:B]
        elbo(inputs.at(inputs.origins[first]), response[first], N / B)
        lrd = 0.1 ** (1.0 / num_steps)
        optimizer = ClippedAdam(elbo.parameters(), lr=learning_rate, lrd=lrd, clip_norm=10.0)
        losses = []
        start = time.perf_counter()
        bar = tqdm(
            range(num_steps), desc=f"pretrain {expert.name}", disable=not progress, leave=False
        )
        for _ in bar:
            idx = torch.randperm(N, generator=generator)[:B].sort().values
            optimizer.zero_grad()
            loss = elbo(inputs.at(inputs.origins[idx]), response[idx], N / B)
            loss.backward()
            optimizer.step()
            losses.append(loss.item() / N)
        elapsed = time.perf_counter() - start
        with torch.no_grad():
            medians = {k: v.detach().clone() for k, v in guide.median().items()}
    return PretrainResult(losses=np.asarray(losses), init_values=medians, elapsed_s=elapsed)
