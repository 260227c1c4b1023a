"""The real ``openai`` client (sync, async, streaming) against the router on 127.0.0.1, whose
frontier is the stand-in replaying what a simulated frontier answered."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from loop_pipeline.bench.stand_in import create_replay_app, recordings_from_landing, replay_key, serve_in_thread
from loop_pipeline.router.auth import key_digest
from loop_pipeline.sim import SimulationConfig
from loop_pipeline_tests.helpers import simulate_landing
from loop_pipeline_tests.router.router_support import (
    FRONTIER_MODEL,
    INTENT,
    ingest_landing,
    open_segments,
    read_records,
    router_settings,
    running_router,
    traces_by_id,
)

API_KEY = "sk-loop-test-client-42"


@pytest.fixture
def recorded(tmp_path):
    """Two days of simulated traffic: the conversations and what the frontier answered."""
    simulate_landing(SimulationConfig(days=2, traces_per_day=30, frontier_error_rate=0.2, seed=11), tmp_path / "recorded")
    records = [json.loads(line) for p in sorted((tmp_path / "recorded" / "traces").rglob("*.jsonl")) for line in p.open()]
    recordings = recordings_from_landing(tmp_path / "recorded")
    # One answer per distinct conversation (the first recorded wins, as in the stand-in).
    conversations = {replay_key(r["messages"]): r for r in reversed(records)}
    return recordings, list(conversations.values())


def test_the_router_answers_what_the_recorded_frontier_answered_sync_async_and_streaming(tmp_path, recorded):
    recordings, conversations = recorded
    with serve_in_thread(create_replay_app(recordings, default_output="NOT RECORDED")) as frontier:
        with running_router(router_settings(tmp_path, frontier)) as router:
            base = f"{router.url}/v1"
            sync = openai.OpenAI(base_url=base, api_key="unused", max_retries=0)
            first = conversations[0]
            raw = sync.chat.completions.with_raw_response.create(
                model="any", messages=first["messages"], metadata={"task_type": first["task_type"]}
            )
            answered = {raw.headers["x-loop-trace-id"]: (first, raw.parse().choices[0].message.content)}
            assert raw.headers["x-loop-route"] == "frontier"

            async def concurrently() -> list[tuple[str, str]]:
                async with openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0) as client:

                    async def one(record) -> tuple[str, str]:
                        if len(record["messages"][-1]["content"]) % 2:  # half of them streamed
                            async with client.chat.completions.with_streaming_response.create(
                                model="any", messages=record["messages"], stream=True,
                                extra_headers={"x-loop-task-type": record["task_type"]},
                            ) as response:
                                chunks = [c async for c in await response.parse()]
                                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                                return response.headers["x-loop-trace-id"], text
                        response = await client.chat.completions.with_raw_response.create(
                            model="any", messages=record["messages"], metadata={"task_type": record["task_type"]}
                        )
                        return response.headers["x-loop-trace-id"], response.parse().choices[0].message.content

                    return await asyncio.gather(*[one(r) for r in conversations[1:]])

            for (trace_id, text), record in zip(asyncio.run(concurrently()), conversations[1:]):
                answered[trace_id] = (record, text)

    for record, text in answered.values():
        assert text == recordings[replay_key(record["messages"])] != "NOT RECORDED"
    traces = traces_by_id(tmp_path / "landing")
    assert set(traces) == set(answered)  # every answer traced once, nothing else
    assert not open_segments(tmp_path / "landing")
    for trace_id, (record, text) in answered.items():
        trace = traces[trace_id]
        assert (trace["messages"], trace["output"], trace["task_type"], trace["model"]) == (
            record["messages"], text, record["task_type"], FRONTIER_MODEL
        )
    result = ingest_landing(tmp_path / "landing")
    assert result.counts["trace"].valid == len(answered) and result.counts["trace"].quarantined == 0
    # The router's own traces are replay material again: the same answers.
    replayed = recordings_from_landing(tmp_path / "landing", model=FRONTIER_MODEL)
    assert replayed == {replay_key(r["messages"]): recordings[replay_key(r["messages"])] for r, _ in answered.values()}


def test_auth_refuses_async_and_streaming_clients_without_tracing_them(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOP_ROUTER_API_KEYS", key_digest(API_KEY))
    with serve_in_thread(create_replay_app({replay_key(INTENT): "freeze_account"})) as frontier:
        with running_router(router_settings(tmp_path, frontier)) as router:
            base = f"{router.url}/v1"

            async def refused() -> None:
                async with openai.AsyncOpenAI(base_url=base, api_key="sk-wrong", max_retries=0) as client:
                    with pytest.raises(openai.AuthenticationError) as caught:
                        await client.chat.completions.create(model="m", messages=INTENT)
                    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"

            asyncio.run(refused())
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=base, api_key="sk-wrong", max_retries=0).chat.completions.create(
                    model="m", messages=INTENT, stream=True
                )
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=base, api_key="sk-wrong", max_retries=0).models.list()
            client = openai.OpenAI(base_url=base, api_key=API_KEY, max_retries=0)
            streamed = client.chat.completions.create(model="m", messages=INTENT, stream=True, metadata={"task_type": "intent"})
            assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "freeze_account"
            with pytest.raises(openai.BadRequestError) as bad:
                client.chat.completions.create(model="m", messages=[{"role": "wizard", "content": "hi"}])
            assert bad.value.param == "messages[0].role"
    traces = read_records(tmp_path / "landing")
    assert [t["output"] for t in traces] == ["freeze_account"]  # refusals and bad input leave no trace
