"""``GET /v1/models``: the champion being served (when one is) and the frontier model."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    state = request.app.state.router
    state.keys.check(request.headers.get("authorization"))
    data = []
    champion = state.watcher.current
    if champion is not None:
        data.append({"id": champion.spec.label, "object": "model", "created": 0, "owned_by": "loop-router (champion)"})
    data.append({"id": state.settings.frontier_model, "object": "model", "created": 0, "owned_by": "loop-router (frontier)"})
    return JSONResponse({"object": "list", "data": data})
