r"""Evaluate the mixture at every posterior draw: regimes, predictive, log-likelihood.

For each draw :math:`\theta^{(s)}` of the global parameters this module computes,
over all origins, the experts' predictive distributions, the gate weights, the
regime posteriors (filtered, smoothed, Viterbi) and the one-step predictive
density of every observed day. Regime 0 is the calmest and regime ``K-1`` the most
turbulent in every draw: with volatility levels the labels are ordered by
construction (:mod:`bayes_moe.models.gate`); without them (Hamilton's model with a
fixed assignment) they are relabelled per draw by the mean predictive volatility.
Either way summaries do not suffer label switching.

Causal regime probabilities at origin ``n`` (horizon ``h``):

.. math::

    P(z_n = k \mid \mathcal F_n) = \big[\,p(z_{n-h} \mid y_{1:n-h})\, \Pi^{h}\big]_k,

the filtered distribution of the last day whose response is known at ``n``,
propagated ``h`` steps (for ``h = 1``, the one-step prediction of the forward
filter). The predictive is a mixture over regimes and experts with weights
:math:`w_{n,k,m} = P(z_n = k \mid \mathcal F_n)\, g_{n,k,m}` of the experts'
predictives at regime ``k``'s volatility level.

Memory. The draws are evaluated in chunks of :func:`draws_per_chunk` draws, sized so
that one chunk's working memory stays within ``memory_budget_mib``
(:data:`DEFAULT_MEMORY_BUDGET_MIB`) whatever the number of draws ``S``; each chunk is
reduced and freed before the next. :func:`summarize_posterior` keeps per-day summaries
over all draws, every draw's pointwise log-likelihood, ``keep_draws`` thinned draws'
per-day values and the predictive at the last :data:`TAIL_ORIGINS` origins
(:class:`PosteriorSummary`): what forecasts, regimes, reports and ArviZ need.
:func:`evaluate_posterior` keeps everything, ``S`` times ``N`` values per quantity.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import pyro
import torch
from tqdm.auto import tqdm

from bayes_moe._runtime import release_free_memory, torch_threads
from bayes_moe.data.windows import ModelData
from bayes_moe.inference.predictive import mixture_cdf, mixture_moments, sample_mixture
from bayes_moe.kernels.hmm import causal_regime, hmm_smoother, hmm_viterbi
from bayes_moe.kernels.mixture_kernels import causal_mixture, regime_mixture
from bayes_moe.models.distributions import (
    cat_batch,
    index_batch,
    mean_and_variance,
    regime_log_prob,
    scatter_batch,
)
from bayes_moe.models.moe import MoEProgram

#: Default bound on the working memory of a posterior evaluation, MiB
#: (:func:`draws_per_chunk`). With it, 200 posterior draws of the default mixture over
#: 200,000 days are fitted, evaluated and reported in under 8 GB
#: (``benchmarks/memory_scale.py``).
DEFAULT_MEMORY_BUDGET_MIB: float = 1024.0
#: Largest working memory of one chunk of draws, MiB, whatever the budget: bigger chunks
#: vectorise no better, and the system's first touch of their larger arrays (page
#: faults) costs more than the loop over more chunks. On the S&P 500 (200 draws of the
#: default mixture, 4,945 days, one thread) chunks of 24 draws (this cap) instead of 99
#: (the default budget's) take the evaluation from 1.49-1.66 s to 1.30-1.33 s; with a
#: thread per core (24 instead of 49 draws) the two are level within the machine's
#: noise, 0.77-0.85 s against 0.80-0.84 s (``benchmarks/README.md``).
CHUNK_CAP_MIB: float = 128.0
#: Draws whose per-day values :func:`summarize_posterior` keeps unless told otherwise.
DEFAULT_KEEP_DRAWS: int = 40
#: Trailing origins whose predictive :func:`summarize_posterior` keeps for every draw:
#: more than a trading year, so forecasts, fan charts and backtest blocks of up to a
#: year read it without another pass over the draws.
TAIL_ORIGINS: int = 300
#: Draw ``s``'s posterior predictive sample is drawn under the seed ``PREDICTIVE_SEED + s``.
PREDICTIVE_SEED: int = 20_131


@dataclass(frozen=True)
class PosteriorEvaluation:
    r"""Per-draw quantities over all origins (``S`` draws, ``N`` origins, ``N_obs`` observed).

    Attributes
    ----------
    regime_order : LongTensor ``(S, K)``
        Original regime index of each relabelled regime.
    transition : Tensor ``(S, K, K)``
        Relabelled transition matrices (with transition features: the baseline
        :math:`\Pi` at average conditions).
    log_trans_last : Tensor ``(S, K, K)``
        Log transition into the last origin's regime (equal to ``log(transition)``
        without transition features).
    log_filtered, log_smoothed : Tensor ``(S, N_obs, K)``
        log p(z_n | y_{1:n}) and log p(z_n | y_{1:N_obs}).
    viterbi : LongTensor ``(S, N_obs)``
        Most probable regime path of each draw.
    log_causal_regime : Tensor ``(S, N, K)``
        log P(z_n | F_n) at every origin (module docstring).
    log_mix_weights : Tensor ``(S, N, K, M)``
        log w_{n,k,m} = log P(z_n = k | F_n) + log g_{n,k,m}, the predictive mixture
        weights of expert ``m`` at regime ``k``'s volatility level.
    log_regime_scale : Tensor ``(S, K)``
        The regimes' log volatility levels :math:`\lambda_k` (zeros without levels).
    regime_expert_weights : Tensor ``(S, K, M)``
        Gate weights of each regime averaged over observed origins.
    regime_volatility : Tensor ``(S, K)``
        Predictive standard deviation in regime ``k`` (first target, standardized
        units), averaged over the days the regime occupies:
        :math:`\sqrt{\sum_n P(z_n = k \mid y)\, v_{n,k} / \sum_n P(z_n = k \mid y)}`
        with smoothed probabilities and the regime's predictive variance
        :math:`v_{n,k}`; for constant-variance regimes (Hamilton's model) it is
        :math:`\sigma_k`.
    regime_mean : Tensor ``(S, K)``
        Predictive mean in regime ``k`` averaged the same way (standardized units).
    regime_duration : Tensor ``(S, K)``
        Expected stay in regime ``k`` in days, :math:`1 / (1 - \Pi_{kk})`; with
        transition features the stay depends on the conditions, and this is
        :math:`1 / (1 - \Pi_{n,kk})` averaged the same way over the days the regime
        occupies.
    log_predictive_density : Tensor ``(S, N_obs)``
        log p(y_n | F_n, theta_s) in standardized units.
    experts : list of Distribution
        Each expert's predictive at its own scale, batch ``(S, N)``.
    posterior_predictive : Tensor ``(S, N_obs, d_y)``
        One draw of y_n from the causal predictive per posterior draw (standardized),
        seeded by draw (:func:`seeded_predictive`).
    """

    regime_order: torch.Tensor
    transition: torch.Tensor
    log_trans_last: torch.Tensor
    log_filtered: torch.Tensor
    log_smoothed: torch.Tensor
    viterbi: torch.Tensor
    log_causal_regime: torch.Tensor
    log_mix_weights: torch.Tensor
    log_regime_scale: torch.Tensor
    regime_expert_weights: torch.Tensor
    regime_volatility: torch.Tensor
    regime_mean: torch.Tensor
    regime_duration: torch.Tensor
    log_predictive_density: torch.Tensor
    experts: list
    posterior_predictive: torch.Tensor


def conditioned_components(program: MoEProgram, draws: dict, inputs, skip=()):
    """Run the program's components with every latent site set to ``draws`` (batch ``S``).

    Experts at the positions ``skip`` are not run (:meth:`MoEProgram.components`).
    """
    with torch.no_grad(), pyro.poutine.condition(data=draws):
        return program.components(inputs, skip=skip)


def wake_experts(
    program: MoEProgram,
    draws: dict,
    inputs,
    experts: list,
    log_w: torch.Tensor,
    log_causal: torch.Tensor,
    threshold: float,
    pyro_lock: threading.Lock | None = None,
) -> tuple[list, torch.Tensor, torch.Tensor]:
    r"""Sparse inference: run each skipped expert only where its weight reaches ``threshold``.

    Expert ``m`` is awake at origin ``n`` when its causal weight in the tilted mixture,
    :math:`w_{n,m} = \sum_k P_L(z_n = k \mid \mathcal F_n)\, g'_{n,k,m}`, reaches
    ``threshold`` in at least one draw of the chunk; the light experts are always
    awake. A sleeping expert is not evaluated there at all (it runs on the awake
    origins only, :meth:`MoEProgram.expert_predictive`), and the weights of an origin
    with a sleeping expert are renormalised over the awake ones.

    Parameters
    ----------
    experts : list of Distribution or None
        Batch ``(S, N)``; None for the experts still to run.
    log_w : Tensor ``(S, N, K, M)``
        Tilted gate weights.
    log_causal : Tensor ``(S, N, K)``
        :math:`\log P_L(z_n \mid \mathcal F_n)` of the energy pass.

    Returns
    -------
    experts : list of Distribution
        Every expert with batch ``(S, N)`` (a sleeping origin holds placeholder
        parameters: :func:`~bayes_moe.models.distributions.scatter_batch`).
    log_w : Tensor ``(S, N, K, M)``
        Zero weight (``-inf``) where asleep, renormalised; rows with every expert awake
        are returned unchanged.
    awake : BoolTensor ``(N, M)``
    """
    N = log_w.shape[-3]
    weight = torch.logsumexp(log_causal.unsqueeze(-1) + log_w, dim=-2).exp().amax(0)  # (N, M)
    awake = weight >= threshold
    awake[:, program.light] = True
    experts = list(experts)
    for m, predictive in enumerate(experts):
        if predictive is not None:
            continue
        rows = awake[:, m].nonzero().squeeze(-1)
        picked = rows if len(rows) else torch.tensor([N - 1])  # one origin builds the batch
        with pyro_lock or contextlib.nullcontext(), torch.no_grad():
            with pyro.poutine.condition(data=draws):
                sub = program.expert_predictive(m, inputs.at(inputs.origins[picked]))
        experts[m] = scatter_batch(sub, picked, N)
    if not bool(awake.all()):
        masked = log_w.masked_fill(~awake[:, None, :], float("-inf"))
        renormalised = masked - torch.logsumexp(masked, dim=-1, keepdim=True)
        log_w = torch.where(awake.all(-1)[:, None, None], log_w, renormalised)
    return experts, log_w, awake


def relabel_matrices(log_trans: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Permute rows and columns of ``(S, ..., K, K)`` matrices by ``order`` ``(S, K)``."""
    index = order.view(order.shape[:1] + (1,) * (log_trans.dim() - 3) + order.shape[1:])
    rows = torch.take_along_dim(log_trans, index.unsqueeze(-1), dim=-2)
    return torch.take_along_dim(rows, index.unsqueeze(-2), dim=-1)


def expected_stay(log_trans: torch.Tensor) -> torch.Tensor:
    r"""Expected duration of each regime, :math:`1 / (1 - \Pi_{kk})`.

    ``(..., K, K)`` log transitions to ``(..., K)`` days.
    """
    stay = torch.diagonal(log_trans, dim1=-2, dim2=-1).contiguous().exp()  # a strided exp is slow
    return 1.0 / (1.0 - stay).clamp_min(1e-12)


def occupancy_average(probs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    r"""Average of ``values`` over days weighted by regime probabilities.

    .. math:: \bar v_k = \sum_n p_{n,k} v_{n,k} \big/ \sum_n p_{n,k}

    Parameters
    ----------
    probs, values : Tensor ``(..., N, K)``

    Returns
    -------
    Tensor ``(..., K)``
    """
    total = probs.sum(-2).clamp_min(torch.finfo(probs.dtype).tiny)
    return (probs * values).sum(-2) / total


def working_floats_per_draw_origin(n_regimes: int, n_experts: int, n_targets: int = 1) -> int:
    r"""Float64 values one draw holds per origin while its chunk is evaluated.

    .. math:: 12 K M + 8 K^2 + 16 K + 4 M d_y + 32

    An upper bound, with margin, of what :func:`evaluate_posterior` and
    :func:`summarize_posterior` allocate at their peak for the mixture itself: the
    ``(N, K, M)`` weights, densities and moments and their temporaries, the
    ``(N, K, K)`` transitions of the forward-backward and Viterbi scans, the ``(N, K)``
    regime tensors and the experts' parameters (measured by
    ``benchmarks/memory_scale.py``). Activations inside neural trunks are not counted.
    """
    K, M = n_regimes, n_experts
    return 12 * K * M + 8 * K * K + 16 * K + 4 * M * n_targets + 32


def draws_per_chunk(
    n_origins: int,
    n_regimes: int,
    n_experts: int,
    n_targets: int = 1,
    *,
    memory_budget_mib: float = DEFAULT_MEMORY_BUDGET_MIB,
) -> int:
    r"""Draws evaluated together so that one chunk's working memory fits the budget.

    .. math:: \max\Big(1, \Big\lfloor \frac{2^{20} B}{8 N f} \Big\rfloor\Big)

    with ``B`` the budget in MiB and ``f`` :func:`working_floats_per_draw_origin`. At
    least one draw is evaluated at a time, so a budget below one draw's need is
    exceeded by that draw. The peak of an evaluation is then the budget plus what is
    kept (:class:`PosteriorSummary`), whatever the number of draws.
    """
    if not memory_budget_mib > 0:
        raise ValueError(f"memory_budget_mib must be positive, got {memory_budget_mib}")
    per_draw = (
        8 * max(1, n_origins) * working_floats_per_draw_origin(n_regimes, n_experts, n_targets)
    )
    return max(1, int(memory_budget_mib * 2**20 // per_draw))


def thinned_draws(n_draws: int, keep_draws: int | None) -> torch.Tensor:
    """Indices of ``keep_draws`` evenly spaced draws out of ``n_draws`` (None: all).

    The draws of SVI's guide are independent, so any subset is a smaller sample of
    the same posterior; evenly spaced indices make the choice deterministic. Returns
    a LongTensor ``(min(keep_draws, n_draws),)``, increasing.
    """
    if keep_draws is not None and (isinstance(keep_draws, bool) or keep_draws < 1):
        raise ValueError(f"keep_draws must be a positive integer or None (all), got {keep_draws}")
    if keep_draws is None or keep_draws >= n_draws:
        return torch.arange(n_draws)
    if keep_draws == 1:
        return torch.zeros(1, dtype=torch.long)
    return torch.linspace(0, n_draws - 1, keep_draws, dtype=torch.float64).round().long()


def _n_draws(draws: dict) -> int:
    return next(iter(draws.values())).shape[0]


def evaluation_threads(num_threads: int | None) -> int:
    """Threads that evaluate chunks of draws side by side: ``num_threads``, or torch's count.

    ``None`` takes ``torch.get_num_threads()`` at the call (the cores torch would use;
    1 in a process that set it to 1, such as a benchmark worker).
    """
    threads = torch.get_num_threads() if num_threads is None else num_threads
    if isinstance(threads, bool) or int(threads) != threads or threads < 1:
        raise ValueError(f"num_threads must be a positive integer or None, got {num_threads}")
    return int(threads)


def _for_each_chunk(
    program, draws, data, reduce, combine, *, memory_budget_mib, num_threads, with_energy=False
):
    """Evaluate the draws in chunks: ``reduce`` each chunk, ``combine`` the results in order.

    ``reduce(ids, chunk)`` runs where the chunk was evaluated and returns what is kept
    of it (``ids``, a LongTensor, are the chunk's draw indices, ``chunk`` the dict of
    :func:`_evaluate_chunk`; nothing else of a chunk outlives it);
    ``combine(ids, reduced)`` runs in the calling thread, chunk after chunk in draw
    order, so that running sums do not depend on which thread finished first. With
    ``T = evaluation_threads(num_threads) > 1`` up to ``T`` chunks are evaluated at
    once, each in its own thread with one torch intra-op thread (torch operations and
    the compiled kernels release the GIL; Pyro's effect handlers, which are global,
    run under a lock); chunks are sized for ``memory_budget_mib / T`` (at most
    :data:`CHUNK_CAP_MIB`) and to give every thread work. The result equals the
    one-thread evaluation to rounding.
    ``with_energy`` adds the energy of every origin to each chunk (``chunk["energy"]``,
    :class:`~bayes_moe.models.energy.EnergyParts`; always there with energy gating).
    """
    n_draws = _n_draws(draws)
    threads = evaluation_threads(num_threads)
    size = draws_per_chunk(
        data.inputs.n_origins,
        program.gate.n_regimes,
        len(program.experts),
        data.response.shape[-1],
        memory_budget_mib=min(memory_budget_mib / threads, CHUNK_CAP_MIB),
    )
    size = max(1, min(size, math.ceil(n_draws / threads)))
    starts = range(0, n_draws, size)
    pyro_lock = threading.Lock()

    def work(start: int) -> tuple[torch.Tensor, object]:
        ids = torch.arange(start, min(start + size, n_draws))
        chunk_draws = {k: v[start : start + size] for k, v in draws.items()}
        with torch.no_grad():  # grad mode is per thread
            # No name holds the chunk: it is freed once reduced.
            return ids, reduce(
                ids, _evaluate_chunk(program, chunk_draws, data, pyro_lock, with_energy)
            )

    # disable=None: a bar on a terminal, silence in logs and captured output.
    bar = tqdm(total=len(starts), desc="posterior draws", unit="chunk", disable=None, leave=False)

    def finish(ids, reduced) -> None:
        combine(ids, reduced)
        bar.update()

    # The chunks' memory goes back to the system once, at the end: trimmed after each
    # chunk, the next one's arrays would be paged in afresh (slow on virtual machines).
    with torch_threads(1), bar, _release_when_done():
        if threads == 1:
            for start in starts:
                finish(*work(start))
            return
        with ThreadPoolExecutor(threads, thread_name_prefix="posterior") as pool:
            pending: deque = deque()
            for start in starts:
                pending.append(pool.submit(work, start))
                if len(pending) > threads:
                    finish(*pending.popleft().result())
            while pending:
                finish(*pending.popleft().result())


@contextlib.contextmanager
def _release_when_done():
    """Hand freed memory back to the system on leaving (:func:`release_free_memory`)."""
    try:
        yield
    finally:
        release_free_memory()


def seeded_predictive(chunk: dict, rows, draw_ids, n_obs: int) -> torch.Tensor:
    """One sample of every observed day's causal predictive for some draws of a chunk.

    Draw ``s`` is sampled with its own generator seeded ``PREDICTIVE_SEED + s``, so
    the sample of a draw does not depend on how the draws were chunked, and the global
    torch RNG is not used.

    Parameters
    ----------
    chunk : dict
        From :func:`_evaluate_chunk`.
    rows : sequence of int
        Rows of the chunk to sample.
    draw_ids : sequence of int
        Their indices among all draws.
    n_obs : int

    Returns
    -------
    Tensor ``(len(rows), n_obs, d_y)``
    """
    rows = torch.as_tensor(list(rows), dtype=torch.long)
    generators = [torch.Generator().manual_seed(PREDICTIVE_SEED + int(d)) for d in draw_ids]
    pick = (rows, slice(0, n_obs))
    return sample_mixture(
        chunk["log_mix_weights"][pick],
        chunk["log_regime_scale"][rows],
        [index_batch(d, pick) for d in chunk["experts"]],
        generators,
    )


class _DrawArrays:
    """Arrays ``(S, ...)`` filled chunk by chunk, possibly from several threads.

    The first chunk of a name allocates it; each chunk writes its own rows (disjoint
    slices), so no chunk is copied twice and no concatenation follows.
    """

    def __init__(self, n_draws: int):
        self.n_draws = n_draws
        self.arrays: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()

    def write(self, name: str, ids: torch.Tensor, value: torch.Tensor) -> None:
        """Put ``value`` ``(len(ids), ...)`` at rows ``ids`` (consecutive) of ``name``."""
        with self._lock:
            if name not in self.arrays:
                self.arrays[name] = value.new_empty((self.n_draws,) + value.shape[1:])
            out = self.arrays[name]
        out[int(ids[0]) : int(ids[-1]) + 1] = value


def evaluate_posterior(
    program: MoEProgram,
    draws: dict,
    data: ModelData,
    *,
    memory_budget_mib: float = DEFAULT_MEMORY_BUDGET_MIB,
    num_threads: int | None = None,
) -> PosteriorEvaluation:
    """Every per-draw quantity over all origins (:class:`PosteriorEvaluation`).

    The draws are evaluated in chunks sized by ``memory_budget_mib``
    (:func:`draws_per_chunk`), but the result keeps every draw and origin, about
    ``8 S N (K M + 3 K + 4)`` bytes plus the experts' parameters: use it for
    inspection of small fits. :func:`summarize_posterior` keeps per-day summaries
    instead, in memory that does not grow with ``S`` per day.
    """
    S = _n_draws(draws)
    full = _DrawArrays(S)
    experts = []

    def into_place(ids, chunk):  # in the worker: its rows of every draw-indexed array
        chunk["posterior_predictive"] = seeded_predictive(
            chunk, range(len(ids)), ids, data.n_observed
        )
        for name in PosteriorEvaluation.__dataclass_fields__:
            if name != "experts":
                full.write(name, ids, chunk[name])
        return chunk["experts"]

    _for_each_chunk(
        program,
        draws,
        data,
        into_place,
        lambda ids, chunk_experts: experts.append(chunk_experts),
        memory_budget_mib=memory_budget_mib,
        num_threads=num_threads,
    )
    fields: dict[str, Any] = dict(full.arrays, experts=cat_experts(experts))
    return PosteriorEvaluation(**fields)


def evaluate_origins(
    program: MoEProgram,
    draws: dict,
    data: ModelData,
    origins: torch.Tensor,
    *,
    memory_budget_mib: float = DEFAULT_MEMORY_BUDGET_MIB,
    num_threads: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list]:
    """The causal predictive of every draw at some origins only.

    Parameters
    ----------
    origins : LongTensor ``(n,)``
        Origin positions (0..N-1).

    Returns
    -------
    log_mix_weights : Tensor ``(S, n, K, M)``
    log_regime_scale : Tensor ``(S, K)``
    experts : list of Distribution, batch ``(S, n)``
        What :class:`~bayes_moe.inference.predictive.PredictiveMixture` takes; the
        working memory is bounded as in :func:`evaluate_posterior`, the result holds
        ``S n K M`` weights.
    """
    weights: list[torch.Tensor]
    scales: list[torch.Tensor]
    experts: list[list]
    weights, scales, experts = [], [], []

    def at_origins(ids, chunk):
        pick = (slice(None), origins)
        return (
            chunk["log_mix_weights"][:, origins],
            chunk["log_regime_scale"],
            [index_batch(d, pick) for d in chunk["experts"]],
        )

    def keep(ids, reduced):
        for parts, part in zip((weights, scales, experts), reduced):
            parts.append(part)

    _for_each_chunk(
        program,
        draws,
        data,
        at_origins,
        keep,
        memory_budget_mib=memory_budget_mib,
        num_threads=num_threads,
    )
    return torch.cat(weights), torch.cat(scales), cat_experts(experts)


@dataclass(frozen=True)
class EnergyDraws:
    r"""The energy of every origin for every draw (:mod:`bayes_moe.models.energy`).

    Attributes
    ----------
    predictive : Tensor ``(S, N)``
        Entropy of the untilted causal predictive of the first target (standardized
        units, nats).
    regime : Tensor ``(S, N)``
        Entropy of the causal regime probabilities :math:`P(z_n \mid \mathcal F_n)`.
    heavy_weight : Tensor ``(S, N)``
        Weight of the experts of the highest capacity class in the mixture in the
        causal predictive (tilted, with energy gating), :math:`\sum_k \sum_{m:
        c_m = \max c} P(z_n = k \mid \mathcal F_n)\, g'_{n,k,m}`.
    evaluated : Tensor ``(N, M)``
        Share of the draws for which expert ``m`` was evaluated at origin ``n``: 1
        everywhere without sparse inference (:func:`wake_experts`, decided per chunk
        of draws).
    """

    predictive: torch.Tensor
    regime: torch.Tensor
    heavy_weight: torch.Tensor
    evaluated: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        """:math:`E_n`, ``(S, N)``."""
        return self.predictive + self.regime


def evaluate_energy(
    program: MoEProgram,
    draws: dict,
    data: ModelData,
    *,
    memory_budget_mib: float = DEFAULT_MEMORY_BUDGET_MIB,
    num_threads: int | None = None,
) -> EnergyDraws:
    """The energy of every origin and the weight of the heavy experts, every draw.

    Chunks of draws as :func:`evaluate_posterior`; the energy is that of the light
    experts' untilted mixture whether or not the program tilts by it.
    """
    capacity = torch.tensor(program.capacity)
    heavy = capacity == capacity.max()
    parts: list[tuple[torch.Tensor, ...]] = []

    def reduce(ids, chunk):
        energy = chunk["energy"]
        weight = chunk["log_mix_weights"].exp()[..., heavy].sum((-1, -2))  # (s, N)
        N, M = chunk["log_mix_weights"].shape[1], len(capacity)
        awake = chunk["awake"] if chunk["awake"] is not None else torch.ones(N, M)
        evaluated = awake.to(weight.dtype).expand(len(ids), N, M)  # per draw, to average
        return energy.predictive.clone(), energy.regime.clone(), weight, evaluated

    _for_each_chunk(
        program,
        draws,
        data,
        reduce,
        lambda ids, reduced: parts.append(reduced),
        memory_budget_mib=memory_budget_mib,
        num_threads=num_threads,
        with_energy=True,
    )
    predictive, regime, weight, evaluated = (torch.cat(part) for part in zip(*parts))
    return EnergyDraws(predictive, regime, weight, evaluated.mean(0))


@dataclass(frozen=True)
class PosteriorSummary:
    r"""What a fit needs from its draws, kept in memory that is linear in ``N`` and ``S``.

    Per-day quantities are reduced over the draws chunk by chunk (exactly: running
    sums and Chan's update of the variance), so only the pointwise log-likelihood and
    ``k`` kept draws are stored per draw and day. Shapes: ``S`` draws, ``N_obs``
    observed days, ``k`` kept draws, ``n_t`` tail origins; standardized units, regimes
    relabelled calm to turbulent as in :class:`PosteriorEvaluation`.

    Attributes
    ----------
    regime_order, transition, log_trans_last, log_regime_scale, regime_expert_weights, \
regime_volatility, regime_mean, regime_duration
        Per draw, as in :class:`PosteriorEvaluation` (``(S, K)``, ``(S, K, K)``, ``(S, K, M)``).
    last_log_filtered : Tensor ``(S, K)``
        log p(z | y_{1:N_obs}) on the last observed day.
    share_of_days : Tensor ``(S, K)``
        Per draw, the share of observed days on which each regime has the largest
        filtered probability.
    log_predictive_density : Tensor ``(S, N_obs)``
        log p(y_n | F_n, theta_s), every draw: LOO and WAIC need all of them. The one
        per-draw, per-day array kept in full (``8 S N_obs`` bytes).
    filtered_mean, filtered_sd, smoothed_mean, smoothed_sd : Tensor ``(N_obs, K)``
        Mean and standard deviation (``ddof=0``) over all draws of the filtered and
        smoothed regime probabilities.
    viterbi_share : Tensor ``(N_obs, K)``
        Share of draws whose Viterbi path is in regime ``k`` on the day.
    predictive_mean, predictive_sd : Tensor ``(N_obs, d_y)``
        Mean and standard deviation of each day's one-step posterior predictive
        (mixture over draws, regimes and experts; law of total variance).
    pit : Tensor ``(N_obs,)``
        That predictive's CDF at the realized value of the first target (the PIT).
    kept_draws : LongTensor ``(k,)``
        Indices of the kept draws (:func:`thinned_draws`).
    filtered_draws, smoothed_draws : Tensor ``(k, N_obs, K)``
        Regime probabilities of the kept draws.
    viterbi_draws : LongTensor ``(k, N_obs)``
    posterior_predictive : Tensor ``(k, N_obs, d_y)``
        One sample of each day's predictive per kept draw (:func:`seeded_predictive`).
    tail_start : int
        First origin of the tail, ``max(0, N - tail_origins)``.
    tail_log_mix_weights : Tensor ``(S, n_t, K, M)``
        The causal predictive's mixture weights at the last ``n_t`` origins, every draw.
    tail_experts : list of Distribution
        Each expert's predictive at the tail origins, batch ``(S, n_t)``.
    """

    regime_order: torch.Tensor
    transition: torch.Tensor
    log_trans_last: torch.Tensor
    log_regime_scale: torch.Tensor
    regime_expert_weights: torch.Tensor
    regime_volatility: torch.Tensor
    regime_mean: torch.Tensor
    regime_duration: torch.Tensor
    last_log_filtered: torch.Tensor
    share_of_days: torch.Tensor
    log_predictive_density: torch.Tensor
    filtered_mean: torch.Tensor
    filtered_sd: torch.Tensor
    smoothed_mean: torch.Tensor
    smoothed_sd: torch.Tensor
    viterbi_share: torch.Tensor
    predictive_mean: torch.Tensor
    predictive_sd: torch.Tensor
    pit: torch.Tensor
    kept_draws: torch.Tensor
    filtered_draws: torch.Tensor
    smoothed_draws: torch.Tensor
    viterbi_draws: torch.Tensor
    posterior_predictive: torch.Tensor
    tail_start: int
    tail_log_mix_weights: torch.Tensor
    tail_experts: list

    @property
    def n_draws(self) -> int:
        """``S``."""
        return self.transition.shape[0]


#: Per-draw entries of a chunk that :class:`PosteriorSummary` keeps as they are.
PER_DRAW = (
    "regime_order",
    "transition",
    "log_trans_last",
    "log_regime_scale",
    "regime_expert_weights",
    "regime_volatility",
    "regime_mean",
    "regime_duration",
)


class RunningMoments:
    """Mean and variance over draws, updated chunk by chunk (Chan et al. 1979).

    ``update(x)`` takes a chunk ``(s, ...)``; :attr:`mean` and :attr:`sd` (``ddof=0``)
    equal those of all chunks stacked, to rounding.
    """

    def __init__(self):
        self.count = 0
        self.mean = None
        self._m2 = None

    def update(self, x: torch.Tensor) -> None:
        """Add the draws ``x`` ``(s, ...)``."""
        n = x.shape[0]
        mean = x.mean(0)
        m2 = (x - mean).square().sum(0)
        if self.count == 0:
            self.count, self.mean, self._m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self._m2 = self._m2 + m2 + delta.square() * (self.count * n / total)
        self.count = total

    @property
    def sd(self) -> torch.Tensor:
        """Standard deviation over the draws seen (``ddof=0``)."""
        return (self._m2 / self.count).sqrt()


class _Summarizer:
    """Reduces the chunks of :func:`_for_each_chunk` to a :class:`PosteriorSummary`."""

    def __init__(self, n_draws: int, data: ModelData, kept: torch.Tensor, tail_origins: int):
        self.data = data
        self.n_draws = n_draws
        self.kept = kept
        n_origins = data.inputs.n_origins
        self.tail = torch.arange(max(0, n_origins - tail_origins), n_origins)
        self.per_draw: dict[str, list[torch.Tensor]] = {
            name: [] for name in PER_DRAW + ("last_log_filtered", "share_of_days")
        }
        self.log_density: torch.Tensor | None = None
        self.moments = {name: RunningMoments() for name in ("filtered", "smoothed")}
        self.sums: dict[str, torch.Tensor] = {}
        self.kept_parts: dict[str, list[torch.Tensor]] = {
            name: [] for name in ("filtered", "smoothed", "viterbi", "predictive")
        }
        self.tail_weights: list[torch.Tensor]
        self.tail_experts: list[list]
        self.tail_weights, self.tail_experts = [], []

    def reduce(self, ids: torch.Tensor, chunk: dict) -> dict:
        """What is kept of a chunk: per-draw values, sums over its draws, kept draws."""
        n_obs = self.data.n_observed
        # Copies: a view would keep the chunk's (s, N, ...) tensor alive.
        per_draw = {name: chunk[name].clone() for name in PER_DRAW}
        filtered = chunk["log_filtered"].exp()  # (s, N_obs, K)
        smoothed = chunk["log_smoothed"].exp()
        K = filtered.shape[-1]
        per_draw["last_log_filtered"] = chunk["log_filtered"][:, -1].clone()
        per_draw["share_of_days"] = nn_one_hot(filtered.argmax(-1), K).mean(1)
        log_mix = chunk["log_mix_weights"][:, :n_obs]
        experts = [index_batch(d, (slice(None), slice(0, n_obs))) for d in chunk["experts"]]
        mean, second = mixture_moments(log_mix, chunk["log_regime_scale"], experts)
        realized = self.data.observed_response[:, 0]
        cdf = mixture_cdf(log_mix, chunk["log_regime_scale"], experts, realized)
        rows = torch.nonzero(torch.isin(ids, self.kept)).flatten()
        kept = {}
        if len(rows):
            kept = {
                "filtered": filtered[rows],
                "smoothed": smoothed[rows],
                "viterbi": chunk["viterbi"][rows],
                "predictive": seeded_predictive(chunk, rows, ids[rows], n_obs),
            }
        pick = (slice(None), self.tail)
        return {
            "per_draw": per_draw,
            "log_density": chunk["log_predictive_density"],
            "moments": {"filtered": filtered, "smoothed": smoothed},
            "sums": {
                "viterbi": nn_one_hot(chunk["viterbi"], K).sum(0),
                "mean": mean.sum(0),
                "second": second.sum(0),
                "cdf": cdf.sum(0),
            },
            "kept": kept,
            "tail_weights": chunk["log_mix_weights"][:, self.tail],
            "tail_experts": [index_batch(d, pick) for d in chunk["experts"]],
        }

    def combine(self, ids: torch.Tensor, reduced: dict) -> None:
        """Add a reduced chunk (chunks in draw order)."""
        for name, value in reduced["per_draw"].items():
            self.per_draw[name].append(value)
        if self.log_density is None:
            self.log_density = reduced["log_density"].new_empty(self.n_draws, self.data.n_observed)
        self.log_density[ids] = reduced["log_density"]
        for name, value in reduced["moments"].items():
            self.moments[name].update(value)
        for name, value in reduced["sums"].items():
            self._add(name, value)
        for name, value in reduced["kept"].items():
            self.kept_parts[name].append(value)
        self.tail_weights.append(reduced["tail_weights"])
        self.tail_experts.append(reduced["tail_experts"])

    def _add(self, name: str, value: torch.Tensor) -> None:
        self.sums[name] = value if name not in self.sums else self.sums[name] + value

    def result(self) -> PosteriorSummary:
        S = self.n_draws
        mean = self.sums["mean"] / S
        variance = (self.sums["second"] / S - mean.square()).clamp_min(0.0)
        return PosteriorSummary(
            **{name: torch.cat(parts) for name, parts in self.per_draw.items()},
            log_predictive_density=cast(torch.Tensor, self.log_density),  # set by combine
            filtered_mean=self.moments["filtered"].mean,
            filtered_sd=self.moments["filtered"].sd,
            smoothed_mean=self.moments["smoothed"].mean,
            smoothed_sd=self.moments["smoothed"].sd,
            viterbi_share=self.sums["viterbi"] / S,
            predictive_mean=mean,
            predictive_sd=variance.sqrt(),
            pit=(self.sums["cdf"] / S).clamp(0.0, 1.0),
            kept_draws=self.kept,
            filtered_draws=torch.cat(self.kept_parts["filtered"]),
            smoothed_draws=torch.cat(self.kept_parts["smoothed"]),
            viterbi_draws=torch.cat(self.kept_parts["viterbi"]),
            posterior_predictive=torch.cat(self.kept_parts["predictive"]),
            tail_start=int(self.tail[0]),
            tail_log_mix_weights=torch.cat(self.tail_weights),
            tail_experts=cat_experts(self.tail_experts),
        )


def nn_one_hot(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``labels`` ``(...)`` as float64 one-hot vectors ``(..., n_classes)``."""
    return torch.nn.functional.one_hot(labels, n_classes).to(torch.float64)


def summarize_posterior(
    program: MoEProgram,
    draws: dict,
    data: ModelData,
    *,
    keep_draws: int | None = DEFAULT_KEEP_DRAWS,
    tail_origins: int = TAIL_ORIGINS,
    memory_budget_mib: float = DEFAULT_MEMORY_BUDGET_MIB,
    num_threads: int | None = None,
) -> PosteriorSummary:
    """Evaluate the draws in chunks and keep per-day summaries (:class:`PosteriorSummary`).

    Memory: the chunks' working memory is bounded by ``memory_budget_mib``
    (:func:`draws_per_chunk`) whatever the number of draws ``S``; what is kept is
    ``8 S N_obs`` bytes of log-likelihood, ``8 k N_obs (2 K + 2 + d_y)`` of kept draws,
    ``8 N_obs (5 K + 2 d_y + 1)`` of summaries and ``8 S n_t K M`` of tail weights.

    Parameters
    ----------
    program : MoEProgram
    draws : dict of str to Tensor ``(S, ...)``
    data : ModelData
    keep_draws : int or None
        Draws whose per-day regime probabilities, Viterbi paths and predictive samples
        are kept (:func:`thinned_draws`; None: all).
    tail_origins : int
        Trailing origins whose predictive is kept for every draw (forecasts and recent
        fan charts need no second pass).
    memory_budget_mib : float
        Bound on the working memory of one chunk, MiB.
    num_threads : int or None
        Threads that evaluate chunks of draws side by side (:func:`_for_each_chunk`,
        each with one torch intra-op thread); None: ``torch.get_num_threads()``.
    """
    S = _n_draws(draws)
    if tail_origins < 1:
        raise ValueError(f"tail_origins must be >= 1, got {tail_origins}")
    summarizer = _Summarizer(S, data, thinned_draws(S, keep_draws), tail_origins)
    _for_each_chunk(
        program,
        draws,
        data,
        summarizer.reduce,
        summarizer.combine,
        memory_budget_mib=memory_budget_mib,
        num_threads=num_threads,
    )
    return summarizer.result()


def cat_experts(chunks: list[list]) -> list:
    """Join per-chunk lists of expert distributions along the draw dimension."""
    return [cat_batch(list(per_expert), dim=0) for per_expert in zip(*chunks)]


def _evaluate_chunk(
    program: MoEProgram,
    draws: dict,
    data: ModelData,
    pyro_lock: threading.Lock | None = None,
    with_energy: bool = False,
) -> dict:
    inputs = data.inputs
    n_obs, h = data.n_observed, inputs.horizon
    response = torch.nan_to_num(data.response, nan=0.0)  # unobserved rows are padding
    threshold = None if program.energy is None else program.energy.sparse
    light = program.light
    sleepers = (
        [] if threshold is None else [m for m in range(len(program.experts)) if m not in light]
    )
    with pyro_lock or contextlib.nullcontext():  # Pyro's handler stack is global
        comps = conditioned_components(program, draws, inputs, skip=sleepers)
    S = next(iter(draws.values())).shape[0]
    K = program.gate.n_regimes
    gate = comps.gate
    log_w = gate.log_weights.expand(S, *gate.log_weights.shape[-3:])
    log_init = gate.log_init.expand(S, K)
    N = inputs.n_origins
    log_trans = gate.log_trans.expand(S, K, K)
    # Transition into each origin's regime, (S, N, K, K): time-varying or repeated.
    step_trans = gate.hmm_trans.expand(S, N, K, K) if gate.time_varying else log_trans[:, None]
    log_scale = gate.log_scale.expand(S, K)

    def log_probs(experts):  # (S, N, K, len(experts))
        return torch.stack([regime_log_prob(d, response, log_scale) for d in experts], dim=-1)

    energy = awake = None
    if program.energy is not None or with_energy:  # the light experts' energy, first
        light_log_p = log_probs([comps.experts[m] for m in light])
        energy = program.energy_parts(comps, light_log_p, inputs)
        log_w = program.tilted_weights(comps, energy).expand_as(log_w)
    if sleepers:
        # sleepers only with a sparse energy: threshold and energy are set
        assert energy is not None and threshold is not None
        experts, log_w, awake = wake_experts(
            program,
            draws,
            inputs,
            comps.experts,
            log_w,
            energy.log_causal_regime,
            threshold,
            pyro_lock,
        )
        comps = dataclasses.replace(comps, experts=experts)
    moments = [mean_and_variance(d) for d in comps.experts]
    means = torch.stack([m[..., 0] for m, _ in moments], dim=-1)
    variances = torch.stack([v[..., 0] for _, v in moments], dim=-1)
    log_p = log_probs(comps.experts)  # (S, N, K, M)
    regime_mu, regime_var, log_emit = regime_mixture(
        log_w, log_p, means, variances, log_scale, n_obs
    )

    # Labels: by volatility level where the gate has levels (ordered by construction,
    # so this keeps the sampled order), else by the mean predictive sd over all days.
    if program.gate.volatility_levels:
        order = log_scale.argsort(dim=-1)
    else:
        order = regime_var[:, :n_obs].sqrt().mean(dim=1).argsort(dim=-1)
    if not bool((order == torch.arange(K)).all()):  # the levels' order needs no copies
        log_w = torch.take_along_dim(log_w, order[:, None, :, None], dim=2)
        log_p = torch.take_along_dim(log_p, order[:, None, :, None], dim=2)
        log_init = torch.take_along_dim(log_init, order, dim=1)
        log_trans = relabel_matrices(log_trans, order)
        step_trans = relabel_matrices(step_trans, order)
        log_scale = torch.take_along_dim(log_scale, order, dim=1)
        regime_mu = torch.take_along_dim(regime_mu, order[:, None, :], dim=2)
        regime_var = torch.take_along_dim(regime_var, order[:, None, :], dim=2)
        log_emit = torch.take_along_dim(log_emit, order[:, None, :], dim=2)

    timed = {"time_varying": gate.time_varying}
    # Contiguous once, so that the smoother and Viterbi read it without copies.
    hmm_trans = step_trans[:, :n_obs].contiguous() if gate.time_varying else log_trans
    smoothed = hmm_smoother(log_init, hmm_trans, log_emit, **timed)
    path, _ = hmm_viterbi(log_init, hmm_trans, log_emit, **timed)
    occupancy = smoothed.log_smoothed.exp()  # (S, N_obs, K)

    # Causal regime probabilities at every origin (module docstring).
    log_causal = causal_regime(
        log_init, smoothed.log_filtered, step_trans, h, smoothed.log_predicted
    )
    log_mix, log_density = causal_mixture(log_causal, log_w, log_p, n_obs)  # (S, N, K, M)

    return {
        "regime_order": order,
        "transition": log_trans.exp(),
        "log_trans_last": step_trans[:, -1],
        "log_filtered": smoothed.log_filtered,
        "log_smoothed": smoothed.log_smoothed,
        "viterbi": path,
        "log_causal_regime": log_causal,
        "log_mix_weights": log_mix,
        "log_regime_scale": log_scale,
        "regime_expert_weights": log_w[:, :n_obs].exp().mean(dim=1),
        "regime_volatility": occupancy_average(occupancy, regime_var[:, :n_obs]).sqrt(),
        "regime_mean": occupancy_average(occupancy, regime_mu[:, :n_obs]),
        "regime_duration": occupancy_average(occupancy, expected_stay(hmm_trans))
        if gate.time_varying
        else expected_stay(log_trans),
        "log_predictive_density": log_density,
        "experts": comps.experts,
        "energy": energy,
        "awake": awake,
    }
