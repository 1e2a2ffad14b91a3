"""Checkpoints of panel fits: safetensors tensors plus versioned JSON metadata, no pickle.

The same design as a single series' checkpoint (:mod:`bayes_moe.inference.checkpoint`)
for a :class:`~bayes_moe.inference.panel_fit.PanelFit`: the model specification, the
panel's training constants (:class:`~bayes_moe.data.panel_windows.PanelPreprocessor`),
the posterior draws, the trained network weights and asset embeddings, and the wide
panel the fit conditions on (NaN where an asset has no value), so a loaded fit
forecasts, reports its regimes and applies its draws to newer days on its own. The file
is written to a temporary file and renamed into place.

Loading rebuilds the panel and the program from the metadata and checks every module
and draw tensor against what that program expects (names, shapes, dtypes, finite values
in their priors' supports) before anything is forecast; a malformed or foreign file is
refused with a :class:`~bayes_moe.inference.checkpoint_checks.CheckpointError` naming
the field or tensor.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
from safetensors.torch import save_file

from bayes_moe.data.panel_windows import PanelPreprocessor, prepare_panel
from bayes_moe.inference.checkpoint import (
    PANEL_FORMAT,
    _malformed,
    fit_contents,
    read_checkpoint,
)
from bayes_moe.inference.checkpoint_checks import (
    CheckpointError,
    check_draw_tensors,
    check_module_tensors,
)
from bayes_moe.inference.results import SVIDiagnostics
from bayes_moe.io import atomic_path
from bayes_moe.models.moe import BayesianMoE

if TYPE_CHECKING:  # the fit's class calls into this module
    from bayes_moe.inference.panel_fit import PanelFit

PANEL_FORMAT_VERSION = "1"
PANEL_FIELDS = ("model", "preprocessor", "horizon", "window", "assets", "date_unit", "diagnostics")


def save_panel_fit(fit: PanelFit, path: str | os.PathLike[str]) -> None:
    """Write ``fit`` to ``path`` atomically (see the module docstring)."""
    tensors, common = fit_contents(fit, fit.data.frame.loc[:, list(fit.assets)])
    metadata = {
        "format": PANEL_FORMAT,
        "format_version": PANEL_FORMAT_VERSION,
        **common,
        "preprocessor": json.dumps(dataclasses.asdict(fit.data.preprocessor)),
        "horizon": str(fit.horizon),
        "window": str(fit.data.inputs.window),
        "assets": json.dumps(list(fit.assets)),
    }
    with atomic_path(Path(path)) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_panel_fit(path: str | os.PathLike[str]) -> PanelFit:
    """Rebuild a :class:`~bayes_moe.inference.panel_fit.PanelFit` from its checkpoint.

    Raises
    ------
    CheckpointError
        For a missing, foreign (a single series' checkpoint: the message names
        ``bm.load_fit``), unsupported or malformed file, naming the field or tensor.
    """
    from bayes_moe.inference.panel_fit import PanelFit

    metadata, tensors = read_checkpoint(
        path, kind=PANEL_FORMAT, versions=(PANEL_FORMAT_VERSION,), required=PANEL_FIELDS
    )
    with _malformed(path):
        model = BayesianMoE.from_config(json.loads(metadata["model"]))
        fields = json.loads(metadata["preprocessor"])
        preprocessor = PanelPreprocessor(
            **{k: _as_tuples(v) if isinstance(v, list) else v for k, v in fields.items()}
        )
        assets = json.loads(metadata["assets"])
        if list(preprocessor.assets) != assets:
            raise CheckpointError(
                f"metadata 'assets' {assets} differ from the preprocessor's "
                f"{list(preprocessor.assets)}"
            )
        wide = _wide_panel(tensors, assets, metadata["date_unit"])
        data = prepare_panel(
            wide,
            window=int(metadata["window"]),
            horizon=int(metadata["horizon"]),
            preprocessor=preprocessor,
        )
        inputs = data.inputs.at(data.inputs.origins[: data.n_observed])
        program = model.panel_program().build(inputs).eval()
        program.load_state_dict(check_module_tensors(program.state_dict(), tensors))
        draws = check_draw_tensors(program.latent_sites(inputs), tensors)
    losses = tensors["diagnostics/losses"].numpy()
    diagnostics = SVIDiagnostics.from_dict(json.loads(metadata["diagnostics"]), losses)
    return PanelFit(model, program, data, draws, diagnostics)


def _as_tuples(value):
    """JSON lists back to the preprocessor's (nested) tuples."""
    return tuple(_as_tuples(v) if isinstance(v, list) else v for v in value)


def _wide_panel(tensors: dict, assets: list[str], date_unit: str) -> pd.DataFrame:
    """The fitted wide panel from ``data/values`` ``(T, A)`` and ``data/dates`` ``(T,)``."""
    values, dates = tensors["data/values"], tensors["data/dates"]
    if values.dtype != torch.float64 or values.ndim != 2 or values.shape[1] != len(assets):
        raise CheckpointError(
            f"tensor 'data/values' must be float64 of shape (T, {len(assets)}), got "
            f"{values.dtype} {tuple(values.shape)}"
        )
    if dates.dtype != torch.int64 or tuple(dates.shape) != (values.shape[0],):
        raise CheckpointError(
            f"tensor 'data/dates' must be int64 of shape ({values.shape[0]},), got "
            f"{dates.dtype} {tuple(dates.shape)}"
        )
    index = pd.DatetimeIndex(dates.numpy().astype(date_unit), name="date")
    return pd.DataFrame(values.numpy(), index=index, columns=assets)
