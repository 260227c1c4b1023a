"""``loop bench router``: what the router adds in front of a backend, and what micro-batching buys.

Part one, the gateway. Three processes: this one drives the load (asyncio + aiohttp, one connection
per concurrent request), the router runs under uvicorn in a process of its own, and so does the
frontier stand-in (``bench/stand_in.py``), so client, router and backend do not share one
GIL-bound event loop. The same requests, with no task type (the frontier route: no local model is
involved), go straight to the stand-in and through the router, in alternating blocks so that a
change in the machine's load hits both sides alike. Added latency is per distribution:
``percentile(router) - percentile(direct)``. After a clean shutdown (SIGTERM: the router flushes
its trace writer) the trace ids in the landing folder are compared with the ``x-loop-trace-id``
of every answer (nothing lost, nothing twice), and ingest reads the segments back.

It runs in two scenarios, both always reported (fresh processes each):

- ``realistic_backend``: the stand-in takes ``latency ± jitter`` ms per request (drawn from the
  request's messages, so the direct and the routed copy of a request wait the same, and answers do
  not come back in lockstep). This is the router's overhead in front of a backend that takes time,
  as every real one does; the issue's target is judged on it.
- ``instant_backend``: the stand-in answers at once. At full concurrency every request is then
  queued on the CPU that client, router and stand-in share, so this measures saturation (how the
  router's CPU per request turns into queueing), not the overhead of one request; the requests sent
  one at a time after it measure that.

Part two (``bench/router_local.py``): the in-process SmolLM2-135M backend on this CPU, requests/s
with micro-batching against one request at a time.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import multiprocessing
import os
import signal
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from loop_pipeline.bench.router_report import TARGET, difference, say_scenario, side_summary, target_met
from loop_pipeline.bench.router_traces import account_traces, ingest_landing, router_side_overhead

BENCH_API_KEY = "bench-router-key"  # the router's Bearer key for this run (only its sha256 reaches the router)
FRONTIER_KEY_ENV = "LOOP_FRONTIER_API_KEY"
FRONTIER_MODEL = "gpt-4o-2024-08-06"  # priced in configs/prices.yaml, so the cost path runs
PROCESSES = "client: asyncio + aiohttp in this process; router and stand-in: uvicorn, one process each"
TARGET_SCENARIO = "realistic_backend"
_START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Scenario:
    name: str
    latency_ms: float
    jitter_ms: float
    serial: int  # requests one at a time on each side after the concurrent blocks
    measures: str


def scenarios(latency_ms: float, jitter_ms: float, concurrency: int, serial: int) -> list[Scenario]:
    """The realistic backend (the target's scenario) first, then the instant one."""
    return [
        Scenario(
            "realistic_backend", latency_ms, jitter_ms, 0,
            "the router's added latency in front of a backend that takes time, drawn per request so that answers "
            "do not come back in lockstep; the issue's target is judged on this scenario",
        ),
        Scenario(
            "instant_backend", 0.0, 0.0, serial,
            f"saturation: a backend that answers at once keeps all {concurrency} requests queued on the CPU that client, "
            "router and stand-in share, so the added latency is mostly queueing behind the router's CPU time; "
            "the requests sent one at a time measure the overhead without queueing",
        ),
    ]


# --------------------------------------------------------------------------------------------
# Servers in their own processes


def _serve_stand_in(options: dict[str, Any]) -> Any:
    from loop_pipeline.bench.stand_in import create_replay_app

    return create_replay_app(default_output=options["output"], latency_ms=options["latency_ms"], latency_jitter_ms=options["jitter_ms"])


def _serve_router(options: dict[str, Any]) -> Any:
    # This process's own environment: the frontier key, and a LOOP_HOME that is the bench's folder.
    os.environ[FRONTIER_KEY_ENV] = options.pop("frontier_key")
    os.environ["LOOP_HOME"] = options.pop("loop_home")
    from loop_pipeline.router.app import create_app
    from loop_pipeline.router.settings import RouterSettings

    return create_app(RouterSettings.load(None, **options))


_APPS: dict[str, Callable[[dict[str, Any]], Any]] = {"stand_in": _serve_stand_in, "router": _serve_router}


def serve_process_main(kind: str, options: dict[str, Any], port_pipe: Any) -> None:
    """Child process: build the app, bind 127.0.0.1:0, send the port, serve until SIGTERM."""
    import socket

    import uvicorn

    app = _APPS[kind](dict(options))
    # No full GC pause of the startup heap in the middle of a measurement (the router also settles
    # its own heap when it has started: RouterSettings.gc_freeze).
    gc.collect()
    gc.freeze()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port_pipe.send(sock.getsockname()[1])
    port_pipe.close()
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=30)
    uvicorn.Server(config).run(sockets=[sock])  # main thread: SIGTERM / SIGINT shut it down gracefully


@dataclass
class ServerProcess:
    name: str
    process: Any
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout_s: float = 60.0) -> bool:
        """SIGTERM (uvicorn's graceful shutdown, lifespan included); whether it exited cleanly.

        uvicorn raises the signal it caught again once it has shut down, so a clean exit reads
        as -SIGTERM (or 0)."""
        if self.process.is_alive():
            os.kill(self.process.pid, signal.SIGTERM)
        self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
            raise RuntimeError(f"the {self.name} process did not stop within {timeout_s} s after SIGTERM (killed)")
        return self.process.exitcode in (0, -signal.SIGTERM)


def start_server_process(kind: str, options: dict[str, Any], health_path: str) -> ServerProcess:
    import httpx

    context = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited event loop or threads
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=serve_process_main, args=(kind, options, send), name=f"bench-{kind}", daemon=True)
    process.start()
    send.close()
    if not receive.poll(_START_TIMEOUT_S):
        process.kill()
        raise RuntimeError(f"the {kind} process did not bind a port within {_START_TIMEOUT_S} s (exit code {process.exitcode})")
    server = ServerProcess(kind, process, receive.recv())
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        if not process.is_alive():
            raise RuntimeError(f"the {kind} process exited with code {process.exitcode} while starting (its log is above)")
        try:
            if httpx.get(server.url + health_path, timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the {kind} process did not answer {health_path} within {_START_TIMEOUT_S} s")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# The load driver


@dataclass
class PhaseResult:
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: Counter = field(default_factory=Counter)
    trace_ids: list[str] = field(default_factory=list)
    routes: Counter = field(default_factory=Counter)

    def add(self, other: "PhaseResult") -> None:
        self.latencies_ms += other.latencies_ms
        self.seconds += other.seconds
        self.errors.update(other.errors)
        self.trace_ids += other.trace_ids
        self.routes.update(other.routes)


def request_bodies(count: int, offset: int = 0) -> list[dict[str, Any]]:
    """Distinct chat requests without a task type (the router's frontier route)."""
    system = {"role": "system", "content": "You are the support assistant of a bank. Answer with the intent."}
    return [
        {"model": FRONTIER_MODEL, "messages": [system, {"role": "user", "content": f"request {offset + i}: what is my card's balance"}]}
        for i in range(count)
    ]


async def _drive(
    base_url: str, bodies: list[dict[str, Any]], concurrency: int, headers: dict[str, str], routed: bool, stagger_s: float = 0.0
) -> PhaseResult:
    """Send ``bodies`` over ``concurrency`` keep-alive connections; latency = send to last byte read.
    Worker ``k`` starts ``k * stagger_s`` late, so that a block does not open with every request at once.

    aiohttp rather than httpx: on this machine httpx's AsyncClient costs about 3.5 ms of CPU per
    request against aiohttp's 0.25 (encode/httpx#3215), and a driver that busy would measure itself.
    """
    import aiohttp

    result = PhaseResult()
    pending = iter(bodies)
    url = f"{base_url}/chat/completions"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def worker(delay_s: float) -> None:
            await asyncio.sleep(delay_s)
            for body in pending:  # one shared iterator: each body is sent once
                started = time.perf_counter()
                try:
                    async with session.post(url, json=body) as response:
                        status, answer = response.status, await response.read()
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    result.errors[type(exc).__name__] += 1
                    continue
                elapsed_ms = (time.perf_counter() - started) * 1000.0
                problem = _problem(status, answer, response.headers, routed)
                if problem:
                    result.errors[problem] += 1
                    continue
                result.latencies_ms.append(elapsed_ms)
                if routed:
                    result.trace_ids.append(response.headers["x-loop-trace-id"])
                    result.routes[response.headers["x-loop-route"]] += 1

        started = time.perf_counter()
        await asyncio.gather(*[worker(k * stagger_s) for k in range(concurrency)])
        result.seconds = time.perf_counter() - started
    return result


def _problem(status: int, answer: bytes, headers: Any, routed: bool) -> str | None:
    """Why an answer does not count as answered, or None."""
    if status != 200:
        return f"http_{status}"
    if not json.loads(answer)["choices"][0]["message"]["content"]:
        return "empty_answer"
    if routed and not (headers.get("x-loop-trace-id") and headers.get("x-loop-route")):
        return "missing_x_loop_headers"
    return None


def _side(result: PhaseResult) -> dict[str, Any]:
    return side_summary(result.latencies_ms, result.seconds, result.errors)


# --------------------------------------------------------------------------------------------
# Part one: router vs direct


def _router_options(stand_in: ServerProcess, folder: Path) -> dict[str, Any]:
    return {
        "loop_home": str(folder / "loop_home"),
        "frontier_key": "bench-frontier-key",
        "port": 0,
        "load_champion": False,  # the frontier route only: no model, no registry
        "frontier_base_url": f"{stand_in.url}/v1",
        "frontier_model": FRONTIER_MODEL,
        "frontier_api_key_env": FRONTIER_KEY_ENV,
        "api_keys_sha256": [hashlib.sha256(BENCH_API_KEY.encode()).hexdigest()],
        "landing_dir": str(folder / "landing"),
        "model_cache_dir": str(folder / "models"),
        "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
        "artifact_root": str(folder / "mlartifacts"),
    }


@dataclass
class GatewayRun:
    """What the driver saw: each side at the full concurrency, each side one request at a time, warm-up."""

    direct: PhaseResult = field(default_factory=PhaseResult)
    routed: PhaseResult = field(default_factory=PhaseResult)
    direct_serial: PhaseResult = field(default_factory=PhaseResult)
    routed_serial: PhaseResult = field(default_factory=PhaseResult)
    warm: PhaseResult = field(default_factory=PhaseResult)

    cpu_seconds: dict[str, float] = field(default_factory=dict)  # per process, over the blocks at full concurrency

    def answered_ids(self) -> list[str]:
        return self.warm.trace_ids + self.routed.trace_ids + self.routed_serial.trace_ids

    def errors(self) -> int:
        return sum(sum(p.errors.values()) for p in (self.direct, self.routed, self.direct_serial, self.routed_serial, self.warm))


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def drive_both(
    direct_url: str, router_url: str, requests: int, concurrency: int, blocks: int, warmup: int, serial: int, pids: dict[str, int],
    stagger_s: float = 0.0,
) -> GatewayRun:
    """Warm-up on both sides; ``blocks`` alternating blocks (direct, then routed) at ``concurrency``
    (workers started ``stagger_s`` apart); then ``serial`` requests one at a time on each side (the
    overhead without queueing). ``pids``: the server processes whose CPU time the blocks at full
    concurrency cost."""
    headers = {"authorization": f"Bearer {BENCH_API_KEY}"}
    run = GatewayRun()

    def cpu() -> dict[str, float]:
        return {"client": time.process_time(), **{name: process_cpu_seconds(pid) for name, pid in pids.items()}}

    async def main() -> None:
        # This process imported the whole CLI: a full collection of it would pause the driver (~100 ms)
        # and land on whichever side was being timed.
        gc.collect()
        gc.freeze()
        warm_bodies = request_bodies(warmup, offset=10_000_000)
        await _drive(direct_url, warm_bodies, concurrency, headers, routed=False)
        run.warm.add(await _drive(router_url, warm_bodies, concurrency, headers, routed=True))
        bodies = request_bodies(requests)
        size = -(-requests // blocks)
        before = cpu()
        for start in range(0, requests, size):
            block = bodies[start : start + size]
            run.direct.add(await _drive(direct_url, block, concurrency, headers, routed=False, stagger_s=stagger_s))
            run.routed.add(await _drive(router_url, block, concurrency, headers, routed=True, stagger_s=stagger_s))
        run.cpu_seconds = {name: seconds - before[name] for name, seconds in cpu().items()}
        serial_bodies = request_bodies(serial, offset=20_000_000)
        for start in range(0, serial, 10):  # alternate every 10 requests
            run.direct_serial.add(await _drive(direct_url, serial_bodies[start : start + 10], 1, headers, routed=False))
            run.routed_serial.add(await _drive(router_url, serial_bodies[start : start + 10], 1, headers, routed=True))

    try:
        asyncio.run(main())
    finally:
        gc.unfreeze()
    return run


def bench_gateway(
    requests: int,
    concurrency: int,
    scenario: Scenario,
    folder: Path,
    say: Callable[[str], None],
    blocks: int = 10,
    warmup: int = 64,
) -> dict[str, Any]:
    """One scenario, with its own stand-in and router processes."""
    say(f"{scenario.name}: starting the stand-in backend ({scenario.latency_ms:g} ± {scenario.jitter_ms:g} ms) and the router, "
        "each in its own process ...")
    load_before = os.getloadavg()[0]
    stand_in_options = {"output": "balance", "latency_ms": scenario.latency_ms, "jitter_ms": scenario.jitter_ms}
    stand_in = start_server_process("stand_in", stand_in_options, "/v1/models")
    try:
        router = start_server_process("router", _router_options(stand_in, folder), "/healthz")
        try:
            say(f"{scenario.name}: {requests:,} requests at concurrency {concurrency}, straight to the stand-in and through the router, "
                f"in {blocks} alternating blocks" + (f"; then {scenario.serial} one at a time on each side ..." if scenario.serial else " ..."))
            pids = {"router": router.process.pid, "stand_in": stand_in.process.pid}
            # Realistic backend: the workers start spread over one mean latency, as independent clients would.
            stagger_s = scenario.latency_ms / 1000.0 / concurrency
            run = drive_both(f"{stand_in.url}/v1", f"{router.url}/v1", requests, concurrency, blocks, warmup, scenario.serial, pids, stagger_s)
        finally:
            say(f"{scenario.name}: stopping the router (SIGTERM: it flushes its traces) ...")
            router_clean = router.stop()
    finally:
        stand_in.stop()
    traces = account_traces(folder / "landing", run.answered_ids())
    result = {
        "what_it_measures": scenario.measures,
        "backend_latency_ms": scenario.latency_ms,
        "backend_jitter_ms": scenario.jitter_ms,
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        **_figures(run, concurrency),
        "inside_router": router_side_overhead(folder / "landing"),
        "warmup_requests": warmup,
        "answered_through_router": len(run.answered_ids()),
        "router_stopped_cleanly": router_clean,
        **traces,
        **(ingest_landing(folder / "landing", folder / "loop_home") if traces["traces_written"] else {}),
        "errors": run.errors(),
    }
    result["target_met"] = target_met(result)
    return result


def _figures(run: GatewayRun, concurrency: int) -> dict[str, Any]:
    """Latency, throughput and CPU per request of both sides; one at a time when it ran."""
    direct_side, router_side = _side(run.direct), _side(run.routed)
    serial_direct, serial_router = _side(run.direct_serial), _side(run.routed_serial)
    both = max(1, len(run.direct.latencies_ms) + len(run.routed.latencies_ms))
    return {
        "direct": direct_side,
        "router": {**router_side, "routes": dict(run.routed.routes)},
        "added_p50_ms": difference(router_side["p50_ms"], direct_side["p50_ms"]),
        "added_p99_ms": difference(router_side["p99_ms"], direct_side["p99_ms"]),
        "one_at_a_time": {
            "requests": serial_router["answered"],
            "direct_p50_ms": serial_direct["p50_ms"],
            "router_p50_ms": serial_router["p50_ms"],
            "added_p50_ms": difference(serial_router["p50_ms"], serial_direct["p50_ms"]),
            "added_p99_ms": difference(serial_router["p99_ms"], serial_direct["p99_ms"]),
        } if run.routed_serial.latencies_ms else None,
        # CPU per request at full concurrency: what each process costs, whatever else runs on the machine.
        "cpu_ms_per_request": {
            "router": round(run.cpu_seconds["router"] * 1000 / max(1, len(run.routed.latencies_ms)), 3),
            "stand_in": round(run.cpu_seconds["stand_in"] * 1000 / both, 3),
            "client": round(run.cpu_seconds["client"] * 1000 / both, 3),
        },
    }


def _load_average() -> dict[str, float]:
    one, five, fifteen = os.getloadavg()
    return {"1m": round(one, 2), "5m": round(five, 2), "15m": round(fifteen, 2)}


def bench_router(
    requests: int = 2000,
    concurrency: int = 32,
    backend_latency_ms: float = 100.0,
    backend_jitter_ms: float = 50.0,
    local: bool = True,
    local_requests: int = 64,
    serial_requests: int = 200,
    workdir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Both gateway scenarios and the local part; one summary dict (the CLI prints it as its JSON line)."""
    say = progress or (lambda _: None)
    load_before = _load_average()
    results: dict[str, dict[str, Any]] = {}
    for scenario in scenarios(backend_latency_ms, backend_jitter_ms, concurrency, serial_requests):
        with tempfile.TemporaryDirectory(dir=workdir, prefix="bench-router-") as folder:
            results[scenario.name] = bench_gateway(requests, concurrency, scenario, Path(folder), say, warmup=min(64, requests))
    say(f"router vs direct, {requests:,} requests per side at concurrency {concurrency} ({PROCESSES}; {os.cpu_count()} cores):")
    for name, figures in results.items():
        say_scenario(name, figures, say)
    result: dict[str, Any] = {
        "benchmark": "router",
        "requests": requests,
        "concurrency": concurrency,
        "measured_against": "the same requests sent straight to the stand-in backend in the same run",
        "added_latency": "per distribution: percentile(through router) - percentile(direct), alternating blocks",
        "processes": PROCESSES,
        "cpu_cores": os.cpu_count(),
        "load_average": {"before": load_before, "after": _load_average()},
        "target": TARGET,
        "target_scenario": TARGET_SCENARIO,
        "target_met": results[TARGET_SCENARIO]["target_met"],
        "scenarios": results,
    }
    if local:
        from loop_pipeline.bench.router_local import bench_local_batching, say_local

        result["local"] = bench_local_batching(local_requests, say)
        say_local(result["local"], say)
    return result
