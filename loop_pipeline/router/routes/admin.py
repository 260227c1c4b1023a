"""``POST /admin/reload``: look at the champion alias now (a failed version is retried), load and
swap in a new version; answers with the watcher's status once done."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter()


@router.post("/admin/reload")
async def reload_champion(request: Request) -> JSONResponse:
    state = request.app.state.router
    state.keys.check(request.headers.get("authorization"))
    status = await state.watcher.check(force=True)
    # A version that failed to load is an error for whoever asked (the old one keeps serving).
    return JSONResponse(status, status_code=200 if status["last_error"] is None else 500)
