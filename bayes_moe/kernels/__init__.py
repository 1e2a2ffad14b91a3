"""Kernels: pure tensor functions at the bottom of the package.

The HMM recursions (log evidence, filter, smoother, Viterbi, propagation, the causal
regime probabilities, the stationary distribution: :mod:`~bayes_moe.kernels.hmm`,
with its compiled sequential route and its numpy reference), the Kalman filter
(:mod:`~bayes_moe.kernels.kalman`), associative scans and linear recurrences
(:mod:`~bayes_moe.kernels.scan`), the GARCH variance recursion
(:mod:`~bayes_moe.kernels.garch`), the entropies of predictive mixtures and regime
distributions (:mod:`~bayes_moe.kernels.entropy`), the compiled mixture kernels and
the choice between parallel and sequential routes (:mod:`~bayes_moe.kernels.dispatch`).

They import nothing from the rest of ``bayes_moe``; the models (``bayes_moe.models``)
and the inference layer (``bayes_moe.inference``) both build on them, and a test
(``tests/test_layers.py``) keeps the imports running one way.
"""
