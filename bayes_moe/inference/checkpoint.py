"""Checkpoints of fits: safetensors tensors plus versioned JSON metadata, no pickle.

A checkpoint holds the model specification, the standardization constants, the
posterior draws, any trained network weights and the data the fit conditions on
(so ``bayes-moe forecast --model FILE`` works on its own). Files are written to a
temporary file in the same folder and renamed into place, so a failed write never
leaves a half-written checkpoint or destroys an existing one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from bayes_moe.io import atomic_path

FORMAT = "bayes-moe-fit"
#: Version 2 added regime volatility levels and input-output transitions to the gate
#: configuration. Version 1 files (gates without either) still load.
FORMAT_VERSION = 2
READABLE_VERSIONS = ("1", "2")


class CheckpointError(ValueError):
    """A checkpoint file is missing, malformed, foreign or of an unsupported version."""


def save_fit(fit, path) -> None:
    """Write ``fit`` to ``path`` atomically (see the module docstring)."""
    path = Path(path)
    frame = fit.data.frame.loc[:, list(fit.data.preprocessor.columns)]
    tensors = {f"draws/{k}": v.detach().contiguous() for k, v in fit.draws.items()}
    tensors.update(
        {f"module/{k}": v.detach().contiguous() for k, v in fit.program.state_dict().items()}
    )
    tensors["data/values"] = torch.as_tensor(np.ascontiguousarray(frame.to_numpy(dtype=np.float64)))
    tensors["data/dates"] = torch.as_tensor(frame.index.asi8.astype(np.int64))
    tensors["diagnostics/losses"] = torch.as_tensor(fit.diagnostics.losses)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model": json.dumps(fit.model.config()),
        "preprocessor": fit.data.preprocessor.to_json(),
        "horizon": str(fit.horizon),
        "columns": json.dumps(list(frame.columns)),
        "date_unit": str(frame.index.dtype),
        "diagnostics": json.dumps(fit.diagnostics.to_dict()),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_checkpoint(path) -> tuple[dict, dict]:
    """Read and validate ``path``: ``(metadata, tensors)``; CheckpointError otherwise."""
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
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not a bayes-moe checkpoint "
            f"(format {metadata.get('format')!r}, expected {FORMAT!r})"
        )
    version = metadata.get("format_version", "?")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this bayes_moe reads versions "
            f"{', '.join(READABLE_VERSIONS)}"
        )
    needed = ["model", "preprocessor", "horizon", "columns", "diagnostics"]
    missing = [k for k in needed if k not in metadata]
    missing += [k for k in ("data/values", "data/dates", "diagnostics/losses") if k not in tensors]
    if missing or not any(k.startswith("draws/") for k in tensors):
        raise CheckpointError(
            f"{path} is a malformed bayes-moe checkpoint: missing {missing or 'draws'}"
        )
    return metadata, tensors


def load_fit(path):
    """Rebuild a :class:`~bayes_moe.inference.results.MoEFit` from a checkpoint."""
    from bayes_moe.data.windows import Preprocessor, prepare
    from bayes_moe.inference.results import MoEFit
    from bayes_moe.inference.svi import SVIDiagnostics
    from bayes_moe.models.moe import BayesianMoE

    metadata, tensors = read_checkpoint(path)
    try:
        model = BayesianMoE.from_config(json.loads(metadata["model"]))
        preprocessor = Preprocessor.from_json(metadata["preprocessor"])
        columns = json.loads(metadata["columns"])
        diag = json.loads(metadata["diagnostics"])
        dates = pd.DatetimeIndex(
            tensors["data/dates"].numpy().astype(metadata.get("date_unit", "datetime64[ns]")),
            name="date",
        )
        frame = pd.DataFrame(tensors["data/values"].numpy(), index=dates, columns=columns)
        data = prepare(
            frame,
            targets=list(preprocessor.targets),
            window=model.window,
            horizon=int(metadata["horizon"]),
            preprocessor=preprocessor,
        )
        program = model.program().build(data.inputs).eval()
        state = {k[len("module/") :]: v for k, v in tensors.items() if k.startswith("module/")}
        program.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is a malformed bayes-moe checkpoint: {err}") from None
    draws = {k[len("draws/") :]: v for k, v in tensors.items() if k.startswith("draws/")}
    diagnostics = SVIDiagnostics(
        losses=tensors["diagnostics/losses"].numpy(),
        n_observations=diag["n_observations"],
        converged=diag["converged"],
        elapsed_s=diag["elapsed_s"],
        guide=diag["guide"],
        seed=diag["seed"],
        strategy=diag.get("strategy", "joint"),
        pretrain_s=diag.get("pretrain_s", 0.0),
    )
    return MoEFit(model=model, program=program, data=data, draws=draws, diagnostics=diagnostics)
