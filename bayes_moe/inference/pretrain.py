r"""Stage one of two-stage fitting: each window expert trained alone on minibatches.

A window expert alone (no gate, no regimes) has the likelihood
:math:`\prod_n p_m(y_n \mid X_n; \theta_m)`, a product over origins, so SVI on random
minibatches :math:`B` of origins with the log-likelihood scaled by :math:`N/|B|` is an
unbiased estimate of its ELBO (Hoffman et al. 2013):

.. math:: \hat{\mathcal L} = \frac{N}{|B|} \sum_{n \in B}
          \mathbb E_q \log p_m(y_n \mid X_n; \theta_m) - \mathrm{KL}(q \,\|\, p).

Early stopping on a held-out block. A trunk of a few thousand weights trained on a
few thousand days memorises noise: measured on synthetic series with a known optimum,
the in-sample fit passes the oracle while the out-of-sample log score falls far below
a two-lag AR. So the latest ``holdout`` share of the origins (a block at the end, time
ordered; with horizon ``h`` the ``h - 1`` origins before it are dropped so no
training response overlaps a held-out one) is not trained on. Every ``eval_every``
steps the held-out negative log predictive density at the guide's medians is
computed, the best state (trunk weights and guide) is kept, and training stops after
``patience`` evaluations without improvement. The trunk handed on is the best one; its
head is then refitted on all origins in stage two, so the held-out days still inform
the forecast.

The trunk weights are optimised with the guide of the head. What stage one hands to
stage two (:func:`bayes_moe.inference.svi.fit_svi`) is the trained trunk and the
guide's medians of the expert's sites, used to initialise the joint guide.

The approximation: the trunk is chosen for the expert alone, not for its place in
the mixture (it is then frozen), and stage two does not propagate the uncertainty of
the trunk weights (with ``bayesian="head"`` they are point estimates in any case).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormal, init_to_median
from pyro.optim.clipped_adam import ClippedAdam
from torch import nn
from tqdm.auto import tqdm

from bayes_moe.data.windows import ExpertInputs
from bayes_moe.inference.divergence import svi_step
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
    holdout_losses : ndarray, shape ``(evaluations,)``
        Held-out negative log predictive density per origin (standardized units) at
        each evaluation; empty without a held-out block.
    best_step : int
        Steps taken by the state handed on (``len(losses)`` without a held-out block).
    """

    losses: np.ndarray = field(repr=False)
    init_values: dict = field(repr=False)
    elapsed_s: float
    holdout_losses: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    best_step: int = -1

    @property
    def final_loss(self) -> float:
        """Mean minibatch loss per observation over the last 50 steps."""
        return float(np.mean(self.losses[-50:]))


def holdout_split(
    n: int, holdout: float, horizon: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and held-out positions of ``n`` time-ordered origins, on ``device``.

    The held-out block is the last ``round(holdout * n)`` origins; the ``horizon - 1``
    before it are dropped, so no training response (an ``h``-day sum) overlaps a
    held-out one. No block (all origins train) when ``holdout`` is 0 or the block
    would hold fewer than :data:`MIN_HOLDOUT` origins.
    """
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    n_val = int(round(holdout * n))
    if n_val < MIN_HOLDOUT or n - n_val - (horizon - 1) < MIN_HOLDOUT:
        return torch.arange(n, device=device), torch.arange(0, device=device)
    train = torch.arange(n - n_val - (horizon - 1), device=device)
    return train, torch.arange(n - n_val, n, device=device)


#: Fewest origins in a held-out block (and left for training) for early stopping.
MIN_HOLDOUT: int = 50


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
    holdout: float = 0.2,
    eval_every: int = 20,
    patience: int = 5,
    progress: bool = True,
) -> PretrainResult:
    """Train ``expert`` (in place) alone by minibatch SVI; see the module docstring.

    Parameters
    ----------
    expert : WindowExpert
        Trained in place (its trunk weights change).
    inputs : ExpertInputs
        The observed origins ``N``, in time order.
    response : Tensor, shape ``(N, d_y)``
    num_steps, batch_size, learning_rate, init_scale, seed
        Optimisation settings; ``batch_size`` training origins are drawn without
        replacement at each step (all of them when there are fewer).
    holdout, eval_every, patience
        Early stopping (module docstring): share of the latest origins held out,
        steps between evaluations, evaluations without improvement before stopping.
        ``holdout=0`` trains on every origin for ``num_steps`` steps.
    progress : bool
        tqdm progress bar.
    """
    device = inputs.origins.device
    train, held = holdout_split(inputs.n_origins, holdout, inputs.horizon, device)
    N = len(train)
    B = min(batch_size, N)
    # Minibatches are drawn on the CPU on every device: the same ones for the same seed.
    generator = torch.Generator().manual_seed(seed)

    def draw() -> torch.Tensor:
        return torch.randperm(N, generator=generator, device="cpu")[:B].to(device)

    pyro.set_rng_seed(seed)
    expert.build(inputs)
    alone = _ExpertAlone(expert).train()
    held_inputs, held_response = inputs.at(inputs.origins[held]), response[held]
    with pyro.settings.context(module_local_params=True):
        guide = AutoNormal(alone, init_loc_fn=init_to_median(num_samples=15), init_scale=init_scale)
        elbo = Trace_ELBO()(alone, guide)

        def batch(idx):
            rows = train[idx]
            return inputs.at(inputs.origins[rows]), response[rows], N / B

        first = batch(draw())
        svi_step(elbo, None, first, where=f"pretraining expert {expert.name!r}")  # the params
        lrd = 0.1 ** (1.0 / num_steps)
        optimizer = ClippedAdam(elbo.parameters(), lr=learning_rate, lrd=lrd, clip_norm=10.0)
        losses, held_losses = [], []
        # held-out loss, step, saved state
        best: tuple[float, int, tuple[dict, dict] | None] = (math.inf, 0, None)
        waited = 0  # evaluations since the best
        start = time.perf_counter()
        bar = tqdm(
            range(num_steps), desc=f"pretrain {expert.name}", disable=not progress, leave=False
        )
        for step in bar:
            idx = draw().sort().values
            where = f"pretraining expert {expert.name!r}, step {step + 1}"
            losses.append(svi_step(elbo, optimizer, batch(idx), where=where) / N)
            if len(held) and ((step + 1) % eval_every == 0 or step + 1 == num_steps):
                held_losses.append(_held_out_loss(expert, guide, held_inputs, held_response))
                if held_losses[-1] < best[0]:
                    best, waited = (held_losses[-1], step + 1, _snapshot(expert, guide)), 0
                else:
                    waited += 1
                    if waited >= patience:
                        break
        if best[2] is not None:
            _restore(expert, guide, best[2])
        elapsed = time.perf_counter() - start
        with torch.no_grad():
            medians = {k: v.detach().clone() for k, v in guide.median().items()}
    return PretrainResult(
        losses=np.asarray(losses),
        init_values=medians,
        elapsed_s=elapsed,
        holdout_losses=np.asarray(held_losses),
        best_step=best[1] if best[2] is not None else len(losses),
    )


def _held_out_loss(expert, guide, inputs: ExpertInputs, response: torch.Tensor) -> float:
    """Mean negative log predictive density at the guide's medians (standardized units)."""
    with torch.no_grad():
        d = poutine.condition(expert.model, data=guide.median())(inputs)
        return -float(d.log_prob(response).mean())


def _snapshot(expert, guide) -> tuple[dict, dict]:
    clone = lambda state: {k: v.detach().clone() for k, v in state.items()}  # noqa: E731
    return clone(expert.trunk.state_dict()), clone(guide.state_dict())


def _restore(expert, guide, state) -> None:
    trunk, guide_state = state
    with torch.no_grad():
        expert.trunk.load_state_dict(trunk)
        guide.load_state_dict(guide_state)
