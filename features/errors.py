"""Errors shared across features/ (kept apart so that reading, writing and the contract can all raise them)."""

from __future__ import annotations


class ContractError(ValueError):
    """A data directory or its contract does not satisfy the data contract."""
