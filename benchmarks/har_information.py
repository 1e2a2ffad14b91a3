"""Where log-HAR + VIX's lead on P1 comes from: a maximum a posteriori sketch.

Each model here is the linear core of the ``volatility`` expert: a Student-t
predictive for tomorrow's return whose log scale is linear in today's log variances,

.. math::

    y_{t+1} = \\mu + s_t \\varepsilon_{t+1}, \\quad \\varepsilon \\sim t_\\nu, \\qquad
    \\log s_t = b^\\top x_t,

fitted by maximum likelihood (L-BFGS) at each P1 refit (expanding window, refit every
250 days) and scored on the days up to the next refit. Three questions:

1. *VIX handling.* ``fallback``: one coefficient vector for every day, the 20-day
   realised variance in the VIX slot where it is missing, and a missing-value
   indicator (the expert before the coefficient shift). ``vix_days``: a second model
   fitted on the VIX days alone (as log-HAR + VIX is). ``shift``: the VIX-day model's
   coefficients shrunk to the all-day fit, :math:`b_{VIX} \\sim \\mathcal N(b, 0.3^2)`
   (the expert's ``gap_coef``).
2. *A measurement equation* (Realized GARCH, Hansen, Huang and Shek 2012): the next
   day's log Parkinson variance as a second observation,
   :math:`\\log v_{t+1} = \\xi + 2 \\varphi \\log s_t + u_{t+1}`,
   :math:`u \\sim \\mathcal N(0, \\sigma_u^2)`, added to the likelihood of the returns.
   The expert's likelihood sees the return only; log-HAR regresses :math:`\\log v`.
3. The same on the validation years (no VIX there), where a configuration may be
   chosen.

The test-year rows are diagnostics, not choices: nothing in the package was set from
them. Writes ``results/har_information.json``; about 10 seconds.

    python benchmarks/har_information.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import minimize

import bayes_moe as bm
from bayes_moe.evaluation.baselines.har import har_regressors

TEST = ("2015-01-02", "2018-12-31")
VALIDATION = ("2011-01-03", "2014-12-31")
REFIT_EVERY = 250
FLOOR = 1e-4
SHIFT_SD = 0.3
SETS = {
    "har_parkinson": ["pk", "pk_5", "pk_22"],
    "expert_inputs": ["rv_5", "rv_20", "rv_60", "pk", "gk", "atr"],
}


def log_variances(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Causal log variances at each day's close (%^2), floored at ``FLOOR``.

    The Parkinson columns are log-HAR's own regressors (:func:`har_regressors`).
    """
    r2 = frame["ret"] ** 2
    out = {f"rv_{w}": r2.rolling(w, min_periods=1).mean() for w in (5, 20, 60)}
    out |= {"gk": frame["var_garman_klass"], "atr": frame["atr_14"] ** 2}
    logs = {k: np.log(np.maximum(v.to_numpy(), FLOOR)) for k, v in out.items()}
    har = har_regressors(frame, variance_floor=FLOOR)  # (1, log v, log v_5, log v_22)
    return logs | {"pk": har[:, 1], "pk_5": har[:, 2], "pk_22": har[:, 3]}


def t_log_density(y, loc, log_scale, df):
    """Student-t log density with location, log scale and degrees of freedom."""
    return stats.t.logpdf(y, df, loc, np.exp(log_scale))


def fit(x, y, measure=None, prior=None):
    """MAP of ``(mu, log(nu - 2), xi, log sigma_u, phi, b)``; ``measure``: next log v."""
    p = x.shape[1]

    def loss(theta):
        mu, df, b = theta[0], 2 + np.exp(theta[1]), theta[5:]
        log_scale = x @ b
        value = t_log_density(y, mu, log_scale, df).sum()
        if measure is not None:
            xi, log_su, phi = theta[2], theta[3], theta[4]
            e = (measure - xi - 2 * phi * log_scale) / np.exp(log_su)
            value += np.sum(-0.5 * e * e - log_su)
        if prior is not None:
            value -= 0.5 * np.sum(((b - prior) / SHIFT_SD) ** 2)
        return -value

    start = np.r_[0.05, np.log(5.0), 0.0, 0.0, 1.0, np.zeros(p)]
    if prior is not None:
        start[5:] = prior
    return minimize(loss, start, method="L-BFGS-B").x


def score(frame, logs, columns, period, *, vix, measurement):
    """Mean log score over ``period`` with P1's refits."""
    ret = frame["ret"].to_numpy()
    lpk = np.log(np.maximum(frame["var_parkinson"].to_numpy(), FLOOR))
    raw_vix = frame["vix"].to_numpy()
    has = np.isfinite(raw_vix)
    log_vix = np.log(np.where(has, raw_vix, 1.0) ** 2 / 252)
    dates = frame.index
    days = np.flatnonzero((dates >= period[0]) & (dates <= period[1]))

    def design(rows, with_vix=False):
        cols = [np.ones(len(rows))] + [logs[c][rows] for c in columns]
        if with_vix == "fallback":
            cols += [np.where(has, log_vix, logs["rv_20"])[rows], (~has[rows]).astype(float)]
        elif with_vix:
            cols.append(log_vix[rows])
        return np.column_stack(cols)

    scores = []
    for k in range(0, len(days), REFIT_EVERY):
        block = days[k : k + REFIT_EVERY]
        train, origins = np.arange(60, block[0] - 1), block - 1
        target = ret[train + 1]
        measure = lpk[train + 1] if measurement else None
        mode = vix if has[train].sum() >= 50 else "none"
        if mode == "fallback":
            theta = fit(design(train, "fallback"), target, measure)
            log_scale = design(origins, "fallback") @ theta[5:]
        else:
            theta = fit(design(train), target, measure)
            log_scale = design(origins) @ theta[5:]
            if mode in ("vix_days", "shift"):
                on = train[has[train]]
                prior = np.r_[theta[5:], 0.0] if mode == "shift" else None
                theta = fit(
                    design(on, True), ret[on + 1], lpk[on + 1] if measurement else None, prior
                )
                log_scale = np.where(has[origins], design(origins, True) @ theta[5:], log_scale)
        scores.append(t_log_density(ret[block], theta[0], log_scale, 2 + np.exp(theta[1])))
    return float(np.concatenate(scores).mean())


def main() -> int:
    frame = bm.data.add_vix(bm.data.load_sp500())
    logs = log_variances(frame)
    rows = []
    for name, columns in SETS.items():
        for period_name, period in (("validation", VALIDATION), ("test", TEST)):
            modes = (
                ("none",)
                if period_name == "validation"
                else ("none", "fallback", "vix_days", "shift")
            )
            for vix in modes:
                for measurement in (False, True):
                    value = score(frame, logs, columns, period, vix=vix, measurement=measurement)
                    rows.append(
                        {
                            "inputs": name,
                            "period": period_name,
                            "vix": vix,
                            "measurement_equation": measurement,
                            "log_score": round(value, 4),
                        }
                    )
                    print(rows[-1], flush=True)
    out = Path(__file__).parent / "results" / "har_information.json"
    doc = {
        "what": __doc__.split("\n\n")[0],
        "anchors_test": {"har": -1.0545, "har_vix": -1.0285},
        "anchors_validation": {"har": -1.2097, "har_vix": -1.2080},
        "rows": rows,
    }
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
