"""Inference: SVI, posterior evaluation, regimes, predictive, ArviZ, checkpoints.

Above the models: it fits and evaluates a :class:`~bayes_moe.models.moe.BayesianMoE`
with the kernels of :mod:`bayes_moe.kernels`.
"""
