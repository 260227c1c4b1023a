"""LiteLLM logs: StandardLoggingPayload records (what its logging callbacks emit) and SpendLogs rows.

One record per JSONL line, or a JSON document (an object or an array). Completion-type calls
become traces (id: the response id ``id`` / ``request_id``); embeddings, images, audio, moderation
and rerank calls are skipped, and so are calls whose ``status`` is ``failure``. The cost is LiteLLM's
own ``response_cost`` (``spend`` in SpendLogs): ``cost_source`` reported. Messages and response
may be objects or JSON text; SpendLogs rows written without prompts (``"{}"``) have no messages and
are quarantined for it.
"""

from __future__ import annotations

from typing import Any, Mapping

from loop_pipeline.core.ingest.formats.messages import messages_from, output_from
from loop_pipeline.core.ingest.formats.rows import (
    SKIP_FAILED,
    SKIP_OTHER,
    AdapterContext,
    FormatOutput,
    Match,
    Rows,
    read_items,
)
from loop_pipeline.core.ingest.formats.values import (
    MappingError,
    as_object,
    is_json,
    json_type,
    latency_text,
    parse_json,
    text,
    time_text,
)

FORMAT = "litellm"
CALL_TYPES = frozenset(
    {
        "completion",
        "acompletion",
        "text_completion",
        "atext_completion",
        "responses",
        "aresponses",
        "generate_content",
        "agenerate_content",
        "anthropic_messages",
        "_arealtime",
    }
)


def _structured(value: Any) -> Any:
    """Objects stored as JSON text (SpendLogs) are parsed; empty objects mean "not stored"."""
    if isinstance(value, str):
        parsed = parse_json(value)
        if is_json(parsed):
            value = parsed
    if value in ({}, [], "", None):
        return None
    return value


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _call(record_value: Any, record: int, raw: str, rows: Rows) -> None:
    if not isinstance(record_value, Mapping):
        rows.bad("trace", record, raw, "malformed_json", f"expected a logging payload object, got {json_type(record_value)}")
        return
    payload = record_value
    call_id = payload.get("id", payload.get("request_id"))
    try:
        call_type = text(payload.get("call_type"), "call_type")
        if call_type is not None and call_type.strip().lower() not in CALL_TYPES:
            rows.skip("trace", SKIP_OTHER)
            return
        if str(payload.get("status") or "").lower() == "failure":
            rows.skip("trace", SKIP_FAILED)
            return
        trace_id = text(call_id, "id")
        if not trace_id:
            raise MappingError("missing_field", "id: required (the response id; request_id in SpendLogs)")
        metadata = as_object(payload.get("metadata"), "metadata")
        requester = as_object(metadata.get("requester_metadata"), "metadata.requester_metadata")
        spend_metadata = as_object(metadata.get("spend_logs_metadata"), "metadata.spend_logs_metadata")
        tags = _structured(payload.get("request_tags")) or []
        if not isinstance(tags, list):
            raise MappingError("wrong_type", f"request_tags: expected an array, got {json_type(tags)}")
        cost = payload.get("response_cost", payload.get("spend"))
        start, end = payload.get("startTime"), payload.get("endTime")
        fields = {
            "trace_id": trace_id,
            "timestamp": time_text(start, "startTime"),
            "latency_ms": latency_text(start, end),
            "model": text(payload.get("model"), "model"),
            "provider": text(_blank_to_none(payload.get("custom_llm_provider")), "custom_llm_provider"),
            "input_tokens": text(payload.get("prompt_tokens"), "prompt_tokens"),
            "output_tokens": text(payload.get("completion_tokens"), "completion_tokens"),
            "cost_usd": text(cost, "response_cost"),
            "user_id": text(
                _blank_to_none(payload.get("end_user")) or _blank_to_none(payload.get("user")) or metadata.get("user_api_key_end_user_id"),
                "end_user",
            ),
            "session_id": text(
                _blank_to_none(payload.get("session_id")) or metadata.get("session_id") or requester.get("session_id"), "session_id"
            ),
            "messages": messages_from(_structured(payload.get("messages")), "messages"),
            "output": output_from(_structured(payload.get("response")), "response"),
        }
    except MappingError as exc:
        rows.bad("trace", record, raw, exc.reason, exc.detail, call_id if isinstance(call_id, str) else None)
        return
    litellm_trace = payload.get("trace_id")
    call_metadata = {
        "litellm_trace_id": litellm_trace,
        "call_type": payload.get("call_type"),
        "model_group": _blank_to_none(payload.get("model_group")),
        "api_base": _blank_to_none(payload.get("api_base")),
        "cache_hit": payload.get("cache_hit"),
        "tags": [t for t in tags if isinstance(t, str)],
    }
    match = Match(
        tags=tuple(t for t in tags if isinstance(t, str)),
        metadata={**metadata, **spend_metadata, **requester},
    )
    rows.trace(record, raw, fields, match, call_metadata, scope=litellm_trace if isinstance(litellm_trace, str) else None)


def read(data: str | bytes, context: AdapterContext) -> FormatOutput:
    return read_items(data, context, _call)
