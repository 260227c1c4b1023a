"""A local OpenAI-compatible stand-in for a paid API: it replays recorded outputs.

Tests and ``loop bench router`` point the router's frontier (or its OpenAI-compatible local backend)
at it instead of a paid model. ``create_replay_app`` answers ``/v1/chat/completions`` (``stream``
true and false, the SSE framing the ``openai`` client reads, usage counts, per-token logprobs on
request) and ``/v1/models``; the same routes answer without the ``/v1`` prefix, so a base URL with
or without it works. An answer is the recording keyed by :func:`replay_key` of the request's
messages, else ``default_output``. ``latency_ms`` (± ``latency_jitter_ms``, drawn per request from
its messages) is how long it waits before answering. ``fail`` turns it into a broken backend: ``"error"`` answers
HTTP 500, ``"timeout"`` sleeps past any client's timeout. The knobs live on ``app.state.replay``
(a :class:`ReplayState`), so a test can break or slow a running stand-in and see what it received.

``serve_in_thread`` runs any ASGI app under uvicorn on 127.0.0.1 in a background thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Mapping, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

FAIL_MODES = ("error", "timeout")
STAND_IN_MODEL = "frontier-stand-in"
# Longer than any client timeout used here; the server's graceful-shutdown timeout cancels it.
TIMEOUT_SLEEP_S = 3600.0
_PIECE = re.compile(r"\s*\S+|\s+")  # a word with the whitespace before it: what a "token" is here


def replay_key(messages: Sequence[Mapping[str, Any]]) -> str:
    """sha256 of the canonical JSON of the messages (role and content only, keys sorted)."""
    plain = [{"role": m.get("role"), "content": m.get("content")} for m in messages]
    canonical = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def split_tokens(text: str) -> list[str]:
    """The stand-in's tokens: words with their leading whitespace; joined back they give ``text``."""
    return _PIECE.findall(text)


def _count_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    # Roughly what a chat template costs: the words plus a few framing tokens per message.
    return sum(len(split_tokens(str(m.get("content") or ""))) + 4 for m in messages)


@dataclass
class ReplayState:
    """What the stand-in answers and how; mutable while it runs (tests flip ``fail`` or ``latency_ms``)."""

    recordings: dict[str, str]
    default_output: str
    latency_ms: float
    fail: str | None
    confidence: float  # exp(sum of the logprobs of an answer)
    model_ids: tuple[str, ...]
    latency_jitter_ms: float = 0.0
    received: deque = field(default_factory=lambda: deque(maxlen=10_000))  # request bodies, newest last
    answered: int = 0
    replayed: int = 0  # answers that came from a recording

    def answer(self, messages: Sequence[Mapping[str, Any]]) -> str:
        recorded = self.recordings.get(replay_key(messages))
        if recorded is not None:
            self.replayed += 1
            return recorded
        return self.default_output

    def delay_s(self, messages: Sequence[Mapping[str, Any]]) -> float:
        """How long this request waits: ``latency_ms`` ± ``latency_jitter_ms``, uniform, drawn from
        its replay key: different requests wait differently (their answers do not come back in
        lockstep), the same messages always wait the same (a request sent straight to the stand-in
        and the same one through the router meet the same backend)."""
        if not self.latency_jitter_ms:
            return self.latency_ms / 1000.0
        draw = int(replay_key(messages)[:13], 16) / float(1 << 52)  # uniform in [0, 1)
        return (self.latency_ms + self.latency_jitter_ms * (2.0 * draw - 1.0)) / 1000.0


def _check_settings(fail: str | None, latency_ms: float, confidence: float, latency_jitter_ms: float = 0.0) -> None:
    if fail is not None and fail not in FAIL_MODES:
        raise ValueError(f"fail must be one of {FAIL_MODES} or None, not {fail!r}")
    if latency_ms < 0:
        raise ValueError(f"latency_ms must be >= 0, not {latency_ms}")
    if not 0.0 <= latency_jitter_ms <= latency_ms:
        raise ValueError(f"latency_jitter_ms must be between 0 and latency_ms ({latency_ms}), not {latency_jitter_ms}")
    if not 0.0 < confidence <= 1.0:
        raise ValueError(f"confidence must be in (0, 1], not {confidence}")


def _error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


def _bad_request(body: Any) -> str | None:
    """Why a body is not a chat completion request this stand-in can answer, or None."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        return "every message must be an object with a 'role'"
    if body.get("n", 1) != 1:
        return "only n=1 is supported"
    return None


def _logprobs(pieces: Sequence[str], confidence: float) -> dict[str, Any]:
    each = math.log(confidence) / len(pieces) if pieces else 0.0
    return {
        "content": [
            {"token": piece, "logprob": each, "bytes": list(piece.encode("utf-8")), "top_logprobs": []} for piece in pieces
        ],
        "refusal": None,
    }


@dataclass(frozen=True)
class _Answer:
    """One decided answer: its pieces, why it stopped, and the figures every response carries."""

    completion_id: str
    created: int
    model: str
    pieces: list[str]
    finish_reason: str
    prompt_tokens: int
    want_logprobs: bool
    confidence: float

    @property
    def usage(self) -> dict[str, int]:
        completion = len(self.pieces)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion, "total_tokens": self.prompt_tokens + completion}


def _decide(state: ReplayState, body: dict[str, Any]) -> _Answer:
    pieces = split_tokens(state.answer(body["messages"]))
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    finish = "stop"
    if isinstance(limit, int) and 0 < limit < len(pieces):
        pieces, finish = pieces[:limit], "length"
    return _Answer(
        completion_id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=str(body.get("model") or state.model_ids[0]),
        pieces=pieces,
        finish_reason=finish,
        prompt_tokens=_count_tokens(body["messages"]),
        want_logprobs=bool(body.get("logprobs")),
        confidence=state.confidence,
    )


def _completion(answer: _Answer) -> dict[str, Any]:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": "".join(answer.pieces), "refusal": None},
        "logprobs": _logprobs(answer.pieces, answer.confidence) if answer.want_logprobs else None,
        "finish_reason": answer.finish_reason,
    }
    return {
        "id": answer.completion_id,
        "object": "chat.completion",
        "created": answer.created,
        "model": answer.model,
        "choices": [choice],
        "usage": answer.usage,
    }


def _chunks(answer: _Answer, include_usage: bool) -> Iterator[dict[str, Any]]:
    head = {"id": answer.completion_id, "object": "chat.completion.chunk", "created": answer.created, "model": answer.model}
    yield {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]}
    each = _logprobs(answer.pieces, answer.confidence)["content"] if answer.want_logprobs else None
    for i, piece in enumerate(answer.pieces):
        logprobs = {"content": [each[i]], "refusal": None} if each is not None else None
        yield {**head, "choices": [{"index": 0, "delta": {"content": piece}, "logprobs": logprobs, "finish_reason": None}]}
    yield {**head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": answer.finish_reason}]}
    if include_usage:
        yield {**head, "choices": [], "usage": answer.usage}


async def _sse(answer: _Answer, include_usage: bool) -> AsyncIterator[bytes]:
    for chunk in _chunks(answer, include_usage):
        yield f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n".encode("utf-8")
    yield b"data: [DONE]\n\n"


async def _chat_completions(request: Request) -> Response:
    state: ReplayState = request.app.state.replay
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        return _error(400, f"the body is not valid JSON: {exc}", "invalid_request_error")
    problem = _bad_request(body)
    if problem is not None:
        return _error(400, problem, "invalid_request_error")
    state.received.append(body)
    if state.fail == "timeout":
        await asyncio.sleep(TIMEOUT_SLEEP_S)
    delay = state.delay_s(body["messages"])
    if delay > 0:
        await asyncio.sleep(delay)
    if state.fail == "error":
        return _error(500, "the stand-in was told to fail (fail='error')", "server_error", "stand_in_failure")
    answer = _decide(state, body)
    state.answered += 1
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(_sse(answer, include_usage), media_type="text/event-stream")
    return JSONResponse(_completion(answer))


async def _models(request: Request) -> JSONResponse:
    state: ReplayState = request.app.state.replay
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "loop-stand-in"} for name in state.model_ids]
    return JSONResponse({"object": "list", "data": data})


def create_replay_app(
    recordings: Mapping[str, str] | None = None,
    default_output: str = "ok",
    latency_ms: float = 0.0,
    fail: str | None = None,
    *,
    confidence: float = 1.0,
    model_ids: Sequence[str] = (STAND_IN_MODEL,),
    latency_jitter_ms: float = 0.0,
) -> FastAPI:
    """An OpenAI-compatible server replaying ``recordings`` (``replay_key(messages)`` -> output).

    ``confidence``: with ``logprobs: true`` the answer's per-token logprobs sum to its log.
    ``latency_jitter_ms``: each request waits ``latency_ms`` ± this, drawn per request (see
    :meth:`ReplayState.delay_s`).
    """
    _check_settings(fail, latency_ms, confidence, latency_jitter_ms)
    if not model_ids:
        raise ValueError("model_ids must name at least one model")
    app = FastAPI(title="loop stand-in (replays recorded outputs)", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.replay = ReplayState(
        recordings=dict(recordings or {}),
        default_output=default_output,
        latency_ms=latency_ms,
        fail=fail,
        confidence=confidence,
        model_ids=tuple(model_ids),
        latency_jitter_ms=latency_jitter_ms,
    )
    for prefix in ("/v1", ""):
        app.add_api_route(f"{prefix}/chat/completions", _chat_completions, methods=["POST"])
        app.add_api_route(f"{prefix}/models", _models, methods=["GET"])
    return app


# --------------------------------------------------------------------------------------------
# Recordings


def _native_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not a JSON line ({exc})") from exc
            if not isinstance(record, dict) or not isinstance(record.get("messages"), list) or "output" not in record:
                raise ValueError(f"{path}:{number}: not a native trace record (needs 'messages' and 'output')")
            yield number, record


def recordings_from_landing(landing_dir: Path, model: str | None = None) -> dict[str, str]:
    """``replay_key(messages) -> output`` from the native trace files under ``landing_dir/traces``.

    Files are read in path order (dot-prefixed ones, still being written, are skipped); the first
    output recorded for a conversation wins. ``model``: only traces of that model (the frontier's,
    when the folder also holds traces the local model answered).
    """
    root = Path(landing_dir) / "traces"
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no traces folder in the landing folder")
    recordings: dict[str, str] = {}
    files = sorted(p for p in root.rglob("*.jsonl") if not any(part.startswith(".") for part in p.relative_to(root).parts))
    for path in files:
        for _, record in _native_records(path):
            if record["output"] is None or (model is not None and record.get("model") != model):
                continue
            recordings.setdefault(replay_key(record["messages"]), str(record["output"]))
    return recordings


# --------------------------------------------------------------------------------------------
# Serving in a thread


class RunningServer:
    """A uvicorn server on 127.0.0.1 in a background thread; ``stop()`` shuts it down gracefully."""

    def __init__(self, server: Any, thread: threading.Thread, port: int, failure: list[BaseException]):
        self.server = server
        self.thread = thread
        self.port = port
        self._failure = failure  # what ended the server's thread with an exception, if anything

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as ``base_url``."""
        return f"{self.url}/v1"

    def stop(self, timeout_s: float = 15.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            raise RuntimeError(f"the server on {self.url} did not stop within {timeout_s} s")
        if self._failure:
            raise RuntimeError(f"the server on {self.url} failed while running: {self._failure[0]!r}") from self._failure[0]

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def serve_in_thread(
    app: Any, port: int = 0, *, graceful_shutdown_s: float = 5.0, start_timeout_s: float = 30.0
) -> RunningServer:
    """Run ``app`` under uvicorn on 127.0.0.1:``port`` (0: a free port) until ``stop()``.

    The lifespan runs (startup before this returns, shutdown on stop); a startup failure raises
    here. Requests still running ``graceful_shutdown_s`` after ``stop()`` are cancelled.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", timeout_graceful_shutdown=graceful_shutdown_s, access_log=False
    )
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001  (raised again by the caller: start below, or stop())
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"uvicorn-127.0.0.1:{bound}", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(5)
            sock.close()
            # uvicorn logs the lifespan's exception, then exits with SystemExit(3).
            reason = f"{failure[0]!r} (the log above says why)" if failure else "it timed out"
            raise RuntimeError(f"the server on 127.0.0.1:{bound} did not start: {reason}")
        time.sleep(0.01)
    return RunningServer(server, thread, bound, failure)
