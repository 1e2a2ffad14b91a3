"""Side-by-side timings of bayes-moe's HMM kernels and of other libraries' kernels.

Times, in one run, on one thread and on the same float64 data, the four hidden Markov
model kernels of :mod:`bayes_moe.kernels.hmm` (both routes: the compiled
``"sequential"`` recursion and the ``"parallel"`` associative scan) against the
corresponding kernels of hmmlearn (C++), Pyro (torch), and dynamax (JAX, jitted), after
checking that every library returns the same numbers.

Usage::

    pip install -r benchmarks/requirements-kernels.txt   # hmmlearn, jax, dynamax
    python benchmarks/kernels.py            # full run (~10 minutes on 2 cores)
    python benchmarks/kernels.py --quick    # smoke run: 1-2 minutes, mostly JAX compiling
    python benchmarks/kernels.py --check-only --no-progress  # agreement checks only

A peer that cannot be imported is skipped (the reason goes to the JSON's ``skipped``),
so the script also runs in the package's own environment, where only Pyro is present.
The full run writes ``benchmarks/results/kernels.json`` and ``kernels.md`` (``--quick``:
``kernels_quick.json`` / ``.md``, or beside ``--out``), atomically, and prints the
markdown table.

Data
----
A sticky Gaussian HMM simulated with numpy (seeded): ``K`` regimes, transition matrix
with 0.97 on the diagonal and the rest spread evenly, Gaussian emissions with distinct
means and scales per regime, and a uniform distribution of the state *before* the first
step (Pyro's ``initial_logits``); bayes-moe, hmmlearn and dynamax take the first step's
state prior, that distribution propagated one step (``pi0 @ P``). The emission
log-likelihoods ``log_emit (T, K)`` are computed once and handed to every library
(Pyro computes them itself from ``Normal(loc, scale)``, inside its timed call). Sizes:
``K`` in {3, 8} x ``T`` in {5,000, 100,000} (quick: ``T = 2,000``).

Rows (``kernel`` in the JSON and the table)
-------------------------------------------
``forward``
    the log-likelihood ``log p(y_1:T)``: bayes-moe ``hmm_log_evidence`` (both routes,
    under ``torch.no_grad()``); hmmlearn ``_hmmc.forward_log`` and
    ``_hmmc.forward_scaling`` (the ``exp`` of the row-shifted emissions is inside the
    timed call); Pyro ``DiscreteHMM.log_prob``; dynamax ``hmm_filter`` (``lax.scan``)
    and ``parallel_inference.hmm_filter`` (``lax.associative_scan``).
``forward+grad``
    the log-likelihood and its gradient with respect to the emission log-likelihoods and
    the transition matrix: bayes-moe ``hmm_log_evidence(...).backward()`` with
    ``method="auto"`` (the route it resolves to is recorded, from ``choose_method``) and
    ``"parallel"``; Pyro ``DiscreteHMM.log_prob(...).backward()`` (gradients to the
    emission ``loc``/``scale`` and the transition logits); dynamax ``jax.value_and_grad``
    of either filter's ``marginal_loglik``. Informative, no target.
``smoother``
    forward-backward marginals ``p(z_t | y_1:T)``: bayes-moe ``hmm_smoother``; hmmlearn
    ``forward_scaling`` + ``backward_scaling`` (and ``forward_log`` + ``backward_log``)
    combined into posteriors as hmmlearn's own ``_score_scaling`` / ``_score_log`` do;
    dynamax ``hmm_smoother`` (without the pairwise transition marginals, which
    bayes-moe does not compute either) and ``parallel_inference.hmm_smoother``.
``viterbi``
    the most probable path: bayes-moe ``hmm_viterbi``; hmmlearn ``_hmmc.viterbi``;
    dynamax ``hmm_posterior_mode``.
``smoother xS`` / ``viterbi xS``
    ``S = 200`` posterior draws (quick: 10) at ``T = 5,000`` only (``T = 100,000``
    would need gigabytes per array), each with its own perturbed transition matrix and
    noisy emissions: bayes-moe in one batched call (batch dimension ``S``), dynamax
    ``jax.vmap`` of its kernel (jitted), hmmlearn a Python loop over the draws.

Every timing is the median and minimum of several calls after warm-up (compilation
excluded; every JAX result is blocked on); slow entries (a call over a second) get fewer
repeats, recorded per row. ``auto_over_row`` is bayes-moe's ``method="auto"`` median
divided by the row's; the ``summary`` and ``targets`` blocks divide it by the fastest
peer's (a ratio at most 1 means bayes-moe is at least as fast).

Before any timing every result is checked against bayes-moe's sequential route: log
likelihood to a relative 1e-10, filtered and smoothed marginals (and the emission
gradient, which is the smoothed marginal) to 1e-10 in probability space, the
transition gradient to 1e-10 of its largest entry, Viterbi paths identical. The largest
deviations go to the JSON; a failed check stops the script with a non-zero exit.
"""

from __future__ import annotations

import os

# One thread for every library; these must be set before torch, numba or jax load.
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "JAX_PLATFORMS": "cpu",
}
os.environ.update(THREAD_ENV)

import argparse  # noqa: E402
import functools  # noqa: E402
import importlib.metadata  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import numpy as np  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
from _options import add_run_options, output_path  # noqa: E402
from bench_inference import machine, time_call  # noqa: E402  (benchmarks/ is on sys.path)
from tqdm.auto import tqdm  # noqa: E402

from bayes_moe.io import atomic_path, write_json  # noqa: E402
from bayes_moe.kernels.hmm import (  # noqa: E402
    choose_method,
    hmm_filter,
    hmm_log_evidence,
    hmm_smoother,
    hmm_viterbi,
)

STAY = 0.97  # diagonal of the sticky transition matrix
TOL = 1e-10  # every agreement check (relative for log-likelihoods, absolute for probabilities)
FULL = {
    "sizes": [(3, 5_000), (3, 100_000), (8, 5_000), (8, 100_000)],
    "batched": {"draws": 200, "T": 5_000},
    "repeats": 7,
    "slow_repeats": 3,  # for an entry whose call takes over `slow_s`
    "slow_s": 1.0,
    "posterior": {"num_draws": 200, "num_steps": 60, "repeats": 5},
}
QUICK = {
    "sizes": [(3, 2_000), (8, 2_000)],
    "batched": {"draws": 10, "T": 2_000},
    "repeats": 3,
    "slow_repeats": 2,
    "slow_s": 0.5,
    "posterior": {"num_draws": 10, "num_steps": 5, "repeats": 2},
}
TARGET_KERNELS = ("forward", "smoother", "viterbi")
TARGET_SIZE = (8, 100_000)
POSTERIOR_TARGET_S = 1.0  # fit.posterior for 200 draws of the default mixture on the S&P 500


# --------------------------------------------------------------------------------------
# peers


def import_peers() -> tuple[dict, dict]:
    """The importable peers as ``{name: namespace}`` and the others' reasons."""
    peers: dict = {}
    skipped: dict = {}
    try:
        from hmmlearn import _hmmc
        from hmmlearn.utils import log_normalize, normalize

        peers["hmmlearn"] = {"hmmc": _hmmc, "normalize": normalize, "log_normalize": log_normalize}
    except ImportError as exc:
        skipped["hmmlearn"] = f"{type(exc).__name__}: {exc}"
    try:
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)
        from dynamax.hidden_markov_model import inference, parallel_inference

        peers["dynamax"] = {
            "jax": jax,
            "jnp": jnp,
            "seq": inference,
            "par": parallel_inference,
        }
    except ImportError as exc:
        skipped["dynamax"] = f"{type(exc).__name__}: {exc}"
    return peers, skipped


def versions() -> dict:
    """Installed versions of the peers and of the compiled dependencies."""
    out = {}
    for name in ("numba", "jax", "jaxlib", "hmmlearn", "dynamax", "pyro-ppl", "scipy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


# --------------------------------------------------------------------------------------
# problems


@dataclass
class Problem:
    """One data set, in numpy (float64) and torch; batched when ``draws`` is set."""

    K: int
    T: int
    draws: int | None
    y: np.ndarray  # (T,) observations (unbatched only: Pyro's input)
    loc: np.ndarray  # (K,)
    scale: np.ndarray  # (K,)
    pi0: np.ndarray  # (K,) state before the first step (Pyro's initial distribution)
    trans: np.ndarray  # ([S,] K, K) probabilities
    log_emit: np.ndarray  # ([S,] T, K)
    init: np.ndarray = field(init=False)  # ([S,] K) p(z_1): pi0 propagated one step
    cache: dict = field(default_factory=dict)

    def __post_init__(self):
        self.init = np.ascontiguousarray(self.pi0 @ self.trans)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``log_init, log_trans, log_emit`` as float64 tensors."""
        if "torch" not in self.cache:
            self.cache["torch"] = tuple(
                torch.as_tensor(a, dtype=torch.float64)
                for a in (np.log(self.init), np.log(self.trans), self.log_emit)
            )
        return self.cache["torch"]

    def jax_arrays(self, jnp) -> tuple:
        """``init, trans, log_emit`` (probabilities, probabilities, logs) as jax arrays."""
        if "jax" not in self.cache:
            self.cache["jax"] = tuple(
                jnp.asarray(a, dtype=jnp.float64) for a in (self.init, self.trans, self.log_emit)
            )
        return self.cache["jax"]

    @property
    def label(self) -> str:
        draws = f" S={self.draws}" if self.draws else ""
        return f"K={self.K} T={self.T:,}{draws}"


def sticky_problem(K: int, T: int, seed: int = 0) -> Problem:
    """Simulate the sticky Gaussian HMM of the module docstring."""
    rng = np.random.default_rng(seed)
    trans = np.full((K, K), (1 - STAY) / (K - 1))
    np.fill_diagonal(trans, STAY)
    pi0 = np.full(K, 1.0 / K)
    loc = np.linspace(-1.5, 1.5, K)
    scale = np.geomspace(0.5, 2.0, K)
    # Off-diagonal entries are equal, so a switch moves to a uniformly chosen other state.
    first = rng.choice(K, p=pi0 @ trans)
    jumps = np.where(rng.random(T) < STAY, 0, rng.integers(1, K, size=T))
    jumps[0] = 0
    path = (first + np.cumsum(jumps)) % K
    y = loc[path] + scale[path] * rng.standard_normal(T)
    log_emit = (
        -0.5 * ((y[:, None] - loc) / scale) ** 2 - np.log(scale) - 0.5 * math.log(2 * math.pi)
    )
    return Problem(K, T, None, y, loc, scale, pi0, trans, np.ascontiguousarray(log_emit))


def draws_problem(K: int, T: int, draws: int, seed: int = 1) -> Problem:
    """``draws`` perturbed copies of :func:`sticky_problem`: own transitions and noise."""
    base = sticky_problem(K, T, seed=0)
    rng = np.random.default_rng(seed)
    stay = rng.uniform(STAY - 0.02, STAY + 0.02, size=draws)
    trans = np.empty((draws, K, K))
    for s in range(draws):
        for i in range(K):
            off = (1 - stay[s]) * rng.dirichlet(np.full(K - 1, 20.0))
            trans[s, i] = np.insert(off, i, stay[s])
    log_emit = base.log_emit + 0.05 * rng.standard_normal((draws, T, K))
    return Problem(K, T, draws, base.y, base.loc, base.scale, base.pi0, trans, log_emit)


# --------------------------------------------------------------------------------------
# entries


@dataclass
class Entry:
    """One timed call: ``run()`` returns a result, ``outputs`` maps it to numpy arrays.

    ``check`` (default ``outputs(run())``) gives the arrays compared in the agreement
    check, when the timed call returns fewer (the log evidence has no marginals).
    """

    library: str
    route: str
    run: Callable[[], object]
    outputs: Callable[[object], dict]
    check: Callable[[], dict] | None = None
    note: str | None = None


def _np(x) -> np.ndarray:
    return np.asarray(x.detach() if isinstance(x, torch.Tensor) else x, dtype=np.float64)


def _exp(x) -> np.ndarray:
    return np.exp(_np(x))


def _no_grad(fn: Callable[[], object]) -> Callable[[], object]:
    @functools.wraps(fn)
    def wrapped():
        with torch.no_grad():
            return fn()

    return wrapped


def _blocked(jax, fn: Callable, *args) -> Callable[[], object]:
    """``fn(*args)`` jitted, with the result blocked on."""
    jitted = jax.jit(fn)
    return lambda: jax.block_until_ready(jitted(*args))


def _hmmlearn_frameprob(log_emit: np.ndarray) -> tuple[np.ndarray, float]:
    """Emission probabilities shifted to a row maximum of one, and the total shift."""
    shift = log_emit.max(axis=1, keepdims=True)
    return np.exp(log_emit - shift), float(shift.sum())


def _hmmlearn_smoother_scaling(hl: dict, init, trans, log_emit) -> tuple[float, np.ndarray]:
    """hmmlearn's ``_score_scaling`` + ``_compute_posteriors_scaling`` on our arrays."""
    frameprob, shift = _hmmlearn_frameprob(log_emit)
    log_prob, fwd, scaling = hl["hmmc"].forward_scaling(init, trans, frameprob)
    bwd = hl["hmmc"].backward_scaling(init, trans, frameprob, scaling)
    posteriors = fwd * bwd
    hl["normalize"](posteriors, axis=1)
    return log_prob + shift, posteriors


def _hmmlearn_smoother_log(hl: dict, init, trans, log_emit) -> tuple[float, np.ndarray]:
    """hmmlearn's ``_score_log`` + ``_compute_posteriors_log`` on our arrays."""
    log_prob, fwd = hl["hmmc"].forward_log(init, trans, log_emit)
    bwd = hl["hmmc"].backward_log(init, trans, log_emit)
    log_gamma = fwd + bwd
    hl["log_normalize"](log_gamma, axis=1)
    return log_prob, np.exp(log_gamma)


def _normalized_rows(log_alpha: np.ndarray) -> np.ndarray:
    shifted = np.exp(log_alpha - log_alpha.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _bayes_moe(kernel: str, p: Problem, route: str) -> Entry:
    """bayes-moe's ``kernel`` on route ``route``, under ``torch.no_grad()``."""
    args = p.tensors()
    if kernel == "forward":

        def check():
            res = hmm_filter(*args, method=route)
            return {"loglik": _np(res.log_evidence), "filtered": _exp(res.log_filtered)}

        return Entry(
            "bayes_moe",
            route,
            _no_grad(lambda: hmm_log_evidence(*args, method=route)),
            lambda r: {"loglik": _np(r)},
            check=_no_grad(check),
        )
    if kernel == "smoother":
        return Entry(
            "bayes_moe",
            route,
            _no_grad(lambda: hmm_smoother(*args, method=route)),
            lambda r: {"loglik": _np(r.log_evidence), "smoothed": _exp(r.log_smoothed)},
        )
    return Entry(
        "bayes_moe",
        route,
        _no_grad(lambda: hmm_viterbi(*args, method=route)),
        lambda r: {"path": r.path.numpy(), "log_max": _np(r.log_max)},
    )


def entries_forward(p: Problem, peers: dict) -> list[Entry]:
    out = [_bayes_moe("forward", p, route) for route in ("sequential", "parallel")]
    if "hmmlearn" in peers:
        hmmc = peers["hmmlearn"]["hmmc"]
        out.append(
            Entry(
                "hmmlearn",
                "forward_log",
                lambda: hmmc.forward_log(p.init, p.trans, p.log_emit),
                lambda r: {"loglik": np.float64(r[0]), "filtered": _normalized_rows(r[1])},
            )
        )

        def scaling():
            frameprob, shift = _hmmlearn_frameprob(p.log_emit)
            log_prob, fwd, _ = hmmc.forward_scaling(p.init, p.trans, frameprob)
            return log_prob + shift, fwd

        out.append(
            Entry(
                "hmmlearn",
                "forward_scaling",
                scaling,
                lambda r: {"loglik": np.float64(r[0]), "filtered": r[1]},
                note="exp(log_emit - row max) inside the timed call",
            )
        )
    y, loc, scale = (torch.as_tensor(a) for a in (p.y, p.loc, p.scale))
    pyro_hmm = dist.DiscreteHMM(
        torch.as_tensor(np.log(p.pi0)),
        torch.as_tensor(np.log(p.trans)),
        dist.Normal(loc, scale, validate_args=False),
        validate_args=False,
    )
    out.append(
        Entry(
            "pyro",
            "DiscreteHMM.log_prob",
            _no_grad(lambda: pyro_hmm.log_prob(y)),
            lambda r: {"loglik": _np(r)},
            note="computes the Normal emission log-densities itself; distribution built "
            "once outside the timed call, validate_args=False",
        )
    )
    if "dynamax" in peers:
        dx = peers["dynamax"]
        args = p.jax_arrays(dx["jnp"])
        for route, module in (("sequential", dx["seq"]), ("parallel", dx["par"])):
            out.append(
                Entry(
                    "dynamax",
                    route,
                    _blocked(dx["jax"], module.hmm_filter, *args),
                    lambda r: {"loglik": _np(r.marginal_loglik), "filtered": _np(r.filtered_probs)},
                )
            )
    return out


def entries_grad(p: Problem, peers: dict) -> tuple[list[Entry], str]:
    """Forward + gradient entries and the route bayes-moe's ``"auto"`` takes."""
    log_init, log_trans, log_emit = p.tensors()
    leaves = [log_trans.clone().requires_grad_(), log_emit.clone().requires_grad_()]
    auto_route = choose_method("auto", log_init, *leaves, sequential_gradient=True)

    def bayes_moe(method):
        def run():
            for leaf in leaves:
                leaf.grad = None
            value = hmm_log_evidence(log_init, *leaves, method=method)
            value.backward()
            return value.detach(), leaves[1].grad, leaves[0].grad

        return run

    def grad_outputs(r):
        return {"loglik": _np(r[0]), "grad_emit": _np(r[1]), "grad_trans": _np(r[2])}

    out = [
        Entry("bayes_moe", "auto", bayes_moe("auto"), grad_outputs, note=f"auto -> {auto_route}"),
        Entry("bayes_moe", "parallel", bayes_moe("parallel"), grad_outputs),
    ]
    y = torch.as_tensor(p.y)
    pyro_leaves = [
        torch.as_tensor(a).clone().requires_grad_() for a in (np.log(p.trans), p.loc, p.scale)
    ]
    pyro_init = torch.as_tensor(np.log(p.pi0))

    def pyro_run():
        for leaf in pyro_leaves:
            leaf.grad = None
        trans_logits, loc, scale = pyro_leaves
        hmm = dist.DiscreteHMM(
            pyro_init,
            trans_logits,
            dist.Normal(loc, scale, validate_args=False),
            validate_args=False,
        )
        value = hmm.log_prob(y)
        value.backward()
        return value.detach()

    out.append(
        Entry(
            "pyro",
            "DiscreteHMM.log_prob + backward",
            pyro_run,
            lambda r: {"loglik": _np(r)},
            note="gradient to the transition logits and the Normal loc/scale",
        )
    )
    if "dynamax" in peers:
        dx = peers["dynamax"]
        init, trans, ll = p.jax_arrays(dx["jnp"])
        for route, module in (("sequential", dx["seq"]), ("parallel", dx["par"])):

            def loglik(log_emit, trans, hmm_filter=module.hmm_filter):
                return hmm_filter(init, trans, log_emit).marginal_loglik

            out.append(
                Entry(
                    "dynamax",
                    route,
                    _blocked(dx["jax"], dx["jax"].value_and_grad(loglik, (0, 1)), ll, trans),
                    lambda r: {
                        "loglik": _np(r[0]),
                        "grad_emit": _np(r[1][0]),
                        "grad_trans": _np(r[1][1]) * p.trans,  # d/dlog P = P * d/dP
                    },
                    note="jax.value_and_grad w.r.t. log-likelihoods and transition matrix",
                )
            )
    return out, auto_route


def entries_smoother(p: Problem, peers: dict) -> list[Entry]:
    out = [_bayes_moe("smoother", p, route) for route in ("sequential", "parallel")]
    batched = p.draws is not None
    if "hmmlearn" in peers:
        hl = peers["hmmlearn"]
        for route, smoother in (
            ("scaling", _hmmlearn_smoother_scaling),
            ("log", _hmmlearn_smoother_log),
        ):
            if batched and route == "log":
                continue  # the loop over draws: scaling only (the faster of the two)
            if batched:

                def run(smoother=smoother):
                    results = [
                        smoother(hl, p.init[s], p.trans[s], p.log_emit[s]) for s in range(p.draws)
                    ]
                    return [r[0] for r in results], np.stack([r[1] for r in results])

            else:

                def run(smoother=smoother):
                    return smoother(hl, p.init, p.trans, p.log_emit)

            out.append(
                Entry(
                    "hmmlearn",
                    f"forward_{route} + backward_{route}" + (" (loop)" if batched else ""),
                    run,
                    lambda r: {"loglik": _np(r[0]), "smoothed": r[1]},
                )
            )
    if "dynamax" in peers:
        dx = peers["dynamax"]
        jax = dx["jax"]
        # dynamax's hmm_smoother jits compute_trans_probs as a traced argument, so
        # compute_trans_probs=False fails under jit; bind it before jitting.
        sequential = functools.partial(
            getattr(dx["seq"].hmm_smoother, "__wrapped__", dx["seq"].hmm_smoother),
            compute_trans_probs=False,
        )
        for route, smoother in (("sequential", sequential), ("parallel", dx["par"].hmm_smoother)):
            fn = jax.vmap(smoother) if batched else smoother
            out.append(
                Entry(
                    "dynamax",
                    route + (" (vmap)" if batched else ""),
                    _blocked(jax, fn, *p.jax_arrays(dx["jnp"])),
                    lambda r: {"loglik": _np(r.marginal_loglik), "smoothed": _np(r.smoothed_probs)},
                    note="compute_trans_probs=False" if route == "sequential" else None,
                )
            )
    return out


def entries_viterbi(p: Problem, peers: dict) -> list[Entry]:
    out = [_bayes_moe("viterbi", p, route) for route in ("sequential", "parallel")]
    batched = p.draws is not None
    if "hmmlearn" in peers:
        viterbi = peers["hmmlearn"]["hmmc"].viterbi
        if batched:

            def run():
                results = [viterbi(p.init[s], p.trans[s], p.log_emit[s]) for s in range(p.draws)]
                return [r[0] for r in results], np.stack([r[1] for r in results])

        else:

            def run():
                return viterbi(p.init, p.trans, p.log_emit)

        out.append(
            Entry(
                "hmmlearn",
                "viterbi" + (" (loop)" if batched else ""),
                run,
                lambda r: {"log_max": _np(r[0]), "path": np.asarray(r[1])},
            )
        )
    if "dynamax" in peers:
        dx = peers["dynamax"]
        mode = dx["seq"].hmm_posterior_mode
        mode = dx["jax"].vmap(mode) if batched else mode
        out.append(
            Entry(
                "dynamax",
                "hmm_posterior_mode" + (" (vmap)" if batched else ""),
                _blocked(dx["jax"], mode, *p.jax_arrays(dx["jnp"])),
                lambda r: {"path": np.asarray(r)},
            )
        )
    return out


# --------------------------------------------------------------------------------------
# references and agreement


def reference(kernel: str, p: Problem) -> dict:
    """bayes-moe's sequential route: every quantity the entries of ``kernel`` return."""
    log_init, log_trans, log_emit = p.tensors()
    if kernel in ("viterbi", "viterbi xS"):
        path, log_max = hmm_viterbi(log_init, log_trans, log_emit, method="sequential")
        return {"path": path.numpy(), "log_max": _np(log_max)}
    res = hmm_smoother(log_init, log_trans, log_emit, method="sequential")
    smoothed = _exp(res.log_smoothed)
    out = {
        "loglik": _np(res.log_evidence),
        "filtered": _exp(res.log_filtered),
        "smoothed": smoothed,
    }
    if kernel == "forward+grad":
        # d log p(y) / d log_emit[t, k] is the smoothed marginal; d / d log_trans[i, j] is
        # the expected number of i -> j transitions, sum_t p(z_{t-1} = i, z_t = j | y).
        ratio = np.exp(_np(res.log_smoothed[1:]) - _np(res.log_predicted[1:]))
        out["grad_emit"] = smoothed
        out["grad_trans"] = p.trans * (_exp(res.log_filtered[:-1]).T @ ratio)
    return out


def deviation(name: str, actual, expected) -> float:
    """The largest deviation of ``actual`` from ``expected`` in the check's own metric."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        return math.inf
    if name == "path":
        return float(np.count_nonzero(actual != expected))
    if name in ("loglik", "log_max"):
        return float(np.max(np.abs(actual - expected) / np.abs(expected)))
    if name == "grad_trans":
        return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))
    return float(np.max(np.abs(actual - expected)))


METRICS = {
    "loglik": "max relative difference of the log-likelihood",
    "log_max": "max relative difference of the Viterbi path's log joint",
    "filtered": "max abs difference of filtered probabilities",
    "smoothed": "max abs difference of smoothed probabilities",
    "grad_emit": "max abs difference of d loglik / d log_emit (smoothed probabilities)",
    "grad_trans": "max abs difference of d loglik / d log_trans, over its largest entry",
    "path": "number of time steps where the Viterbi paths differ (must be 0)",
}


# --------------------------------------------------------------------------------------
# groups


@dataclass
class Group:
    """All entries of one kernel at one size, with bayes-moe's ``"auto"`` route."""

    kernel: str
    problem: Problem
    entries: list[Entry]
    auto_route: str


def build_groups(config: dict, peers: dict) -> list[Group]:
    groups = []
    problems = [sticky_problem(K, T) for K, T in config["sizes"]]
    for p in problems:
        log_init, log_trans, log_emit = p.tensors()
        with torch.no_grad():
            auto = choose_method("auto", log_init, log_trans, log_emit)
        grad_entries, grad_auto = entries_grad(p, peers)
        groups += [
            Group("forward", p, entries_forward(p, peers), auto),
            Group("forward+grad", p, grad_entries, grad_auto),
            Group("smoother", p, entries_smoother(p, peers), auto),
            Group("viterbi", p, entries_viterbi(p, peers), auto),
        ]
    batched = config["batched"]
    for K in sorted({K for K, _ in config["sizes"]}):
        p = draws_problem(K, batched["T"], batched["draws"])
        with torch.no_grad():
            auto = choose_method("auto", *p.tensors())
        groups += [
            Group("smoother xS", p, entries_smoother(p, peers), auto),
            Group("viterbi xS", p, entries_viterbi(p, peers), auto),
        ]
    return groups


def size_of(group: Group) -> dict:
    p = group.problem
    return {"kernel": group.kernel, "K": p.K, "T": p.T, "S": p.draws}


def check_group(group: Group) -> tuple[list[dict], list[str]]:
    """Run every entry once (warm-up, compilation) and compare it with the reference."""
    expected = reference(group.kernel, group.problem)
    records, failures = [], []
    for entry in group.entries:
        actual = entry.check() if entry.check else entry.outputs(entry.run())
        devs = {name: deviation(name, actual[name], expected[name]) for name in actual}
        records.append(
            {**size_of(group), "library": entry.library, "route": entry.route, "max_dev": devs}
        )
        for name, dev in devs.items():
            limit = 0 if name == "path" else TOL
            if not dev <= limit:
                failures.append(
                    f"{group.kernel} {group.problem.label} {entry.library}/{entry.route}: "
                    f"{name} deviates by {dev:.3g} (limit {limit:g}: {METRICS[name]})"
                )
    return records, failures


def time_group(group: Group, config: dict) -> list[dict]:
    """Median and minimum per entry; fewer repeats for an entry whose call is slow."""
    rows = []
    for entry in group.entries:
        start = time.perf_counter()
        entry.run()  # warm (already compiled by the check)
        probe = time.perf_counter() - start
        repeats = config["repeats"] if probe < config["slow_s"] else config["slow_repeats"]
        timing = time_call(entry.run, repeats, warmup=0)
        timing["warmup"] = 2  # the agreement check's call and the probe above
        rows.append(
            {
                **size_of(group),
                "library": entry.library,
                "route": entry.route,
                **timing,
                **({"note": entry.note} if entry.note else {}),
            }
        )
    return rows


def summarize(group: Group, rows: list[dict]) -> dict:
    """bayes-moe's auto median over the fastest peer's, and per row ``auto_over_row``."""
    auto = next(
        r for r in rows if r["library"] == "bayes_moe" and r["route"] in ("auto", group.auto_route)
    )
    for r in rows:
        r["auto_over_row"] = auto["median_s"] / r["median_s"]
    peers = [r for r in rows if r["library"] != "bayes_moe"]
    fastest = min(peers, key=lambda r: r["median_s"]) if peers else None
    return {
        **size_of(group),
        "bayes_moe_auto_route": group.auto_route,
        "bayes_moe_auto_median_s": auto["median_s"],
        "fastest_peer": f"{fastest['library']}/{fastest['route']}" if fastest else None,
        "fastest_peer_median_s": fastest["median_s"] if fastest else None,
        "ratio_auto_over_fastest_peer": auto["median_s"] / fastest["median_s"] if fastest else None,
    }


def targets(summary: list[dict]) -> dict:
    """The ratio targets at ``K = 8, T = 100,000`` (the largest ``T`` run in quick mode)."""
    K = TARGET_SIZE[0]
    sizes = [s["T"] for s in summary if s["K"] == K and s["S"] is None]
    T = TARGET_SIZE[1] if TARGET_SIZE[1] in sizes else max(sizes, default=None)
    out: dict = {
        "definition": "bayes-moe method='auto' median / fastest peer median, target <= 1.0",
        "K": K,
        "T": T,
    }
    if T != TARGET_SIZE[1]:
        out["note"] = f"T = {TARGET_SIZE[1]:,} not run (quick mode): largest T instead"
    for s in summary:
        if s["kernel"] in TARGET_KERNELS and s["K"] == K and s["T"] == T and s["S"] is None:
            ratio = s["ratio_auto_over_fastest_peer"]
            out[s["kernel"]] = {
                "ratio": ratio,
                "fastest_peer": s["fastest_peer"],
                "met": None if ratio is None else bool(ratio <= 1.0),
            }
    return out


# --------------------------------------------------------------------------------------
# the regime posterior of a real fit


def time_posterior(config: dict) -> dict:
    """Evaluate the posterior draws of the default mixture fitted to the S&P 500.

    ``bm.BayesianMoE(experts=["ar", "var", "kalman"], n_regimes=3, window=64)`` on
    ``bm.data.load_sp500()`` (4,945 observed days), ``num_steps`` SVI steps; then
    ``fit.posterior`` (every per-draw quantity: experts, gate, filtered, smoothed and
    Viterbi regimes, causal predictive, log-likelihood) and the per-day summaries that
    ``fit.regimes()`` reads, each timed after one untimed call (numba's compilation,
    cached on disk after the first run, is excluded), with the draws evaluated in one
    thread and in one thread per core (``num_threads``: chunks of draws side by side,
    each with one torch thread; the default of a process that leaves torch's thread
    count alone). The target is judged on the one-thread-per-core timing.
    """
    import bayes_moe as bm
    from bayes_moe.inference.posterior import evaluate_posterior, summarize_posterior

    settings = config["posterior"]
    fit = bm.BayesianMoE(experts=["ar", "var", "kalman"], n_regimes=3, window=64).fit(
        bm.data.load_sp500(),
        target="ret",
        num_steps=settings["num_steps"],
        num_draws=settings["num_draws"],
        seed=0,
        progress=False,
        convergence_tol=None,
        num_threads=1,
    )
    start = time.perf_counter()
    _ = fit.posterior  # the public call, first in this process
    first = time.perf_counter() - start
    args = (fit.program, fit.draws, fit.data)
    cores = os.cpu_count() or 1
    timings = {}
    for threads in sorted({1, cores}):
        timings[threads] = {
            name: time_call(
                functools.partial(call, *args, num_threads=threads), settings["repeats"]
            )
            for name, call in (
                ("fit_posterior", evaluate_posterior),
                ("summarize_posterior", summarize_posterior),
            )
        }
        for timing in timings[threads].values():
            timing.pop("times_s")
    return {
        "model": "BayesianMoE(experts=['ar', 'var', 'kalman'], n_regimes=3, window=64)",
        "data": "bm.data.load_sp500(), target 'ret'",
        "n_observations": fit.data.n_observed,
        "num_draws": fit.n_draws,
        "svi_steps": settings["num_steps"],
        "time_varying_transitions": bool(fit.program.gate.transition_features),
        "first_call_s": first,
        "threads": cores,
        "fit_posterior": timings[cores]["fit_posterior"],
        "summarize_posterior": timings[cores]["summarize_posterior"],
        "one_thread": timings[1],
        "target_s": POSTERIOR_TARGET_S,
        "met": bool(timings[cores]["fit_posterior"]["median_s"] < POSTERIOR_TARGET_S),
    }


# --------------------------------------------------------------------------------------
# reporting


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f}" if seconds < 1 else f"{seconds * 1e3:,.0f}"


def markdown(result: dict) -> str:
    """The rows, the per-kernel summary and the targets as markdown."""
    lines = [
        "| kernel | K | T | S | library | route | median ms | min ms | n | auto / row |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['kernel']} | {r['K']} | {r['T']:,} | {r['S'] or ''} | {r['library']} "
            f"| {r['route']} | {_ms(r['median_s'])} | {_ms(r['min_s'])} | {r['repeats']} "
            f"| {r['auto_over_row']:.2f} |"
        )
    lines += [
        "",
        "| kernel | K | T | S | bayes-moe auto | fastest peer | auto / fastest peer |",
        "|---|---:|---:|---:|---|---|---:|",
    ]
    for s in result["summary"]:
        ratio = s["ratio_auto_over_fastest_peer"]
        lines.append(
            f"| {s['kernel']} | {s['K']} | {s['T']:,} | {s['S'] or ''} "
            f"| {s['bayes_moe_auto_route']} {_ms(s['bayes_moe_auto_median_s'])} ms "
            f"| {s['fastest_peer'] or '-'}"
            + (f" {_ms(s['fastest_peer_median_s'])} ms" if s["fastest_peer"] else "")
            + f" | {'-' if ratio is None else f'{ratio:.2f}'} |"
        )
    tg = result["targets"]
    lines += ["", f"Targets (K = {tg['K']}, T = {tg['T']:,}; {tg['definition']}):"]
    for kernel in TARGET_KERNELS:
        if kernel in tg and tg[kernel]["ratio"] is not None:
            t = tg[kernel]
            met = "met" if t["met"] else "NOT met"
            lines.append(f"- {kernel}: {t['ratio']:.2f} vs {t['fastest_peer']} ({met})")
        else:
            lines.append(f"- {kernel}: no peer timed")
    post = result.get("posterior")
    if post:
        met = "met" if post["met"] else "NOT met"
        one = post["one_thread"]
        lines.append(
            f"- fit.posterior, {post['num_draws']} draws, S&P 500 ({post['n_observations']:,} "
            f"days), {post['threads']} threads: {post['fit_posterior']['median_s']:.2f} s "
            f"(target under {post['target_s']:g} s: {met}); one thread "
            f"{one['fit_posterior']['median_s']:.2f} s. The summaries behind "
            f"fit.regimes(): {post['summarize_posterior']['median_s']:.2f} s "
            f"({one['summarize_posterior']['median_s']:.2f} s on one thread)"
        )
    if result["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in result["skipped"].items())]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------


def posterior_only(config: dict, out, *, quick: bool) -> dict:
    """Time :func:`time_posterior` alone and write its JSON (``--posterior-only``)."""
    torch.set_num_threads(1)
    result = {
        "benchmark": "bayes_moe fit.posterior on the S&P 500",
        "mode": "quick" if quick else "full",
        "machine": {**machine(), **versions()},
        "posterior": time_posterior(config),
    }
    write_json(result, out)
    post = result["posterior"]
    for threads, timing in ((post["threads"], post), (1, post["one_thread"])):
        print(
            f"{threads} thread(s): fit.posterior {timing['fit_posterior']['median_s']:.2f} s "
            f"(min {timing['fit_posterior']['min_s']:.2f}), summaries "
            f"{timing['summarize_posterior']['median_s']:.2f} s"
        )
    print(f"written to {out}")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_options(parser, "kernels", extra_out="; the markdown table goes beside it as .md")
    parser.add_argument(
        "--check-only", action="store_true", help="run the agreement checks, time nothing"
    )
    parser.add_argument(
        "--no-posterior", action="store_true", help="skip the S&P 500 fit.posterior timing"
    )
    parser.add_argument(
        "--posterior-only",
        action="store_true",
        help="time only fit.posterior on the S&P 500 (no peers needed); "
        "written to results/kernels_posterior.json unless --out is given",
    )
    args = parser.parse_args(argv)
    if args.posterior_only and args.no_posterior:
        parser.error("--posterior-only and --no-posterior exclude each other")
    config = QUICK if args.quick else FULL
    out = output_path(args, "kernels_posterior" if args.posterior_only else "kernels")
    if args.posterior_only:
        return posterior_only(config, out, quick=args.quick)

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or inter-op work already started
        pass
    start = time.perf_counter()
    peers, skipped = import_peers()
    for name, reason in skipped.items():
        print(f"skipping {name}: {reason}")
    groups = build_groups(config, peers)

    agreement, failures = [], []
    bar = tqdm(groups, desc="agreement checks", disable=args.no_progress, leave=False)
    for group in bar:
        bar.set_postfix_str(f"{group.kernel} {group.problem.label}")
        records, failed = check_group(group)
        agreement += records
        failures += failed
    if failures:
        sys.exit("agreement check failed:\n  " + "\n  ".join(failures))
    worst = {
        name: max((a["max_dev"][name] for a in agreement if name in a["max_dev"]), default=None)
        for name in METRICS
    }
    check_s = time.perf_counter() - start
    print(
        f"agreement: all checks passed ({check_s:.0f} s with compilation); largest deviations: "
        + ", ".join(f"{name} {dev:.1e}" for name, dev in worst.items() if dev is not None)
    )
    if args.check_only:
        return {"agreement": agreement}

    rows, summary = [], []
    bar = tqdm(groups, desc="timing", disable=args.no_progress, leave=False)
    for group in bar:
        bar.set_postfix_str(f"{group.kernel} {group.problem.label}")
        group_rows = time_group(group, config)
        summary.append(summarize(group, group_rows))
        rows += group_rows

    result = {
        "benchmark": "bayes_moe HMM kernels vs peers",
        "mode": "quick" if args.quick else "full",
        "machine": {**machine(), **versions()},
        "settings": {
            "threads": 1,
            "thread_env": THREAD_ENV,
            "torch_num_threads": torch.get_num_threads(),
            "jax_enable_x64": "dynamax" in peers,
            "dtype": "float64",
            "repeats": config["repeats"],
            "slow_repeats": config["slow_repeats"],
            "slow_threshold_s": config["slow_s"],
            "sizes_KT": config["sizes"],
            "batched": config["batched"],
            "stay_probability": STAY,
            "tolerance": TOL,
            "timing": "median and min over 'repeats' calls after two untimed calls "
            "(the agreement check's and a probe that picks the repeats); jax results "
            "blocked on; auto_over_row = bayes-moe method='auto' median / row median",
        },
        "rows": rows,
        "summary": summary,
        "agreement": {"metrics": METRICS, "largest": worst, "checks": agreement},
        "skipped": skipped,
        "targets": targets(summary),
        "posterior": None if args.no_posterior else time_posterior(config),
        "check_s": check_s,
        "total_s": time.perf_counter() - start,
    }
    table = markdown(result)
    write_json(result, out)
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(table)
    print(table)
    print(f"total {result['total_s']:.1f} s; written to {out} and {out.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
