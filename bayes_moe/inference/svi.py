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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import init_to_median, init_to_value
from pyro.optim.clipped_adam import ClippedAdam
from tqdm.auto import tqdm

from bayes_moe._runtime import torch_threads
from bayes_moe.data.placement import as_device, as_fit_dtype, check_available, place
from bayes_moe.data.windows import ModelData
from bayes_moe.inference.divergence import (
    check_finite_draws,
    check_finite_parameters,
    invalid_as_non_finite,
    svi_step,
)
from bayes_moe.inference.posterior import DEFAULT_MEMORY_BUDGET_MIB
from bayes_moe.inference.pretrain import pretrain_expert
from bayes_moe.inference.results import MoEFit, SVIDiagnostics
from bayes_moe.inference.svi_options import GUIDES, SVIOptions
from bayes_moe.inference.svi_state import SVIState, fingerprint
from bayes_moe.models.experts.window import WindowExpert
from bayes_moe.models.moe import BayesianMoE, MoEProgram
from bayes_moe.models.panel import PanelProgram

#: Training strategies of :func:`fit_svi` (see the module docstring).


def make_guide(
    program: MoEProgram,
    kind: str,
    *,
    init_scale: float,
    response=None,
    init_values=None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
):
    """Build the autoguide ``kind`` (``"normal"``, ``"mvn"``, ``"lowrank"``).

    Initialization: ``init_values`` (site name to value, e.g. stage one's medians),
    the transition matrix at its prior mean (sticky), the regime volatility levels
    at the spread of the data's rolling volatility
    (:meth:`~bayes_moe.models.gate.MarkovGate.initial_levels`, when ``response`` is
    given), every other site at the median of 15 prior draws, which also breaks the
    symmetry between identical experts or regimes. ``dtype`` and ``device``: the fit's.
    """
    if kind not in GUIDES:
        raise ValueError(f"unknown guide {kind!r}; choose one of {sorted(GUIDES)}")
    gate = program.gate
    values = {name: place(value, device, dtype) for name, value in (init_values or {}).items()}
    if gate.n_regimes > 1:
        values["gate/transition"] = gate.transition_prior(dtype, device).base_dist.mean
    levels = None if response is None else gate.initial_levels(response)
    if levels is not None:
        values["gate/level_step"] = levels
    init = init_to_value(values=values, fallback=init_to_median(num_samples=15))
    return GUIDES[kind](program, init_loc_fn=init, init_scale=init_scale)


def fit_svi(
    model: BayesianMoE,
    data: ModelData,
    options: SVIOptions | None = None,
    **keywords: Any,
) -> MoEFit:
    """Fit ``model`` to ``data`` by SVI and draw from the approximate posterior.

    Parameters
    ----------
    model : BayesianMoE
        Specification; it is not modified (fitting works on a copy of its experts).
    data : ModelData
        From :meth:`BayesianMoE.prepare`.
    options : SVIOptions, optional
        The optimisation settings (:class:`~bayes_moe.inference.svi_options.SVIOptions`,
        whose attributes document them; default: its defaults).
    **keywords
        Fields of :class:`SVIOptions` replacing those of ``options`` (``num_steps=500,
        seed=1``); an unknown name is a TypeError listing the options.

    Returns
    -------
    MoEFit

    Raises
    ------
    TypeError, ValueError
        For an unknown option or a value out of range, before any work.
    CheckpointError
        When ``resume`` finds the checkpoint of another fit, before any work.
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
    options = SVIOptions.merge(options, keywords)
    inputs = data.inputs.at(data.inputs.origins[: data.n_observed])
    program, draws, diagnostics = run_svi(
        model.config(), model.program, inputs, data.observed_response, options
    )
    budget = options.memory_budget_mib
    return MoEFit(
        model=model,
        program=program,
        data=data,
        draws=draws,
        diagnostics=diagnostics,
        memory_budget_mib=DEFAULT_MEMORY_BUDGET_MIB if budget is None else budget,
    )


def run_svi(
    model_config: dict,
    make_program: Callable[[], MoEProgram],
    inputs,
    response: torch.Tensor,
    options: SVIOptions,
    *,
    level_response: torch.Tensor | None = None,
    n_observations: int | None = None,
) -> tuple[MoEProgram, dict[str, torch.Tensor], SVIDiagnostics]:
    """Optimise the ELBO of a fresh program on ``(inputs, response)``; draw from the guide.

    The work behind :func:`fit_svi` and :func:`~bayes_moe.inference.panel_fit.fit_panel`.

    Parameters
    ----------
    model_config : dict
        The specification (:meth:`BayesianMoE.config`), part of a checkpoint's identity.
    make_program : callable
        Returns a fresh program (:meth:`BayesianMoE.program` or ``panel_program``).
    inputs : ExpertInputs or PanelInputs
        Observed origins only.
    response : Tensor ``(N, d_y)`` or ``(N, A)``
    options : SVIOptions
    level_response : Tensor, optional
        The series whose rolling volatility sets the initial regime levels (default
        ``response``; a panel's market series).
    n_observations : int, optional
        Observations reported in the diagnostics (default the origins, ``N``).

    Returns
    -------
    program, draws ``{site: (S, ...)}``, diagnostics
    """
    identity = (
        {}
        if options.checkpoint is None
        else fingerprint(
            model_config,
            response,
            {
                "seed": options.seed,
                "num_steps": options.num_steps,
                "learning_rate": options.learning_rate,
                "final_lr_fraction": options.final_lr_fraction,
                "guide": options.guide,
                "init_scale": options.init_scale,
                "strategy": options.strategy,
                "pretrain": [
                    options.pretrain_steps,
                    options.pretrain_batch,
                    options.pretrain_holdout,
                ],
                "convergence": [options.convergence_tol, options.check_every],
                "warm_start": sorted(options.init_values or {}),
                "dtype": str(as_fit_dtype(options.dtype)),
            },
        )
    )
    device, dtype = as_device(options.device), as_fit_dtype(options.dtype)
    check_available(device)  # before any work
    saved = None
    checkpoint = options.checkpoint
    if options.resume and checkpoint is not None and Path(checkpoint).exists():
        saved = SVIState.load(checkpoint)  # refused before any work if it is another fit's
        saved.check_matches(identity, checkpoint)
    pyro.set_rng_seed(options.seed)
    inputs, response = place(inputs, device, dtype), place(response, device, dtype)
    if level_response is not None:
        level_response = place(level_response, device, dtype)
    program = make_program().build(inputs).to(device).train()
    n_scored = program.count_scored(inputs, response)  # responses in the likelihood
    shapes = program.latent_shapes(inputs)
    _warn_if_overparametrised(shapes, response)

    with pyro.settings.context(module_local_params=True), torch_threads(options.num_threads):
        warm_start = _check_init_values(shapes, options.init_values or {}, device, dtype)
        start = time.perf_counter()
        start_values = {}
        if options.strategy == "two_stage" and not isinstance(program, PanelProgram):
            start_values = _pretrain_window_experts(
                program,
                inputs,
                response,
                PretrainSettings(
                    options.pretrain_steps, options.pretrain_batch, options.pretrain_holdout
                ),
                options.seed,
                options.progress,
                options.pretrain_cache,
            )
        pretrain_s = time.perf_counter() - start
        start_values.update(warm_start)
        pyro.set_rng_seed(options.seed)
        autoguide = make_guide(
            program,
            options.guide,
            init_scale=options.init_scale,
            response=response if level_response is None else level_response,
            init_values=start_values,
            dtype=dtype,
            device=device,
        )
        elbo = Trace_ELBO()(program, autoguide)
        args = (inputs, response)
        svi_step(elbo, None, args, where="SVI initialisation")  # creates the guide's parameters
        lrd = options.final_lr_fraction ** (1.0 / options.num_steps)
        optimizer = ClippedAdam(
            elbo.parameters(), lr=options.learning_rate, lrd=lrd, clip_norm=10.0
        )
        losses: list[float] = []
        converged = False
        if saved is not None:
            saved.restore(elbo, optimizer, device)
            losses, converged = list(saved.losses), saved.converged
        resumed_from = len(losses)

        def save_state():
            if options.checkpoint is not None:
                SVIState.capture(
                    len(losses), losses, converged, identity, elbo, optimizer, device
                ).save(options.checkpoint)

        start = time.perf_counter()
        with tqdm(
            total=options.num_steps,
            initial=len(losses),
            desc="SVI",
            disable=not options.progress,
            leave=False,
        ) as bar:
            for step in range(len(losses), 0 if converged else options.num_steps):
                losses.append(svi_step(elbo, optimizer, args, where=f"SVI step {step + 1}"))
                bar.update()
                if step % 25 == 0:
                    bar.set_postfix(loss_per_obs=f"{losses[-1] / n_scored:.4f}")
                if options.convergence_tol is not None and _converged(
                    losses,
                    options.check_every,
                    options.convergence_tol * n_scored,
                    min_steps=options.num_steps // 3,
                ):
                    converged = True
                    break
                if (step + 1) % options.checkpoint_every == 0 and step + 1 < options.num_steps:
                    save_state()
        save_state()
        elapsed = time.perf_counter() - start
        check_finite_parameters(elbo, where=f"SVI after {len(losses)} steps")
        program.eval()
        with torch.no_grad(), invalid_as_non_finite("SVI posterior draws", elbo, args):
            samples = [autoguide(inputs, response) for _ in range(options.num_draws)]
    # The fit is evaluated on the CPU in float64 (the compiled kernels): the draws and the
    # networks come back here.
    draws = {
        name: torch.stack([s[name] for s in samples]).to(device="cpu", dtype=torch.float64)
        for name in samples[0]
    }
    program.to("cpu")
    check_finite_draws(draws, where="SVI posterior draws")
    diagnostics = SVIDiagnostics(
        losses=np.asarray(losses),
        n_observations=response.shape[0] if n_observations is None else n_observations,
        converged=converged,
        elapsed_s=elapsed,
        guide=options.guide,
        seed=options.seed,
        strategy=options.strategy,
        pretrain_s=pretrain_s,
        resumed_from_step=resumed_from,
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
    )
    return program, draws, diagnostics


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
    shapes: Mapping[str, torch.Size],
    values: Mapping[str, torch.Tensor],
    device: torch.device,
    dtype: torch.dtype,
) -> dict:
    """``values`` as tensors of the fit; ValueError naming a site unknown or misshapen."""
    out = {}
    for name, value in values.items():
        value = torch.as_tensor(value, dtype=dtype, device=device)
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
    return bool(previous - last < tol)
