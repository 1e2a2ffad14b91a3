"""Runtime settings shared by the inference routines."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools

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


@functools.cache
def _malloc_trim():
    """The C library's ``malloc_trim`` (glibc), or None where it has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None)
    except OSError:
        return None


def release_free_memory() -> None:
    """Hand memory that was freed back to the operating system, where the C library can.

    glibc keeps large freed blocks in its heap once its adaptive mmap threshold has
    grown, so a loop that allocates and frees hundreds of megabytes per iteration
    (:func:`bayes_moe.inference.posterior.summarize_posterior`) would hold the freed
    memory as resident set. ``malloc_trim(0)`` returns it; elsewhere this does nothing.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
