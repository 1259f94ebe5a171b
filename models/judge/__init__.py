"""Judging models: evaluation metrics, the leakage probe, evaluation plots (and promotion guardrails)."""
