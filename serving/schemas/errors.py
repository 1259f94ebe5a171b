"""The one error body every non-2xx response has (never a stack trace or the rejected values)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_FORBID = ConfigDict(extra="forbid")


class FieldError(BaseModel):
    """One invalid input field."""

    model_config = _FORBID

    field: str = Field(description="Dotted path of the field, e.g. items.0.inline.created_at.")
    message: str


ErrorCode = Literal[
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "validation_error",
    "payload_too_large",
    "not_ready",
    "internal_error",
    "overloaded",
    "rate_limited",
]


class ErrorBody(BaseModel):
    model_config = _FORBID

    code: ErrorCode
    message: str
    fields: list[FieldError] = Field(default_factory=list)
    request_id: str | None = Field(default=None, description="Quote it when reporting a problem.")


class ErrorResponse(BaseModel):
    """Every error response has this shape; it never contains a stack trace or the rejected values."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "validation_error",
                        "message": "the request is invalid",
                        "fields": [
                            {"field": "items.0.inline.created_at", "message": "Input should have timezone info"}
                        ],
                        "request_id": "b7a1c2d3",
                    }
                },
                {"error": {"code": "unauthorized", "message": "missing or malformed bearer token", "fields": []}},
            ]
        },
    )

    error: ErrorBody


def field_path(loc: Sequence[str | int]) -> str:
    """Dotted field path from a pydantic/FastAPI error location (the leading ``body``/``query`` is dropped)."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or "(request)"


def validation_error_response(errors: Sequence[Mapping[str, Any]], request_id: str | None = None) -> ErrorResponse:
    """A 422 body from pydantic/FastAPI ``errors()``: field paths and messages, never the rejected input."""
    fields = [FieldError(field=field_path(e.get("loc", ())), message=str(e.get("msg", "invalid"))) for e in errors]
    return ErrorResponse(
        error=ErrorBody(code="validation_error", message="the request is invalid", fields=fields, request_id=request_id)
    )


def error_response(code: ErrorCode, message: str, request_id: str | None = None) -> ErrorResponse:
    """An error body for non-validation errors."""
    return ErrorResponse(error=ErrorBody(code=code, message=message, request_id=request_id))
