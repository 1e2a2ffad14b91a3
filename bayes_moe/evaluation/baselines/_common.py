"""Helpers shared by every baseline: input checks, origins, Student-t scales."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, stats

from bayes_moe.data.errors import DataError, format_date


def _check_frame(frame: pd.DataFrame, what: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise DataError(f"{what} must have a DatetimeIndex, got {type(frame.index).__name__}")
    if not frame.index.is_monotonic_increasing or not frame.index.is_unique:
        raise DataError(f"{what} must have sorted, unique dates")
    if "ret" not in frame.columns:
        raise DataError(f"{what} has no 'ret' column; columns: {[str(c) for c in frame.columns]}")


def _finite_column(frame: pd.DataFrame, column: str, stop: int, what: str) -> np.ndarray:
    """``frame[column]`` on rows ``0 .. stop-1`` as float64; raise on NaN or inf."""
    values = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)[:stop]
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{what}: column {column!r} is not finite on {format_date(frame.index[i])} "
            f"({int(bad.sum())} such row(s))"
        )
    return values


def _train_returns(train: pd.DataFrame, minimum: int) -> np.ndarray:
    _check_frame(train, "train")
    r = _finite_column(train, "ret", len(train), "train")
    if len(r) < minimum:
        raise DataError(f"train has {len(r)} rows; this baseline needs at least {minimum}")
    if np.ptp(r) == 0.0:
        raise DataError("train: column 'ret' is constant")
    return r


def _origin_positions(frame: pd.DataFrame, origins, horizon: int) -> np.ndarray:
    """Row positions of ``origins`` in ``frame`` (DataError names the first one missing)."""
    _check_frame(frame, "frame")
    if not isinstance(horizon, int | np.integer) or horizon < 1:
        raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
    origins = pd.DatetimeIndex(origins)
    if len(origins) == 0:
        raise DataError("origins is empty")
    pos = frame.index.get_indexer(origins)
    if (pos < 0).any():
        missing = origins[pos < 0]
        raise DataError(
            f"origin {format_date(missing[0])} is not a row of frame "
            f"({len(missing)} of {len(origins)} origins missing)"
        )
    return pos


def _fit_unit_t_df(z: np.ndarray) -> float:
    r"""Maximum-likelihood degrees of freedom of a unit-variance Student-t for ``z``.

    Maximizes :math:`\sum_i \log t_\nu\big(z_i / s_\nu\big) - \log s_\nu` with
    :math:`s_\nu = \sqrt{(\nu - 2)/\nu}`, over :math:`\nu \in (2.01, 500)`.
    """

    def nll(log_excess):
        nu = 2.0 + np.exp(log_excess)
        return -stats.t.logpdf(z, nu, 0.0, np.sqrt((nu - 2.0) / nu)).sum()

    res = optimize.minimize_scalar(nll, bounds=(np.log(0.01), np.log(498.0)), method="bounded")
    return float(2.0 + np.exp(res.x))


def _t_scale(variance: np.ndarray, df: float) -> np.ndarray:
    """The Student-t scale whose variance is ``variance``."""
    return np.sqrt(variance * (df - 2.0) / df)
