"""Evaluation: scoring rules, backtests, baselines, calibration, sweeps."""

from bayes_moe.evaluation.sweeps import sweep

__all__ = ["sweep"]
