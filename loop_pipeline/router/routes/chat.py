"""``POST /v1/chat/completions``: OpenAI-compatible, ``stream`` true or false.

Every response (errors past validation included) carries ``x-loop-trace-id`` and ``x-loop-route``;
a local answer also ``x-loop-confidence``. Requests are refused with 503 (and no work done) while
the trace queue is full, so that no trace is ever dropped.

A plain Starlette route, not a FastAPI path operation: the handler reads and validates the body
itself, so FastAPI's dependency solving and response serialization would be per-request CPU for
nothing. The app's error handlers apply all the same.
"""

from __future__ import annotations

from typing import Callable, Mapping

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from loop_pipeline.router.chat_request import parse_chat_call, read_json_body
from loop_pipeline.router.errors import overloaded
from loop_pipeline.router.service import route_headers

PATH = "/v1/chat/completions"
router = APIRouter()


class FinishedAfterSending(Response):
    """A JSON answer whose exchange is finished (metrics, trace) once it has been sent, in a
    ``finally``: the client does not wait for the bookkeeping, and neither a client gone nor a
    cancellation can skip the trace."""

    def __init__(self, body: bytes, headers: Mapping[str, str], finish: Callable[[], None]):
        super().__init__(body, media_type="application/json", headers=headers)
        self._finish = finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._finish()


async def chat_completions(request: Request) -> Response:
    state = request.app.state.router
    state.keys.check(request.headers.get("authorization"))
    if not state.traces.has_room():
        raise overloaded("The router's trace queue is full; retry shortly.")
    body = await read_json_body(request, state.settings.max_body_bytes)
    call = parse_chat_call(body, request.headers)
    if call.stream:
        exchange, chunks = await state.service.stream(call)
        return StreamingResponse(chunks, media_type="text/event-stream", headers=route_headers(exchange))
    exchange, payload = await state.service.complete(call)
    return FinishedAfterSending(payload, route_headers(exchange), lambda: state.service.finish_answered(exchange))


router.add_route(PATH, chat_completions, methods=["POST"])
