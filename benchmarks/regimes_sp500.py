"""Are the default mixture's regimes market states a user can name? Measured on real data.

Fits the demo configuration (AR + VAR with NASDAQ + Kalman, 3 regimes, window 64,
``bayes-moe demo``'s SVI settings) to the embedded 1999-2018 S&P 500 returns and
writes ``benchmarks/results/regimes_sp500.json`` with the regime diagnostics
(:meth:`bayes_moe.inference.regimes.RegimePosterior.diagnostics`), the regime report
(``fit.regimes().summary()``), the filtered and smoothed probabilities of the most
turbulent regime in two crises a user would check (October-November 2008, August
2011), the regime on the last day, and the targets of the regimes issue checked.
Beside it, statsmodels' ``MarkovRegression`` with switching variance on the same
returns (K = 3 and K = 2) as the reference a quant would compare with.

    python benchmarks/regimes_sp500.py               # ~2-3 minutes on 2 cores
    python benchmarks/regimes_sp500.py --no-statsmodels --out /tmp/regimes.json
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from _options import add_mixture_options  # benchmarks/ is on sys.path

import bayes_moe as bm
from bayes_moe.io import write_json

CRISES = {
    "filtered_2008_10_01_to_2008_11_28": ("filtered", "2008-10-01", "2008-11-28"),
    "smoothed_2011_08": ("smoothed", "2011-08-01", "2011-08-31"),
}
TARGETS = {
    "volatility_ratio_min": 2.0,
    "mean_max_filtered_min": 0.85,
    "share_of_days_min": 0.05,
    "filtered_2008_10_01_to_2008_11_28_min": 0.9,
    "smoothed_2011_08_min": 0.8,
    "expected_duration_min": 10.0,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_mixture_options(parser)
    parser.add_argument("--no-statsmodels", action="store_true", help="skip the reference fits")
    parser.add_argument("--out", default="benchmarks/results/regimes_sp500.json")
    return parser.parse_args(argv)


def crisis_probabilities(regimes) -> dict:
    """Mean probability of the most turbulent regime over each crisis window."""
    out = {}
    for name, (kind, start, end) in CRISES.items():
        table = getattr(regimes, kind)
        out[name] = float(table.loc[start:end, regimes.n_regimes - 1].mean())
    return out


def check_targets(diag: dict, crises: dict) -> dict:
    """Each target of the regimes issue: value and whether it is met."""
    values = {
        "volatility_ratio_min": diag["volatility_ratio"],
        "mean_max_filtered_min": diag["mean_max_filtered"],
        "share_of_days_min": min(diag["share_of_days"]),
        "expected_duration_min": min(diag["expected_duration"]),
        **{f"{k}_min": v for k, v in crises.items()},
    }
    return {k: {"value": values[k], "target": t, "met": values[k] >= t} for k, t in TARGETS.items()}


def statsmodels_reference(returns, k_regimes: int) -> dict:
    """MarkovRegression with switching mean and variance: the same diagnostics."""
    from statsmodels.tsa.regime_switching.markov_regression import MarkovRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MarkovRegression(
            returns, k_regimes=k_regimes, trend="c", switching_variance=True
        ).fit(search_reps=20, disp=False)
    sd = np.sqrt([res.params[f"sigma2[{k}]"] for k in range(k_regimes)])
    order = np.argsort(sd)
    filtered = np.asarray(res.filtered_marginal_probabilities)[:, order]
    smoothed = np.asarray(res.smoothed_marginal_probabilities)[:, order]
    best = filtered.argmax(1)
    dates = returns.index
    window = (dates >= "2008-10-01") & (dates <= "2008-11-28")
    august = (dates >= "2011-08-01") & (dates <= "2011-08-31")
    P = np.asarray(res.regime_transition)[..., 0]  # [to, from]
    stay = np.diag(P)[order]
    return {
        "volatility": sd[order].tolist(),
        "volatility_ratio": float(sd[order][-1] / sd[order][0]),
        "mean_max_filtered": float(filtered.max(1).mean()),
        "share_of_days": (np.bincount(best, minlength=k_regimes) / len(best)).tolist(),
        "switches_per_year": float(np.count_nonzero(np.diff(best)) * 252 / len(best)),
        "expected_duration": (1.0 / (1.0 - stay)).tolist(),
        "filtered_2008_10_01_to_2008_11_28": float(filtered[window, -1].mean()),
        "smoothed_2011_08": float(smoothed[august, -1].mean()),
        "log_likelihood": float(res.llf),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    frame = bm.data.load_sp500()
    experts = [e for e in args.experts.split(",") if e]
    model = bm.BayesianMoE(experts=experts, n_regimes=args.regimes, window=args.window)
    start = time.perf_counter()
    fit = model.fit(
        frame, num_steps=args.num_steps, num_draws=args.num_draws, seed=args.seed, progress=True
    )
    fit_s = time.perf_counter() - start
    regimes = fit.regimes()
    diag = regimes.diagnostics()
    crises = crisis_probabilities(regimes)
    summary = regimes.summary()
    doc = {
        "config": vars(args) | {"n_days": fit.data.n_observed},
        "fit": fit.diagnostics.to_dict() | {"wall_s": fit_s},
        "diagnostics": diag,
        "crises": crises,
        "current": {k: str(v) if k == "date" else v for k, v in regimes.current().items()},
        "summary": summary.reset_index().to_dict(orient="records"),
        "targets": check_targets(diag, crises),
    }
    if not args.no_statsmodels:
        returns = frame["ret"].loc[regimes.dates[0] :]
        doc["statsmodels"] = {f"K={k}": statsmodels_reference(returns, k) for k in (3, 2)}
    write_json(doc, Path(args.out))
    print(summary.round(3).T.to_string())
    for name, row in doc["targets"].items():
        print(f"{name:40s} {row['value']:8.3f}  target {row['target']:6.2f}  met={row['met']}")
    print(f"written to {args.out} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
