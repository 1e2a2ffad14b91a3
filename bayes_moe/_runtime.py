"""Runtime settings shared by the inference routines."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def torch_threads(num_threads: int | None):
    """Run a block with ``torch.set_num_threads(num_threads)`` (None: leave as is).

    The mixture works on many small tensors, where one intra-op thread is fastest
    and OpenMP threads spinning against other processes on a shared machine can
    slow a step down by an order of magnitude; hence the default of one thread in
    :func:`~bayes_moe.inference.svi.fit_svi`.
    """
    if num_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
