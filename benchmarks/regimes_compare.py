"""How many regimes? Leave-future-out evidence on the 2011-2014 validation years.

Compares the default mixture (AR + VAR with NASDAQ + Kalman, window 64) with
K = 1, 2, 3 and 4 regimes by their one-step log predictive densities on the P1
validation period (training up to 2010, test 2011-01-03..2014-12-31), with
:func:`bayes_moe.compare`: ``--method exact`` refits every ``--refit-every`` days
(the P1 protocol), ``--method psis`` refits only when the Pareto k of the importance
ratios exceeds 0.7 (Bürkner, Gabry and Vehtari 2020). Writes
``benchmarks/results/regimes_compare_<method>.json`` (the table, in the shape of
``az.compare``) and a PNG beside it. The test period 2015-2018 is not touched.

    python benchmarks/regimes_compare.py                  # exact, refit every 250: ~20 min
    python benchmarks/regimes_compare.py --method psis --regimes 2,3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _options import add_mixture_options  # benchmarks/ is on sys.path

import bayes_moe as bm
from bayes_moe.io import atomic_path, write_json
from bayes_moe.plotting import plot_lfo_compare

VALIDATION = ("2011-01-03", "2014-12-31")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=["exact", "psis"], default="exact")
    add_mixture_options(parser, regimes="1,2,3,4")
    parser.add_argument("--refit-every", type=int, default=250)
    parser.add_argument("--out", default=None, help="default benchmarks/results/")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    frame = bm.data.load_sp500().loc[: VALIDATION[1]]
    experts = [e for e in args.experts.split(",") if e]
    models = {
        f"K={k}": bm.BayesianMoE(experts=experts, n_regimes=int(k), window=args.window)
        for k in args.regimes.split(",")
    }
    table = bm.compare(
        frame,
        models,
        test_start=VALIDATION[0],
        test_end=VALIDATION[1],
        method=args.method,
        refit_every=args.refit_every,
        num_steps=args.num_steps,
        num_draws=args.num_draws,
        seed=args.seed,
    )
    out = Path(args.out or "benchmarks/results")
    out.mkdir(parents=True, exist_ok=True)
    stem = f"regimes_compare_{args.method}"
    doc = {
        "protocol": {
            "data": "S&P 500 (arch.data), ret = 100*diff(log(Adj Close))",
            "test": list(VALIDATION),
            "method": args.method,
            "refit_every": args.refit_every if args.method == "exact" else None,
            "experts": experts,
            "num_steps": args.num_steps,
            "num_draws": args.num_draws,
            "seed": args.seed,
        },
        "table": table.reset_index().to_dict(orient="records"),
        "elapsed_s": time.perf_counter() - start,
    }
    write_json(doc, out / f"{stem}.json")
    with atomic_path(out / f"{stem}.png") as tmp:
        plot_lfo_compare(table, tmp)
    print(table.round(3).to_string())
    print(f"written to {out}/{stem}.json ({doc['elapsed_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
