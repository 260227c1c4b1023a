"""Answering one chat request: the policy, the local and frontier calls, the shadow, the trace.

Every request that passed validation ends in exactly one trace, written when it is finished
(after its shadow call, when it was shadowed), whether it was answered locally, by the frontier,
or failed because the frontier did. The local model can make a request slower, never make it fail.
A non-streaming answer is finished (metrics, trace) right after its body was sent
(:meth:`ChatService.finish_answered`, called by the route in a ``finally``): the client does not
wait for the bookkeeping.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any, AsyncIterator

from loop_pipeline.core.evaluation.metrics import agrees
from loop_pipeline.router.backends.base import BackendError, Completion
from loop_pipeline.router.backends.openai_compatible import FrontierBackend, FrontierStream
from loop_pipeline.router.champion import ChampionWatcher, LoadedChampion
from loop_pipeline.router.chat_request import ChatCall
from loop_pipeline.router.errors import RouterError, frontier_unavailable
from loop_pipeline.router.metrics import RouterMetrics
from loop_pipeline.router.policy import FALLBACK, FRONTIER, LOCAL, judge, pre_route
from loop_pipeline.router.records import Exchange, Pricing, trace_record
from loop_pipeline.router.settings import RouterSettings
from loop_pipeline.router.trace_writer import SegmentWriter, serialize


def dump_json(payload: Any) -> bytes:
    """What FastAPI's JSONResponse would send for ``payload``."""
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")

log = logging.getLogger(__name__)
# A frontier answer the client caused (a bad parameter) is relayed with its own status.
_RELAYED_STATUSES = {400, 413, 422}


class ChatService:
    def __init__(
        self,
        settings: RouterSettings,
        frontier: FrontierBackend,
        watcher: ChampionWatcher,
        traces: SegmentWriter,
        metrics: RouterMetrics,
        pricing: Pricing,
        known_task_types: frozenset[str] = frozenset(),
    ):
        self.settings = settings
        self.frontier = frontier
        self.watcher = watcher
        self.traces = traces
        self.metrics = metrics
        self.pricing = pricing
        self.known_task_types = known_task_types
        self._random = random.Random()
        self._shadows: set[asyncio.Task] = set()

    # -- labels -----------------------------------------------------------------------------------

    def task_label(self, task_type: str | None) -> str:
        if task_type is None:
            return "none"
        champion = self.watcher.current
        known = task_type in self.known_task_types or (champion is not None and task_type in champion.spec.tasks)
        return task_type if known else "unknown"

    # -- the local half -----------------------------------------------------------------------------

    async def decide(self, exchange: Exchange) -> None:
        """Pre-route, ask the local model, judge its answer; sets the route and its reason."""
        async with self.watcher.acquire() as champion:
            await self._ask_local(exchange, champion)

    async def _ask_local(self, exchange: Exchange, champion: LoadedChampion | None) -> None:
        call = exchange.call
        exchange.spec = champion.spec if champion is not None else None
        decision = pre_route(exchange.spec, call.task_type, None)
        if decision.try_local:
            try:
                exchange.input_tokens_local = champion.backend.count_input_tokens(call.messages)
            except Exception as exc:  # a prompt the tokenizer refuses: the frontier answers it
                self._local_failed(exchange, "local_error", exc)
                return
            decision = pre_route(exchange.spec, call.task_type, exchange.input_tokens_local)
        if not decision.try_local:
            exchange.route, exchange.reason = FRONTIER, decision.reason
            return
        exchange.threshold = decision.task.threshold
        try:
            exchange.local = await asyncio.wait_for(champion.backend.complete(call), self.settings.local_timeout_s)
        except TimeoutError as exc:
            self._local_failed(exchange, "local_timeout", exc)
            return
        except Exception as exc:  # any local failure falls back to the frontier, recorded in the trace
            self._local_failed(exchange, "local_error", exc)
            return
        self.metrics.child(self.metrics.backend_latency, "local").observe(exchange.local.seconds)
        exchange.route, exchange.reason = judge(exchange.local.text, exchange.local.confidence or 0.0, decision.task)

    def _local_failed(self, exchange: Exchange, reason: str, exc: BaseException) -> None:
        exchange.route, exchange.reason = FALLBACK, reason
        detail = str(exc) or type(exc).__name__
        exchange.local_error = f"{type(exc).__name__}: {detail}" if not isinstance(exc, BackendError) else detail
        if reason == "local_timeout":
            exchange.local_error = f"no local answer within {self.settings.local_timeout_s} s"
        # Expected backend failures are a warning; anything else is a bug worth its traceback.
        log.warning("local model failed (%s), trace %s: %s", reason, exchange.trace_id, exchange.local_error,
                    exc_info=not isinstance(exc, (BackendError, TimeoutError)))

    # -- non-streaming ------------------------------------------------------------------------------

    async def complete(self, call: ChatCall) -> tuple[Exchange, bytes]:
        """The exchange and the JSON body the client gets (the frontier's as it sent it). The
        caller must pass the exchange to :meth:`finish_answered` once the body is sent (or failed to be)."""
        exchange = Exchange(call)
        await self.decide(exchange)
        if exchange.route == LOCAL:
            body = dump_json(local_response(exchange))
            exchange.finished = time.perf_counter()
            return exchange, body
        try:
            exchange.frontier = await self.frontier.complete(call)
        except BackendError as exc:
            raise self._frontier_failed(exchange, exc) from None
        exchange.finished = time.perf_counter()
        return exchange, exchange.frontier.body or b"{}"

    def finish_answered(self, exchange: Exchange) -> None:
        """Metrics and trace of an answer :meth:`complete` gave (the shadow call, when it is shadowed)."""
        if exchange.route == LOCAL:
            self.finish_local(exchange)
        else:
            self.metrics.child(self.metrics.backend_latency, "frontier").observe(exchange.frontier.seconds)
            self.finish(exchange)

    def _frontier_failed(self, exchange: Exchange, exc: BackendError) -> RouterError:
        exchange.frontier_error = str(exc)
        self.metrics.frontier_errors.labels(kind=exc.kind if not exc.kind.startswith("http_") else "http").inc()
        log.error("frontier call failed for trace %s: %s", exchange.trace_id, exc)
        self.finish(exchange)
        relayed = exc.body.get("error") if isinstance(exc.body, dict) else None
        if exc.status in _RELAYED_STATUSES and isinstance(relayed, dict):
            error = RouterError(
                exc.status, str(relayed.get("message") or exc), kind=str(relayed.get("type") or "invalid_request_error"),
                param=relayed.get("param"), code="frontier_rejected",
            )
        else:
            error = frontier_unavailable(str(exc))
        error.headers.update(route_headers(exchange))
        return error

    # -- streaming ----------------------------------------------------------------------------------

    async def stream(self, call: ChatCall) -> tuple[Exchange, AsyncIterator[bytes]]:
        """The route is decided before the first byte: a local answer streams once decided, a
        frontier answer streams through as the frontier sends it."""
        exchange = Exchange(call)
        await self.decide(exchange)
        if exchange.route == LOCAL:
            chunks = local_stream_chunks(exchange)
            self.finish_local(exchange)
            return exchange, _sse(chunks)
        try:
            upstream = await self.frontier.stream(call)
        except BackendError as exc:
            raise self._frontier_failed(exchange, exc) from None
        return exchange, self._relay(exchange, upstream)

    async def _relay(self, exchange: Exchange, upstream: FrontierStream) -> AsyncIterator[bytes]:
        try:
            async for line in upstream.lines():
                yield line
        except BackendError as exc:
            exchange.frontier_error = str(exc)
            self.metrics.frontier_errors.labels(kind=exc.kind).inc()
            log.error("the frontier's stream failed for trace %s: %s", exchange.trace_id, exc)
        finally:
            # Also when the client went away: the trace records what the frontier sent.
            exchange.frontier = Completion(
                text=upstream.text, model=upstream.model, seconds=upstream.seconds or time.perf_counter() - upstream.started,
                input_tokens=upstream.input_tokens, output_tokens=upstream.output_tokens, finish_reason=upstream.finish_reason,
            )
            self.metrics.child(self.metrics.backend_latency, "frontier").observe(exchange.frontier.seconds)
            self.finish(exchange)

    # -- finishing: shadow, metrics, trace ---------------------------------------------------------

    def finish_local(self, exchange: Exchange) -> None:
        """A locally served answer: shadowed to the frontier at ``shadow_rate`` (its trace waits
        for the shadow), else finished now."""
        if self.settings.shadow_rate > 0 and self._random.random() < self.settings.shadow_rate:
            if exchange.finished is None:
                exchange.finished = time.perf_counter()
            task = asyncio.get_running_loop().create_task(self._shadow(exchange), name=f"shadow-{exchange.trace_id}")
            self._shadows.add(task)
            task.add_done_callback(self._shadows.discard)
        else:
            self.finish(exchange)

    async def _shadow(self, exchange: Exchange) -> None:
        try:
            exchange.shadow = await self.frontier.complete(exchange.call)
        except BackendError as exc:
            exchange.shadow_error = str(exc)
            self.metrics.frontier_errors.labels(kind="shadow").inc()
        else:
            task = exchange.spec.tasks[exchange.call.task_type]
            exchange.shadow_agrees = agrees(task.kind, exchange.local.text, exchange.shadow.text)
            self.metrics.record_shadow(self.task_label(exchange.call.task_type), exchange.shadow_agrees)
        finally:
            self.finish(exchange)

    async def drain_shadows(self) -> None:
        """Wait for shadow calls in flight (their traces are written when they end)."""
        if self._shadows:
            await asyncio.gather(*list(self._shadows))

    def finish(self, exchange: Exchange) -> None:
        if exchange.finished is None:
            exchange.finished = time.perf_counter()
        costs = self.pricing.split(exchange)
        task = self.task_label(exchange.call.task_type)
        route, metrics = exchange.route, self.metrics
        metrics.child(metrics.requests, route, task).inc()
        if route == FRONTIER:
            metrics.child(metrics.escalations, exchange.reason, task).inc()
        elif route == FALLBACK:
            metrics.child(metrics.fallbacks, exchange.reason, task).inc()
        metrics.child(metrics.latency, route).observe(exchange.total_seconds)
        metrics.child(metrics.overhead, route).observe(max(0.0, exchange.total_seconds - exchange.backend_seconds))
        for backend in ("local", "frontier", "shadow"):
            if costs[backend] is not None:
                metrics.child(metrics.cost, route, backend).inc(costs[backend])
        record = trace_record(exchange, costs, self.settings.frontier_model)
        self.traces.submit(exchange.day, serialize(record))


def route_headers(exchange: Exchange) -> dict[str, str]:
    headers = {"x-loop-trace-id": exchange.trace_id, "x-loop-route": exchange.route, "x-loop-reason": exchange.reason}
    if exchange.local is not None and exchange.local.confidence is not None:
        headers["x-loop-confidence"] = repr(float(exchange.local.confidence))
    if exchange.spec is not None and exchange.spec.version is not None:
        headers["x-loop-champion-version"] = str(exchange.spec.version)
    return headers


# -- OpenAI-shaped local answers ----------------------------------------------------------------


def _usage(exchange: Exchange) -> dict[str, int]:
    prompt = exchange.input_tokens_local or 0
    completion = exchange.local.output_tokens or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def local_response(exchange: Exchange) -> dict[str, Any]:
    local = exchange.local
    return {
        "id": f"chatcmpl-{exchange.trace_id}",
        "object": "chat.completion",
        "created": int(exchange.received_at.timestamp()),
        "model": local.model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": local.text}, "logprobs": None, "finish_reason": local.finish_reason}
        ],
        "usage": _usage(exchange),
    }


def local_stream_chunks(exchange: Exchange) -> list[dict[str, Any]]:
    local = exchange.local
    head = {"id": f"chatcmpl-{exchange.trace_id}", "object": "chat.completion.chunk", "created": int(exchange.received_at.timestamp()), "model": local.model}
    chunks = [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {"content": local.text}, "logprobs": None, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": local.finish_reason}]},
    ]
    if (exchange.call.body.get("stream_options") or {}).get("include_usage"):
        chunks.append({**head, "choices": [], "usage": _usage(exchange)})
    return chunks


async def _sse(chunks: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n".encode("utf-8")
    yield b"data: [DONE]\n\n"
