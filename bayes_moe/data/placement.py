"""Moving a fit's tensors to the device and floating dtype it runs in.

A fit can run on another device (``"cuda"``) or in another precision (``float32``) than
the data are prepared in (CPU, ``float64``). :func:`place` copies the inputs of a fit
there once, before any work: every floating tensor goes to ``(device, dtype)``, every
other tensor (origins, masks) to ``device`` only. The model then creates its own
tensors on the device and dtype of what it reads.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import torch

#: The floating dtypes a fit may run in.
FIT_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}

T = TypeVar("T")


def as_fit_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.float32`` / ``torch.float64`` from themselves or their names.

    Raises
    ------
    ValueError
        For any other dtype, naming the ones allowed.
    """
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        if name in FIT_DTYPES:
            return FIT_DTYPES[name]
    elif dtype in FIT_DTYPES.values():
        return dtype
    raise ValueError(f"dtype must be one of {list(FIT_DTYPES)}, got {dtype!r}")


def as_device(device: torch.device | str) -> torch.device:
    """``torch.device(device)``; ValueError naming a string torch does not read as one."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device must name a torch device ('cpu', 'cuda', 'cuda:1'), got {device!r}"
        ) from error


def check_available(device: torch.device) -> None:
    """ValueError when ``device`` is a CUDA device this machine does not have."""
    if device.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise ValueError(
            f"device={str(device)!r} was asked for, but torch sees no CUDA device "
            "(torch.cuda.is_available() is False): fit on device='cpu'"
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={str(device)!r} was asked for, but torch sees "
            f"{torch.cuda.device_count()} CUDA device(s)"
        )


def place(value: T, device: torch.device | str, dtype: torch.dtype) -> T:
    """``value`` with every tensor in it on ``device``, the floating ones in ``dtype``.

    ``value`` is a tensor, a frozen dataclass (its tensor fields and the tensors of
    nested dataclasses and tuples are replaced; it is copied, not changed), a tuple, or
    anything else (returned as it is). A tensor already in place is returned itself.
    """
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            return value.to(device=device, dtype=dtype)  # type: ignore[return-value]
        return value.to(device=device)  # type: ignore[return-value]
    if isinstance(value, tuple):
        return type(value)(place(item, device, dtype) for item in value)  # type: ignore[return-value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {}
        for field in dataclasses.fields(value):
            if not field.init:
                continue
            old = getattr(value, field.name)
            new = place(old, device, dtype)
            if new is not old:
                changes[field.name] = new
        return dataclasses.replace(value, **changes) if changes else value
    return value
