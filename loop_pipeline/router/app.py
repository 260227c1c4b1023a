"""``create_app(settings)``: the router as a FastAPI app, all of its state on ``app.state.router``.

The lifespan starts the trace and feedback writers and the champion watcher, and on shutdown
(after uvicorn has let in-flight requests finish) waits for shadow calls, closes the backends and
flushes every queued record into closed segments.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from loop_pipeline.core.costs import PriceTable
from loop_pipeline.router.auth import ApiKeys
from loop_pipeline.router.backends.openai_compatible import FrontierBackend
from loop_pipeline.router.champion import ChampionWatcher
from loop_pipeline.router.errors import RouterError
from loop_pipeline.router.heap import settle_heap
from loop_pipeline.router.loading import env_secret, version_loader, version_probe
from loop_pipeline.router.metrics import RouterMetrics
from loop_pipeline.router.records import Pricing
from loop_pipeline.router.routes import admin, chat, feedback, health, models
from loop_pipeline.router.service import ChatService
from loop_pipeline.router.settings import RouterSettings
from loop_pipeline.router.trace_writer import SegmentWriter

log = logging.getLogger("loop_pipeline.router")


@dataclass
class RouterState:
    settings: RouterSettings
    metrics: RouterMetrics
    keys: ApiKeys
    frontier: FrontierBackend  # its aiohttp session opens in the lifespan
    watcher: ChampionWatcher
    traces: SegmentWriter
    feedback: SegmentWriter
    service: ChatService


def _known_task_types() -> frozenset[str]:
    """Task types configs/tasks.yaml names (metric labels); the champion's own are added live."""
    from loop_pipeline.core.tasks import TasksConfig
    from loop_pipeline.settings import LoopSettings

    loop = LoopSettings()
    if not loop.config_path(TasksConfig.FILE).is_file():
        return frozenset()
    return frozenset(loop.load(TasksConfig).tasks)


def _watcher(settings: RouterSettings, metrics: RouterMetrics) -> ChampionWatcher:
    if not settings.load_champion:
        return ChampionWatcher(None, None, settings.poll_interval_s)
    tracking = settings.resolved_tracking()
    settle = (lambda *_: settle_heap("champion swapped")) if settings.gc_freeze else None
    return ChampionWatcher(
        version_probe(settings, tracking),
        version_loader(settings, tracking, on_batch=metrics.batch_size.observe),
        settings.poll_interval_s,
        on_change=settle,
        on_load=lambda outcome: metrics.champion_loads.labels(outcome=outcome).inc(),
        on_closed=settle,
    )


def build_state(settings: RouterSettings) -> RouterState:
    metrics = RouterMetrics()
    landing = settings.resolved_landing_dir()

    def writer(kind: str) -> SegmentWriter:
        counter = metrics.traces_written.labels(kind=kind)
        return SegmentWriter(
            landing, kind, max_records=settings.segment_max_records, max_seconds=settings.segment_max_seconds,
            queue_size=settings.queue_size, on_written=counter.inc,
        )

    traces, feedback_writer = writer("traces"), writer("feedback")
    frontier = FrontierBackend(
        settings.frontier_base_url, settings.frontier_model, env_secret(settings.frontier_api_key_env), settings.frontier_timeout_s
    )
    watcher = _watcher(settings, metrics)
    pricing = Pricing(PriceTable.from_yaml(settings.resolved_prices_path()))
    service = ChatService(settings, frontier, watcher, traces, metrics, pricing, _known_task_types())
    return RouterState(settings, metrics, ApiKeys(settings.api_keys_sha256), frontier, watcher, traces, feedback_writer, service)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RouterError)
    async def _router_error(request: Request, exc: RouterError) -> JSONResponse:
        if exc.rejection is not None:
            request.app.state.router.metrics.rejections.labels(reason=exc.rejection).inc()
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else "method_not_allowed" if exc.status_code == 405 else "http_error"
        request.app.state.router.metrics.rejections.labels(reason=kind).inc()
        return RouterError(exc.status_code, str(exc.detail), code=kind).response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        request.app.state.router.metrics.rejections.labels(reason="invalid_request").inc()
        return RouterError(400, f"Invalid request: {exc.errors()[0]['msg']}", code="invalid_request").response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        error = RouterError(500, f"The router failed: {type(exc).__name__}. See its log.", kind="server_error", code="internal_error")
        return error.response()


def create_app(settings: RouterSettings) -> FastAPI:
    state = build_state(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.traces.start()
        state.feedback.start()
        state.frontier.start()  # its connection pool lives on this event loop
        if not state.keys.enabled:
            log.warning("AUTH IS OFF: no api_keys_sha256 configured, anyone who reaches %s:%s can call the router", settings.host, settings.port)
        if not settings.load_champion:
            log.warning("load_champion is false: every request goes to the frontier (%s)", settings.frontier_model)
        state.watcher.start()
        if settings.gc_freeze:
            settle_heap("started")
        try:
            yield
        finally:
            await _shutdown(state)

    # FastAPI's own OpenTelemetry hooks are off: the router reports through /metrics, and the check
    # whether an OTel provider is configured would otherwise run on every request.
    telemetry = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
    app = FastAPI(title="loop router", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan, telemetry=telemetry)
    app.state.router = state
    _install_error_handlers(app)
    for module in (chat, feedback, models, health, admin):
        app.include_router(module.router)
    return app


async def _shutdown(state: RouterState) -> None:
    """Everything answered gets its trace: shadows first, then the writers flush and close."""
    try:
        await state.service.drain_shadows()
        await state.watcher.stop()
        await state.frontier.aclose()
    finally:
        state.traces.close()
        state.feedback.close()
        log.info("router stopped: %d traces and %d feedback records written", state.traces.written, state.feedback.written)
