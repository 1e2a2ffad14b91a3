r"""The practitioners' baseline forecasters: constant, EWMA, GARCH family, Markov switching, HAR.

Every baseline follows the forecaster protocol of :mod:`bayes_moe.evaluation.backtest`:

``forecaster(train) -> predict``
    fits the parameters on ``train`` (a frame, rows up to and including the last
    training day, with the ``ret`` column in percent log returns) and returns a fitted
    object;
``predict(frame, origins, horizon=1) -> LocationScaleMixture``
    for every origin ``t`` in ``origins`` (each a row of ``frame``) the predictive
    distribution of :math:`R_t^{(h)} = \sum_{j=1}^{h} r_{t+j}`, computed from the rows
    of ``frame`` up to and including ``t`` only. The parameters stay as fitted; the
    state (EWMA or GARCH variance, filtered regime probabilities, HAR regressors) is
    filtered forward through ``frame``. The ``dates`` of the result are the realized
    days (row ``t + h`` of ``frame``), or ``t`` plus ``h`` business days for origins
    within ``h`` rows of the end of ``frame``.

The fitted objects hold their parameters as attributes, so a fit can be inspected;
the forecaster objects themselves are never mutated.

=====================  ==============================================  =====================
key of                 model                                           ``h > 1``
:data:`BASELINES`
=====================  ==============================================  =====================
``constant_normal``    iid Normal, sample mean and sd                  exact
``ewma``               RiskMetrics, :math:`\lambda = 0.94`, Normal,    Normal, variance
                       zero mean                                       :math:`h\sigma^2_{t+1}`
``garch_t``            GARCH(1,1), constant mean, Student-t (arch)     t, summed variances
``gjr_garch_t``        GJR-GARCH(1,1,1)-t (arch)                       t, summed variances
``egarch_t``           EGARCH(1,1,1)-t (arch)                          t, simulated variances
``ms2``, ``ms3``       Markov-switching mean and variance,             exact Normal mixture
                       2 or 3 regimes (statsmodels)
``har``                log-HAR on the Parkinson variance, Student-t    direct regression
``har_vix``            log-HAR plus log VIX where it exists            direct regression
=====================  ==============================================  =====================

Reproduced anchors (protocol P1: S&P 500 from :func:`bayes_moe.data.load_sp500`, which
starts on 1999-02-04, with :func:`bayes_moe.data.add_vix`; test days
2015-01-02..2018-12-31, refits at test days 0, 250, 500 and 750 on an expanding window;
mean log score in nats per day and mean CRPS; ``tests/evaluation/test_baselines.py``
checks them to 0.005):

===============  =====================  =====================
baseline         log score (anchor)     CRPS (anchor)
===============  =====================  =====================
``garch_t``      -1.0755 (-1.0757)      0.4317 (0.4317)
``egarch_t``     -1.0625 (-1.0628)      0.4277 (0.4277)
``ms3``          -1.0981 (-1.0982)      0.4363 (0.4363)
``har``          -1.0545 (-1.0545)      0.4287 (0.4287)
``har_vix``      -1.0284 (-1.0283)      0.4250 (0.4250)
===============  =====================  =====================

References
----------
J. P. Morgan/Reuters, *RiskMetrics - Technical Document*, 4th ed., 1996.

T. Bollerslev, "Generalized autoregressive conditional heteroskedasticity", Journal of
Econometrics 31(3), 307-327, 1986.

L. R. Glosten, R. Jagannathan and D. E. Runkle, "On the relation between the expected
value and the volatility of the nominal excess return on stocks", Journal of Finance
48(5), 1779-1801, 1993.

D. B. Nelson, "Conditional heteroskedasticity in asset returns: a new approach",
Econometrica 59(2), 347-370, 1991.

J. D. Hamilton, "A new approach to the economic analysis of nonstationary time series
and the business cycle", Econometrica 57(2), 357-384, 1989.

F. Corsi, "A simple approximate long-memory model of realized volatility", Journal of
Financial Econometrics 7(2), 174-196, 2009.

M. Parkinson, "The extreme value method for estimating the variance of the rate of
return", Journal of Business 53(1), 61-65, 1980.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pandas as pd

from bayes_moe.data.errors import DataError
from bayes_moe.evaluation.backtest import realized_dates
from bayes_moe.evaluation.baselines.garch import ArchT, ArchTFit
from bayes_moe.evaluation.baselines.har import HARParams, LogHAR, LogHARFit, har_regressors
from bayes_moe.evaluation.baselines.markov import (
    MarkovSwitching,
    MarkovSwitchingFit,
    regime_sum_mixture,
)
from bayes_moe.evaluation.baselines.simple import (
    EWMA,
    ConstantNormal,
    ConstantNormalFit,
    EWMAFit,
    ewma_variance,
)

__all__ = [
    "BASELINES",
    "EWMA",
    "ArchT",
    "ArchTFit",
    "ConstantNormal",
    "ConstantNormalFit",
    "EWMAFit",
    "HARParams",
    "LogHAR",
    "LogHARFit",
    "MarkovSwitching",
    "MarkovSwitchingFit",
    "P1_ANCHORS",
    "applicable_baselines",
    "check_baselines",
    "ewma_variance",
    "har_regressors",
    "missing_inputs",
    "realized_dates",
    "regime_sum_mixture",
]

#: Protocol P1 anchors (mean log score, mean CRPS) measured when the calibration issue
#: was filed; the baselines reproduce them within 0.0003 (see the module docstring).
P1_ANCHORS: dict[str, tuple[float, float]] = {
    "garch_t": (-1.0757, 0.4317),
    "egarch_t": (-1.0628, 0.4277),
    "ms3": (-1.0982, 0.4363),
    "har": (-1.0545, 0.4287),
    "har_vix": (-1.0283, 0.4250),
}

#: The registered baselines: name -> zero-argument factory of a forecaster.
BASELINES: dict[str, Callable[[], Callable]] = {
    "constant_normal": ConstantNormal,
    "ewma": EWMA,
    "garch_t": partial(ArchT, vol="GARCH", o=0, name="garch_t"),
    "gjr_garch_t": partial(ArchT, vol="GARCH", o=1, name="gjr_garch_t"),
    "egarch_t": partial(ArchT, vol="EGARCH", o=1, name="egarch_t"),
    "ms2": partial(MarkovSwitching, k_regimes=2, name="ms2"),
    "ms3": partial(MarkovSwitching, k_regimes=3, name="ms3"),
    "har": partial(LogHAR, vix=None, name="har"),
    "har_vix": partial(LogHAR, vix="vix", name="har_vix"),
}


def missing_inputs(name: str, frame: pd.DataFrame) -> list[str]:
    """The inputs baseline ``name`` needs and ``frame`` lacks: ``[]`` when it has them all.

    Every baseline reads ``ret``; the HAR baselines also the Parkinson range variance
    (``var_parkinson``, or ``high`` and ``low``); ``har_vix`` also a VIX column with
    some values (without one it would be the plain ``har``).
    """
    forecaster = BASELINES[name]()
    columns = set(frame.columns)
    missing = [] if "ret" in columns else ["column 'ret' (percent log returns)"]
    if isinstance(forecaster, LogHAR):
        if "var_parkinson" not in columns and not {"high", "low"} <= columns:
            missing.append(
                "columns 'high' and 'low' (or 'var_parkinson') for the Parkinson range variance"
            )
        vix = forecaster.vix
        if vix is not None and not (vix in columns and frame[vix].notna().any()):
            missing.append(f"a column {vix!r} with values")
    return missing


def check_baselines(names: list[str], frame: pd.DataFrame) -> None:
    """Refuse unknown baselines and baselines whose inputs ``frame`` lacks, before any fit.

    Raises
    ------
    ValueError
        Naming the unknown baselines and the registered ones.
    DataError
        Naming each baseline, what it is missing, and the columns ``frame`` has.
    """
    unknown = [name for name in names if name not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; choose from {sorted(BASELINES)}")
    problems = [
        f"baseline {name!r} needs {' and '.join(missing)}"
        for name in names
        if (missing := missing_inputs(name, frame))
    ]
    if problems:
        raise DataError(
            "; ".join(problems) + f"; the data has columns {[str(c) for c in frame.columns]}"
        )


def applicable_baselines(frame: pd.DataFrame) -> list[str]:
    """Names of the baselines whose inputs ``frame`` has (see :func:`missing_inputs`)."""
    return [name for name in BASELINES if not missing_inputs(name, frame)]
