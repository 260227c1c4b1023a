"""The frontier stand-in, driven by the real ``openai`` client over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import math
import time

import httpx
import openai
import pytest

from loop_pipeline.bench.stand_in import (
    create_replay_app,
    recordings_from_landing,
    replay_key,
    serve_in_thread,
    split_tokens,
)
from loop_pipeline.sim import SimulationConfig
from loop_pipeline_tests.helpers import simulate_landing

QUESTION = [{"role": "system", "content": "Classify the intent."}, {"role": "user", "content": "freeze my card please"}]
RECORDED = "report lost card"


@pytest.fixture
def stand_in():
    app = create_replay_app({replay_key(QUESTION): RECORDED}, default_output="unknown intent", confidence=0.8)
    with serve_in_thread(app) as server:
        yield server


def _client(server, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0, **kwargs)


def test_replay_key_ignores_extra_message_fields_but_not_content():
    assert replay_key(QUESTION) == replay_key([{**m, "name": "x"} for m in QUESTION])
    assert replay_key(QUESTION) != replay_key([QUESTION[0], {"role": "user", "content": "freeze my card"}])
    assert "".join(split_tokens("  a  b c ")) == "  a  b c "


def test_sync_client_replays_the_recording_with_usage_and_logprobs(stand_in):
    client = _client(stand_in)
    reply = client.chat.completions.create(model="gpt-x", messages=QUESTION, logprobs=True)
    assert reply.choices[0].message.content == RECORDED
    assert reply.model == "gpt-x"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == len(split_tokens(RECORDED)) == 3
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 3
    tokens = reply.choices[0].logprobs.content
    assert "".join(t.token for t in tokens) == RECORDED
    assert math.exp(sum(t.logprob for t in tokens)) == pytest.approx(0.8)
    # Unrecorded messages get the default; no logprobs unless asked.
    other = client.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "hi"}])
    assert other.choices[0].message.content == "unknown intent"
    assert other.choices[0].logprobs is None
    state = stand_in.server.config.app.state.replay
    assert (state.answered, state.replayed) == (2, 1)
    assert state.received[0]["messages"] == QUESTION


def test_max_tokens_cuts_the_answer(stand_in):
    reply = _client(stand_in).chat.completions.create(model="m", messages=QUESTION, max_tokens=2)
    assert reply.choices[0].message.content == "report lost"
    assert reply.choices[0].finish_reason == "length"


def test_async_client_concurrently(stand_in):
    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=stand_in.base_url, api_key="test", max_retries=0)
        async with client:
            replies = await asyncio.gather(*[client.chat.completions.create(model="m", messages=QUESTION) for _ in range(20)])
        return [r.choices[0].message.content for r in replies]

    assert asyncio.run(main()) == [RECORDED] * 20


def test_streaming_chunks_rebuild_the_answer_with_usage_and_logprobs(stand_in):
    stream = _client(stand_in).chat.completions.create(
        model="m", messages=QUESTION, stream=True, logprobs=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == RECORDED
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3
    logprob_sum = sum(t.logprob for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content)
    assert math.exp(logprob_sum) == pytest.approx(0.8)


def test_async_streaming(stand_in):
    async def main() -> str:
        async with openai.AsyncOpenAI(base_url=stand_in.base_url, api_key="t", max_retries=0) as client:
            stream = await client.chat.completions.create(model="m", messages=QUESTION, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(main()) == RECORDED


def test_sse_framing_on_the_wire(stand_in):
    response = httpx.post(f"{stand_in.url}/chat/completions", json={"model": "m", "messages": QUESTION, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_models_endpoint(stand_in):
    assert [m.id for m in _client(stand_in).models.list()] == ["frontier-stand-in"]


def test_bad_requests_are_400_with_an_openai_error(stand_in):
    client = _client(stand_in)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=[])
    assert "messages" in caught.value.message
    response = httpx.post(f"{stand_in.base_url}/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


def test_fail_error_is_a_500_and_can_be_switched_on_a_running_server(stand_in):
    client = _client(stand_in)
    state = stand_in.server.config.app.state.replay
    state.fail = "error"
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=QUESTION)
    state.fail = None
    assert client.chat.completions.create(model="m", messages=QUESTION).choices[0].message.content == RECORDED


def test_fail_timeout_outlasts_the_client_and_the_server_still_stops():
    server = serve_in_thread(create_replay_app(fail="timeout"), graceful_shutdown_s=0.5)
    client = openai.OpenAI(base_url=server.base_url, api_key="t", max_retries=0, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=QUESTION)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5


def test_latency_is_added():
    with serve_in_thread(create_replay_app(latency_ms=200)) as server:
        started = time.perf_counter()
        _client(server).chat.completions.create(model="m", messages=QUESTION)
        assert time.perf_counter() - started >= 0.2


def test_jittered_latency_differs_between_requests_and_is_the_same_for_the_same_messages():
    app = create_replay_app(latency_ms=100, latency_jitter_ms=50)
    state = app.state.replay
    conversations = [[{"role": "user", "content": f"question {i}"}] for i in range(2000)]
    delays = [state.delay_s(messages) for messages in conversations]
    assert all(0.05 <= d <= 0.15 for d in delays)
    assert delays == [state.delay_s(messages) for messages in conversations]  # drawn from the messages
    # Uniform over the range: its quarters each hold about a quarter of the requests.
    quarters = [sum(1 for d in delays if 0.05 + 0.025 * q <= d < 0.05 + 0.025 * (q + 1)) for q in range(4)]
    assert all(400 <= count <= 600 for count in quarters), quarters
    with serve_in_thread(app) as server:
        started = time.perf_counter()
        _client(server).chat.completions.create(model="m", messages=conversations[0])
        assert time.perf_counter() - started >= delays[0]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="fail"):
        create_replay_app(fail="crash")
    with pytest.raises(ValueError, match="latency_jitter_ms"):
        create_replay_app(latency_ms=10, latency_jitter_ms=20)
    with pytest.raises(ValueError, match="confidence"):
        create_replay_app(confidence=0.0)


def test_a_server_whose_startup_fails_raises():
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    @asynccontextmanager
    async def broken(_app):
        raise RuntimeError("no database")
        yield

    with pytest.raises(RuntimeError, match="did not start"):
        serve_in_thread(FastAPI(lifespan=broken))


def test_recordings_from_a_simulated_landing_folder_answer_what_the_frontier_answered(tmp_path):
    simulate_landing(SimulationConfig(days=1, traces_per_day=40, frontier_error_rate=0.3, seed=5), tmp_path)
    records = [json.loads(line) for path in sorted((tmp_path / "traces").rglob("*.jsonl")) for line in path.open()]
    recordings = recordings_from_landing(tmp_path)
    assert recordings and len(recordings) <= len(records)
    first = records[0]
    assert recordings[replay_key(first["messages"])] == first["output"]
    with serve_in_thread(create_replay_app(recordings, default_output="NOT RECORDED")) as server:
        client = _client(server)
        for record in records[:10]:
            reply = client.chat.completions.create(model="m", messages=record["messages"])
            assert reply.choices[0].message.content == recordings[replay_key(record["messages"])]
    assert recordings_from_landing(tmp_path, model="some-other-model") == {}


def test_recordings_refuse_what_is_not_a_native_trace(tmp_path):
    day = tmp_path / "traces" / "2026-11-01"
    day.mkdir(parents=True)
    (day / ".open-segment.jsonl").write_text("half a line")  # still being written: skipped
    (day / "otlp.jsonl").write_text('{"resourceSpans": []}\n')
    with pytest.raises(ValueError, match=r"otlp.jsonl:1: not a native trace"):
        recordings_from_landing(tmp_path)
    with pytest.raises(FileNotFoundError):
        recordings_from_landing(tmp_path / "missing")
