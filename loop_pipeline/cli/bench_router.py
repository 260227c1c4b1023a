"""``loop bench router``: the router's added latency against its backend, and micro-batching's gain."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from loop_pipeline.cli.common import bench_app, emit, fail, say


@bench_app.command("router")
def bench_router(
    requests: int = typer.Option(2000, help="Requests per side (through the router, and straight to the backend), per scenario."),
    concurrency: int = typer.Option(32, help="Requests in flight at once (one connection each)."),
    backend_latency_ms: float = typer.Option(
        100.0, help="Realistic scenario: the stand-in backend's mean latency per request (a real frontier takes 100s of ms)."
    ),
    backend_jitter_ms: float = typer.Option(
        50.0, help="Realistic scenario: each request's latency is drawn uniformly from latency ± this (at most the latency)."
    ),
    local: bool = typer.Option(
        True, "--local/--no-local", help="Also time the in-process SmolLM2-135M backend: micro-batching vs one request at a time."
    ),
    local_requests: int = typer.Option(64, help="Requests per mode in the SmolLM2 part."),
    serial_requests: int = typer.Option(
        200, help="Instant scenario: requests one at a time on each side after the concurrent blocks (0: none)."
    ),
    workdir: Optional[Path] = typer.Option(None, help="Where the router's landing folders go (default: a temporary folder)."),
) -> None:
    """Router vs direct to the same OpenAI-compatible stand-in (each server in its own process):
    added latency p50 / p99, throughput, errors, traces written vs answered; then SmolLM2 batching.

    Two scenarios, both always run and reported. realistic_backend: the stand-in takes
    latency ± jitter ms, drawn per request; the issue's target (< 2 ms p50, < 10 ms p99 added,
    0 errors, 0 lost traces) is judged on this one ("target_met"). instant_backend: the stand-in
    answers at once, so at full concurrency the requests queue on the CPU that client, router and
    stand-in share: it measures saturation, and its one-at-a-time requests the overhead without
    queueing."""
    from loop_pipeline.bench.router import bench_router as run_bench

    if requests < 1 or concurrency < 1 or local_requests < 1:
        fail("--requests, --concurrency and --local-requests must be at least 1")
    if serial_requests < 0:
        fail("--serial-requests must be >= 0")
    if backend_latency_ms <= 0:
        fail("--backend-latency-ms must be > 0 (the instant backend always runs as its own scenario)")
    if not 0 <= backend_jitter_ms <= backend_latency_ms:
        fail("--backend-jitter-ms must be between 0 and --backend-latency-ms")
    if workdir is not None:
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            fail(f"--workdir {workdir}: {exc}")
    emit(
        run_bench(
            requests=requests,
            concurrency=concurrency,
            backend_latency_ms=backend_latency_ms,
            backend_jitter_ms=backend_jitter_ms,
            local=local,
            local_requests=local_requests,
            serial_requests=serial_requests,
            workdir=workdir,
            progress=say,
        )
    )
