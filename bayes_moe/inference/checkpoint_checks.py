"""Checks of a checkpoint's metadata and tensors, run before anything is built from them.

:func:`~bayes_moe.inference.checkpoint.load_fit` refuses a checkpoint whose metadata or
tensors do not agree with each other, with a :class:`CheckpointError` that names the
metadata field or tensor and gives the expected and the found value. Every field is a
string (safetensors metadata); JSON fields are parsed first.

=====================  ==================================================================
metadata field         expected
=====================  ==================================================================
``model``              JSON object: ``experts`` (non-empty list), ``gate`` (object),
                       ``window`` (integer >= 1), optional ``expert_dropout`` (number in
                       [0, 1)) and ``horizon_likelihood`` (one of
                       :data:`~bayes_moe.models.moe.HORIZON_LIKELIHOODS`; absent: the
                       overlapping one of older fits), accepted by
                       :meth:`BayesianMoE.from_config`
``preprocessor``       JSON object: ``columns`` (distinct names), ``targets`` (the first
                       columns), ``loc`` and ``scale`` (one finite number per column,
                       scales > 0), ``vol_center`` (``d_y`` rows of ``V`` finite numbers),
                       optional ``optional`` (covariates read with gaps, NaN allowed)
``horizon``            a decimal integer >= 1
``columns``            JSON list equal to the preprocessor's columns
``date_unit``          one of :data:`DATE_UNITS`
``first_date``,        ISO dates of the first and last row (written since checkpoints
``last_date``          carry them; older files have neither): ``data/dates`` read with
                       ``date_unit`` must start and end on them
``price_history``      optional (format version 3): JSON object, the
                       :class:`~bayes_moe.data.continuation.FeatureRecipe` of the fitted
                       prices (``returns_from``, ``range_inputs``, ``generated``)
``diagnostics``        JSON object: ``num_steps`` (integer, the length of
                       ``diagnostics/losses``), ``n_observations`` (integer >= 1),
                       ``converged`` (boolean), ``elapsed_s`` (number >= 0), ``guide``
                       (a guide of :data:`~bayes_moe.inference.svi.GUIDES`), ``seed``
                       (integer), optional ``strategy`` (one of
                       :data:`~bayes_moe.inference.svi_options.STRATEGIES`), optional
                       ``pretrain_s`` (number >= 0), optional ``resumed_from_step``
                       (integer from 0 to ``num_steps``), optional ``device`` (a
                       string) and ``dtype`` (``"float32"`` or ``"float64"``)
=====================  ==================================================================

======================  ==========  =====================================================
tensor                  dtype       shape
======================  ==========  =====================================================
``data/values``         float64     ``(T, C)``, ``C`` = number of ``columns``
``data/dates``          int64       ``(T,)``, sorted distinct dates once read
``diagnostics/losses``  float64     ``(num_steps,)``
``draws/<site>``        the site's  ``(S, *shape)`` for every latent site of the model
                                    built from the metadata (``S >= 1`` shared), finite,
                                    magnitude at most ``MAX_MAGNITUDE`` (1e15), inside
                                    the support of the site's prior
``module/<name>``       as built    the shape of the built program's state-dict entry;
                                    finite and at most ``MAX_MAGNITUDE`` when floating
``prices/values``       float64     ``(T_raw, P)``, ``P`` = the recipe's input columns;
                                    only with ``price_history``
``prices/dates``        int64       ``(T_raw,)``, sorted distinct dates ending with the
                                    ``T`` dates of ``data/dates``
======================  ==========  =====================================================

Other tensors are ignored (a later format may add some; it then raises the version).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeGuard, TypeVar

import pandas as pd
import torch
from torch.distributions.constraints import Constraint

from bayes_moe.data.continuation import FeatureRecipe, PriceHistory
from bayes_moe.data.placement import FIT_DTYPES
from bayes_moe.data.plausibility import MAX_MAGNITUDE
from bayes_moe.data.validation import validate_index
from bayes_moe.data.windows import VOL_FEATURES, Preprocessor
from bayes_moe.inference.checkpoint_errors import CheckpointError
from bayes_moe.inference.svi_options import GUIDES, STRATEGIES
from bayes_moe.models.moe import BayesianMoE, LatentSite

_T = TypeVar("_T")

#: Units ``data/dates`` may be stored in (the dtype of the fitted frame's index).
DATE_UNITS: tuple[str, ...] = tuple(f"datetime64[{u}]" for u in ("s", "ms", "us", "ns"))


@dataclass(frozen=True)
class CheckpointSpec:
    """The metadata of a checkpoint, parsed and checked (see the module docstring).

    Attributes
    ----------
    model : BayesianMoE
    preprocessor : Preprocessor
    horizon : int
    columns : list of str
        ``C`` column names of ``data/values``, targets first.
    date_unit : str
        One of :data:`DATE_UNITS`.
    first_date, last_date : str or None
        ISO dates of the first and last row; None in files written before them.
    diagnostics : dict
        The fit's diagnostics (:meth:`SVIDiagnostics.to_dict`).
    """

    model: BayesianMoE
    preprocessor: Preprocessor
    horizon: int
    columns: list[str]
    date_unit: str
    first_date: str | None
    last_date: str | None
    diagnostics: dict


def parse_metadata(metadata: Mapping[str, str]) -> CheckpointSpec:
    """Parse and check every metadata field (module docstring); CheckpointError otherwise.

    Parameters
    ----------
    metadata : mapping of str to str
        The safetensors metadata of a file whose ``format`` and ``format_version`` have
        been checked already and which has every required field.
    """
    preprocessor = _parse_preprocessor(_json_field(metadata, "preprocessor", dict))
    columns = _json_field(metadata, "columns", list)
    if columns != list(preprocessor.columns):
        raise CheckpointError(
            f"metadata field 'columns' must equal the preprocessor's columns "
            f"{list(preprocessor.columns)}, found {columns}"
        )
    horizon = metadata["horizon"]
    if not re.fullmatch(r"[1-9][0-9]*", horizon):
        raise CheckpointError(
            f"metadata field 'horizon' must be an integer >= 1, found {horizon!r}"
        )
    date_unit = metadata["date_unit"]
    if date_unit not in DATE_UNITS:
        raise CheckpointError(
            f"metadata field 'date_unit' must be one of {list(DATE_UNITS)}, found {date_unit!r}"
        )
    first, last = metadata.get("first_date"), metadata.get("last_date")
    if (first is None) != (last is None):
        missing = "first_date" if first is None else "last_date"
        raise CheckpointError(f"metadata field {missing!r} is missing (its pair is there)")
    return CheckpointSpec(
        model=_parse_model(_json_field(metadata, "model", dict)),
        preprocessor=preprocessor,
        horizon=int(horizon),
        columns=columns,
        date_unit=date_unit,
        first_date=first,
        last_date=last,
        diagnostics=_parse_diagnostics(_json_field(metadata, "diagnostics", dict)),
    )


def check_data_tensors(
    spec: CheckpointSpec, tensors: Mapping[str, torch.Tensor]
) -> pd.DatetimeIndex:
    """Check ``data/values``, ``data/dates`` and ``diagnostics/losses`` against ``spec``.

    Returns
    -------
    pandas.DatetimeIndex
        ``T`` dates of the rows of ``data/values``, named ``"date"``.

    Raises
    ------
    CheckpointError
        Naming the tensor (or the field ``date_unit``), expected and found.
    """
    values, dates = tensors["data/values"], tensors["data/dates"]
    _check_tensor("data/values", values, torch.float64, ("T", len(spec.columns)))
    if values.shape[0] == 0:
        raise CheckpointError("tensor 'data/values' holds no rows: the fit has no data")
    _check_tensor("data/dates", dates, torch.int64, (values.shape[0],))
    num_steps = spec.diagnostics["num_steps"]
    _check_tensor("diagnostics/losses", tensors["diagnostics/losses"], torch.float64, (num_steps,))
    return _decode_dates(dates, spec)


def check_module_tensors(
    expected: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The ``module/<name>`` tensors as a state dict, checked against the built program's.

    Parameters
    ----------
    expected : mapping of str to Tensor
        ``program.state_dict()`` of the program built from the metadata.
    tensors : mapping of str to Tensor
        Every tensor of the file.

    Raises
    ------
    CheckpointError
        On a missing or unexpected entry, or one of another shape or dtype.
    """
    found = _with_prefix(tensors, "module/")
    _check_names("module", set(expected), set(found))
    for name, value in found.items():
        want = expected[name]
        _check_tensor(f"module/{name}", value, want.dtype, tuple(want.shape))
        _check_values(f"module/{name}", value)
    return found


def check_draw_tensors(
    sites: Mapping[str, LatentSite], tensors: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The ``draws/<site>`` tensors, checked against the model's latent sites.

    Parameters
    ----------
    sites : mapping of str to LatentSite
        :meth:`MoEProgram.latent_sites` of the program built from the metadata.
    tensors : mapping of str to Tensor
        Every tensor of the file.

    Returns
    -------
    dict of str to Tensor
        ``S`` draws of every site, ``(S, *sites[site].shape)``.

    Raises
    ------
    CheckpointError
        On a missing or unexpected site, a draw count that differs between sites, a
        shape that is not ``(S, *shape)``, a dtype other than the site's, a non-finite
        value, a magnitude beyond :data:`~bayes_moe.data.plausibility.MAX_MAGNITUDE`,
        or a value outside the support of the site's prior (a negative scale or
        degrees of freedom would otherwise fail only inside a forecast).
    """
    draws = _with_prefix(tensors, "draws/")
    _check_names("draws", set(sites), set(draws))
    first, value = next(iter(draws.items()))
    n_draws = value.shape[0] if value.dim() else 0
    if n_draws < 1:
        raise CheckpointError(f"tensor 'draws/{first}' holds no posterior draw")
    for name, value in draws.items():
        site = sites[name]
        _check_tensor(f"draws/{name}", value, site.dtype, (n_draws, *site.shape))
        _check_values(f"draws/{name}", value)
        if not bool(site.support.check(value).all()):
            raise CheckpointError(
                f"tensor 'draws/{name}' holds values outside the support of its prior "
                f"({_describe(site.support)})"
            )
    return draws


def _check_values(name: str, value: torch.Tensor) -> None:
    """Raise for a floating tensor with NaN, inf, or a magnitude beyond the safe bound.

    The bound is the data's (:data:`~bayes_moe.data.plausibility.MAX_MAGNITUDE`): the
    model works on standardized data, so a fitted parameter near it means a damaged
    file, and its square would overflow float32 in a forecast.
    """
    if not value.is_floating_point() or value.numel() == 0:
        return
    if not torch.isfinite(value).all():
        raise CheckpointError(f"tensor {name!r} holds NaN or infinite values")
    largest = float(value.abs().max())
    if largest > MAX_MAGNITUDE:
        raise CheckpointError(
            f"tensor {name!r} holds a value of magnitude {largest:.3g}, beyond the "
            f"{MAX_MAGNITUDE:.0e} a fitted model ever holds"
        )


def _describe(support: Constraint) -> str:
    """``positive``, ``interval(0.0, 1.0)``: a constraint as a short name."""
    text = repr(support)
    return text if len(text) <= 80 else type(support).__name__


def check_price_tensors(
    metadata: Mapping[str, str],
    tensors: Mapping[str, torch.Tensor],
    spec: CheckpointSpec,
    dates: pd.DatetimeIndex,
) -> PriceHistory | None:
    """The fitted raw prices of a checkpoint (``price_history``, ``prices/*``), checked.

    Parameters
    ----------
    metadata, tensors : mapping
        The file's metadata and tensors.
    spec : CheckpointSpec
    dates : DatetimeIndex
        The ``T`` fitted dates (:func:`check_data_tensors`).

    Returns
    -------
    PriceHistory or None
        None for a file without the field (format version 1 or 2, or a fit that kept
        no prices).

    Raises
    ------
    CheckpointError
        On a malformed recipe, a missing tensor, a wrong dtype or shape, or price dates
        that are not sorted and distinct or do not end with the fitted dates.
    """
    if "price_history" not in metadata:
        return None
    try:
        recipe = FeatureRecipe.from_dict(_json_field(metadata, "price_history", dict))
    except ValueError as err:
        raise CheckpointError(f"metadata field 'price_history' is malformed: {err}") from None
    missing = [k for k in ("prices/values", "prices/dates") if k not in tensors]
    if missing:
        raise CheckpointError(
            f"metadata field 'price_history' is there but tensors {missing} are not"
        )
    values, stamps = tensors["prices/values"], tensors["prices/dates"]
    _check_tensor("prices/values", values, torch.float64, ("T_raw", len(recipe.inputs)))
    _check_tensor("prices/dates", stamps, torch.int64, (values.shape[0],))
    index = _read_dates(spec, "prices/dates", stamps)
    if len(index) < len(dates) or not index[len(index) - len(dates) :].equals(dates):
        raise CheckpointError(
            f"tensor 'prices/dates' must end with the {len(dates)} dates of 'data/dates' "
            f"({dates[0].date()} .. {dates[-1].date()}), found {len(index)} dates"
            + (f" ({index[0].date()} .. {index[-1].date()})" if len(index) else "")
        )
    frame = pd.DataFrame(values.numpy(), index=index, columns=list(recipe.inputs))
    return PriceHistory(recipe, frame)


# ----------------------------------------------------------------------------- metadata
_JSON_NAMES: dict[type, str] = {dict: "object", list: "list"}


def _json_field(metadata: Mapping[str, str], name: str, kind: type[_T]) -> _T:
    try:
        value = json.loads(metadata[name])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"metadata field {name!r} is not valid JSON ({err})") from None
    if not isinstance(value, kind):
        raise CheckpointError(
            f"metadata field {name!r} must be a JSON {_JSON_NAMES[kind]}, "
            f"found {_json_kind(value)} {_short(value)}"
        )
    return value


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {dict: "object", list: "list", str: "string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _short(value: object, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _require(ok: bool, field: str, expected: str, found: object) -> None:
    if not ok:
        raise CheckpointError(f"metadata field {field} must be {expected}, found {_short(found)}")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_finite_list(value: object, length: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == length
        and all(_is_number(x) and math.isfinite(x) for x in value)
    )


def _parse_model(config: dict) -> BayesianMoE:
    experts, gate = config.get("experts"), config.get("gate")
    _require(
        isinstance(experts, list) and len(experts) > 0,
        "'model' experts",
        "a non-empty list",
        experts,
    )
    _require(isinstance(gate, dict), "'model' gate", "an object", gate)
    window = config.get("window")
    _require(_is_int(window) and window >= 1, "'model' window", "an integer >= 1", window)
    dropout = config.get("expert_dropout", 0.0)
    _require(
        _is_number(dropout) and 0 <= dropout < 1,
        "'model' expert_dropout",
        "a number in [0, 1)",
        dropout,
    )
    try:
        return BayesianMoE.from_config(config)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"metadata field 'model' does not describe a model ({type(err).__name__}: {err})"
        ) from None


def _parse_preprocessor(raw: dict) -> Preprocessor:
    keys = {"columns", "targets", "loc", "scale", "vol_center"}
    _require(
        set(raw) in (keys, keys | {"optional"}),  # "optional" written since gaps are read
        "'preprocessor'",
        f"an object with keys {sorted(keys)} and optionally 'optional'",
        sorted(raw),
    )
    columns, targets = raw["columns"], raw["targets"]
    names_ok = isinstance(columns, list) and all(isinstance(c, str) for c in columns)
    _require(
        names_ok and len(columns) > 0 and len(set(columns)) == len(columns),
        "'preprocessor' columns",
        "a non-empty list of distinct names",
        columns,
    )
    _require(
        isinstance(targets, list) and len(targets) > 0 and targets == columns[: len(targets)],
        "'preprocessor' targets",
        f"a non-empty list of the first columns of {columns}",
        targets,
    )
    n = len(columns)
    _require(
        _is_finite_list(raw["loc"], n), "'preprocessor' loc", f"{n} finite numbers", raw["loc"]
    )
    scale = raw["scale"]
    _require(
        _is_finite_list(scale, n) and all(s > 0 for s in scale),
        "'preprocessor' scale",
        f"{n} finite numbers > 0",
        scale,
    )
    rows, width = len(targets), len(VOL_FEATURES)
    center = raw["vol_center"]
    _require(
        isinstance(center, list)
        and len(center) == rows
        and all(_is_finite_list(r, width) for r in center),
        "'preprocessor' vol_center",
        f"{rows} list(s) of {width} finite numbers",
        center,
    )
    optional = raw.get("optional", [])
    _require(
        isinstance(optional, list) and all(c in columns[len(targets) :] for c in optional),
        "'preprocessor' optional",
        f"a list of covariates among {columns[len(targets) :]}",
        optional,
    )
    return Preprocessor.from_json(json.dumps(raw))


def _parse_diagnostics(diag: dict) -> dict:
    checks = {
        "num_steps": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        "n_observations": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        "converged": (lambda v: isinstance(v, bool), "true or false"),
        "elapsed_s": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
        "guide": (lambda v: v in GUIDES, f"one of {sorted(GUIDES)}"),
        "seed": (_is_int, "an integer"),
    }
    optional = {
        "strategy": (lambda v: v in STRATEGIES, f"one of {list(STRATEGIES)}"),
        "pretrain_s": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
        "resumed_from_step": (
            lambda v: _is_int(v) and 0 <= v <= diag.get("num_steps", 0),
            "an integer from 0 to num_steps",
        ),
        "device": (lambda v: isinstance(v, str) and bool(v), "a device name"),
        "dtype": (lambda v: v in FIT_DTYPES, f"one of {list(FIT_DTYPES)}"),
    }
    missing = [key for key in checks if key not in diag]
    if missing:
        raise CheckpointError(f"metadata field 'diagnostics' lacks {missing}")
    for key, (ok, expected) in {**checks, **optional}.items():
        if key in diag:
            _require(ok(diag[key]), f"'diagnostics' {key}", expected, diag[key])
    return diag


# ------------------------------------------------------------------------------ tensors
def _check_tensor(
    name: str, value: torch.Tensor, dtype: torch.dtype | None, shape: tuple[int | str, ...]
) -> None:
    """Raise unless ``value`` has ``dtype`` (None: any floating) and ``shape``.

    A ``str`` entry of ``shape`` (``"T"``) is a free size, shown by that name.
    """
    if dtype is None and not value.is_floating_point():
        raise CheckpointError(
            f"tensor {name!r} must hold floating-point numbers, found {value.dtype}"
        )
    if dtype is not None and value.dtype != dtype:
        raise CheckpointError(f"tensor {name!r} must have dtype {dtype}, found {value.dtype}")
    found = tuple(value.shape)
    fits = len(found) == len(shape) and all(
        isinstance(want, str) or want == size for want, size in zip(shape, found)
    )
    if not fits:
        expected = ", ".join(str(want) for want in shape) + ("," if len(shape) == 1 else "")
        raise CheckpointError(f"tensor {name!r} must have shape ({expected}), found {found}")


def _with_prefix(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _check_names(prefix: str, expected: set[str], found: set[str]) -> None:
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"the model built from the metadata expects tensors {prefix}/{sorted(expected)}; "
            f"missing {[f'{prefix}/{n}' for n in missing]}, "
            f"unexpected {[f'{prefix}/{n}' for n in unexpected]}"
        )


def _decode_dates(dates: torch.Tensor, spec: CheckpointSpec) -> pd.DatetimeIndex:
    """``data/dates`` read in ``date_unit``, checked against ``first_date`` .. ``last_date``."""
    said = (
        ""
        if spec.first_date is None
        else f"; fields 'first_date' .. 'last_date' say {spec.first_date} .. {spec.last_date}"
    )
    index = _read_dates(spec, "data/dates", dates, said)
    if spec.first_date is None or len(index) == 0:
        return index
    found = (index[0].isoformat(), index[-1].isoformat())
    if found != (spec.first_date, spec.last_date):
        raise CheckpointError(
            f"metadata field 'date_unit' {spec.date_unit!r} reads tensor 'data/dates' as "
            f"{found[0]} .. {found[1]}{said}"
        )
    return index


def _read_dates(spec, name: str, stamps: torch.Tensor, said: str = "") -> pd.DatetimeIndex:
    """The dates of int64 tensor ``name`` ``(T,)`` in ``spec.date_unit``, checked as an index.

    Raises :class:`CheckpointError` naming the field, the tensor and ``said`` (what other
    fields claim) when they are not valid, increasing dates.
    """
    prefix = f"metadata field 'date_unit' {spec.date_unit!r} reads tensor {name!r} as"
    try:
        index = pd.DatetimeIndex(stamps.numpy().astype(spec.date_unit), name="date")
        validate_index(index)
    except (ValueError, OverflowError) as err:  # DataError, OutOfBoundsDatetime
        raise CheckpointError(f"{prefix} no valid dates ({err}){said}") from None
    return index
