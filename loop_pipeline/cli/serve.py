"""``loop serve``: the router under uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from loop_pipeline.cli.common import app, emit, fail, say


@app.command("serve")
def serve(
    config: Optional[Path] = typer.Option(None, "--config", help="Router config (default: configs/router.yaml of LOOP_CONFIG_DIR)."),
    host: Optional[str] = typer.Option(None, "--host", help="Interface to listen on (default from the config: 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port (default from the config: 8080)."),
    log_level: str = typer.Option("info", "--log-level", help="debug | info | warning | error"),
) -> None:
    """Serve the champion behind an OpenAI-compatible API (POST /v1/chat/completions), escalate edge
    cases to the frontier model, and write every call into the landing folder. LOOP_ROUTER_* override
    the config. Ctrl-C stops it after in-flight requests finish and every trace is flushed; the last
    line is a JSON summary."""
    import uvicorn

    from loop_pipeline.config import ConfigError
    from loop_pipeline.router import RouterSettings, create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = RouterSettings.load(config, host=host, port=port)
        server_app = create_app(settings)
    except ConfigError as exc:
        fail(str(exc))
    state = server_app.state.router
    say(
        f"router on http://{settings.host}:{settings.port}/v1 (model {settings.model_name}@{settings.champion_alias} "
        f"{'via ' + settings.local_backend if settings.load_champion else 'not loaded'}; frontier {settings.frontier_model}); "
        f"traces under {settings.resolved_landing_dir()}"
    )
    uvicorn.run(
        server_app, host=settings.host, port=settings.port, log_level=log_level, timeout_graceful_shutdown=settings.frontier_timeout_s
    )
    emit(
        {
            "host": settings.host,
            "port": settings.port,
            "traces_written": state.traces.written,
            "feedback_written": state.feedback.written,
            "champion": state.watcher.status(),
        }
    )
