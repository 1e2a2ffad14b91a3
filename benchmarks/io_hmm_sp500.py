"""What drives the regime switches? The input-output gate's coefficients on the S&P 500.

The Markov gate's transitions respond to inputs x_t known at the close of t:
Pi_t[i, j] proportional to Pi[i, j] exp(beta_j' x_t), beta_0 = 0 (regime 0 the calmest,
``bayes_moe.models.gate``). This script fits the default mixture (AR + VAR with
NASDAQ + Kalman, 3 regimes, window 64, the demo's SVI settings) to the embedded
1999-2018 S&P 500 returns three times, with the switches driven by

* ``realised volatility``: the default inputs, log realised variance over 5 and 22
  days and the log EWMA variance;
* ``+ credit spread``: the same plus Moody's Baa - Aaa spread as known after its
  publication lag (``bm.data.add_macro_features``);
* ``+ credit spread + VIX``: plus the VIX close, which the embedded data has from
  2014 only (before, the gate reads its training mean: no tilt from it).

For each it reports the posterior of every coefficient beta_{k,v} (mean, sd, 94%
interval, posterior probability of a positive sign) per training standard deviation
of the input (the units the gate reads; the sd in data units is listed), the
in-sample log predictive density per day and PSIS-LOO, and the regime summary. The
plot shows the coefficients as intervals and, for the credit-spread fit, the
posterior mean probability of leaving the calm regime for the turbulent one over
time beside the spread. Writes ``benchmarks/results/io_hmm_sp500.json``, ``.md`` and
``.png``.

    python benchmarks/io_hmm_sp500.py            # about 5 minutes on 2 cores
    python benchmarks/io_hmm_sp500.py --num-steps 200 --num-draws 50 --out /tmp/io.json
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from _options import RESULTS_DIR, add_mixture_options  # benchmarks/ is on sys.path
from scipy.special import logsumexp
from tqdm.auto import tqdm

import bayes_moe as bm
from bayes_moe.data.windows import TRANSITION_FEATURES
from bayes_moe.inference.arviz import loo
from bayes_moe.inference.posterior import conditioned_components
from bayes_moe.io import atomic_path, write_json

CONFIGS = {
    "realised volatility": TRANSITION_FEATURES,
    "+ credit spread": TRANSITION_FEATURES + ("credit_spread",),
    "+ credit spread + VIX": TRANSITION_FEATURES + ("credit_spread", "vix"),
}
INTERVAL = (3.0, 97.0)  # the 94% interval


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_mixture_options(parser)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "io_hmm_sp500.json")
    parser.add_argument("--no-plot", action="store_true", help="skip the figure")
    return parser.parse_args(argv)


def describe(values: np.ndarray) -> dict:
    """Posterior mean, sd, 94% interval and probability of a positive value."""
    lo, hi = np.percentile(values, INTERVAL)
    return {
        "mean": float(values.mean()),
        "sd": float(values.std()),
        "q3": float(lo),
        "q97": float(hi),
        "p_positive": float((values > 0).mean()),
    }


def coefficient_rows(fit) -> list[dict]:
    """One row per (regime step, input): the posterior of beta_{k,v}, k = 1..K-1."""
    names = fit.model.gate.transition_features
    coef = fit.draws["gate/transition_coef"].numpy()  # (S, K - 1, V_x)
    pre = fit.data.preprocessor
    rows = []
    for k in range(coef.shape[1]):
        for v, name in enumerate(names):
            sd = pre.scale[pre.columns.index(name)] if name in pre.columns else None
            rows.append(
                {"regime": k + 1, "input": name, "input_sd_data_units": sd}
                | describe(coef[:, k, v])
            )
    return rows


def in_sample_scores(fit) -> tuple[dict, np.ndarray]:
    """Log predictive density per day (mean over days), PSIS-LOO; and the per-day lppd."""
    log_lik = fit.pointwise_log_likelihood().to_numpy()  # day x draw
    lppd = logsumexp(log_lik, axis=1) - np.log(log_lik.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto-k warnings are reported in the numbers
        psis = loo(fit.to_inference_data(keep_draws=20))
    return {
        "log_predictive_density_per_day": float(lppd.mean()),
        "elpd_loo": psis.elpd_loo,
        "elpd_loo_se": psis.se,
        "pareto_k_above_0_7": int(np.sum(psis.pareto_k > 0.7)),
    }, lppd


def switch_probability(fit) -> np.ndarray:
    """Posterior mean of Pi_t[0, K-1] at every observed origin: ``(N_obs,)``.

    The probability of leaving the calm regime for the turbulent one on day t.
    """
    inputs = fit.data.inputs.at(fit.data.inputs.origins[: fit.data.n_observed])
    gate = conditioned_components(fit.program, fit.draws, inputs).gate
    K = fit.model.n_regimes
    return gate.log_trans_t[..., 0, K - 1].exp().mean(0).numpy()


def fit_config(frame, features, args) -> dict:
    gate = bm.MarkovGate(args.regimes, transition_features=features)
    experts = [e for e in args.experts.split(",") if e]
    model = bm.BayesianMoE(experts=experts, window=args.window, gate=gate)
    start = time.perf_counter()
    fit = model.fit(
        frame,
        num_steps=args.num_steps,
        num_draws=args.num_draws,
        seed=args.seed,
        progress=False,
    )
    wall = time.perf_counter() - start
    scores, lppd = in_sample_scores(fit)
    summary = fit.regimes().summary()
    columns = ["volatility", "volatility_q3", "volatility_q97", "share_of_days"]
    columns += ["expected_duration"]
    return {
        "fit": fit,
        "lppd": lppd,
        "record": {
            "transition_features": list(fit.model.gate.transition_features),
            "columns_read": list(fit.data.inputs.columns),
            "wall_s": wall,
            "svi_steps": fit.diagnostics.num_steps,
            "coefficients": coefficient_rows(fit),
            "in_sample": scores,
            "regimes": summary[[c for c in columns if c in summary]]
            .reset_index()
            .to_dict(orient="records"),
        },
    }


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean per-day difference of two lppd series and its naive standard error."""
    d = a - b
    return {"mean": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(len(d)))}


def markdown(doc: dict) -> str:
    lines = [
        "# Input-output regime switches on the S&P 500: posterior of the coefficients",
        "",
        f"Data: {doc['data']}. Model: {doc['model']}.",
        "",
        "beta_{k,v}: the log-odds shift of switching into regime k (against the calm "
        "regime 0) per training standard deviation of input v; posterior mean [94% "
        "interval] and P(beta > 0).",
        "",
    ]
    for name, run in doc["fits"].items():
        scores = run["in_sample"]
        lines += [
            f"## {name}",
            "",
            f"In sample: log predictive density {scores['log_predictive_density_per_day']:.4f}"
            f" nats/day, elpd_loo {scores['elpd_loo']:.1f} (se {scores['elpd_loo_se']:.1f}); "
            f"SVI {run['svi_steps']} steps, {run['wall_s']:.0f} s.",
            "",
            "| into regime | input | sd of input (data units) | mean | 94% interval "
            "| P(beta > 0) |",
            "|---|---|---|---:|---|---:|",
        ]
        for r in run["coefficients"]:
            sd = "" if r["input_sd_data_units"] is None else f"{r['input_sd_data_units']:.3f}"
            lines.append(
                f"| {r['regime']} | {r['input']} | {sd} | {r['mean']:.3f} | "
                f"[{r['q3']:.3f}, {r['q97']:.3f}] | {r['p_positive']:.3f} |"
            )
        lines.append("")
    lines += [
        "## In-sample log predictive density against the realised-volatility gate",
        "",
        "| inputs | mean difference per day | se (naive, days independent) |",
        "|---|---:|---:|",
    ]
    for name, d in doc["lppd_difference"].items():
        lines.append(f"| {name} | {d['mean']:+.4f} | {d['se']:.4f} |")
    return "\n".join(lines) + "\n"


def plot(fits: dict, frame, path: Path) -> None:
    """Coefficient intervals per fit, and the calm-to-turbulent switch probability."""
    fig, (ax_coef, ax_time) = plt.subplots(
        2, 1, figsize=(10, 9), gridspec_kw={"height_ratios": [1.2, 1]}
    )
    labels, ticks, y = [], [], 0.0
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, run) in enumerate(fits.items()):
        for r in run["record"]["coefficients"]:
            ax_coef.plot([r["q3"], r["q97"]], [y, y], color=colours[i], lw=2)
            ax_coef.plot(r["mean"], y, "o", color=colours[i])
            labels.append(f"{name}: into {r['regime']}, {r['input']}")
            ticks.append(y)
            y += 1
        y += 0.5
    ax_coef.set_yticks(ticks, labels, fontsize=7)
    ax_coef.axvline(0.0, color="grey", lw=0.8)
    ax_coef.invert_yaxis()
    ax_coef.set_xlabel("beta per training sd of the input (94% interval, posterior mean)")
    ax_coef.set_title("What drives the switches between regimes (S&P 500, 1999-2018)")

    run = fits["+ credit spread"]
    fit = run["fit"]
    dates = fit.data.origin_dates[: fit.data.n_observed]
    ax_time.plot(dates, switch_probability(fit), lw=0.7, color=colours[1])
    ax_time.set_ylabel(f"P(calm -> regime {fit.model.n_regimes - 1}) per day")
    ax_time.set_yscale("log")
    twin = ax_time.twinx()
    twin.plot(dates, frame["credit_spread"].reindex(dates), lw=0.8, color="black", alpha=0.6)
    twin.set_ylabel("Baa - Aaa spread (pp, black)")
    ax_time.set_title("Posterior mean switch probability, + credit spread fit")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    frame = bm.data.add_vix(bm.data.add_macro_features(bm.data.load_sp500()))
    fits = {}
    for name, features in tqdm(CONFIGS.items(), desc="fits", total=len(CONFIGS)):
        fits[name] = fit_config(frame, features, args)
    base = fits["realised volatility"]["lppd"]
    doc = {
        "data": f"bm.data.load_sp500() 'ret' with add_macro_features and add_vix, "
        f"{frame.index[0].date()}..{frame.index[-1].date()}",
        "model": f"experts {args.experts}, {args.regimes} regimes, window {args.window}, "
        f"{args.num_steps} SVI steps at most, {args.num_draws} draws, seed {args.seed}",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "fits": {name: run["record"] for name, run in fits.items()},
        "lppd_difference": {
            name: paired_difference(run["lppd"], base)
            for name, run in fits.items()
            if name != "realised volatility"
        },
    }
    write_json(doc, args.out)
    text = markdown(doc)
    with atomic_path(args.out.with_suffix(".md")) as tmp:
        tmp.write_text(text)
    if not args.no_plot:
        plot(fits, frame, args.out.with_suffix(".png"))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
