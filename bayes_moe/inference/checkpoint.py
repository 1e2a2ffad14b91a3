"""Checkpoints of fits: safetensors tensors plus versioned JSON metadata, no pickle.

A checkpoint holds the model specification, the standardization constants, the
posterior draws, any trained network weights and the data the fit conditions on
(so ``bayes-moe forecast --model FILE`` works on its own) and, when the fit keeps them,
the raw prices of the fitted file, every row of it (the warm-up rows the reader dropped
too): all of them rather than the last few, because the ATR is an exponential average
whose value depends on the whole history, and a few columns of float64 per day are
small beside the draws. Files are written to a
temporary file in the same folder and renamed into place, so a failed write never
leaves a half-written checkpoint or destroys an existing one.

Loading checks every metadata field and every tensor against the model the metadata
describes before anything is built or forecast from them
(:mod:`~bayes_moe.inference.checkpoint_checks`): a malformed file is refused with a
:class:`CheckpointError` naming the field or tensor, the expected and the found value.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from bayes_moe.data.windows import prepare
from bayes_moe.inference.checkpoint_checks import (
    CheckpointError,
    CheckpointSpec,
    check_data_tensors,
    check_draw_tensors,
    check_module_tensors,
    check_price_tensors,
    parse_metadata,
)
from bayes_moe.io import atomic_path
from bayes_moe.models.experts import Expert, expert_spec

if TYPE_CHECKING:  # the fit's class imports this module's callers; annotations only
    from bayes_moe.inference.results import MoEFit

FORMAT = "bayes-moe-fit"
#: Version 2 added regime volatility levels and input-output transitions to the gate
#: configuration. Version 3 added the fitted raw prices (``price_history`` and
#: ``prices/*``, written when the fit keeps them), from which ``update`` computes the
#: features of newer price rows. Version 1 and 2 files still load and forecast from their
#: own data or from new returns; new prices are refused with a message saying why.
FORMAT_VERSION = 3
READABLE_VERSIONS = ("1", "2", "3")
#: Metadata fields every readable checkpoint has (``first_date`` and ``last_date`` were
#: added within version 2 and are checked when present).
REQUIRED_FIELDS = ("model", "preprocessor", "horizon", "columns", "date_unit", "diagnostics")
#: Format of a panel fit's checkpoint (:mod:`~bayes_moe.inference.panel_checkpoint`).
PANEL_FORMAT = "bayes-moe-panel-fit"
#: The loader of each kind of checkpoint, named in the error for a file of another kind.
LOADERS = {FORMAT: "bm.load_fit", PANEL_FORMAT: "bm.load_panel_fit"}


def fit_contents(fit, frame: pd.DataFrame) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata every checkpoint has, single series or panel.

    Tensors ``draws/*``, ``module/*`` (the program's state), ``data/values`` and
    ``data/dates`` (``frame``, the data the fit conditions on) and
    ``diagnostics/losses``; metadata ``model`` (with the built experts' settings: what
    building fixed from the data, such as a volatility expert's gap indicators, is
    rebuilt the same from any later data), ``date_unit``, ``first_date``, ``last_date``
    and ``diagnostics``.
    """
    tensors = {f"draws/{k}": v.detach().contiguous() for k, v in fit.draws.items()}
    tensors.update(
        {f"module/{k}": v.detach().contiguous() for k, v in fit.program.state_dict().items()}
    )
    # A copy: pandas may hand out a read-only view (copy-on-write), which torch warns about.
    tensors["data/values"] = torch.from_numpy(np.array(frame.to_numpy(dtype=np.float64), order="C"))
    tensors["data/dates"] = torch.as_tensor(frame.index.asi8.astype(np.int64))
    tensors["diagnostics/losses"] = torch.as_tensor(fit.diagnostics.losses)
    built = [expert_spec(cast(Expert, e)) for e in fit.program.experts]  # a ModuleList
    metadata = {
        "model": json.dumps(fit.model.config() | {"experts": built}),
        "date_unit": str(frame.index.dtype),
        "first_date": frame.index[0].isoformat(),
        "last_date": frame.index[-1].isoformat(),
        "diagnostics": json.dumps(fit.diagnostics.to_dict()),
    }
    return tensors, metadata


def save_fit(fit: MoEFit, path: str | os.PathLike[str]) -> None:
    """Write ``fit`` to ``path`` atomically (see the module docstring)."""
    path = Path(path)
    frame = fit.data.frame.loc[:, list(fit.data.preprocessor.columns)]
    tensors, common = fit_contents(fit, frame)
    tensors.update(_price_tensors(fit.price_history, frame.index.dtype))
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        **common,
        "preprocessor": fit.data.preprocessor.to_json(),
        "horizon": str(fit.horizon),
        "columns": json.dumps(list(frame.columns)),
    }
    if fit.price_history is not None:
        metadata["price_history"] = json.dumps(fit.price_history.recipe.to_dict())
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_checkpoint(
    path,
    *,
    kind: str = FORMAT,
    versions: tuple[str, ...] = READABLE_VERSIONS,
    required: tuple[str, ...] = REQUIRED_FIELDS,
) -> tuple[dict, dict]:
    """Read ``path`` and check that it is a readable checkpoint: ``(metadata, tensors)``.

    Checks the format (``kind``: a single-series fit, or a panel fit's
    :data:`~bayes_moe.inference.panel_checkpoint.PANEL_FORMAT`), its version and that
    every ``required`` field and data tensor is there; :func:`load_fit` checks their
    contents. CheckpointError otherwise, naming the loader of a checkpoint of the
    other kind.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{path} is not a bayes-moe checkpoint (not a readable safetensors file: {err})"
        ) from None
    found = metadata.get("format")
    if found != kind:
        loader = LOADERS.get(str(found))
        hint = f": read it with {loader}" if loader else ""
        raise CheckpointError(
            f"{path} is a safetensors file but not a bayes-moe checkpoint of this kind "
            f"(format {found!r}, expected {kind!r}){hint}"
        )
    version = metadata.get("format_version", "?")
    if version not in versions:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this bayes_moe reads versions "
            f"{', '.join(versions)}"
        )
    missing = [k for k in required if k not in metadata]
    missing += [k for k in ("data/values", "data/dates", "diagnostics/losses") if k not in tensors]
    if missing or not any(k.startswith("draws/") for k in tensors):
        raise CheckpointError(
            f"{path} is a malformed bayes-moe checkpoint: missing {missing or 'draws'}"
        )
    return metadata, tensors


def checkpoint_kind(path) -> str:
    """The ``format`` of the checkpoint at ``path`` (a single series' fit or a panel's).

    CheckpointError for a missing file or one that is not a readable safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return str((handle.metadata() or {}).get("format"))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{path} is not a bayes-moe checkpoint (not a readable safetensors file: {err})"
        ) from None


def load_fit(path: str | os.PathLike[str]) -> MoEFit:
    """Rebuild a :class:`~bayes_moe.inference.results.MoEFit` from a checkpoint.

    Every metadata field and tensor is checked first (module docstring); nothing is
    forecast from a file that fails a check.

    Raises
    ------
    CheckpointError
        For a missing, foreign, unsupported or malformed file, naming the field or
        tensor at fault with the expected and the found value.
    """
    from bayes_moe.inference.results import MoEFit, SVIDiagnostics

    metadata, tensors = read_checkpoint(path)
    with _malformed(path):
        spec = parse_metadata(metadata)
        dates = check_data_tensors(spec, tensors)
        data = _prepare_data(spec, tensors, dates)
        program = spec.model.program().build(data.inputs).eval()
        program.load_state_dict(check_module_tensors(program.state_dict(), tensors))
        draws = check_draw_tensors(program.latent_sites(data.inputs), tensors)
        prices = check_price_tensors(metadata, tensors, spec, dates)
    diagnostics = SVIDiagnostics.from_dict(spec.diagnostics, tensors["diagnostics/losses"].numpy())
    return MoEFit(
        model=spec.model,
        program=program,
        data=data,
        draws=draws,
        diagnostics=diagnostics,
        price_history=prices,
    )


def _price_tensors(history, date_unit) -> dict[str, torch.Tensor]:
    """``prices/values`` ``(T_raw, P)`` and ``prices/dates`` ``(T_raw,)``; none without prices."""
    if history is None:
        return {}
    raw = history.raw
    return {
        "prices/values": torch.from_numpy(np.array(raw.to_numpy(dtype=np.float64), order="C")),
        "prices/dates": torch.as_tensor(raw.index.astype(date_unit).asi8.astype(np.int64)),
    }


def _prepare_data(spec: CheckpointSpec, tensors: dict, dates: pd.DatetimeIndex):
    """The fit's :class:`~bayes_moe.data.windows.ModelData` from ``data/values``."""
    frame = pd.DataFrame(tensors["data/values"].numpy(), index=dates, columns=spec.columns)
    try:
        return prepare(
            frame,
            targets=list(spec.preprocessor.targets),
            window=spec.model.window,
            horizon=spec.horizon,
            preprocessor=spec.preprocessor,
            allow_outliers=True,  # the fitted data, accepted when it was fitted
        )
    except ValueError as err:  # DataError: too short, NaN, constant...
        raise CheckpointError(
            f"tensor 'data/values' cannot be read by the model in the metadata: {err}"
        ) from None


@contextlib.contextmanager
def _malformed(path) -> Iterator[None]:
    """Turn a failed check (or a model that cannot be built) into a CheckpointError."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError) as err:  # CheckpointError too
        raise CheckpointError(f"{path} is a malformed bayes-moe checkpoint: {err}") from None
