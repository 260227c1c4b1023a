"""Traces back into the loop: rotated segments that are invisible while open, written exactly once
under concurrency and across a restart, ingested with nothing quarantined, a crashed router's open
segments recovered, and a landing folder that cannot be written to losing nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import httpx
import openai
import pytest

from loop_pipeline.bench.stand_in import create_replay_app, serve_in_thread
from loop_pipeline.core.ingest.sources import discover
from loop_pipeline.router.trace_writer import SegmentWriter, _host_tag, serialize
from loop_pipeline_tests.router.router_support import (
    INTENT,
    closed_segments,
    ingest_landing,
    intent_spec,
    open_segments,
    read_records,
    register_spec_version,
    router_settings,
    running_router,
    traces_by_id,
    wait_for_champion,
)


def _wait(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_segments_rotate_by_count_and_age_per_day_and_are_invisible_to_ingest_while_open(tmp_path):
    written = []
    writer = SegmentWriter(tmp_path, "traces", max_records=3, max_seconds=0.5, queue_size=100, on_written=written.append)
    writer.start()
    for i in range(7):
        writer.submit("2026-12-01", serialize({"n": i}))
    writer.submit("2026-12-02", serialize({"n": 7}))
    _wait(lambda: writer.written == 8)
    # Day one: two full segments and the rest, closed when day two began; day two's is open.
    assert [len(p.read_text().splitlines()) for p in closed_segments(tmp_path)] == [3, 3, 1]
    (still_open,) = open_segments(tmp_path)
    assert still_open.parent.name == "2026-12-02" and still_open.name.startswith(".")
    names = [s.name for s in discover([str(tmp_path)])]
    assert len(names) == 3 and not any("/." in n for n in names)
    _wait(lambda: not open_segments(tmp_path), timeout_s=5)  # closed by age
    writer.close()
    days = sorted(p.parent.name for p in closed_segments(tmp_path))
    assert days == ["2026-12-01"] * 3 + ["2026-12-02"]
    assert sorted(r["n"] for r in read_records(tmp_path)) == list(range(8)) and sum(written) == 8


def test_a_crashed_routers_open_segments_are_closed_on_the_next_start(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    folder = tmp_path / "traces" / "2026-12-01"
    folder.mkdir(parents=True)
    orphan = folder / f".router-{_host_tag()}-{pid}-abcd1234-000001.jsonl"
    orphan.write_text('{"n": 1}\n{"n": 2}\n{"n": 3, "cut', encoding="utf-8")
    live = folder / f".router-{_host_tag()}-{os.getppid()}-abcd1234-000001.jsonl"  # a running process's: left alone
    live.write_text('{"n": 9}\n', encoding="utf-8")
    writer = SegmentWriter(tmp_path, "traces", max_records=10, max_seconds=60, queue_size=10)
    writer.start()
    writer.close()
    recovered = folder / orphan.name[1:]
    assert recovered.read_text(encoding="utf-8") == '{"n": 1}\n{"n": 2}\n'
    assert not orphan.exists() and live.exists()


@pytest.fixture
def servers():
    frontier_app = create_replay_app(default_output="frontier answer")
    local_app = create_replay_app(default_output="freeze_account", confidence=0.9)
    with serve_in_thread(frontier_app) as frontier, serve_in_thread(local_app) as local:
        yield frontier, local


async def _mixed_traffic(url: str, count: int, start: int) -> list[str]:
    """Concurrent requests of every route, streamed and not, 32 at a time; their trace ids."""
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    limit = asyncio.Semaphore(32)

    async def one(i: int) -> str:
        task_type = ("intent", "summarization", None, "intent")[i % 4]
        messages = [{"role": "user", "content": f"request {start + i}"}]
        async with limit:
            if i % 5 == 0:
                async with client.chat.completions.with_streaming_response.create(
                    model="m", messages=messages, stream=True, metadata={"task_type": task_type} if task_type else None
                ) as response:
                    async for _ in await response.parse():
                        pass
                    return response.headers["x-loop-trace-id"]
            raw = await client.chat.completions.with_raw_response.create(
                model="m", messages=messages, metadata={"task_type": task_type} if task_type else None
            )
            return raw.headers["x-loop-trace-id"]

    try:
        return await asyncio.gather(*[one(i) for i in range(count)])
    finally:
        await client.close()


def test_traces_written_equal_requests_answered_under_concurrency_and_across_a_restart(tmp_path, servers):
    frontier, local = servers
    settings = router_settings(
        tmp_path, frontier, load_champion=True, local_backend="openai", local_base_url=local.base_url,
        segment_max_records=37, segment_max_seconds=0.3,
    )
    version = register_spec_version(settings.resolved_tracking(), intent_spec(), tmp_path / "v1")
    answered = []
    for start, count in ((0, 300), (300, 100)):  # a restart between the two
        with running_router(settings) as router:
            wait_for_champion(router, version)
            answered += asyncio.run(_mixed_traffic(router.url, count, start))
        assert not open_segments(tmp_path / "landing")
    traces = traces_by_id(tmp_path / "landing")  # also: no trace id twice
    assert len(answered) == len(set(answered)) == 400
    assert set(traces) == set(answered)
    routes = {r["metadata"]["route"] for r in traces.values()}
    assert routes == {"local", "frontier"}
    result = ingest_landing(tmp_path / "landing")
    counts = result.counts["trace"]
    assert (counts.records_in, counts.valid, counts.quarantined, counts.duplicates) == (400, 400, 0, 0)


def test_a_landing_folder_that_cannot_be_written_loses_nothing(tmp_path, servers):
    frontier, _ = servers
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "traces").write_text("not a folder", encoding="utf-8")  # every write fails until it goes
    settings = router_settings(tmp_path, frontier, queue_size=2)
    with running_router(settings) as router:
        client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0)
        ids = [client.chat.completions.with_raw_response.create(model="m", messages=INTENT).headers["x-loop-trace-id"]]
        _wait(lambda: httpx.get(f"{router.url}/healthz").status_code == 503)
        health = httpx.get(f"{router.url}/healthz").json()
        assert health["status"] == "degraded" and "traces" in health["traces"]["error"]
        for _ in range(2):
            ids.append(client.chat.completions.with_raw_response.create(model="m", messages=INTENT).headers["x-loop-trace-id"])
        with pytest.raises(openai.APIStatusError) as full:  # queue full: refused before any work
            client.chat.completions.create(model="m", messages=INTENT)
        assert full.value.status_code == 503 and full.value.body["code"] == "overloaded"
        (landing / "traces").unlink()
        _wait(lambda: httpx.get(f"{router.url}/healthz").status_code == 200, timeout_s=15)
        ids.append(client.chat.completions.with_raw_response.create(model="m", messages=INTENT).headers["x-loop-trace-id"])
        metrics = httpx.get(f"{router.url}/metrics").text
    assert 'loop_router_rejections_total{reason="overloaded"} 1.0' in metrics
    assert set(traces_by_id(landing)) == set(ids) and len(ids) == 4
    assert all(json.loads(line) for p in closed_segments(landing) for line in p.read_text().splitlines())
