"""API errors as data: one JSON shape (OpenAI's `{"error": {...}}`) for every non-2xx answer.

OpenAI clients read `error.message`, so a served model's errors surface in them unchanged; FastAPI's
validation `detail` list is kept beside it for tools that expect it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorInfo(BaseModel):
    message: str = Field(..., description="What is wrong, naming the field.")
    type: str = Field(..., description="invalid_request_error | authentication_error | engine_error | ...")
    param: str | None = Field(None, description="The request field at fault, e.g. 'texts[3]'.")
    code: str | None = Field(None, description="Machine-readable reason, e.g. 'unknown_task'.")


class ErrorBody(BaseModel):
    """Body of every 4xx/5xx answer."""

    error: ErrorInfo
    detail: list[dict[str, Any]] | None = Field(None, description="FastAPI validation errors (422 only).")


class ApiError(Exception):
    """Raised by routes and helpers; rendered as `ErrorBody` with `status` by the app's handler."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None):  # noqa: A002 - OpenAI's name
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ("invalid_request_error" if status < 500 else "engine_error")
        self.headers = headers

    def body(self) -> ErrorBody:
        return ErrorBody(error=ErrorInfo(message=self.message, type=self.type, param=self.param, code=self.code))


def clip(text: str, limit: int = 80) -> str:
    """User input quoted in an error, cut to `limit` characters: a 1 MB name must not make a 1 MB answer."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """('body', 'texts', 3) -> 'texts[3]': the field as the client wrote it."""
    out = ""
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"
