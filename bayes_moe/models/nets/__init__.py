"""Deterministic sequence trunks of the neural experts (pure ``torch.nn``, no Pyro).

Every trunk maps a window batch ``(N, L, c)`` to hidden states ``(N, L, E)`` and is
causal: the state at step ``t`` reads inputs ``<= t`` only. The window experts
(:mod:`bayes_moe.models.experts.window`) put a Bayesian head on the last state.
"""
