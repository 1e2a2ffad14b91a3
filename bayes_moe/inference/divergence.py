"""Stop an SVI loop with a named error when it diverges, instead of fitting garbage.

A loss that turns NaN or infinite, a parameter that does, or a distribution whose
parameter leaves its support (a guide scale that underflows to 0) means the
optimisation has diverged; every later step would only spread the damage. :func:`svi_step`
runs one step and raises :class:`NonFiniteLossError` naming the step and the parts
that went wrong (parameters and sample sites), with no tensor dump in the message.
:func:`check_finite_parameters` checks the parameters once more after the loop and
:func:`check_finite_draws` the posterior draws.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence

import pyro
import torch
from pyro import poutine

__all__ = [
    "NonFiniteLossError",
    "check_finite_draws",
    "check_finite_parameters",
    "invalid_as_non_finite",
    "svi_step",
]

#: How many non-finite parts a message lists before "and N more".
_LISTED = 4
#: The phrase of torch.distributions' argument validation (a parameter or a value
#: outside its support); such an error is a divergence, its message a tensor dump.
_INVALID = "found invalid values"


class NonFiniteLossError(FloatingPointError):
    """The SVI loss, a parameter or a sample site turned NaN or infinite.

    The message names where (``"SVI step 12"``, ``"pretraining expert 'cnn', step 3"``)
    and what (``"parameter 'guide.locs.ar/coef'"``, ``"site 'gate/level_step'"``).
    Usual causes: a learning rate that is too high, or data on an extreme scale
    (see :mod:`bayes_moe.data.plausibility`). A subclass of :class:`FloatingPointError`
    (an :class:`ArithmeticError`).
    """


def svi_step(
    elbo: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    args: Sequence[object],
    *,
    where: str,
) -> float:
    """One step: loss, gradient, update; NonFiniteLossError instead of a diverged step.

    The loss is checked before the gradient is taken, so that the parameters keep
    their last finite values when it is not finite.

    Parameters
    ----------
    elbo : torch.nn.Module
        A Pyro ``ELBOModule`` (``Trace_ELBO()(model, guide)``).
    optimizer : torch.optim.Optimizer or None
        Stepped after the backward pass; ``None`` only evaluates the loss (the call that
        creates the guide's parameters).
    args : sequence
        Arguments of the model and guide.
    where : str
        Named in the error: ``"SVI step 12"``.

    Returns
    -------
    float
        The loss.

    Raises
    ------
    NonFiniteLossError
        If the loss is not finite or a distribution got an invalid parameter (the
        validation error of :mod:`torch.distributions`, whose message would print
        whole tensors).
    """
    if optimizer is not None:
        optimizer.zero_grad()
    with invalid_as_non_finite(where, elbo, args):
        loss = elbo(*args)
    value = loss.item()
    if not math.isfinite(value):
        raise NonFiniteLossError(_message(where, f"the loss is {value}", elbo, args))
    if optimizer is not None:
        loss.backward()
        optimizer.step()
    return value


@contextlib.contextmanager
def invalid_as_non_finite(
    where: str, elbo: torch.nn.Module | None = None, args: Sequence[object] = ()
) -> Iterator[None]:
    """Turn a validation error of :mod:`torch.distributions` into NonFiniteLossError.

    Inside the block, a ValueError saying that a distribution's parameter or value
    "found invalid values" (a guide scale that underflowed to 0, a NaN location)
    becomes a :class:`NonFiniteLossError` naming ``where``, the parameter and, given
    ``elbo`` and ``args``, the non-finite parameters and sites; any other error passes.
    """
    try:
        yield
    except ValueError as err:
        if _INVALID not in str(err):
            raise
        problem = f"{_describe_invalid(str(err))} is invalid"
        raise NonFiniteLossError(_message(where, problem, elbo, args)) from None


def check_finite_parameters(module: torch.nn.Module, *, where: str) -> None:
    """NonFiniteLossError naming the parameters of ``module`` that are not finite."""
    bad = _non_finite_parameters(module)
    if bad:
        raise NonFiniteLossError(f"{where}: non-finite {_listing(bad)}")


def check_finite_draws(draws: Mapping[str, torch.Tensor], *, where: str) -> None:
    """NonFiniteLossError naming the sites whose posterior draws are not all finite.

    Parameters
    ----------
    draws : mapping of str to Tensor
        Site name to draws ``(S, ...)``.
    where : str
        Named in the error.
    """
    bad = [f"site {name!r}" for name, value in draws.items() if not _all_finite(value)]
    if bad:
        raise NonFiniteLossError(f"{where}: non-finite posterior draws of {_listing(bad)}")


def _message(where: str, problem: str, elbo: torch.nn.Module | None, args: Sequence[object]) -> str:
    """``"<where>: <problem>; non-finite: <parts>. The optimisation diverged: ..."``."""
    parts = [] if elbo is None else _non_finite_parameters(elbo) + _non_finite_sites(elbo, args)
    culprits = f"; non-finite: {_listing(parts)}" if parts else ""
    return (
        f"{where}: {problem}{culprits}. The optimisation diverged: lower the learning "
        "rate, or check the data for extreme values"
    )


def _describe_invalid(message: str) -> str:
    """``"parameter 'scale' of a Normal"`` from a torch.distributions validation error."""
    family = re.search(r"of distribution (\w+)", message)
    of = f" of a {family.group(1)}" if family else ""
    parameter = re.search(r"Expected parameter (\w+)", message)
    if parameter:
        return f"parameter {parameter.group(1)!r}{of}"
    return f"a value{of}"


def _all_finite(value: torch.Tensor) -> bool:
    return bool(torch.isfinite(value.detach()).all())


def _non_finite_parameters(module: torch.nn.Module) -> list[str]:
    """``["parameter 'guide.locs.ar/coef'", ...]``: the parameters holding NaN or inf."""
    return [
        f"parameter {name!r}" for name, value in module.named_parameters() if not _all_finite(value)
    ]


def _non_finite_sites(elbo: torch.nn.Module, args: Sequence[object]) -> list[str]:
    """The sample sites whose value or log-density is not finite, under the guide's draw.

    Runs the guide and the model once more with validation off (so that an invalid
    parameter gives NaN instead of an error); empty if even that fails.
    """
    model, guide = getattr(elbo, "model", None), getattr(elbo, "guide", None)
    if model is None or guide is None:
        return []
    try:
        with torch.no_grad(), pyro.validation_enabled(False):
            guide_trace = poutine.trace(guide).get_trace(*args)
            replayed = poutine.replay(model, trace=guide_trace)
            model_trace = poutine.trace(replayed).get_trace(*args)
            bad = []
            for kind, trace in (("guide", guide_trace), ("model", model_trace)):
                bad += [f"{kind} site {name!r}" for name in _bad_sites(trace)]
            return list(dict.fromkeys(bad))
    except Exception:  # noqa: BLE001 - a diagnosis must never hide the error it explains
        return []


def _bad_sites(trace) -> list[str]:
    """Names of the sample sites of ``trace`` with a non-finite value or log-density."""
    bad = []
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        value = site["value"]
        log_prob = site["fn"].log_prob(value)
        if not (_all_finite(value) and _all_finite(torch.as_tensor(log_prob))):
            bad.append(name)
    return bad


def _listing(parts: list[str]) -> str:
    """The first few ``parts``, joined, with how many more there are."""
    shown = ", ".join(parts[:_LISTED])
    more = len(parts) - _LISTED
    return shown + (f" and {more} more" if more > 0 else "")
