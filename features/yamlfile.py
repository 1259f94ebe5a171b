"""Reading the YAML files leadscore is configured with (contract, config, policy, mappings)."""

from __future__ import annotations

from typing import Any

import yaml


def read_yaml_mapping(text: str, source: str, error: type[Exception], *, empty_ok: bool = False) -> dict[str, Any]:
    """Parse ``text`` as a YAML mapping, raising ``error`` with ``source`` in the message.

    Args:
        text: the YAML document.
        source: what to call it in errors (usually the file path).
        error: the exception type the caller's users expect (ContractError, ConfigError, ...).
        empty_ok: an empty document is an empty mapping instead of an error.
    """
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {exc}") from exc
    if raw is None and empty_ok:
        return {}
    if not isinstance(raw, dict):
        raise error(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw
