"""Command-line options shared by the benchmark scripts (the mixture and its SVI fit)."""

from __future__ import annotations

import argparse
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def add_mixture_options(parser: argparse.ArgumentParser, *, regimes: int | str = 3) -> None:
    """``--experts --regimes --window --num-steps --num-draws --seed``.

    ``regimes`` is the default of ``--regimes``: an int, or a comma list of them as a
    string for scripts that compare several.
    """
    parser.add_argument("--experts", default="ar,var,kalman", help="comma-separated names")
    parser.add_argument("--regimes", type=type(regimes), default=regimes, help="regimes K")
    parser.add_argument("--window", type=int, default=64, help="context window L (days)")
    parser.add_argument("--num-steps", type=int, default=1500, help="maximum SVI steps")
    parser.add_argument("--num-draws", type=int, default=200, help="posterior draws kept")
    parser.add_argument("--seed", type=int, default=0)


def mixture_protocol(args: argparse.Namespace, **more) -> dict:
    """The options of :func:`add_mixture_options` (and ``more``) as a protocol record."""
    return {
        "experts": args.experts,
        "n_regimes": args.regimes,
        "window": args.window,
        "num_steps": args.num_steps,
        "num_draws": args.num_draws,
        **more,
    }


def add_run_options(parser: argparse.ArgumentParser, name: str, *, extra_out: str = "") -> None:
    """``--quick --out --no-progress`` of a script writing ``results/<name>.json``.

    ``extra_out`` is appended to the help of ``--out`` (files written beside it).
    """
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: small sizes, few repeats, seconds"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"JSON output (default: benchmarks/results/{name}.json, or {name}_quick.json "
        f"with --quick){extra_out}",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def output_path(args: argparse.Namespace, name: str) -> Path:
    """``--out``, else ``results/<name>.json`` (``<name>_quick.json`` with ``--quick``)."""
    return args.out or RESULTS_DIR / (f"{name}_quick.json" if args.quick else f"{name}.json")
