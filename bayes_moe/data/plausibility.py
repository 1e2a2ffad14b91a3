r"""Checks that a frame's values are plausible, before any fitting starts.

:func:`validate_frame` checks that a frame *can* be read (dates, columns, NaN...);
:func:`check_plausible_values` checks that what it holds is a plausible market series,
so that one mistyped value cannot silently become a forecast (a single return of
1e6 % would otherwise fit and forecast a standard deviation of hundreds of percent).
It runs inside :func:`~bayes_moe.data.windows.prepare`, on every path to a model:
:meth:`BayesianMoE.fit <bayes_moe.BayesianMoE.fit>` and ``prepare``,
:meth:`MoEFit.update <bayes_moe.MoEFit.update>`, the backtest refits and every
``bayes-moe`` command that reads data. Two checks, per column:

1. **Outliers** (target columns only). The robust z-score of a value is its distance
   from the column's median in robust standard deviations,

   .. math:: z_t = \frac{|y_t - \operatorname{med}(y)|}{\hat\sigma}, \qquad
             \hat\sigma = 1.4826 \operatorname{med}|y - \operatorname{med}(y)|

   (the MAD, scaled to equal the standard deviation of a Normal; when more than half
   the values equal the median, so that the MAD is 0, :math:`\hat\sigma` is the mean
   absolute deviation scaled by 1.2533, Iglewicz and Hoaglin's fallback, taken over all
   but the largest 1 % of the deviations so that an outlier cannot inflate it: a short
   illiquid series of mostly zero returns would otherwise hide a mistyped 1e6 %). A value with
   :math:`z_t >` :data:`OUTLIER_THRESHOLD` (100) is refused with its column, date and
   value. The median and the MAD ignore the outliers themselves, so a single bad value
   cannot hide by inflating the scale. Real market data never come near the threshold:
   on the data embedded in the package the largest robust z of a return is 13.8 (S&P 500
   ``ret``, 2008-10-13, +10.96 %), 12.5 for the NASDAQ (2001-01-03, +13.25 %), 9.0 for
   the VIX level (2015-08-24, 40.74), 22.3 for daily WTI oil returns (the 1991 Gulf War,
   -40.6 %), 15.5 for the monthly Fama-French factors (1932-33); a price mistyped by a factor of
   10 gives a log return near 230 %, a robust z of about 290 on the S&P 500. Covariates
   are not checked for outliers: price levels trend and realised variances spike far
   beyond any threshold of this kind in real crashes (the NASDAQ's Garman-Klass variance
   reaches a robust z of 217 in 2000), so a heavy-tailed target like a realised
   variance may need ``allow_outliers=True`` too. Accept real outliers with
   ``allow_outliers=True`` (``bayes-moe ... --allow-outliers``).
2. **Scale** (every model column; never waived). The largest magnitude must be at most
   :data:`MAX_MAGNITUDE` (``1e15``) and the robust scale :math:`\hat\sigma` at least
   :data:`MIN_SCALE` (``1e-15``): then every value, scale and squared scale of a
   column lies well inside the normal range of float32 (``1.2e-38 .. 3.4e38``) and far
   inside float64, so standardisation neither overflows (a series at the 1e200 scale
   has an infinite variance in float64) nor underflows (at the 1e-300 scale the variance
   is 0). No financial series in any sensible unit comes near either bound; a series
   beyond them must be rescaled (the message says by which power of ten).

References
----------
B. Iglewicz and D. C. Hoaglin, *How to Detect and Handle Outliers*, ASQC Quality
Press, 1993 (the modified z-score).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from bayes_moe.data.errors import DataError, format_date

__all__ = [
    "MAX_MAGNITUDE",
    "MIN_SCALE",
    "OUTLIER_THRESHOLD",
    "check_plausible_values",
    "robust_scale",
    "robust_z",
]

#: Robust z-score above which a target value is refused (see the module docstring).
OUTLIER_THRESHOLD: float = 100.0
#: Largest magnitude a model column may hold.
MAX_MAGNITUDE: float = 1e15
#: Smallest robust scale a model column may have.
MIN_SCALE: float = 1e-15

#: 1 / Phi^{-1}(3/4): the MAD of a Normal times this is its standard deviation.
_MAD_TO_SD = 1.482602218505602
#: sqrt(pi / 2): the mean absolute deviation of a Normal times this is its standard deviation.
_MEAN_AD_TO_SD = 1.2533141373155003


def robust_scale(values: np.ndarray) -> float:
    r"""The robust standard deviation :math:`\hat\sigma` of the module docstring.

    Parameters
    ----------
    values : ndarray, shape ``(T,)``
        Finite values.

    Returns
    -------
    float
        1.4826 times the median absolute deviation from the median; where that is 0
        (more than half the values equal the median), 1.2533 times the mean absolute
        deviation without the largest ``ceil(T / 100)`` deviations (with them when
        that is 0: at most that many values differ from the median); 0 only for a
        constant series.
    """
    deviation = np.abs(values - np.median(values))
    mad = float(np.median(deviation))
    if mad > 0:
        return _MAD_TO_SD * mad
    trimmed = np.sort(deviation)[: len(deviation) - math.ceil(len(deviation) / 100)]
    mean_ad = float(np.mean(trimmed)) if trimmed.size else 0.0
    if mean_ad == 0:
        mean_ad = float(np.mean(deviation))
    return _MEAN_AD_TO_SD * mean_ad


def robust_z(values: np.ndarray) -> np.ndarray:
    r"""Robust z-scores :math:`|y_t - \operatorname{med}(y)| / \hat\sigma`.

    Parameters
    ----------
    values : ndarray, shape ``(T,)``
        Finite values, not all equal.

    Returns
    -------
    ndarray, shape ``(T,)``
        Non-negative scores (``inf`` everywhere off the median for a constant series).
    """
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(values - np.median(values)) / robust_scale(values)


def check_plausible_values(
    frame: pd.DataFrame,
    *,
    targets: Sequence[str],
    columns: Sequence[str],
    allow_outliers: bool = False,
    readers: Mapping[str, str] | None = None,
) -> None:
    """Raise :class:`DataError` for an implausible value (see the module docstring).

    Run after :func:`~bayes_moe.data.validate_frame` (the columns exist, are numeric
    and finite).

    Parameters
    ----------
    frame : pandas.DataFrame
        Date-indexed frame.
    targets : sequence of str
        Target columns: checked for outliers (unless ``allow_outliers``) and for scale.
    columns : sequence of str
        Every column the model reads (targets included): checked for scale.
    allow_outliers : bool, default False
        Accept target values beyond :data:`OUTLIER_THRESHOLD` (real jumps you want the
        model to see). The scale checks still run.
    readers : mapping of str to str, optional
        Who reads a column (``{"vix": "expert 'volatility'"}``), named in its error.

    Raises
    ------
    DataError
        Naming the column, and for a single value its date and the value, with the way
        to fix or accept it.
    """
    readers = readers or {}
    targets = list(targets)
    for column in dict.fromkeys(targets + list(columns)):
        raw = frame[column].to_numpy(dtype=np.float64)
        present = ~np.isnan(raw)  # the gaps of a column read with a mask are skipped
        values, index = raw[present], frame.index[present]
        suffix = f"; read by {readers[column]}" if column in readers else ""
        if column in targets and not allow_outliers:
            _check_outliers(index, column, values, suffix)
        _check_scale(index, column, values, suffix)


def _check_outliers(index: pd.Index, column: str, values: np.ndarray, suffix: str) -> None:
    """DataError naming the value of largest robust z-score if it exceeds the threshold."""
    z = robust_z(values)
    beyond = z > OUTLIER_THRESHOLD
    if not beyond.any():
        return
    worst = int(np.argmax(z))
    others = int(beyond.sum()) - 1
    also = f" ({others} more value(s) beyond it)" if others else ""
    raise DataError(
        f"column {column!r} has an implausible value {values[worst]:.6g} on "
        f"{format_date(index[worst])}: {z[worst]:.0f} robust standard deviations from its "
        f"median {np.median(values):.4g}, over the threshold {OUTLIER_THRESHOLD:g}{also}; "
        "fix the data, or pass allow_outliers=True (CLI: --allow-outliers) if it is real" + suffix
    )


def _check_scale(index: pd.Index, column: str, values: np.ndarray, suffix: str) -> None:
    """DataError if the column's magnitude or robust scale is beyond the float-safe bounds."""
    magnitude = np.abs(values)
    largest = int(np.argmax(magnitude))
    if magnitude[largest] > MAX_MAGNITUDE:
        raise DataError(
            f"column {column!r} holds {values[largest]:.3g} on {format_date(index[largest])}, "
            f"beyond the largest magnitude the model handles ({MAX_MAGNITUDE:.0e}); "
            f"rescale the column (e.g. divide it by {_power_of_ten(values):.0e}) or fix the "
            "value" + suffix
        )
    scale = robust_scale(values)
    if scale < MIN_SCALE:
        raise DataError(
            f"column {column!r} varies too little for the model: its robust scale is "
            f"{scale:.3g}, below {MIN_SCALE:.0e}; rescale the column (e.g. multiply it by "
            f"{1 / _power_of_ten(values):.0e})" + suffix
        )


def _power_of_ten(values: np.ndarray) -> float:
    """The power of ten nearest to the typical size of ``values`` (their robust scale).

    Falls back to the largest magnitude when the robust scale is 0 or not finite.
    """
    size = robust_scale(values)
    if not (math.isfinite(size) and size > 0):
        size = float(np.max(np.abs(values)))
    return 10.0 ** round(math.log10(size)) if size > 0 else 1.0
