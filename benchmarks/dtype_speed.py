"""Time per SVI step of a fit in float64 and float32 (and on a GPU where there is one).

``fit(..., dtype=torch.float32)`` runs the optimisation in single precision
(``device="cuda"`` on a GPU). This script measures what that buys, on the real S&P 500
returns of the demo (1999-2018, from ``arch.data``), for two mixtures:

``default``
    AR + VAR (with NASDAQ) + Kalman, 3 regimes, window 64: the statistical experts.
``neural_joint``
    AR + TCN + Nystromformer, 2 regimes, window 64, every trunk trained at every step
    (``strategy="joint"``): the networks dominate a step.

Each (mixture, device, dtype) fit runs ``--num-steps`` steps with one torch thread and
no early stopping; the time per step is the SVI loop's wall time over its steps
(``diagnostics.elapsed_s``). The runs of one mixture alternate between the dtypes
``--repeats`` times and the median is kept, so that both see the same machine load.
Writes ``results/dtype_speed.json`` and prints a markdown table.

    python benchmarks/dtype_speed.py                 # CPU (and CUDA when available)
    python benchmarks/dtype_speed.py --quick         # smoke run: a few steps
"""

from __future__ import annotations

import argparse
import platform
import statistics

import torch
from _options import add_run_options, output_path

import bayes_moe as bm
from bayes_moe.io import write_json

MIXTURES = {
    "default": dict(experts=["ar", "var", "kalman"], n_regimes=3, window=64),
    "neural_joint": dict(experts=["ar", "tcn", "nystromformer"], n_regimes=2, window=64),
}
STRATEGY = {"default": "two_stage", "neural_joint": "joint"}
DTYPES = ("float64", "float32")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-steps", type=int, default=60, help="SVI steps timed per fit")
    parser.add_argument("--repeats", type=int, default=3, help="fits per (mixture, dtype)")
    parser.add_argument(
        "--devices", default=None, help="comma-separated (default: cpu, and cuda if present)"
    )
    add_run_options(parser, "dtype_speed")
    return parser.parse_args(argv)


def seconds_per_step(frame, mixture: str, device: str, dtype: str, num_steps: int) -> float:
    """One fit's SVI loop time over its steps."""
    model = bm.BayesianMoE(**MIXTURES[mixture])
    fit = model.fit(
        frame,
        num_steps=num_steps,
        num_draws=2,
        convergence_tol=None,
        strategy=STRATEGY[mixture],
        progress=False,
        device=device,
        dtype=dtype,
    )
    return fit.diagnostics.elapsed_s / len(fit.diagnostics.losses)


def main(argv=None) -> dict:
    args = parse_args(argv)
    steps, repeats = (5, 1) if args.quick else (args.num_steps, args.repeats)
    devices = (
        args.devices.split(",")
        if args.devices
        else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    torch.set_num_threads(1)
    frame = bm.data.load_sp500().loc["1999-01-01":"2018-12-31"]
    rows = []
    for mixture in MIXTURES:
        for device in devices:
            times: dict[str, list[float]] = {d: [] for d in DTYPES}
            for _ in range(repeats):
                for dtype in DTYPES:
                    times[dtype].append(seconds_per_step(frame, mixture, device, dtype, steps))
            median = {d: statistics.median(t) for d, t in times.items()}
            rows.append(
                {
                    "mixture": mixture,
                    "device": device,
                    "s_per_step": median,
                    "all_s_per_step": times,
                    "float64_over_float32": median["float64"] / median["float32"],
                }
            )
            print(
                f"{mixture:13s} {device:5s} float64 {median['float64'] * 1e3:8.1f} ms/step, "
                f"float32 {median['float32'] * 1e3:8.1f} ms/step, "
                f"ratio {rows[-1]['float64_over_float32']:.2f}",
                flush=True,
            )
    result = {
        "protocol": {
            "data": "S&P 500 1999-2018 (arch.data)",
            "num_steps": steps,
            "repeats": repeats,
            "torch_threads": 1,
            "mixtures": {k: {**v, "strategy": STRATEGY[k]} for k, v in MIXTURES.items()},
            "quick": bool(args.quick),
        },
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "rows": rows,
    }
    write_json(result, output_path(args, "dtype_speed"))
    print("\n| mixture | device | float64 ms/step | float32 ms/step | float64 / float32 |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        t = row["s_per_step"]
        print(
            f"| {row['mixture']} | {row['device']} | {t['float64'] * 1e3:.1f} | "
            f"{t['float32'] * 1e3:.1f} | {row['float64_over_float32']:.2f} |"
        )
    return result


if __name__ == "__main__":
    main()
