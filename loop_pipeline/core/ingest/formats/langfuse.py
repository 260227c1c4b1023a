"""Langfuse exports and ingestion batches.

Records the adapter reads, in any mix, per JSONL line or as a JSON document (or an array of them):

- an export ``{"trace": {..., "scores": [...]}, "observations": [...]}`` (the UI's trace download),
  or a trace with full details ``{"id", "observations": [...], "scores": [...]}`` (public API);
- an ingestion batch ``{"batch": [{"type": "trace-create" | "generation-create" | ... , "body"}]}``
  or single ingestion events; ``*-update`` events are merged into the observation they update;
- observation and score objects on their own (``traceId`` + ``type`` / ``dataType``).

Each GENERATION observation becomes a trace (id: the observation id; model, usage and cost details,
prompt name and version; user, session, name and tags from its trace); other observation types
are skipped (TOOL, AGENT / CHAIN, the rest). Scores become feedback: NUMERIC / BOOLEAN values,
CATEGORICAL labels; source ANNOTATION -> human_reviewer, API -> code, EVAL -> llm. A score on an
observation is about that call; a score on a trace about the trace's last call (see the pipeline).
Traces themselves are context, not records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from loop_pipeline.core.ingest.formats import detect
from loop_pipeline.core.ingest.formats.messages import messages_from, output_from
from loop_pipeline.core.ingest.formats.records import read_units
from loop_pipeline.core.ingest.formats.rows import (
    SKIP_AGENT,
    SKIP_FAILED,
    SKIP_OTHER,
    SKIP_TOOL,
    AdapterContext,
    FormatOutput,
    Match,
    Rows,
    finish_rows,
)
from loop_pipeline.core.ingest.formats.values import (
    MappingError,
    as_list,
    as_object,
    compact_json,
    id_text,
    json_type,
    latency_text,
    text,
    time_text,
)

FORMAT = "langfuse"
SCORE_SOURCES = {"ANNOTATION": "human_reviewer", "API": "code", "EVAL": "llm"}
_EVENT_TYPES = {
    "generation-create": "GENERATION",
    "generation-update": "GENERATION",
    "span-create": "SPAN",
    "span-update": "SPAN",
    "event-create": "EVENT",
}


@dataclass
class _Observation:
    record: int
    body: dict[str, Any]
    kind: str | None


@dataclass
class _File:
    traces: dict[str, dict[str, Any]] = field(default_factory=dict)
    observations: dict[str, _Observation] = field(default_factory=dict)
    anonymous: list[_Observation] = field(default_factory=list)  # observations without an id
    scores: list[tuple[int, Any, str | None]] = field(default_factory=list)  # (record, score, fallback time)
    bad: list[tuple[int, str, str, str, str]] = field(default_factory=list)  # (record, kind, raw, reason, detail)

    def trace(self, body: Mapping[str, Any]) -> None:
        trace_id = id_text(body.get("id"))
        if trace_id:
            merged = self.traces.setdefault(trace_id, {})
            merged.update({k: v for k, v in body.items() if v is not None and k not in ("observations", "scores")})

    def observation(self, record: int, body: Any, kind: str | None) -> None:
        if not isinstance(body, Mapping):
            self.bad.append((record, "trace", compact_json(body), "wrong_type", f"observation: expected an object, got {json_type(body)}"))
            return
        observation_id = id_text(body.get("id"))
        if not observation_id:
            self.anonymous.append(_Observation(record, dict(body), kind))
            return
        if observation_id in self.observations:
            known = self.observations[observation_id]
            known.body.update({k: v for k, v in body.items() if v is not None})
            known.kind = known.kind or kind
        else:
            self.observations[observation_id] = _Observation(record, dict(body), kind)


def _collect(value: Any, record: int, into: _File) -> None:
    if isinstance(value, list):
        for item in value:
            _collect(item, record, into)
        return
    if not isinstance(value, Mapping):
        into.bad.append((record, "trace", compact_json(value), "malformed_json", f"expected an object, got {json_type(value)}"))
        return
    if isinstance(value.get("batch"), list):
        for event in value["batch"]:
            _event(event, record, into)
        return
    if isinstance(value.get("data"), list):
        _collect(value["data"], record, into)
        return
    if "type" in value and "body" in value:
        _event(value, record, into)
        return
    if isinstance(value.get("trace"), Mapping):
        _export(value["trace"], value.get("observations"), value["trace"].get("scores"), record, into)
        return
    if isinstance(value.get("observations"), list) and "id" in value:  # a trace with full details
        _export(value, value["observations"], value.get("scores"), record, into)
        return
    if "traceId" in value and value.get("type") in detect.LANGFUSE_OBSERVATION_TYPES:
        into.observation(record, value, None)
        return
    if "dataType" in value or ("traceId" in value and "name" in value and "value" in value):
        into.scores.append((record, value, None))
        return
    into.bad.append((record, "trace", compact_json(value), "invalid_value", "not a Langfuse export, batch, event, observation or score"))


def _export(trace: Mapping[str, Any], observations: Any, scores: Any, record: int, into: _File) -> None:
    into.trace(trace)
    for name, items, kind in (("observations", observations, "trace"), ("scores", scores, "feedback")):
        if items is not None and not isinstance(items, list):
            into.bad.append((record, kind, compact_json(items), "wrong_type", f"{name}: expected an array, got {json_type(items)}"))
            continue
        for item in items or []:
            if kind == "trace":
                into.observation(record, item, None)
            else:
                into.scores.append((record, item, None))


def _event(event: Any, record: int, into: _File) -> None:
    if not isinstance(event, Mapping):
        into.bad.append((record, "trace", compact_json(event), "wrong_type", f"batch event: expected an object, got {json_type(event)}"))
        return
    kind = event.get("type") if isinstance(event.get("type"), str) else None
    body = event.get("body")
    if kind == "trace-create":
        if isinstance(body, Mapping):
            into.trace(body)
    elif kind == "score-create":
        into.scores.append((record, body, event.get("timestamp")))
    elif kind in _EVENT_TYPES:
        into.observation(record, _with_time(body, event.get("timestamp")), _EVENT_TYPES[kind])
    elif kind in ("observation-create", "observation-update"):
        into.observation(record, _with_time(body, event.get("timestamp")), None)
    elif kind == "sdk-log":
        return  # SDK diagnostics, not data
    else:
        into.bad.append((record, "trace", compact_json(event), "invalid_value", f"batch event type {kind!r} is not a Langfuse ingestion event"))


def _with_time(body: Any, timestamp: Any) -> Any:
    if isinstance(body, Mapping) and body.get("startTime") is None and timestamp is not None:
        return {**body, "startTime": timestamp}
    return body


def _number(value: Any, name: str) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise MappingError("wrong_type", f"{name}: expected a number, got {json_type(value)}")
    return value


def _first(*candidates: tuple[str, Any]) -> tuple[str, Any]:
    for name, value in candidates:
        if value is not None:
            return name, value
    return "", None


def _usage(body: Mapping[str, Any]) -> tuple[Any, Any]:
    """Input and output tokens: usageDetails, the legacy usage object, or the export's totals."""
    details = body.get("usageDetails") if isinstance(body.get("usageDetails"), Mapping) else {}
    usage = body.get("usage") if isinstance(body.get("usage"), Mapping) else {}
    name_in, tokens_in = _first(
        ("usageDetails.input", details.get("input")),
        ("usage.input", usage.get("input")),
        ("usage.promptTokens", usage.get("promptTokens")),
        ("inputUsage", body.get("inputUsage")),
    )
    name_out, tokens_out = _first(
        ("usageDetails.output", details.get("output")),
        ("usage.output", usage.get("output")),
        ("usage.completionTokens", usage.get("completionTokens")),
        ("outputUsage", body.get("outputUsage")),
    )
    return _number(tokens_in, name_in), _number(tokens_out, name_out)


def _cost(body: Mapping[str, Any]) -> Any:
    """The cost Langfuse reports: costDetails, else its totals (a 0 total without details means
    Langfuse had no price for the model: unknown, so ingest computes one)."""
    details = body.get("costDetails") if isinstance(body.get("costDetails"), Mapping) else {}
    usage = body.get("usage") if isinstance(body.get("usage"), Mapping) else {}
    total = body.get("totalCost") if body.get("totalCost") not in (0, 0.0) else None
    name, value = _first(
        ("costDetails.total", details.get("total")),
        ("totalCost", total),
        ("calculatedTotalCost", body.get("calculatedTotalCost") or None),
        ("usage.totalCost", usage.get("totalCost")),
    )
    if value is not None:
        return _number(value, name)
    parts = [details.get("input"), details.get("output")]
    if any(part is not None for part in parts):
        return repr(sum(float(_number(part, "costDetails") or 0) for part in parts))
    return None


def _skip_reason(kind: str | None) -> str | None:
    upper = (kind or "").upper()
    if upper == "GENERATION":
        return None
    if upper == "TOOL":
        return SKIP_TOOL
    if upper in ("AGENT", "CHAIN"):
        return SKIP_AGENT
    return SKIP_OTHER


def _call(observation: _Observation, trace: Mapping[str, Any], rows: Rows) -> None:
    body = observation.body
    raw = compact_json(body)
    try:
        observation_id = id_text(body.get("id"))
        if not observation_id:
            raise MappingError("missing_field", "id: required (observation id)")
        tokens_in, tokens_out = _usage(body)
        prompt_name = text(body.get("promptName"), "promptName")
        prompt_version = text(body.get("promptVersion"), "promptVersion")
        trace_metadata = as_object(trace.get("metadata"), "trace.metadata")
        observation_metadata = as_object(body.get("metadata"), "metadata")
        fields = {
            "trace_id": observation_id,
            "timestamp": time_text(body.get("startTime"), "startTime"),
            "latency_ms": latency_text(body.get("startTime"), body.get("endTime")),
            "model": text(body.get("model"), "model"),
            "input_tokens": text(tokens_in, "usage.input"),
            "output_tokens": text(tokens_out, "usage.output"),
            "cost_usd": text(_cost(body), "cost"),
            "user_id": text(trace.get("userId"), "userId"),
            "session_id": text(trace.get("sessionId"), "sessionId"),
            "prompt_version": f"{prompt_name}:{prompt_version}" if prompt_name and prompt_version else prompt_name or prompt_version,
            "messages": messages_from(body.get("input"), "input"),
            "output": output_from(body.get("output"), "output"),
        }
        tags = tuple(t for t in as_list(trace.get("tags"), "trace.tags") if isinstance(t, str))
        match = Match(
            span_name=text(body.get("name"), "name"),
            trace_name=text(trace.get("name"), "trace.name"),
            tags=tags,
            prompt_name=prompt_name,
            metadata={**trace_metadata, **observation_metadata},
        )
    except MappingError as exc:
        rows.bad("trace", observation.record, raw, exc.reason, exc.detail, id_text(body.get("id")))
        return
    trace_id = id_text(body.get("traceId")) or id_text(trace.get("id"))
    metadata = {
        "source_trace_id": trace_id,
        "observation_name": match.span_name,
        "parent_observation_id": id_text(body.get("parentObservationId")),
        "trace_name": match.trace_name,
        "environment": id_text(body.get("environment")) or id_text(trace.get("environment")),
        "tags": list(tags),
    }
    rows.trace(observation.record, raw, fields, match, metadata, scope=trace_id)


def _score_value(score: Mapping[str, Any]) -> tuple[Any, str | None]:
    """The value to map and the label, by data type."""
    data_type = str(score.get("dataType") or "").upper()
    value, string_value = score.get("value"), score.get("stringValue")
    if data_type == "NUMERIC":
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise MappingError("wrong_type", f"value: a NUMERIC score needs a number, got {json_type(value)}")
        return value, None
    if data_type == "BOOLEAN":
        if isinstance(value, bool):
            return value, None
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value), None
        if isinstance(string_value, str) and string_value.lower() in ("true", "false"):
            return string_value.lower() == "true", None
        raise MappingError("wrong_type", f"value: a BOOLEAN score needs 0 / 1 or true / false, got {value!r}")
    if data_type == "CATEGORICAL":
        label = string_value if isinstance(string_value, str) else value if isinstance(value, str) else None
        if label is None:
            raise MappingError("missing_field", "stringValue: a CATEGORICAL score needs its category")
        return label, label
    if data_type == "TEXT":
        return {"text": string_value if string_value is not None else value}, None
    if data_type:
        raise MappingError("invalid_value", f"dataType: {data_type!r} is not NUMERIC, CATEGORICAL, BOOLEAN or TEXT")
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise MappingError("wrong_type", f"value: expected a number or a category, got {json_type(value)}")
    return value, value if isinstance(value, str) else None


def _score(record: int, score: Any, fallback_time: Any, into: _File, rows: Rows) -> None:
    raw = compact_json(score)
    try:
        if not isinstance(score, Mapping):
            raise MappingError("wrong_type", f"score: expected an object, got {json_type(score)}")
        name = text(score.get("name"), "name")
        if not name:
            raise MappingError("missing_field", "name: required (score name)")
        value, label = _score_value(score)
        source_name = str(score.get("source") or "API").upper()
        source = SCORE_SOURCES.get(source_name)
        if source is None:
            raise MappingError("invalid_value", f"source: {source_name!r} is not ANNOTATION, API or EVAL")
        observation_id = text(score.get("observationId"), "observationId")
        trace = text(score.get("traceId"), "traceId")
        session = text(score.get("sessionId"), "sessionId")
        if not (observation_id or trace or session):
            raise MappingError("missing_field", "traceId: required (or observationId / sessionId)")
    except MappingError as exc:
        score_id = score.get("id") if isinstance(score, Mapping) and isinstance(score.get("id"), str) else None
        rows.bad("feedback", record, raw, exc.reason, exc.detail, score_id)
        return
    target = None
    if observation_id:
        known = into.observations.get(observation_id)
        if known is None or _skip_reason(known.kind or known.body.get("type")) is None:
            target = observation_id  # a generation, or one this file does not hold
        else:
            trace = trace or known.body.get("traceId")
    rows.score(
        record,
        raw,
        timestamp=score.get("timestamp") or score.get("createdAt") or fallback_time,
        name=name,
        value=value if not isinstance(value, dict) else None,
        label=label if not isinstance(value, dict) else value["text"],
        source=source,
        trace_id=target,
        scope=trace if trace else session,
        scope_kind="trace" if trace else "session",
        annotator_id=score.get("authorUserId"),
        feedback_id=score.get("id"),
        kind_hint=None,
    )
    if isinstance(value, dict):
        rows.feedback[-1]["_value_type"] = "text"


def read(data: str | bytes, context: AdapterContext) -> FormatOutput:
    read_result = read_units(data, context.max_record_bytes, context.max_document_bytes)
    rows = context.rows()
    for record, raw, reason, detail in read_result.bad:
        rows.bad("trace", record, raw, reason, detail)
    collected = _File()
    for unit in read_result.units:
        _collect(unit.value, unit.record, collected)
    for record, kind, raw, reason, detail in collected.bad:
        rows.bad(kind, record, raw, reason, detail)
    only_trace = next(iter(collected.traces.values())) if len(collected.traces) == 1 else {}
    for observation in [*collected.observations.values(), *collected.anonymous]:
        kind = observation.kind or observation.body.get("type")
        reason = _skip_reason(kind if isinstance(kind, str) else None)
        if reason is not None:
            rows.skip("trace", reason)
            continue
        if str(observation.body.get("level") or "").upper() == "ERROR":
            rows.skip("trace", SKIP_FAILED)
            continue
        trace_id = id_text(observation.body.get("traceId"))
        # A batch with one trace-create: its generations may leave traceId out (LiteLLM does).
        trace = collected.traces.get(trace_id, {"id": trace_id}) if trace_id else only_trace
        _call(observation, trace, rows)
    for record, score, fallback_time in collected.scores:
        _score(record, score, fallback_time, collected, rows)
    return finish_rows(rows, read_result.lines, context.feedback)
