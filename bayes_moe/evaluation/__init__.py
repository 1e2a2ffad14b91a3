"""Evaluation: scoring rules, backtests, baselines, calibration."""
