"""Tests for the HMM kernels (both routes: parallel scan and compiled sequential
recursion) and their sequential numpy references.

Every oracle test runs against every dispatch route (``method="parallel"`` and
``method="sequential"``; ``"auto"`` picks one of the two). Oracles, in order of
appearance: brute-force enumeration of all K^T regime paths, Pyro's
``DiscreteHMM.log_prob``, the textbook example of Wikipedia's "Viterbi algorithm"
page, the sequential numpy references (for long series), finite differences
(``gradcheck``), numpy matrix powers and eigenvectors, and the closed-form stationary
distribution of a two-state chain.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bayes_moe.kernels.hmm import (
    HMMFilterResult,
    HMMSmootherResult,
    choose_method,
    hmm_filter,
    hmm_log_evidence,
    hmm_propagate,
    hmm_smoother,
    hmm_viterbi,
    log_matmul_exp,
    stationary_distribution,
)
from bayes_moe.kernels.hmm_reference import (
    reference_filter,
    reference_smoother,
    reference_viterbi,
)

# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def random_hmm(seed: int, num_steps: int, num_states: int, emit_scale: float = 2.0):
    """Random float64 HMM parameters in log space: (log_init, log_trans, log_emit)."""
    rng = np.random.default_rng(seed)
    log_init = np.log(rng.dirichlet(np.ones(num_states)))
    log_trans = np.log(rng.dirichlet(np.ones(num_states), size=num_states))
    log_emit = emit_scale * rng.standard_normal((num_steps, num_states)) - 1.0
    return log_init, log_trans, log_emit


def sample_gaussian_hmm(seed: int, num_steps: int):
    """A sticky 3-regime Gaussian HMM simulated for ``num_steps``; returns log params."""
    rng = np.random.default_rng(seed)
    trans = np.array([[0.98, 0.015, 0.005], [0.02, 0.97, 0.01], [0.01, 0.04, 0.95]])
    init = np.array([0.5, 0.3, 0.2])
    loc, scale = np.array([-1.0, 0.0, 1.5]), np.array([0.5, 1.0, 2.0])
    states = np.empty(num_steps, dtype=np.int64)
    states[0] = rng.choice(3, p=init)
    uniforms = rng.random(num_steps)
    cumulative = trans.cumsum(axis=1)
    for t in range(1, num_steps):
        states[t] = min(np.searchsorted(cumulative[states[t - 1]], uniforms[t]), 2)
    y = loc[states] + scale[states] * rng.standard_normal(num_steps)
    log_emit = (
        -0.5 * ((y[:, None] - loc) / scale) ** 2 - np.log(scale) - 0.5 * math.log(2 * math.pi)
    )
    return np.log(init), np.log(trans), log_emit


def np_logsumexp(x: np.ndarray, axis=None) -> np.ndarray:
    """Log-sum-exp that returns -inf (silently) for an all -inf slice."""
    shift = np.max(x, axis=axis, keepdims=True)
    shift = np.where(np.isfinite(shift), shift, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(x - shift), axis=axis, keepdims=True)) + shift
    return np.squeeze(out, axis=axis) if axis is not None else out.reshape(())


def enumerate_paths(log_init, log_trans, log_emit):
    """All K^T paths and their log joint densities log p(z_{1:T}, y_{1:T}).

    ``log_trans`` is (K, K), or (T, K, K) with entry t leading into step t.
    """
    num_steps, num_states = log_emit.shape
    steps = np.broadcast_to(log_trans, (num_steps, num_states, num_states))
    paths = np.array(list(itertools.product(range(num_states), repeat=num_steps)))
    log_joint = log_init[paths[:, 0]] + log_emit[np.arange(num_steps), paths].sum(axis=1)
    into = np.arange(1, num_steps)
    log_joint = log_joint + steps[into, paths[:, :-1], paths[:, 1:]].sum(axis=1)
    return paths, log_joint


def brute_force(log_init, log_trans, log_emit):
    """Every quantity the kernels compute, by summing or maximizing over all paths."""
    num_steps, num_states = log_emit.shape
    paths, log_joint = enumerate_paths(log_init, log_trans, log_emit)
    log_evidence = np_logsumexp(log_joint)

    def marginal_of_last(emit):
        sub_trans = log_trans if log_trans.ndim == 2 else log_trans[: len(emit)]
        sub_paths, sub_joint = enumerate_paths(log_init, sub_trans, emit)
        last = sub_paths[:, -1]
        log_marg = np.array([np_logsumexp(sub_joint[last == k]) for k in range(num_states)])
        return log_marg - np_logsumexp(log_marg), np_logsumexp(sub_joint)

    filtered, predicted, prefix_evidence = [], [], []
    for t in range(num_steps):
        log_filt, ev = marginal_of_last(log_emit[: t + 1])
        # p(z_t | y_{1:t-1}): the same enumeration with y_t made uninformative.
        uninformative = log_emit[: t + 1].copy()
        uninformative[t] = 0.0
        log_pred, _ = marginal_of_last(uninformative)
        filtered.append(log_filt)
        predicted.append(log_pred)
        prefix_evidence.append(ev)
    increments = np.diff(np.array(prefix_evidence), prepend=0.0)
    smoothed = np.array(
        [
            [np_logsumexp(log_joint[paths[:, t] == k]) for k in range(num_states)]
            for t in range(num_steps)
        ]
    )
    best = int(np.argmax(log_joint))
    return {
        "log_filtered": np.array(filtered),
        "log_predicted": np.array(predicted),
        "log_evidence_increments": increments,
        "log_evidence": log_evidence,
        "log_smoothed": smoothed - log_evidence,
        "path": paths[best],
        "log_max": log_joint[best],
    }


ROUTES = ("parallel", "sequential")


def routed(fn, method: str):
    """Wrap a torch kernel so that it takes and returns numpy, like the references.

    A (T, K, K) ``log_trans`` is passed on as time-varying, as the references read it.
    """

    def wrapped(log_init, log_trans, log_emit):
        args = (torch.as_tensor(a) for a in (log_init, log_trans, log_emit))
        out = fn(*args, time_varying=np.ndim(log_trans) == 3, method=method)
        return type(out)(*(np.asarray(x.detach()) for x in out))

    return wrapped


IMPLEMENTATIONS = {
    route: tuple(routed(fn, route) for fn in (hmm_filter, hmm_smoother, hmm_viterbi))
    for route in ROUTES
}
IMPLEMENTATIONS["reference"] = (reference_filter, reference_smoother, reference_viterbi)


def assert_log_probs_close(actual, expected, atol=1e-10):
    """Compare log probabilities in probability space (so -inf entries compare as 0)."""
    np.testing.assert_allclose(np.exp(actual), np.exp(expected), rtol=0, atol=atol)


# --------------------------------------------------------------------------------------
# Oracle: brute-force enumeration of all K^T paths
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("implementation", sorted(IMPLEMENTATIONS))
@settings(max_examples=25, deadline=None)
@given(
    num_steps=st.integers(1, 6),
    num_states=st.integers(2, 3),
    seed=st.integers(0, 2**32 - 1),
    emit_scale=st.sampled_from([0.5, 3.0, 20.0]),
)
def test_matches_brute_force_enumeration(implementation, num_steps, num_states, seed, emit_scale):
    params = random_hmm(seed, num_steps, num_states, emit_scale)
    oracle = brute_force(*params)  # sums / maxima over all K^T paths
    filter_fn, smoother_fn, viterbi_fn = IMPLEMENTATIONS[implementation]

    filtered = filter_fn(*params)
    assert isinstance(filtered, HMMFilterResult)
    for name in ("log_filtered", "log_predicted"):
        assert_log_probs_close(getattr(filtered, name), oracle[name])
    np.testing.assert_allclose(
        filtered.log_evidence_increments, oracle["log_evidence_increments"], atol=1e-10
    )
    np.testing.assert_allclose(filtered.log_evidence, oracle["log_evidence"], atol=1e-10)

    smoothed = smoother_fn(*params)
    assert isinstance(smoothed, HMMSmootherResult)
    assert_log_probs_close(smoothed.log_smoothed, oracle["log_smoothed"])
    np.testing.assert_allclose(smoothed.log_evidence, oracle["log_evidence"], atol=1e-10)

    path, log_max = viterbi_fn(*params)
    np.testing.assert_array_equal(path, oracle["path"])
    np.testing.assert_allclose(log_max, oracle["log_max"], atol=1e-10)

    if implementation in ROUTES:
        args = (torch.as_tensor(p) for p in params)
        evidence = hmm_log_evidence(*args, method=implementation)
        np.testing.assert_allclose(evidence.item(), oracle["log_evidence"], atol=1e-10)


@pytest.mark.parametrize("implementation", sorted(IMPLEMENTATIONS))
@settings(max_examples=20, deadline=None)
@given(
    num_steps=st.integers(1, 6),
    num_states=st.integers(2, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_time_varying_transitions_match_brute_force_enumeration(
    implementation, num_steps, num_states, seed
):
    # An input-output HMM: a different transition matrix into every step. Oracle: full
    # enumeration with p(z_{1:T}) = p(z_1) prod_t P^(t)[z_{t-1}, z_t].
    log_init, _, log_emit = random_hmm(seed, num_steps, num_states, 3.0)
    rng = np.random.default_rng(seed + 1)
    log_trans = np.log(rng.dirichlet(np.ones(num_states), size=(num_steps, num_states)))
    oracle = brute_force(log_init, log_trans, log_emit)
    filter_fn, smoother_fn, viterbi_fn = IMPLEMENTATIONS[implementation]
    filtered = filter_fn(log_init, log_trans, log_emit)
    for name in ("log_filtered", "log_predicted"):
        assert_log_probs_close(getattr(filtered, name), oracle[name])
    np.testing.assert_allclose(filtered.log_evidence, oracle["log_evidence"], atol=1e-10)
    assert_log_probs_close(
        smoother_fn(log_init, log_trans, log_emit).log_smoothed, oracle["log_smoothed"]
    )
    path, log_max = viterbi_fn(log_init, log_trans, log_emit)
    np.testing.assert_array_equal(path, oracle["path"])
    np.testing.assert_allclose(log_max, oracle["log_max"], atol=1e-10)
    if implementation in ROUTES:
        args = (torch.as_tensor(a) for a in (log_init, log_trans, log_emit))
        evidence = hmm_log_evidence(*args, time_varying=True, method=implementation)
        np.testing.assert_allclose(evidence.item(), oracle["log_evidence"], atol=1e-10)


@pytest.mark.parametrize("method", ROUTES)
def test_time_varying_with_equal_matrices_equals_homogeneous_batched(method):
    # The same matrix at every step must reproduce the homogeneous kernels exactly,
    # with batch dimensions (draws) broadcast against a time-varying log_trans.
    log_init, log_trans, log_emit = (torch.as_tensor(a) for a in random_hmm(5, 40, 3))
    batch_trans = torch.stack([log_trans, log_trans.flip(-1)])  # (2, K, K)
    varying = batch_trans.unsqueeze(1).expand(2, 40, 3, 3)
    for fn in (hmm_filter, hmm_smoother):
        homogeneous, timed = (
            fn(log_init, batch_trans, log_emit, method=method),
            fn(log_init, varying, log_emit, time_varying=True, method=method),
        )
        for a, b in zip(homogeneous, timed):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        hmm_log_evidence(log_init, batch_trans, log_emit, method=method),
        hmm_log_evidence(log_init, varying, log_emit, time_varying=True, method=method),
    )
    assert torch.equal(
        hmm_viterbi(log_init, batch_trans, log_emit, method=method).path,
        hmm_viterbi(log_init, varying, log_emit, time_varying=True, method=method).path,
    )
    with pytest.raises(ValueError, match=r"\(\.\.\., T, K, K\)"):
        hmm_filter(log_init, batch_trans, log_emit, time_varying=True)


def test_structural_zeros_match_brute_force_with_finite_gradients():
    # A left-to-right chain (0 -> 1 -> 2, absorbing) has -inf transition entries and
    # states that are unreachable early on; the oracle is again full enumeration.
    trans = np.array([[0.6, 0.4, 0.0], [0.0, 0.7, 0.3], [0.0, 0.0, 1.0]])
    with np.errstate(divide="ignore"):
        log_init, log_trans = np.log([1.0, 0.0, 0.0]), np.log(trans)
    log_emit = np.random.default_rng(3).standard_normal((5, 3))
    oracle = brute_force(log_init, log_trans, log_emit)

    args = [torch.tensor(a, requires_grad=True) for a in (log_init, log_trans, log_emit)]
    result = hmm_smoother(*args)
    assert_log_probs_close(result.log_filtered.detach().numpy(), oracle["log_filtered"])
    assert_log_probs_close(result.log_smoothed.detach().numpy(), oracle["log_smoothed"])
    path, log_max = hmm_viterbi(*args)
    np.testing.assert_array_equal(path.numpy(), oracle["path"])
    np.testing.assert_allclose(log_max.item(), oracle["log_max"], atol=1e-10)

    evidence = hmm_log_evidence(*args)
    np.testing.assert_allclose(evidence.item(), oracle["log_evidence"], atol=1e-10)
    evidence.backward()
    for arg in args:
        assert torch.isfinite(arg.grad).all()
    # d log p(y) / d log_emit[t, k] = p(z_t = k | y_{1:T}), zero where unreachable.
    np.testing.assert_allclose(args[2].grad.numpy(), np.exp(oracle["log_smoothed"]), atol=1e-10)

    # The sequential route (no gradients) gives the same answers with the -inf entries.
    plain = [a.detach() for a in args]
    result = hmm_smoother(*plain, method="sequential")
    assert_log_probs_close(result.log_filtered.numpy(), oracle["log_filtered"])
    assert_log_probs_close(result.log_smoothed.numpy(), oracle["log_smoothed"])
    np.testing.assert_allclose(result.log_evidence.item(), oracle["log_evidence"], atol=1e-10)
    np.testing.assert_array_equal(hmm_viterbi(*plain, method="sequential").path, oracle["path"])


# --------------------------------------------------------------------------------------
# Oracle: Pyro's DiscreteHMM
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ROUTES)
@pytest.mark.parametrize("batch_shape", [(), (4,)])
def test_log_evidence_matches_pyro_discrete_hmm(batch_shape, method):
    # Pyro's initial_logits describe the state *before* the first transition, so our
    # log_init (the first step's state) is that distribution propagated one step.
    torch.manual_seed(0)
    num_steps, num_states = 50, 3
    pyro_init = torch.randn(batch_shape + (num_states,), dtype=torch.float64).log_softmax(-1)
    log_trans = torch.randn(batch_shape + (num_states, num_states), dtype=torch.float64)
    log_trans = log_trans.log_softmax(-1)
    loc = torch.randn(batch_shape + (1, num_states), dtype=torch.float64)
    scale = torch.rand(batch_shape + (1, num_states), dtype=torch.float64) + 0.3
    y = torch.randn(num_steps, dtype=torch.float64)

    # Pyro reads dim -3 of transition_logits as time, so a homogeneous chain with batch
    # dims needs a singleton time dim there.
    pyro_hmm = dist.DiscreteHMM(pyro_init, log_trans.unsqueeze(-3), dist.Normal(loc, scale))
    expected = pyro_hmm.log_prob(y)
    assert expected.shape == batch_shape

    log_init = hmm_propagate(pyro_init, log_trans, 1)
    log_emit = dist.Normal(loc, scale).log_prob(y[:, None])  # (..., T, K)
    assert log_emit.shape == batch_shape + (num_steps, num_states)
    evidence = hmm_log_evidence(log_init, log_trans, log_emit, method=method)
    torch.testing.assert_close(evidence, expected)
    filtered = hmm_filter(log_init, log_trans, log_emit, method=method)
    torch.testing.assert_close(filtered.log_evidence, expected)


# --------------------------------------------------------------------------------------
# Oracle: the textbook Viterbi example
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", [*ROUTES, "reference"])
def test_viterbi_wikipedia_example(method):
    # Wikipedia, "Viterbi algorithm", Example: states (Healthy, Fever), observations
    # (normal, cold, dizzy); start 0.6 / 0.4; the most likely path for the observations
    # normal, cold, dizzy is Healthy, Healthy, Fever with probability 0.01512.
    start = np.array([0.6, 0.4])
    trans = np.array([[0.7, 0.3], [0.4, 0.6]])
    emit = np.array([[0.5, 0.4, 0.1], [0.1, 0.3, 0.6]])  # rows: Healthy, Fever
    observations = [0, 1, 2]  # normal, cold, dizzy
    log_emit = np.log(emit[:, observations].T)  # (T, K)
    path, log_max = IMPLEMENTATIONS[method][2](np.log(start), np.log(trans), log_emit)
    np.testing.assert_array_equal(np.asarray(path), [0, 0, 1])  # Healthy, Healthy, Fever
    np.testing.assert_allclose(math.exp(float(log_max)), 0.01512, rtol=1e-12)


# --------------------------------------------------------------------------------------
# Invariants and batching
# --------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    num_steps=st.integers(1, 80),
    num_states=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
@pytest.mark.parametrize("method", ROUTES)
def test_posterior_invariants(method, num_steps, num_states, seed):
    params = [torch.as_tensor(p) for p in random_hmm(seed, num_steps, num_states)]
    result = hmm_smoother(*params, method=method)
    ones = torch.ones(num_steps, dtype=torch.float64)
    # Filtered, predicted and smoothed distributions are normalized.
    for name in ("log_filtered", "log_predicted", "log_smoothed"):
        torch.testing.assert_close(getattr(result, name).exp().sum(-1), ones)
    # The smoother has no future data at the last step: smoothed_T = filtered_T.
    torch.testing.assert_close(result.log_smoothed[-1].exp(), result.log_filtered[-1].exp())
    torch.testing.assert_close(result.log_predicted[0], params[0])
    # Prediction error decomposition: the increments add up to the evidence.
    torch.testing.assert_close(result.log_evidence_increments.sum(), result.log_evidence)
    torch.testing.assert_close(hmm_log_evidence(*params, method=method), result.log_evidence)
    # The Viterbi score is the largest joint density, so it is below the evidence.
    assert hmm_viterbi(*params, method=method).log_max <= result.log_evidence + 1e-12


@pytest.mark.parametrize(
    ("init_batch", "trans_batch", "emit_batch"),
    [
        ((), (), (5,)),  # posterior draws of the emissions, shared chain
        ((5,), (5,), ()),  # posterior draws of the chain, one emission sequence
        ((2, 1), (3,), (1, 3)),  # two batch dims, broadcast from all three
    ],
)
@pytest.mark.parametrize("method", ROUTES)
def test_batch_dims_broadcast_and_match_unbatched(init_batch, trans_batch, emit_batch, method):
    num_steps, num_states = 37, 3
    gen = torch.Generator().manual_seed(1)
    log_init = torch.randn(init_batch + (num_states,), generator=gen, dtype=torch.float64)
    log_trans = torch.randn(
        trans_batch + (num_states, num_states), generator=gen, dtype=torch.float64
    )
    log_emit = torch.randn(emit_batch + (num_steps, num_states), generator=gen).double()
    log_init, log_trans = log_init.log_softmax(-1), log_trans.log_softmax(-1)
    batch_shape = torch.broadcast_shapes(init_batch, trans_batch, emit_batch)

    smoothed = hmm_smoother(log_init, log_trans, log_emit, method=method)
    path, log_max = hmm_viterbi(log_init, log_trans, log_emit, method=method)
    evidence = hmm_log_evidence(log_init, log_trans, log_emit, method=method)
    assert smoothed.log_smoothed.shape == batch_shape + (num_steps, num_states)
    assert smoothed.log_evidence_increments.shape == batch_shape + (num_steps,)
    assert path.shape == batch_shape + (num_steps,) and path.dtype == torch.int64
    assert log_max.shape == evidence.shape == batch_shape

    init_b = log_init.expand(batch_shape + (num_states,))
    trans_b = log_trans.expand(batch_shape + (num_states, num_states))
    emit_b = log_emit.expand(batch_shape + (num_steps, num_states))
    for index in itertools.product(*(range(n) for n in batch_shape)):
        single = hmm_smoother(init_b[index], trans_b[index], emit_b[index], method=method)
        for batched, unbatched in zip(smoothed, single, strict=True):
            torch.testing.assert_close(batched[index], unbatched)
        single_path, single_max = hmm_viterbi(
            init_b[index], trans_b[index], emit_b[index], method=method
        )
        torch.testing.assert_close(path[index], single_path)
        torch.testing.assert_close(log_max[index], single_max)
        torch.testing.assert_close(evidence[index], single.log_evidence)


# --------------------------------------------------------------------------------------
# Long series: the sequential reference as oracle
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_series():
    """A simulated 100,000-step Gaussian HMM and the sequential reference's answers."""
    params = sample_gaussian_hmm(seed=7, num_steps=100_000)
    return params, reference_smoother(*params), reference_viterbi(*params)


@pytest.mark.parametrize("method", ROUTES)
def test_long_series_matches_reference(long_series, method):
    params, expected, (expected_path, expected_max) = long_series
    torch_params = [torch.as_tensor(p) for p in params]
    result = hmm_smoother(*torch_params, method=method)
    assert all(torch.isfinite(x).all() for x in result)
    np.testing.assert_allclose(result.log_evidence.item(), expected.log_evidence, rtol=1e-6)
    np.testing.assert_allclose(
        hmm_log_evidence(*torch_params, method=method).item(), expected.log_evidence, rtol=1e-6
    )
    for name in ("log_filtered", "log_predicted", "log_smoothed"):
        assert_log_probs_close(getattr(result, name).numpy(), getattr(expected, name), atol=1e-8)
    np.testing.assert_allclose(
        result.log_evidence_increments.numpy(), expected.log_evidence_increments, atol=1e-8
    )

    path, log_max = hmm_viterbi(*torch_params, method=method)
    np.testing.assert_array_equal(path.numpy(), expected_path)
    np.testing.assert_allclose(log_max.item(), expected_max, rtol=1e-10)


@pytest.mark.parametrize("method", ROUTES)
def test_float32_long_series_keeps_float32_accuracy(long_series, method):
    # float32 keeps the dtype, stays finite over 100,000 steps and agrees with the
    # float64 reference to float32 accuracy: probabilities differ by ~5e-7 and the
    # evidence (about -1.3e5 here) by ~5e-8 relative when this was written.
    params, expected, (expected_path, _) = long_series
    params32 = [torch.as_tensor(p, dtype=torch.float32) for p in params]
    result = hmm_smoother(*params32, method=method)
    assert all(x.dtype == torch.float32 and torch.isfinite(x).all() for x in result)
    for name in ("log_filtered", "log_smoothed"):
        assert_log_probs_close(
            getattr(result, name).double().numpy(), getattr(expected, name), atol=1e-5
        )
    evidence = hmm_log_evidence(*params32, method=method)
    assert evidence.dtype == torch.float32
    np.testing.assert_allclose(evidence.item(), expected.log_evidence, rtol=1e-6)
    np.testing.assert_allclose(result.log_evidence.item(), expected.log_evidence, rtol=1e-6)
    path32 = hmm_viterbi(*params32, method=method).path
    np.testing.assert_array_equal(path32.numpy(), expected_path)


# --------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ROUTES)
@pytest.mark.parametrize("num_steps", [1, 6, 1_000])
def test_evidence_gradient_is_smoothed_posterior(num_steps, method):
    # Identity: d log p(y_{1:T}) / d log p(y_t | z_t = k) = p(z_t = k | y_{1:T}).
    # Oracle: brute-force enumeration for T <= 6, the sequential reference otherwise.
    params = random_hmm(seed=num_steps, num_steps=num_steps, num_states=3)
    if num_steps <= 6:
        expected = np.exp(brute_force(*params)["log_smoothed"])
    else:
        expected = np.exp(reference_smoother(*params).log_smoothed)
    log_init, log_trans = torch.as_tensor(params[0]), torch.as_tensor(params[1])
    log_emit = torch.tensor(params[2], requires_grad=True)
    evidence_fns = (
        lambda *a: hmm_log_evidence(*a, method=method),
        lambda *a: hmm_filter(*a, method="parallel").log_evidence,
    )
    for evidence_fn in evidence_fns:
        (grad,) = torch.autograd.grad(evidence_fn(log_init, log_trans, log_emit), log_emit)
        np.testing.assert_allclose(grad.numpy(), expected, atol=1e-10)


def test_gradcheck_against_finite_differences():
    params = [torch.tensor(p, requires_grad=True) for p in random_hmm(5, 5, 3)]
    for method in ROUTES:
        evidence = functools.partial(hmm_log_evidence, method=method)
        assert torch.autograd.gradcheck(evidence, params)
    assert torch.autograd.gradcheck(lambda *a: hmm_smoother(*a).log_smoothed, params)
    assert torch.autograd.gradcheck(lambda *a: hmm_viterbi(*a).log_max, params)


# --------------------------------------------------------------------------------------
# log_matmul_exp, hmm_propagate, stationary_distribution
# --------------------------------------------------------------------------------------


def test_log_matmul_exp_matches_matmul_and_survives_extreme_magnitudes():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(4, 2, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(log_matmul_exp(a, b), (a.exp() @ b.exp()).log())
    # exp(-1000) underflows in float64, and so does every term of a max-shifted matmul
    # here; the exact answer is log(2 exp(-1000)) = -1000 + log 2.
    a = torch.tensor([[0.0, -1000.0]], dtype=torch.float64)
    b = torch.tensor([[-1000.0], [0.0]], dtype=torch.float64)
    torch.testing.assert_close(
        log_matmul_exp(a, b), torch.tensor([[-1000.0 + math.log(2.0)]]).double()
    )
    # An all -inf sum gives -inf with a zero (not nan) gradient.
    a = torch.tensor([[-math.inf, 0.0]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([[0.0], [-math.inf]], dtype=torch.float64)
    out = log_matmul_exp(a, b)
    assert out.item() == -math.inf
    (grad,) = torch.autograd.grad(out.sum(), a)
    assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("steps", [0, 1, 2, 5, 37])
def test_propagate_matches_matrix_power(steps):
    # Oracle: p P^h with numpy's matrix_power.
    _, log_trans, _ = random_hmm(seed=steps, num_steps=1, num_states=4)
    probs = np.random.default_rng(steps).dirichlet(np.ones(4), size=2)  # batch of 2
    expected = probs @ np.linalg.matrix_power(np.exp(log_trans), steps)
    out = hmm_propagate(torch.as_tensor(np.log(probs)), torch.as_tensor(log_trans), steps)
    np.testing.assert_allclose(out.exp().numpy(), expected, rtol=1e-12)


def test_propagate_converges_to_stationary_distribution_and_rejects_negative_steps():
    log_trans = torch.as_tensor(random_hmm(seed=9, num_steps=1, num_states=3)[1])
    start = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).log()
    far = hmm_propagate(start, log_trans, 10_000).exp()
    torch.testing.assert_close(far, stationary_distribution(log_trans.exp()))
    with pytest.raises(ValueError, match="non-negative"):
        hmm_propagate(start, log_trans, -1)


def test_stationary_distribution_is_invariant_and_matches_eigenvector():
    rng = np.random.default_rng(4)
    trans = torch.as_tensor(rng.dirichlet(np.ones(4), size=(6, 4)))  # batch of 6 chains
    pi = stationary_distribution(trans)
    assert pi.shape == (6, 4)
    torch.testing.assert_close(pi.sum(-1), torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close((pi.unsqueeze(-2) @ trans).squeeze(-2), pi)  # pi P = pi
    assert (pi > 0).all()
    # Oracle: the left eigenvector of P for eigenvalue 1 (numpy.linalg.eig), normalized.
    for chain, stationary in zip(trans.numpy(), pi.numpy(), strict=True):
        values, vectors = np.linalg.eig(chain.T)
        vector = np.real(vectors[:, np.argmin(np.abs(values - 1.0))])
        np.testing.assert_allclose(stationary, vector / vector.sum(), rtol=1e-10)


def test_stationary_distribution_two_state_closed_form_and_gradient():
    # Closed form: P = [[1 - p, p], [q, 1 - q]] has pi = (q, p) / (p + q).
    p, q = 0.1, 0.3
    trans = torch.tensor([[1 - p, p], [q, 1 - q]], dtype=torch.float64, requires_grad=True)
    pi = stationary_distribution(trans)
    torch.testing.assert_close(pi, torch.tensor([q, p], dtype=torch.float64) / (p + q))
    assert torch.autograd.gradcheck(stationary_distribution, (trans,))


@pytest.mark.parametrize("method", ROUTES)
def test_invalid_shapes_raise(method):
    log_init, log_trans, log_emit = (torch.as_tensor(p) for p in random_hmm(0, 4, 3))
    with pytest.raises(ValueError, match="log_trans"):
        hmm_filter(log_init, log_trans[:2], log_emit, method=method)
    with pytest.raises(ValueError, match="log_init"):
        hmm_smoother(log_init[:2], log_trans, log_emit, method=method)
    with pytest.raises(ValueError, match="T = 0"):
        hmm_log_evidence(log_init, log_trans, log_emit[:0], method=method)
    with pytest.raises(ValueError, match="log_emit"):
        hmm_viterbi(log_init, log_trans, log_emit[0], method=method)


@pytest.mark.parametrize("method", ROUTES)
@pytest.mark.parametrize("steps_given", ["T - 1", "T"])
def test_per_step_transitions_without_the_flag_are_refused(method, steps_given):
    # (T - 1, K, K) or (T, K, K) matrices with one emission sequence would broadcast as
    # that many separate chains: an error naming time_varying, in every kernel. With
    # the flag (T, K, K) is read as transitions into each step; with log_emit given the
    # same batch dimension it is a batch of chains, as before.
    num_steps, num_states = 12, 3
    log_init, _, log_emit = (torch.as_tensor(p) for p in random_hmm(3, num_steps, num_states))
    gen = torch.Generator().manual_seed(3)
    n = num_steps - 1 if steps_given == "T - 1" else num_steps
    log_trans = torch.randn(n, num_states, num_states, generator=gen).double().log_softmax(-1)
    for kernel in (hmm_log_evidence, hmm_filter, hmm_smoother, hmm_viterbi):
        with pytest.raises(ValueError, match="pass time_varying=True"):
            kernel(log_init, log_trans, log_emit, method=method)
    chains = hmm_log_evidence(log_init, log_trans, log_emit.expand(n, -1, -1), method=method)
    assert chains.shape == (n,)
    if n == num_steps:
        timed = hmm_log_evidence(log_init, log_trans, log_emit, time_varying=True, method=method)
        assert timed.shape == ()


# --------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------


def test_auto_takes_the_sequential_route_unless_a_gradient_is_needed():
    log_init, log_trans, log_emit = (torch.as_tensor(p) for p in random_hmm(1, 30, 3))
    assert choose_method("auto", log_init, log_trans, log_emit) == "sequential"
    wanted = log_emit.clone().requires_grad_()
    # The filter and the smoother have gradients through the parallel scan only.
    assert choose_method("auto", log_init, log_trans, wanted) == "parallel"
    with torch.no_grad():
        assert choose_method("auto", log_init, log_trans, wanted) == "sequential"
    with pytest.raises(ValueError, match="gives no gradient here"):
        hmm_smoother(log_init, log_trans, wanted, method="sequential")
    smoothed = hmm_smoother(log_init, log_trans, wanted).log_smoothed.exp()
    assert smoothed.requires_grad
    # The log evidence has an exact sequential gradient: auto stays sequential.
    route = choose_method("auto", log_init, log_trans, wanted, sequential_gradient=True)
    assert route == "sequential"
    (grad,) = torch.autograd.grad(hmm_log_evidence(log_init, log_trans, wanted), wanted)
    torch.testing.assert_close(grad, smoothed.detach(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="method must be one of"):
        hmm_filter(log_init, log_trans, log_emit, method="fast")
    # The Viterbi path is discrete: the sequential route serves it, and log_max keeps
    # its gradient (taken through the returned path).
    path, log_max = hmm_viterbi(log_init, log_trans, wanted, method="sequential")
    (grad,) = torch.autograd.grad(log_max, wanted)
    torch.testing.assert_close(grad, torch.nn.functional.one_hot(path, 3).double())


@pytest.mark.parametrize("time_varying", [False, True])
@pytest.mark.parametrize(
    ("init_batch", "trans_batch", "emit_batch"),
    [((), (), (4,)), ((4,), (4,), ()), ((2, 1), (3,), (1, 3))],
)
def test_sequential_evidence_gradient_equals_the_parallel_one(
    time_varying, init_batch, trans_batch, emit_batch
):
    # Oracle: autograd through the parallel scan, for every input, with broadcast batch
    # dimensions (the sequential gradient must be summed back to each input's shape),
    # a time-varying chain, a structural zero and float32 inputs for one of them.
    gen = torch.Generator().manual_seed(5)
    num_steps = 200
    trans_event = (num_steps, 3, 3) if time_varying else (3, 3)
    log_init = torch.randn(init_batch + (3,), generator=gen, dtype=torch.float64)
    log_trans = torch.randn(trans_batch + trans_event, generator=gen, dtype=torch.float64)
    log_trans[..., 0, 2] = -math.inf  # 0 -> 2 impossible
    log_emit = 2 * torch.randn(emit_batch + (num_steps, 3), generator=gen, dtype=torch.float64)
    log_trans = log_trans.log_softmax(-1).float()
    params = [log_init.log_softmax(-1), log_trans, log_emit]
    grads = {}
    for method in ROUTES:
        args = [p.clone().requires_grad_() for p in params]
        evidence = hmm_log_evidence(*args, time_varying=time_varying, method=method)
        weights = torch.linspace(0.5, 1.5, evidence.numel(), dtype=evidence.dtype)
        (evidence * weights.reshape(evidence.shape)).sum().backward()
        grads[method] = [a.grad for a in args]
    for seq, par, arg in zip(grads["sequential"], grads["parallel"], params, strict=True):
        assert seq.shape == arg.shape and seq.dtype == arg.dtype
        tol = 1e-5 if arg.dtype == torch.float32 else 1e-10
        torch.testing.assert_close(seq, par, rtol=tol, atol=tol)


@pytest.mark.parametrize("time_varying", [False, True])
def test_routes_agree_on_batched_draws_of_a_long_series(time_varying):
    # 16 draws of a 3-regime chain over 5,000 steps, as the posterior evaluates them.
    gen = torch.Generator().manual_seed(11)
    draws, num_steps, num_states = 16, 5_000, 3
    log_init = torch.randn(draws, num_states, generator=gen, dtype=torch.float64)
    shape = (draws, num_steps, num_states, num_states) if time_varying else (draws, 3, 3)
    log_trans = torch.randn(shape, generator=gen, dtype=torch.float64) + 4 * torch.eye(3)
    log_emit = 3 * torch.randn(draws, num_steps, num_states, generator=gen, dtype=torch.float64)
    args = (log_init.log_softmax(-1), log_trans.log_softmax(-1), log_emit)
    parallel = hmm_smoother(*args, time_varying=time_varying, method="parallel")
    sequential = hmm_smoother(*args, time_varying=time_varying, method="sequential")
    for name in ("log_filtered", "log_predicted", "log_smoothed"):
        a, b = getattr(parallel, name), getattr(sequential, name)
        torch.testing.assert_close(a.exp(), b.exp(), rtol=0, atol=1e-10)
    torch.testing.assert_close(
        parallel.log_evidence_increments, sequential.log_evidence_increments, rtol=0, atol=1e-10
    )
    torch.testing.assert_close(parallel.log_evidence, sequential.log_evidence, rtol=1e-12, atol=0)
    paths = [hmm_viterbi(*args, time_varying=time_varying, method=m).path for m in ROUTES]
    assert torch.equal(*paths)
