"""The router with no champion (everything to the frontier), under uvicorn on 127.0.0.1, driven by
the real ``openai`` client (sync, async, streaming) and httpx: headers, traces that ingest cleanly,
feedback that joins its trace, a frontier that is down, bad input, auth and secrets."""

from __future__ import annotations

import asyncio
import logging

import httpx
import openai
import pytest

from loop_pipeline.bench.stand_in import create_replay_app, replay_key, serve_in_thread
from loop_pipeline.router.auth import key_digest
from loop_pipeline_tests.router.router_support import (
    FRONTIER_MODEL,
    INTENT,
    closed_segments,
    ingest_landing,
    open_segments,
    read_records,
    router_settings,
    router_state,
    running_router,
    traces_by_id,
)

RECORDED = "report_lost_card"


@pytest.fixture
def frontier():
    app = create_replay_app({replay_key(INTENT): RECORDED}, default_output="ok")
    with serve_in_thread(app) as server:
        yield server


def _client(router, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{router.url}/v1", api_key=key, max_retries=0)


def test_sync_async_and_streaming_answers_carry_trace_and_route_and_every_one_is_traced(tmp_path, frontier):
    settings = router_settings(tmp_path, frontier)
    with running_router(settings) as router:
        raw = _client(router).chat.completions.with_raw_response.create(
            model="anything", messages=INTENT, metadata={"task_type": "intent"}
        )
        reply = raw.parse()
        assert reply.choices[0].message.content == RECORDED
        assert raw.headers["x-loop-route"] == "frontier" and raw.headers["x-loop-reason"] == "no_champion"
        sync_id = raw.headers["x-loop-trace-id"]

        async def async_calls() -> list[str]:
            client = openai.AsyncOpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0)
            replies = await asyncio.gather(
                *[client.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": f"q{i}"}]) for i in range(20)]
            )
            await client.close()
            return [r.headers["x-loop-trace-id"] for r in replies]

        async_ids = asyncio.run(async_calls())
        with _client(router).chat.completions.with_streaming_response.create(
            model="m", messages=INTENT, stream=True, extra_headers={"x-loop-task-type": "intent"}
        ) as streamed:
            assert streamed.headers["x-loop-route"] == "frontier"
            stream_id = streamed.headers["x-loop-trace-id"]
            chunks = list(streamed.parse())
        assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == RECORDED
        assert all(chunk.usage is None for chunk in chunks)  # usage only for a client that asks for it
        with _client(router).chat.completions.with_streaming_response.create(
            model="m", messages=INTENT, stream=True, stream_options={"include_usage": True}
        ) as streamed:
            usage_id = streamed.headers["x-loop-trace-id"]
            assert list(streamed.parse())[-1].usage.completion_tokens == 1
        sent = frontier.server.config.app.state.replay.received
        assert all(body["model"] == FRONTIER_MODEL and "metadata" not in body for body in sent)

    traces = traces_by_id(tmp_path / "landing")
    assert set(traces) == {sync_id, stream_id, usage_id, *async_ids}
    assert not open_segments(tmp_path / "landing")  # shutdown closed every segment
    first = traces[sync_id]
    assert (first["model"], first["task_type"], first["output"], first["messages"]) == (FRONTIER_MODEL, "intent", RECORDED, INTENT)
    assert first["metadata"]["route"] == "frontier" and first["metadata"]["reason"] == "no_champion"
    assert first["cost_usd"] > 0 and first["cost_source"] == "computed" and first["latency_ms"] > 0
    assert traces[stream_id]["output"] == RECORDED and traces[stream_id]["task_type"] == "intent"
    assert traces[stream_id]["output_tokens"] > 0 and traces[stream_id]["metadata"]["stream"] is True

    result = ingest_landing(tmp_path / "landing")
    assert result.counts["trace"].valid == 23 and result.counts["trace"].quarantined == 0


def test_feedback_posted_through_the_api_joins_its_trace_in_the_next_ingest(tmp_path, frontier):
    with running_router(router_settings(tmp_path, frontier)) as router:
        raw = _client(router).chat.completions.with_raw_response.create(model="m", messages=INTENT, metadata={"task_type": "intent"})
        trace_id = raw.headers["x-loop-trace-id"]
        posted = httpx.post(f"{router.url}/v1/feedback", json={"trace_id": trace_id, "kind": "edited", "edited_output": "freeze_account"})
        assert posted.status_code == 200 and posted.json()["trace_id"] == trace_id
        thumbs = httpx.post(f"{router.url}/v1/feedback", json={"trace_id": trace_id, "kind": "thumbs", "value": True})
        assert thumbs.status_code == 200
        bad = httpx.post(f"{router.url}/v1/feedback", json={"trace_id": trace_id, "kind": "edited"})
        assert bad.status_code == 400 and "edited_output" in bad.json()["error"]["message"]
        unknown = httpx.post(f"{router.url}/v1/feedback", json={"trace_id": trace_id, "kind": "loved_it"})
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "kind"

    assert len(read_records(tmp_path / "landing", "feedback")) == 2
    result = ingest_landing(tmp_path / "landing")
    assert result.counts["feedback"].valid == 2 and result.counts["feedback"].quarantined == 0
    joined = result.feedback.join(result.traces.select("trace_id", "model"), on="trace_id", how="inner")
    assert joined.height == 2 and set(joined.get_column("kind")) == {"edited", "thumbs"}
    assert joined.filter(joined["kind"] == "thumbs").get_column("value").to_list() == [1.0]


def test_a_frontier_that_is_down_gives_a_clear_502_and_its_trace_is_still_written(tmp_path, frontier):
    replay = frontier.server.config.app.state.replay
    settings = router_settings(tmp_path, frontier, frontier_timeout_s=0.5)
    with running_router(settings) as router:
        replay.fail = "error"
        with pytest.raises(openai.APIStatusError) as failed:
            _client(router).chat.completions.create(model="m", messages=INTENT, metadata={"task_type": "intent"})
        assert failed.value.status_code == 502
        assert failed.value.body["code"] == "frontier_unavailable" and "HTTP 500" in failed.value.body["message"]
        error_id = failed.value.response.headers["x-loop-trace-id"]
        replay.fail = "timeout"
        streamed = httpx.post(f"{router.url}/v1/chat/completions", json={"messages": INTENT, "stream": True}, timeout=10)
        assert streamed.status_code == 502 and "in time" in streamed.json()["error"]["message"]
        timeout_id = streamed.headers["x-loop-trace-id"]
        replay.fail = None
        assert _client(router).chat.completions.create(model="m", messages=INTENT).choices[0].message.content == RECORDED
        metrics = httpx.get(f"{router.url}/metrics").text
    assert 'loop_router_frontier_errors_total{kind="http"} 1.0' in metrics
    assert 'loop_router_frontier_errors_total{kind="timeout"} 1.0' in metrics
    traces = traces_by_id(tmp_path / "landing")
    assert len(traces) == 3
    assert traces[error_id]["output"] == "" and "HTTP 500" in traces[error_id]["metadata"]["error"]
    assert "in time" in traces[timeout_id]["metadata"]["error"]
    assert ingest_landing(tmp_path / "landing").counts["trace"].quarantined == 0


BAD_BODIES = [
    (b"{not json", 400, "invalid_json", "malformed_json"),
    (b'{"model": "m"}', 400, "missing_required_parameter", "missing_messages"),
    (b'{"messages": [{"role": "wizard", "content": "hi"}]}', 400, "invalid_value", "unknown_role"),
    (b'{"messages": "hello"}', 400, "invalid_type", "missing_messages"),
    (b"[1, 2]", 400, "invalid_type", "malformed_json"),
    (b'{"messages": [{"role": "user", "content": "' + b"x" * 3000 + b'"}]}', 413, "request_too_large", "too_large"),
]


def test_bad_input_is_a_4xx_openai_error_counted_and_never_traced(tmp_path, frontier):
    with running_router(router_settings(tmp_path, frontier, max_body_bytes=2000)) as router:
        for body, status, code, reason in BAD_BODIES:
            answer = httpx.post(f"{router.url}/v1/chat/completions", content=body, headers={"content-type": "application/json"})
            assert answer.status_code == status, body[:60]
            assert answer.json()["error"]["code"] == code and answer.json()["error"]["type"] == "invalid_request_error"
        # Chunked (no content-length): the limit holds while reading.
        chunks = iter([b'{"messages": [{"role": "user", "content": "', b"y" * 2500, b'"}]}'])
        chunked = httpx.post(f"{router.url}/v1/chat/completions", content=chunks)
        assert chunked.status_code == 413
        with pytest.raises(openai.BadRequestError):
            _client(router).chat.completions.create(model="m", messages=[{"role": "robot", "content": "hi"}])
        # The worker survived all of it.
        assert _client(router).chat.completions.create(model="m", messages=INTENT).choices[0].message.content == RECORDED
        metrics = httpx.get(f"{router.url}/metrics").text
        missing = httpx.get(f"{router.url}/v1/nothing-here")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    for reason, count in {"malformed_json": 2, "missing_messages": 2, "unknown_role": 2, "too_large": 2}.items():
        assert f'loop_router_rejections_total{{reason="{reason}"}} {float(count)}' in metrics
    assert len(read_records(tmp_path / "landing")) == 1


@pytest.fixture
def keyed_frontier():
    """A stand-in that also records the Authorization header it receives."""
    app = create_replay_app({replay_key(INTENT): RECORDED})
    seen: list[str] = []

    @app.middleware("http")
    async def _record(request, call_next):
        seen.append(request.headers.get("authorization", ""))
        return await call_next(request)

    with serve_in_thread(app) as server:
        yield server, seen


def test_auth_refuses_missing_and_wrong_keys_and_no_secret_reaches_logs_traces_or_metrics(tmp_path, keyed_frontier, monkeypatch, caplog):
    frontier, seen = keyed_frontier
    key, frontier_key = "sk-loop-client-7f3a9c", "sk-frontier-secret-1b2c"
    monkeypatch.setenv("LOOP_FRONTIER_API_KEY", frontier_key)
    monkeypatch.setenv("LOOP_ROUTER_API_KEYS", f"{key_digest('other-key')},{key_digest(key)}")
    caplog.set_level(logging.DEBUG)
    settings = router_settings(tmp_path, frontier)
    assert len(settings.api_keys_sha256) == 2
    with running_router(settings) as router:
        with pytest.raises(openai.AuthenticationError) as wrong:
            _client(router, key="sk-wrong").chat.completions.create(model="m", messages=INTENT)
        assert wrong.value.status_code == 401 and wrong.value.body["code"] == "invalid_api_key"
        missing = httpx.post(f"{router.url}/v1/chat/completions", json={"messages": INTENT})
        assert missing.status_code == 401 and missing.json()["error"]["type"] == "invalid_request_error"
        assert httpx.get(f"{router.url}/v1/models").status_code == 401
        assert httpx.post(f"{router.url}/admin/reload").status_code == 401
        assert httpx.post(f"{router.url}/v1/feedback", json={"trace_id": "x", "kind": "accepted"}).status_code == 401
        reply = _client(router, key=key).chat.completions.create(model="m", messages=INTENT, metadata={"task_type": "intent"})
        assert reply.choices[0].message.content == RECORDED
        models = httpx.get(f"{router.url}/v1/models", headers={"authorization": f"Bearer {key}"}).json()
        assert [m["id"] for m in models["data"]] == [FRONTIER_MODEL]
        metrics = httpx.get(f"{router.url}/metrics").text
        health = httpx.get(f"{router.url}/healthz").json()
    assert seen[-1] == f"Bearer {frontier_key}"  # the frontier got its key from the environment
    assert 'loop_router_rejections_total{reason="unauthorized"} 5.0' in metrics
    assert health["auth"] == "on"
    written = "".join(p.read_text() for p in closed_segments(tmp_path / "landing"))
    for secret in (key, frontier_key):
        for where, text in {"log": caplog.text, "traces": written, "metrics": metrics, "healthz": str(health)}.items():
            assert secret not in text, f"a secret reached the {where}"


def test_models_health_and_metrics_describe_the_service(tmp_path, frontier, caplog):
    caplog.set_level(logging.WARNING, logger="loop_pipeline.router")
    with running_router(router_settings(tmp_path, frontier, segment_max_records=2)) as router:
        client = _client(router)
        for i in range(5):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"hello {i}"}], metadata={"task_type": "intent"})
        client.chat.completions.create(model="m", messages=INTENT, metadata={"task_type": "made-up-task"})
        health = httpx.get(f"{router.url}/healthz").json()
        metrics = httpx.get(f"{router.url}/metrics").text
        state = router_state(router)
        assert state.watcher.status()["state"] == "disabled"
    assert "AUTH IS OFF" in caplog.text
    assert health["status"] == "ok" and health["champion"]["state"] == "disabled" and health["auth"] == "off"
    assert 'loop_router_requests_total{route="frontier",task_type="intent"} 5.0' in metrics
    assert 'loop_router_requests_total{route="frontier",task_type="unknown"} 1.0' in metrics  # a bounded label
    assert 'loop_router_escalations_total{reason="no_champion",task_type="intent"} 5.0' in metrics
    assert "loop_router_added_seconds_bucket" in metrics and "loop_router_backend_seconds_count" in metrics
    assert 'loop_router_cost_usd_total{backend="frontier",route="frontier"}' in metrics
    # Two records per segment: 6 traces are 3 closed segments.
    assert len(closed_segments(tmp_path / "landing")) == 3 and len(read_records(tmp_path / "landing")) == 6


def test_the_frontier_stream_is_split_into_lines_wherever_its_chunks_break():
    from loop_pipeline.router.backends.openai_compatible import sse_lines

    data = 'data: {"content":"é"}\n\ndata: [DONE]\r\n\r\nlast\rline'.encode("utf-8")

    async def lines(parts: list[bytes]) -> list[str]:
        async def chunks():
            for part in parts:
                yield part

        return [line async for line in sse_lines(chunks())]

    expected = ['data: {"content":"é"}', "", "data: [DONE]", "", "last", "line"]
    for cut in range(len(data) + 1):  # every place one break can fall, mid-character and mid-CRLF included
        assert asyncio.run(lines([data[:cut], data[cut:]])) == expected
    assert asyncio.run(lines([bytes([b]) for b in data])) == expected
