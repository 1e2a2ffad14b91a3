"""Command-line options shared by the benchmark scripts (the mixture and its SVI fit)."""

from __future__ import annotations

import argparse


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
