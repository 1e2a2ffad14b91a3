"""Several horizons fitted one after the other and at once on a Dask LocalCluster.

``model.fit(frame, horizon=[1, 5, 20])`` on the S&P 500 up to 2014-12-31 (the default
mixture unless ``--experts``), first serially and then with ``client=`` a
``LocalCluster`` of ``--workers`` single-threaded worker processes, in one run on the
same machine. Reports both wall times, their ratio (with and without starting the
cluster) and the largest difference between the two runs' posterior draws (zero: each
fit seeds itself and runs one torch thread).

Writes ``results/horizons_parallel.json``.

    python benchmarks/horizons_parallel.py            # 1,500 steps per horizon, a few minutes
    python benchmarks/horizons_parallel.py --quick    # 100 steps
"""

from __future__ import annotations

import argparse
import time

import torch
from _options import add_mixture_options, add_run_options, mixture_protocol, output_path

import bayes_moe as bm
from bayes_moe.evaluation.fanout import local_cluster
from bayes_moe.io import write_json

TRAIN_END = "2014-12-31"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_mixture_options(parser)
    add_run_options(parser, "horizons_parallel")
    parser.add_argument("--horizons", default="1,5,20", help="comma list of horizons")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    args = parser.parse_args(argv)
    args.horizons = [int(h) for h in args.horizons.split(",")]
    if args.quick:
        args.num_steps, args.num_draws = 100, 50
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    frame = bm.data.load_sp500().loc[:TRAIN_END]
    model = bm.BayesianMoE(
        experts=args.experts.split(","), n_regimes=args.regimes, window=args.window
    )
    options = {
        "num_steps": args.num_steps,
        "num_draws": args.num_draws,
        "seed": args.seed,
        "progress": not args.no_progress,
    }
    started = time.perf_counter()
    serial = model.fit(frame, horizon=args.horizons, **options)
    serial_s = time.perf_counter() - started

    started = time.perf_counter()
    with local_cluster(args.workers) as client:
        cluster_up = time.perf_counter()
        parallel = model.fit(frame, horizon=args.horizons, client=client, **options)
        done = time.perf_counter()
    start_s, parallel_s = cluster_up - started, done - cluster_up

    largest = max(
        float((parallel[h].draws[site] - value).abs().max())
        for h in args.horizons
        for site, value in serial[h].draws.items()
    )
    doc = {
        "protocol": {
            "name": "horizons fitted serially and on a Dask LocalCluster",
            "train": f"S&P 500 .. {TRAIN_END}",
            "horizons": args.horizons,
            "workers": args.workers,
            "threads_per_fit": 1,
            **mixture_protocol(args),
        },
        "serial_s": serial_s,
        "parallel_s": parallel_s,
        "cluster_start_s": start_s,
        "ratio": parallel_s / serial_s,
        "ratio_with_cluster_start": (parallel_s + start_s) / serial_s,
        "largest_draw_difference": largest,
        "torch_version": torch.__version__,
    }
    path = output_path(args, "horizons_parallel")
    write_json(doc, path)
    print(
        f"horizons {args.horizons}: serial {serial_s:.1f} s, {args.workers} workers "
        f"{parallel_s:.1f} s (+{start_s:.1f} s to start the cluster): ratio {doc['ratio']:.2f} "
        f"({doc['ratio_with_cluster_start']:.2f} with the start); largest draw difference "
        f"{largest:.1e}\nwritten to {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
