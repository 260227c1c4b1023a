"""The routing policy end to end, with the fine-tuned model behind an OpenAI-compatible URL (the
``openai`` local backend, here a stand-in whose confidence the test sets) and a champion whose
serving spec is registered in a real MLflow registry (SQLite): served vs escalated by confidence,
escalation labels, pre-routing, local errors and timeouts falling back, shadow agreement, a local
answer streamed, a version that fails to load."""

from __future__ import annotations

import httpx
import openai
import pytest

from loop_pipeline.bench.stand_in import create_replay_app, replay_key, serve_in_thread
from loop_pipeline.core.serving import SERVING_SPEC_TAG
from loop_pipeline_tests.router.router_support import (
    FRONTIER_MODEL,
    INTENT,
    ingest_landing,
    intent_spec,
    register_spec_version,
    router_settings,
    running_router,
    traces_by_id,
    wait_for_champion,
)

LOCAL_ANSWER = "freeze_account"
FRONTIER_ANSWER = "report_lost_card"


@pytest.fixture
def servers():
    """(frontier, local model server): two stand-ins on 127.0.0.1."""
    frontier_app = create_replay_app({replay_key(INTENT): FRONTIER_ANSWER}, default_output="frontier says hi")
    local_app = create_replay_app(default_output=LOCAL_ANSWER, confidence=0.9, model_ids=("loop-candidate",))
    with serve_in_thread(frontier_app) as frontier, serve_in_thread(local_app) as local:
        yield frontier, local


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """One MLflow store (SQLite) for the module; each test registers its own model name."""
    root = tmp_path_factory.mktemp("registry")
    return {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_root": (root / "artifacts").as_uri()}


@pytest.fixture
def model_name(request) -> str:
    return f"cand-{request.node.name[5:40]}"


@pytest.fixture
def routed(tmp_path, servers, registry, model_name):
    """The router serving champion v1 (threshold 0.8 for intent) through the local stand-in."""
    frontier, local = servers
    settings = router_settings(
        tmp_path, frontier, load_champion=True, local_backend="openai", local_base_url=local.base_url, local_timeout_s=0.5,
        model_name=model_name, **registry,
    )
    version = register_spec_version(settings.resolved_tracking(), intent_spec(model_name), tmp_path / "v1")
    with running_router(settings) as router:
        wait_for_champion(router, version)
        yield router, frontier.server.config.app.state.replay, local.server.config.app.state.replay


def _ask(router, task_type: str | None = "intent", messages=INTENT, **extra):
    client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0)
    metadata = {"task_type": task_type} if task_type else None
    raw = client.chat.completions.with_raw_response.create(model="loop", messages=messages, metadata=metadata, **extra)
    return raw.parse(), raw.headers


def test_served_when_confident_escalated_when_not_and_both_calls_are_costed(tmp_path, routed, model_name):
    router, frontier, local = routed
    served, headers = _ask(router)
    assert served.choices[0].message.content == LOCAL_ANSWER and served.model == f"{model_name}@v1"
    assert (headers["x-loop-route"], headers["x-loop-reason"]) == ("local", "confident")
    assert float(headers["x-loop-confidence"]) == pytest.approx(0.9) and headers["x-loop-champion-version"] == "1"
    assert frontier.answered == 0
    # The local server got the transformed prompt (system turn dropped), greedy, with logprobs.
    sent = local.received[-1]
    assert sent["messages"] == [INTENT[1]] and sent["logprobs"] is True and sent["temperature"] == 0 and sent["max_tokens"] == 8

    local.confidence = 0.5
    escalated, headers2 = _ask(router)
    assert escalated.choices[0].message.content == FRONTIER_ANSWER
    assert (headers2["x-loop-route"], headers2["x-loop-reason"]) == ("frontier", "low_confidence")

    traces = traces_by_id_after_stop(router, tmp_path)
    local_trace, frontier_trace = traces[headers["x-loop-trace-id"]], traces[headers2["x-loop-trace-id"]]
    assert (local_trace["model"], local_trace["provider"], local_trace["output"]) == (f"{model_name}@v1", "local", LOCAL_ANSWER)
    meta = local_trace["metadata"]
    assert (meta["route"], meta["reason"], meta["threshold"], meta["champion_version"]) == ("local", "confident", 0.8, "1")
    assert meta["confidence"] == pytest.approx(0.9) and meta["local_latency_ms"] > 0 and meta["frontier_latency_ms"] is None
    assert local_trace["cost_usd"] == pytest.approx(0.36 / 3600 / 10.0)  # price per hour / requests per hour
    assert (frontier_trace["model"], frontier_trace["output"]) == (FRONTIER_MODEL, FRONTIER_ANSWER)
    fmeta = frontier_trace["metadata"]
    assert fmeta["local_output"] == LOCAL_ANSWER and fmeta["confidence"] == pytest.approx(0.5)
    assert fmeta["local_latency_ms"] > 0 and fmeta["frontier_latency_ms"] > 0
    assert frontier_trace["cost_usd"] == pytest.approx(fmeta["cost_local_usd"] + fmeta["cost_frontier_usd"])


def traces_by_id_after_stop(router, tmp_path):
    router.stop(timeout_s=60)
    return traces_by_id(tmp_path / "landing")


def test_pre_routes_and_escalation_labels_go_to_the_frontier(tmp_path, routed):
    router, frontier, local = routed
    reasons = {}
    for task_type in (None, "made_up", "summarization"):
        reply, headers = _ask(router, task_type)
        assert reply.choices[0].message.content == FRONTIER_ANSWER and headers["x-loop-route"] == "frontier"
        reasons[task_type] = headers["x-loop-reason"]
    assert reasons == {None: "no_task_type", "made_up": "unknown_task_type", "summarization": "no_threshold"}
    assert local.answered == 0  # pre-routed: the local model was never asked

    local.default_output, local.confidence = "out_of_scope", 0.99
    reply, headers = _ask(router)
    assert reply.choices[0].message.content == FRONTIER_ANSWER
    assert (headers["x-loop-route"], headers["x-loop-reason"]) == ("frontier", "escalation_label")
    metrics = httpx.get(f"{router.url}/metrics").text
    assert 'loop_router_escalations_total{reason="escalation_label",task_type="intent"} 1.0' in metrics
    assert 'loop_router_escalations_total{reason="unknown_task_type",task_type="unknown"} 1.0' in metrics
    assert 'loop_router_escalations_total{reason="no_task_type",task_type="none"} 1.0' in metrics


def test_a_local_error_or_timeout_falls_back_to_the_frontier_and_the_request_succeeds(tmp_path, routed):
    router, frontier, local = routed
    local.fail = "error"
    reply, headers = _ask(router)
    assert reply.choices[0].message.content == FRONTIER_ANSWER
    assert (headers["x-loop-route"], headers["x-loop-reason"]) == ("fallback", "local_error")
    local.fail = "timeout"
    reply2, headers2 = _ask(router)
    assert reply2.choices[0].message.content == FRONTIER_ANSWER
    assert (headers2["x-loop-route"], headers2["x-loop-reason"]) == ("fallback", "local_timeout")
    metrics = httpx.get(f"{router.url}/metrics").text
    assert 'loop_router_fallbacks_total{reason="local_error",task_type="intent"} 1.0' in metrics
    assert 'loop_router_fallbacks_total{reason="local_timeout",task_type="intent"} 1.0' in metrics
    # The frontier down as well: now the request fails, clearly, and is still traced.
    frontier.fail = "error"
    with pytest.raises(openai.APIStatusError) as failed:
        _ask(router)
    assert failed.value.status_code == 502 and failed.value.response.headers["x-loop-route"] == "fallback"
    traces = traces_by_id_after_stop(router, tmp_path)
    assert "HTTP 500" in traces[headers["x-loop-trace-id"]]["metadata"]["local_error"]
    assert "0.5 s" in traces[headers2["x-loop-trace-id"]]["metadata"]["local_error"]
    assert traces[failed.value.response.headers["x-loop-trace-id"]]["metadata"]["error"]
    assert ingest_landing(tmp_path / "landing").counts["trace"].quarantined == 0


def test_a_confident_local_answer_streams_once_decided(tmp_path, routed):
    router, frontier, local = routed
    client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model="loop", messages=INTENT, stream=True, stream_options={"include_usage": True}, metadata={"task_type": "intent"}
    ) as response:
        assert response.headers["x-loop-route"] == "local"
        chunks = list(response.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == LOCAL_ANSWER
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    local.confidence = 0.1  # escalated: the frontier's stream passes through
    with client.chat.completions.with_streaming_response.create(model="loop", messages=INTENT, stream=True, metadata={"task_type": "intent"}) as response:
        assert (response.headers["x-loop-route"], response.headers["x-loop-reason"]) == ("frontier", "low_confidence")
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == FRONTIER_ANSWER


def test_shadowed_answers_record_live_agreement_per_task(tmp_path, servers, registry, model_name):
    frontier, local = servers
    settings = router_settings(
        tmp_path, frontier, load_champion=True, local_backend="openai", local_base_url=local.base_url, shadow_rate=1.0,
        model_name=model_name, **registry,
    )
    version = register_spec_version(settings.resolved_tracking(), intent_spec(model_name), tmp_path / "v1")
    other = [{"role": "user", "content": "something else"}]
    with running_router(settings) as router:
        wait_for_champion(router, version)
        _, disagree = _ask(router)  # frontier: report_lost_card, local: freeze_account
        local.server.config.app.state.replay.default_output = "frontier says hi"
        _, agree = _ask(router, messages=other)
    traces = traces_by_id(tmp_path / "landing")
    first, second = traces[disagree["x-loop-trace-id"]]["metadata"], traces[agree["x-loop-trace-id"]]["metadata"]
    assert (first["route"], first["frontier_output"], first["shadow_agrees"]) == ("local", FRONTIER_ANSWER, False)
    assert (second["frontier_output"], second["shadow_agrees"]) == ("frontier says hi", True)
    assert first["cost_shadow_usd"] > 0
    assert traces[agree["x-loop-trace-id"]]["output"] == "frontier says hi"  # the client got the local answer


def test_a_version_that_fails_to_load_leaves_the_old_one_serving_and_says_why(tmp_path, routed, model_name, caplog):
    router, frontier, local = routed
    tracking = router.server.config.app.state.router.settings.resolved_tracking()
    broken = register_spec_version(tracking, intent_spec(model_name), tmp_path / "v2")
    tracking.client().set_model_version_tag(model_name, broken, SERVING_SPEC_TAG, '{"model_name": "x"}')
    reload = httpx.post(f"{router.url}/admin/reload")
    assert reload.status_code == 500
    status = reload.json()
    assert (status["version"], status["failed_version"], status["alias_version"]) == ("1", broken, broken)
    assert "invalid serving_spec" in status["last_error"]
    health = httpx.get(f"{router.url}/healthz").json()
    assert health["status"] == "degraded" and health["champion"]["state"] == "serving" and "failed to load" in health["champion"]["last_error"]
    assert "failed to load" in caplog.text and f"still serving {model_name}@v1" in caplog.text
    reply, headers = _ask(router)
    assert headers["x-loop-champion-version"] == "1" and reply.choices[0].message.content == LOCAL_ANSWER
    fixed = register_spec_version(tracking, intent_spec(model_name), tmp_path / "v3")
    reload = httpx.post(f"{router.url}/admin/reload")
    assert reload.status_code == 200 and reload.json()["version"] == fixed and reload.json()["last_error"] is None
    assert _ask(router)[1]["x-loop-champion-version"] == fixed
    metrics = httpx.get(f"{router.url}/metrics").text
    assert 'loop_router_champion_loads_total{outcome="failed"} 1.0' in metrics
    assert f"loop_router_champion_version {float(fixed)}" in metrics
