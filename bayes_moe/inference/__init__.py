"""Inference: SVI, posterior evaluation, regimes, predictive, ArviZ, checkpoints, kernels."""
