"""Which route a kernel takes: the parallel scan or the compiled sequential recursion.

The HMM kernels (:mod:`bayes_moe.kernels.hmm`), the Kalman filter
(:mod:`bayes_moe.kernels.kalman`) and the gate's normalisation
(:mod:`bayes_moe.kernels.mixture_kernels`) each have two routes: a torch route
(a parallel scan, or broadcast tensor arithmetic) that is differentiable and runs on any
device, and a numba-compiled loop that is several times faster on a CPU with one or two
cores but runs on the CPU only and gives (mostly) no gradient. Their ``method`` keyword
takes one of :data:`KERNEL_METHODS`; :func:`choose_method` resolves it.
"""

from __future__ import annotations

import torch

__all__ = ["KERNEL_METHODS", "choose_method"]

#: Values of the ``method`` keyword of the kernels.
KERNEL_METHODS = ("auto", "parallel", "sequential")


def choose_method(method: str, *tensors: torch.Tensor, sequential_gradient: bool = False) -> str:
    """The route a kernel takes: ``"parallel"`` or ``"sequential"``.

    ``"auto"`` takes the compiled sequential route for tensors on the CPU, unless
    autograd needs a gradient (grad mode on and an input that requires grad) that the
    kernel's sequential route does not give (``sequential_gradient=False``, e.g. the HMM
    filter and smoother, the Kalman filter); then, and on a GPU, it takes the parallel
    route. The HMM log evidence has an exact sequential gradient and the Viterbi path
    is discrete (its ``log_max`` is differentiated through the returned path), so on the
    CPU ``"auto"`` always takes the sequential route for those two. ``"sequential"`` on
    a GPU tensor, or where only the parallel route gives the gradient asked for, is an
    error.
    """
    if method not in KERNEL_METHODS:
        raise ValueError(f"method must be one of {KERNEL_METHODS}, got {method!r}")
    if method == "parallel":
        return method
    on_cpu = all(t.device.type == "cpu" for t in tensors)
    needs_grad = (
        not sequential_gradient
        and torch.is_grad_enabled()
        and any(t.requires_grad for t in tensors)
    )
    if method == "sequential":
        if not on_cpu:
            devices = sorted({str(t.device) for t in tensors})
            raise ValueError(f"method='sequential' runs on the CPU; got tensors on {devices}")
        if needs_grad:
            raise ValueError(
                "method='sequential' gives no gradient here, and an input requires grad: "
                "use method='parallel' (or 'auto'), or call under torch.no_grad()"
            )
        return method
    return "sequential" if on_cpu and not needs_grad else "parallel"
