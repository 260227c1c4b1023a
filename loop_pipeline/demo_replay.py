"""The demo's live half: a fresh simulated day replayed through the router.

The frontier is a local stand-in that answers each request with the frontier output the simulator
recorded for it (a paid API cannot run here). The router serves the champion from the registry and
writes its traces and the feedback into the landing folder, as in production. Each simulated user
reacts to the answer they got (``sim.users``: accept, edit, reject, regenerate, thumbs) and sends it
through ``POST /v1/feedback``. The simulator's gold answer of each request is kept beside the
warehouse (``replay/<day>.parquet``), for measuring only: nothing the loop decides reads it.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from loop_pipeline.core.evaluation.metrics import agrees
from loop_pipeline.core.routes import LOCAL
from loop_pipeline.sim.task_models import OUT_OF_SCOPE

Progress = Callable[[str], None]
# The frontier's key: the stand-in needs none, the router reads it from this variable if set.
_FRONTIER_KEY_ENV = "LOOP_DEMO_FRONTIER_API_KEY"
_CONCURRENCY = 8  # simulated users calling at once


@dataclass(frozen=True)
class ReplayRequest:
    """One simulated call: what the app sends, who sends it, and what the simulator knows."""

    messages: list[dict[str, str]]
    task_type: str
    app: str
    user_id: str
    session_id: str | None
    user_type: str
    gold: str
    frontier_output: str

    @property
    def in_scope(self) -> bool:
        return self.gold != OUT_OF_SCOPE


def _records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def day_requests(traces_file: Path) -> list[ReplayRequest]:
    """The calls of one simulated day (a native traces file the simulator wrote), in arrival order."""
    requests = []
    for record in _records(traces_file):
        meta = record.get("metadata") or {}
        requests.append(ReplayRequest(
            messages=[{"role": m["role"], "content": m["content"]} for m in record["messages"]],
            task_type=record["task_type"], app=record["app"], user_id=record["user_id"],
            session_id=record.get("session_id"), user_type=(meta.get("sim") or {}).get("user_type", "careful"),
            gold=str(meta["gold"]), frontier_output=record["output"],
        ))
    if not requests:
        raise ValueError(f"{traces_file}: no calls to replay")
    return requests


@dataclass
class Served:
    """One replayed request as the client saw it."""

    request: ReplayRequest
    trace_id: str
    route: str
    answer: str
    feedback: int = 0

    @property
    def correct(self) -> bool:
        return agrees("classification", self.answer, self.request.gold)


@dataclass
class ReplayOutcome:
    day: str
    served: list[Served]
    seconds: float
    errors: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        """Measured on this replay against the simulator's gold (simulated traffic)."""
        in_scope = [s for s in self.served if s.request.in_scope]
        oos = [s for s in self.served if not s.request.in_scope]
        local = [s for s in self.served if s.route == LOCAL]
        share = (lambda part, whole: round(len(part) / len(whole), 4) if whole else None)
        return {
            "day": self.day,
            "requests": len(self.served),
            "errors": len(self.errors),
            "served_locally": len(local),
            "sim_coverage_in_scope": share([s for s in in_scope if s.route == LOCAL], in_scope),
            "sim_local_accuracy": share([s for s in local if s.correct], local),
            "sim_out_of_scope_escalated": share([s for s in oos if s.route != LOCAL], oos),
            "sim_routed_accuracy": share([s for s in self.served if s.correct], self.served),
            "sim_all_frontier_accuracy": share(
                [s for s in self.served if agrees("classification", s.request.frontier_output, s.request.gold)], self.served
            ),
            "feedback_sent": sum(s.feedback for s in self.served),
            "requests_per_s": round(len(self.served) / self.seconds, 2) if self.seconds > 0 else None,
        }


def _feedback_bodies(served: Served, rng: np.random.Generator, sim_config) -> list[dict[str, Any]]:
    """What the simulated user does about the answer (``sim.users``); an edit writes the gold."""
    from loop_pipeline.sim.users import user_events, user_reaction

    request = served.request
    correct = served.correct
    reaction = user_reaction(rng, sim_config, request.user_type, correct)
    events = user_events(rng, reaction, trace_id=served.trace_id, called_at=0, user_id=request.user_id,
                         correct=correct, edited=request.gold)
    keys = ("trace_id", "kind", "value", "label", "edited_output", "source", "annotator_id")
    return [{k: record[k] for k in keys if record.get(k) is not None} for _, record in events]


def replay_day(
    router_url: str, requests: list[ReplayRequest], sim_config, seed: int, say: Progress, feedback: bool = True
) -> ReplayOutcome:
    """Send every request through the router with the ``openai`` client (a few users at once), and
    each user's feedback through ``/v1/feedback``; returns what was served."""
    import httpx
    import openai

    client = openai.OpenAI(base_url=f"{router_url}/v1", api_key="demo-key", max_retries=0, timeout=120.0)
    http = httpx.Client(base_url=router_url, timeout=30.0)
    errors: list[str] = []
    done = [0]

    def one(index: int) -> Served | None:
        request = requests[index]
        metadata = {"task_type": request.task_type, "app": request.app, "user_id": request.user_id}
        if request.session_id:
            metadata["session_id"] = request.session_id
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="loop", messages=request.messages, extra_body={"metadata": metadata}
            )
        except openai.APIError as exc:
            errors.append(f"request {index}: {type(exc).__name__}: {exc}")
            return None
        answer = raw.parse().choices[0].message.content or ""
        served = Served(request, raw.headers["x-loop-trace-id"], raw.headers["x-loop-route"], answer)
        if feedback:
            rng = np.random.default_rng([seed, index])
            for body in _feedback_bodies(served, rng, sim_config):
                http.post("/v1/feedback", json=body).raise_for_status()
                served.feedback += 1
        done[0] += 1
        if done[0] % max(1, len(requests) // 5) == 0:
            say(f"  replayed {done[0]}/{len(requests)} requests")
        return served

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(_CONCURRENCY) as pool:
            results = list(pool.map(one, range(len(requests))))
    finally:
        http.close()
        client.close()
    seconds = time.perf_counter() - started
    day = dt.datetime.now(dt.timezone.utc).date().isoformat()
    return ReplayOutcome(day, [r for r in results if r is not None], seconds, errors)


def write_gold(warehouse: Path, outcome: ReplayOutcome) -> Path:
    """Append this replay's gold answers to ``replay/<day>.parquet`` (atomic rewrite)."""
    import polars as pl

    from loop_pipeline.core.report import REPLAY_COLUMNS
    from loop_pipeline.core.storage import write_parquet_atomic

    rows = pl.DataFrame(
        {
            "trace_id": [s.trace_id for s in outcome.served],
            "task_type": [s.request.task_type for s in outcome.served],
            "sim_gold": [s.request.gold for s in outcome.served],
            "in_scope": [s.request.in_scope for s in outcome.served],
        }
    ).select(REPLAY_COLUMNS)
    path = warehouse / "replay" / f"{outcome.day}.parquet"
    if path.is_file():
        rows = pl.concat([pl.read_parquet(path), rows]).unique("trace_id", keep="last", maintain_order=True)
    write_parquet_atomic(path, rows)
    return path


class LiveLoop:
    """The frontier stand-in and the router, on 127.0.0.1 in this process, until ``stop()``."""

    def __init__(self, requests: list[ReplayRequest], frontier_model: str, say: Progress, shadow_rate: float = 0.2):
        from loop_pipeline.bench.stand_in import create_replay_app, replay_key, serve_in_thread

        self.say = say
        recordings = {replay_key(r.messages): r.frontier_output for r in requests}
        self.frontier = serve_in_thread(create_replay_app(recordings, default_output=OUT_OF_SCOPE, model_ids=(frontier_model,)))
        self.frontier_model = frontier_model
        self.shadow_rate = shadow_rate
        self.router = None

    def start_router(self, timeout_s: float = 300.0) -> str:
        """Start the router and wait until it serves the champion; returns its URL."""
        import httpx

        from loop_pipeline.bench.stand_in import serve_in_thread
        from loop_pipeline.router import RouterSettings, create_app

        settings = RouterSettings.load(
            None, frontier_base_url=self.frontier.base_url, frontier_model=self.frontier_model,
            frontier_api_key_env=_FRONTIER_KEY_ENV, shadow_rate=self.shadow_rate, poll_interval_s=5.0,
            segment_max_seconds=5, api_keys_sha256=[],
        )
        self.router = serve_in_thread(create_app(settings), graceful_shutdown_s=30.0)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            champion = httpx.get(f"{self.router.url}/healthz", timeout=10.0).json().get("champion") or {}
            if champion.get("state") == "serving":
                self.say(f"  router on {self.router.url} serves {champion.get('model')} (frontier stand-in on {self.frontier.url})")
                return self.router.url
            if champion.get("state") in ("failed", "no_champion"):
                raise RuntimeError(f"the router has no champion to serve: {champion}")
            time.sleep(0.5)
        raise TimeoutError(f"the router did not load the champion within {timeout_s:.0f} s")

    def stop_router(self) -> None:
        """Stop the router: its shutdown flushes every trace and feedback record into closed segments."""
        if self.router is not None:
            self.router.stop(timeout_s=60.0)
            self.router = None

    def stop(self) -> None:
        try:
            self.stop_router()
        finally:
            self.frontier.stop()
