"""Errors the way the OpenAI API shapes them, so the ``openai`` client raises its usual exceptions::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "messages", "code": "..."}}

A :class:`RouterError` raised anywhere under a route becomes such a response (see ``app.py``);
``rejection`` names the bad-input counter it adds to in ``/metrics`` (None: not a rejection).
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


class RouterError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        rejection: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.rejection = rejection
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self, extra_headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers={**self.headers, **(extra_headers or {})})


def bad_request(message: str, *, param: str | None = None, code: str, rejection: str) -> RouterError:
    return RouterError(400, message, param=param, code=code, rejection=rejection)


def unauthorized(message: str) -> RouterError:
    return RouterError(
        401, message, code="invalid_api_key", rejection="unauthorized", headers={"www-authenticate": "Bearer"}
    )


def frontier_unavailable(detail: str) -> RouterError:
    """The frontier failed: the request cannot be answered (its trace still records why)."""
    return RouterError(502, f"the frontier model is unavailable: {detail}", kind="api_error", code="frontier_unavailable")


def overloaded(message: str) -> RouterError:
    return RouterError(503, message, kind="server_error", code="overloaded", rejection="overloaded", headers={"retry-after": "1"})
