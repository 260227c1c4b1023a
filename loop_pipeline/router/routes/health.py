"""``GET /healthz`` (what is served, whether traces are being written) and ``GET /metrics``
(Prometheus text). Neither needs a key: probes and scrapers call them; neither shows a secret."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from loop_pipeline.router.metrics import CONTENT_TYPE_LATEST

router = APIRouter()


def _writer_status(writer) -> dict:
    return {
        "queued": writer.depth,
        "submitted": writer.submitted,
        "written": writer.written,
        "segments_closed": writer.segments_closed,
        "error": writer.error,
    }


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    state = request.app.state.router
    champion = state.watcher.status()
    traces, feedback = _writer_status(state.traces), _writer_status(state.feedback)
    writers_ok = traces["error"] is None and feedback["error"] is None
    status = "ok" if writers_ok and champion["last_error"] is None else "degraded"
    body = {
        "status": status,
        "champion": champion,
        "frontier": {"model": state.settings.frontier_model},
        "traces": traces,
        "feedback": feedback,
        "auth": "on" if state.keys.enabled else "off",
    }
    # Traces that cannot be written: not ready (the loop would lose its data).
    return JSONResponse(body, status_code=200 if writers_ok else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    state = request.app.state.router
    state.metrics.queue_depth.labels(kind="traces").set(state.traces.depth)
    state.metrics.queue_depth.labels(kind="feedback").set(state.feedback.depth)
    champion = state.watcher.current
    state.metrics.champion.set(float(champion.spec.version) if champion and str(champion.spec.version).isdigit() else 0)
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
