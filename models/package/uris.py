"""Showing store URIs safely: a password in a URI never reaches a message or a log line."""

from __future__ import annotations

import re


def redact_uri(uri: str) -> str:
    """``uri`` with a password, if any, replaced by ``***``."""
    return re.sub(r"(//[^:/@]+:)[^@/]*@", r"\1***@", uri)
