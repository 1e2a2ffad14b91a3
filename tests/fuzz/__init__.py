"""Hypothesis fuzzers of the input boundary: frames, files, checkpoints, continuation.

Small example counts by default; ``pytest -m fuzz --hypothesis-profile=long`` runs them
long (see tests/conftest.py and the README's Development section).
"""
