r"""Stochastic variational inference for the mixture.

Maximizes the evidence lower bound

.. math:: \mathcal L(\phi) = \mathbb E_{q_\phi(\theta)}\big[\log p(y_{1:N} \mid \theta)
          + \log p(\theta) - \log q_\phi(\theta)\big]

with an autoguide (mean-field Normal by default) over every latent site
(transition matrix, gate, expert parameters) and ``ClippedAdam`` with an
exponentially decaying learning rate. Progress is shown with tqdm; training stops
early when the mean loss per observation over the last ``check_every`` steps
improves on the previous window by less than ``convergence_tol`` nats.

Training strategies for neural (window) experts, chosen by ``strategy=``:

``"two_stage"`` (default)
    Stage one trains each window expert alone by minibatch SVI
    (:func:`bayes_moe.inference.pretrain.pretrain_expert`, float32 trunk); its trunk
    is then frozen and its features cached, and stage two fits the Bayesian heads,
    the gate and the statistical experts jointly, full batch, with the heads'
    guide initialised at stage one's medians. A step of stage two costs about as
    much as one of a mixture of linear experts. Approximation: the trunks are chosen
    for each expert alone, not for the mixture. Fully Bayesian trunks
    (``bayesian="full"``) are pretrained too but not frozen.
``"joint"``
    Every trunk is evaluated, full batch in float32, and optimised jointly at
    every step: exact ELBO, seconds per step with several neural experts.

Mixtures of statistical experts only are unaffected by the choice.

References
----------
M. D. Hoffman, D. M. Blei, C. Wang and J. Paisley, "Stochastic variational
inference", JMLR 14, 2013.
A. Kucukelbir et al., "Automatic differentiation variational inference", JMLR 18, 2017.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import (
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
    init_to_median,
    init_to_value,
)
from pyro.optim.clipped_adam import ClippedAdam
from tqdm.auto import tqdm

from bayes_moe._runtime import torch_threads
from bayes_moe.data.windows import ModelData
from bayes_moe.inference.divergence import (
    check_finite_draws,
    check_finite_parameters,
    invalid_as_non_finite,
    svi_step,
)
from bayes_moe.inference.pretrain import pretrain_expert
from bayes_moe.inference.pretrain_cache import PretrainCache
from bayes_moe.inference.results import MoEFit, SVIDiagnostics
from bayes_moe.inference.svi_state import SVIState, fingerprint
from bayes_moe.models.experts.window import WindowExpert
from bayes_moe.models.moe import BayesianMoE, MoEProgram

#: Training strategies of :func:`fit_svi` (see the module docstring).
STRATEGIES: tuple[str, ...] = ("two_stage", "joint")

GUIDES = {
    "normal": AutoNormal,
    "mvn": AutoMultivariateNormal,
    "lowrank": AutoLowRankMultivariateNormal,
}


def make_guide(
    program: MoEProgram, kind: str, *, init_scale: float, response=None, init_values=None
):
    """Build the autoguide ``kind`` (``"normal"``, ``"mvn"``, ``"lowrank"``).

    Initialization: ``init_values`` (site name to value, e.g. stage one's medians),
    the transition matrix at its prior mean (sticky), the regime volatility levels
    at the spread of the data's rolling volatility
    (:meth:`~bayes_moe.models.gate.MarkovGate.initial_levels`, when ``response`` is
    given), every other site at the median of 15 prior draws, which also breaks the
    symmetry between identical experts or regimes.
    """
    if kind not in GUIDES:
        raise ValueError(f"unknown guide {kind!r}; choose one of {sorted(GUIDES)}")
    gate = program.gate
    values = dict(init_values or {})
    if gate.n_regimes > 1:
        values["gate/transition"] = gate.transition_prior(torch.float64).base_dist.mean
    levels = None if response is None else gate.initial_levels(response)
    if levels is not None:
        values["gate/level_step"] = levels
    init = init_to_value(values=values, fallback=init_to_median(num_samples=15))
    return GUIDES[kind](program, init_loc_fn=init, init_scale=init_scale)


def fit_svi(
    model: BayesianMoE,
    data: ModelData,
    *,
    num_steps: int = 1500,
    learning_rate: float = 0.02,
    final_lr_fraction: float = 0.1,
    guide: str = "normal",
    init_scale: float = 0.02,
    seed: int = 0,
    num_draws: int = 200,
    convergence_tol: float | None = 1e-5,
    check_every: int = 100,
    progress: bool = True,
    num_threads: int | None = 1,
    strategy: str = "two_stage",
    pretrain_steps: int = 400,
    pretrain_batch: int = 256,
    pretrain_holdout: float = 0.2,
    pretrain_cache: PretrainCache | None = None,
    init_values: Mapping[str, torch.Tensor] | None = None,
    memory_budget_mib: float | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 100,
    resume: bool = False,
):
    """Fit ``model`` to ``data`` by SVI and draw from the approximate posterior.

    Parameters
    ----------
    model : BayesianMoE
        Specification; it is not modified (fitting works on a copy of its experts).
    data : ModelData
        From :meth:`BayesianMoE.prepare`.
    num_steps : int
        Maximum optimization steps.
    learning_rate, final_lr_fraction : float
        Initial learning rate and its fraction reached after ``num_steps`` (exponential decay).
    guide : {"normal", "mvn", "lowrank"}
        Autoguide family.
    init_scale : float
        Initial standard deviation of the guide.
    seed : int
        Seeds Pyro and torch; the fit is reproducible for a given seed.
    num_draws : int
        Posterior draws kept for forecasts, regimes and ArviZ.
    convergence_tol : float or None
        Early-stopping threshold in nats per response in the likelihood (None: run all
        steps; :meth:`~bayes_moe.models.moe.MoEProgram.scored_origins`).
    check_every : int
        Window of the convergence check.
    progress : bool
        Show a tqdm progress bar.
    num_threads : int or None
        Torch intra-op threads while fitting (see :func:`bayes_moe._runtime.torch_threads`).
    strategy : {"two_stage", "joint"}
        How window (neural) experts are trained; see the module docstring.
    pretrain_steps, pretrain_batch : int
        Stage one of ``"two_stage"``: most minibatch SVI steps per window expert and
        origins per minibatch.
    pretrain_holdout : float
        Share of the latest origins stage one holds out for early stopping (0: none;
        :mod:`bayes_moe.inference.pretrain`).
    pretrain_cache : PretrainCache, optional
        Stage-one results to reuse and to add to (exact: a hit gives the same trunk
        as training again). Every window expert is pretrained with ``seed`` itself, not
        a seed that depends on its position, so that mixtures that differ in other
        experts (a leave-one-expert-out study) share its entry.
    init_values : mapping of str to Tensor, optional
        Initial values of the guide's locations by site name (``"ar/coef"``,
        ``"gate/bias"``), e.g. the posterior medians of an earlier fit for a warm
        start; they take precedence over stage one's. Other sites start as usual.
    memory_budget_mib : float, optional
        Bound on the working memory of evaluating the draws afterwards (forecasts,
        regimes, ArviZ), MiB; default
        :data:`~bayes_moe.inference.posterior.DEFAULT_MEMORY_BUDGET_MIB` (see
        :func:`~bayes_moe.inference.posterior.draws_per_chunk`).
    checkpoint : path, optional
        Write the optimisation state here every ``checkpoint_every`` steps and at the
        end (safetensors with JSON metadata, atomically; :mod:`~bayes_moe.inference.svi_state`).
    checkpoint_every : int
        Steps between checkpoints.
    resume : bool
        Continue from ``checkpoint`` if it exists (the fit must be the same: data,
        model, seed and settings; checked before any work); the loss trace and draws
        equal an uninterrupted run's. Without the file the fit starts from step 0.

    Returns
    -------
    MoEFit

    Raises
    ------
    NonFiniteLossError
        When the optimisation diverges: the loss, a guide or network parameter, or a
        posterior draw turns NaN or infinite, or a distribution gets an invalid
        parameter. The message names the step and the parameters and sites concerned
        (:mod:`bayes_moe.inference.divergence`); the fit stops there.

    Warns
    -----
    UserWarning
        When the model's latent parameters (the scalars of its sample sites) outnumber
        the observed values it is fitted to (days times targets), as with ``K = 50``
        regimes on a year of data; the fit still runs.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if num_draws < 1:
        raise ValueError(f"num_draws must be >= 1, got {num_draws}")
    if memory_budget_mib is not None and not memory_budget_mib > 0:
        raise ValueError(f"memory_budget_mib must be positive, got {memory_budget_mib}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {list(STRATEGIES)}")
    if not 0.0 <= pretrain_holdout < 1.0:
        raise ValueError(f"pretrain_holdout must be in [0, 1), got {pretrain_holdout}")
    if pretrain_steps < 1 or pretrain_batch < 1:
        raise ValueError(
            f"pretrain_steps and pretrain_batch must be >= 1: {pretrain_steps}, {pretrain_batch}"
        )
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs the checkpoint path to resume from")
    response = data.observed_response
    identity = fingerprint(
        model.config(),
        response,
        {
            "seed": seed,
            "num_steps": num_steps,
            "learning_rate": learning_rate,
            "final_lr_fraction": final_lr_fraction,
            "guide": guide,
            "init_scale": init_scale,
            "strategy": strategy,
            "pretrain": [pretrain_steps, pretrain_batch, pretrain_holdout],
            "convergence": [convergence_tol, check_every],
            "warm_start": sorted(init_values or {}),
        },
    )
    saved = None
    if resume and Path(checkpoint).exists():
        saved = SVIState.load(checkpoint)  # refused before any work if it is another fit's
        saved.check_matches(identity, checkpoint)
    pyro.set_rng_seed(seed)
    inputs = data.inputs.at(data.inputs.origins[: data.n_observed])
    program = model.program().build(inputs).train()
    n_obs = data.n_observed
    n_scored = int(program.scored_origins(inputs).sum())  # responses in the likelihood
    shapes = program.latent_shapes(inputs)
    _warn_if_overparametrised(shapes, response)

    with pyro.settings.context(module_local_params=True), torch_threads(num_threads):
        warm_start = _check_init_values(shapes, init_values or {})
        start = time.perf_counter()
        start_values = {}
        if strategy == "two_stage":
            start_values = _pretrain_window_experts(
                program,
                inputs,
                response,
                PretrainSettings(pretrain_steps, pretrain_batch, pretrain_holdout),
                seed,
                progress,
                pretrain_cache,
            )
        pretrain_s = time.perf_counter() - start
        start_values.update(warm_start)
        pyro.set_rng_seed(seed)
        autoguide = make_guide(
            program, guide, init_scale=init_scale, response=response, init_values=start_values
        )
        elbo = Trace_ELBO()(program, autoguide)
        args = (inputs, response)
        svi_step(elbo, None, args, where="SVI initialisation")  # creates the guide's parameters
        lrd = final_lr_fraction ** (1.0 / num_steps)
        optimizer = ClippedAdam(elbo.parameters(), lr=learning_rate, lrd=lrd, clip_norm=10.0)
        losses: list[float] = []
        converged = False
        if saved is not None:
            saved.restore(elbo, optimizer)
            losses, converged = list(saved.losses), saved.converged
        resumed_from = len(losses)

        def save_state():
            if checkpoint is not None:
                SVIState.capture(len(losses), losses, converged, identity, elbo, optimizer).save(
                    checkpoint
                )

        start = time.perf_counter()
        with tqdm(
            total=num_steps, initial=len(losses), desc="SVI", disable=not progress, leave=False
        ) as bar:
            for step in range(len(losses), 0 if converged else num_steps):
                losses.append(svi_step(elbo, optimizer, args, where=f"SVI step {step + 1}"))
                bar.update()
                if step % 25 == 0:
                    bar.set_postfix(loss_per_obs=f"{losses[-1] / n_scored:.4f}")
                if convergence_tol is not None and _converged(
                    losses, check_every, convergence_tol * n_scored, min_steps=num_steps // 3
                ):
                    converged = True
                    break
                if (step + 1) % checkpoint_every == 0 and step + 1 < num_steps:
                    save_state()
        save_state()
        elapsed = time.perf_counter() - start
        check_finite_parameters(elbo, where=f"SVI after {len(losses)} steps")
        program.eval()
        with torch.no_grad(), invalid_as_non_finite("SVI posterior draws", elbo, args):
            samples = [autoguide(inputs, response) for _ in range(num_draws)]
    draws = {name: torch.stack([s[name] for s in samples]) for name in samples[0]}
    check_finite_draws(draws, where="SVI posterior draws")
    diagnostics = SVIDiagnostics(
        losses=np.asarray(losses),
        n_observations=n_obs,
        converged=converged,
        elapsed_s=elapsed,
        guide=guide,
        seed=seed,
        strategy=strategy,
        pretrain_s=pretrain_s,
        resumed_from_step=resumed_from,
    )
    budget = {} if memory_budget_mib is None else {"memory_budget_mib": memory_budget_mib}
    return MoEFit(
        model=model, program=program, data=data, draws=draws, diagnostics=diagnostics, **budget
    )


def _pretrain_window_experts(program, inputs, response, settings, seed, progress, cache):
    """Stage one: train each window expert alone, freeze it; return init values of stage two."""
    expert_inputs = program.expert_inputs(inputs)
    values = {}
    for label, expert in zip(program.labels, program.experts):
        if not isinstance(expert, WindowExpert):
            continue
        options = {**settings.as_dict(), "seed": seed}
        key = cache.key(expert, expert_inputs, response, options) if cache is not None else None
        result = cache.load(key, expert, expert_inputs) if cache is not None else None
        if result is None:
            result = pretrain_expert(expert, expert_inputs, response, **options, progress=progress)
            if cache is not None:
                cache.save(key, expert, result)
        values.update({f"{label}/{name}": v for name, v in result.init_values.items()})
        if expert.bayesian == "head":
            expert.freeze()
    return values


@dataclass(frozen=True)
class PretrainSettings:
    """Stage-one optimisation settings (the keywords of :func:`pretrain_expert`)."""

    num_steps: int = 400
    batch_size: int = 256
    holdout: float = 0.2

    def as_dict(self) -> dict:
        """``{"num_steps": ..., "batch_size": ..., "holdout": ...}``."""
        return {"num_steps": self.num_steps, "batch_size": self.batch_size, "holdout": self.holdout}


def count_latent(shapes: Mapping[str, torch.Size]) -> int:
    """Number of latent scalars: the total size of the sites of :meth:`MoEProgram.latent_shapes`."""
    return sum(math.prod(shape) for shape in shapes.values())


def _warn_if_overparametrised(shapes: Mapping[str, torch.Size], response: torch.Tensor) -> None:
    """UserWarning when the latent scalars outnumber the observed values ``response`` ``(N, d_y)``.

    Trained network weights (point estimates of the trunks) are not counted.
    """
    n_latent = count_latent(shapes)
    n_values = response.numel()
    if n_latent <= n_values:
        return
    largest = sorted(shapes, key=lambda name: math.prod(shapes[name]), reverse=True)[:3]
    listed = ", ".join(f"{name!r} {math.prod(shapes[name])}" for name in largest)
    warnings.warn(
        f"the model has {n_latent} latent parameters but only {n_values} observations "
        f"({response.shape[0]} days x {response.shape[1]} target(s)); the largest sites: "
        f"{listed}. The posterior will mostly repeat the priors: use fewer regimes or "
        "experts, or more data",
        UserWarning,
        stacklevel=3,
    )


def _check_init_values(
    shapes: Mapping[str, torch.Size], values: Mapping[str, torch.Tensor]
) -> dict:
    """``values`` as float64 tensors; ValueError naming a site that is unknown or misshapen."""
    out = {}
    for name, value in values.items():
        value = torch.as_tensor(value, dtype=torch.float64)
        if name not in shapes:
            raise ValueError(
                f"init_values: {name!r} is not a site of the model; sites: {sorted(shapes)}"
            )
        if value.shape != shapes[name]:
            raise ValueError(
                f"init_values: site {name!r} has shape {tuple(shapes[name])}, "
                f"got {tuple(value.shape)}"
            )
        out[name] = value
    return out


def _converged(losses: list[float], window: int, tol: float, *, min_steps: int) -> bool:
    """True when the last window's mean loss improved on the one before by < ``tol``."""
    n = len(losses)
    if n < max(2 * window, min_steps) or n % window:
        return False
    previous = np.mean(losses[-2 * window : -window])
    last = np.mean(losses[-window:])
    return previous - last < tol
