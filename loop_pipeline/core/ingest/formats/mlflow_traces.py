"""MLflow 3 trace JSON (``mlflow.get_trace(...).to_json()``, ``mlflow traces get``): info + spans.

One trace per JSONL line or JSON document (or an array of them). Spans whose ``mlflow.spanType``
is CHAT_MODEL or LLM become traces (id: the span id as hex); TOOL, AGENT / CHAIN and the other span
types are skipped; a span or trace in ERROR state is a failed call. Span attribute values are
JSON-encoded, as MLflow writes them. Token counts come from ``mlflow.chat.tokenUsage``, the chat
response's ``usage`` or, for a trace with one LLM span, the trace's ``mlflow.trace.tokenUsage``.

``info.assessments`` become feedback: ``feedback.value`` (booleans, numbers, categories) and
``expectation.value`` (a gold label: kind human_label unless a rule says otherwise); source HUMAN
-> human_reviewer, LLM_JUDGE -> llm, CODE -> code; ``valid: false`` (overridden) is skipped. An
assessment names its span, or the trace (then it is about the trace's last LLM call).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Mapping

from loop_pipeline.core.ingest.formats.messages import messages_from, output_from
from loop_pipeline.core.ingest.safejson import loads
from loop_pipeline.core.ingest.formats.rows import (
    SKIP_AGENT,
    SKIP_FAILED,
    SKIP_OTHER,
    SKIP_SUPERSEDED,
    SKIP_TOOL,
    AdapterContext,
    FormatOutput,
    Match,
    Rows,
    read_items,
)
from loop_pipeline.core.ingest.formats.values import (
    MappingError,
    as_list,
    as_mapping,
    as_object,
    compact_json,
    hex_id,
    id_text,
    json_text,
    json_type,
    latency_text,
    text,
    time_text,
)

FORMAT = "mlflow"
CALL_TYPES = frozenset({"CHAT_MODEL", "LLM"})
ASSESSMENT_SOURCES = {"HUMAN": "human_reviewer", "LLM_JUDGE": "llm", "AI_JUDGE": "llm", "CODE": "code"}


def span_id_hex(value: Any, name: str) -> str | None:
    """MLflow 3 writes span ids as base64 of their 8 bytes, MLflow 2 as ``0x`` hex: both to hex."""
    raw = text(value, name)
    if raw is None:
        return None
    stripped = raw.strip()
    if stripped.lower().startswith("0x"):
        return hex_id(stripped, name)
    try:
        decoded = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        return stripped or None
    return decoded.hex() if len(decoded) in (8, 16) else stripped


def _attribute(attributes: Mapping[str, Any], key: str) -> Any:
    """Attribute values are JSON-encoded strings; anything that is not stays as it is."""
    value = attributes.get(key)
    if isinstance(value, str):
        try:
            return loads(value)
        except ValueError:
            return value
    return value


def _skip_reason(span_type: str | None) -> str | None:
    upper = (span_type or "").upper()
    if upper in CALL_TYPES:
        return None
    if upper == "TOOL":
        return SKIP_TOOL
    if upper in ("AGENT", "CHAIN"):
        return SKIP_AGENT
    return SKIP_OTHER


def _tokens(attributes: Mapping[str, Any], outputs: Any, trace_usage: Any) -> tuple[Any, Any]:
    for usage, keys in (
        (_attribute(attributes, "mlflow.chat.tokenUsage"), ("input_tokens", "output_tokens")),
        (outputs.get("usage") if isinstance(outputs, Mapping) else None, ("prompt_tokens", "completion_tokens")),
        (outputs.get("usage") if isinstance(outputs, Mapping) else None, ("input_tokens", "output_tokens")),
        (trace_usage, ("input_tokens", "output_tokens")),
    ):
        if isinstance(usage, Mapping) and any(usage.get(k) is not None for k in keys):
            return usage.get(keys[0]), usage.get(keys[1])
    return None, None


def _model(attributes: Mapping[str, Any], inputs: Any, outputs: Any) -> Any:
    for value in (
        outputs.get("model") if isinstance(outputs, Mapping) else None,
        _attribute(attributes, "model"),
        _attribute(attributes, "gen_ai.response.model"),
        _attribute(attributes, "gen_ai.request.model"),
        _attribute(attributes, "llm.model_name"),
        inputs.get("model") if isinstance(inputs, Mapping) else None,
    ):
        if value is not None:
            return value
    return None


@dataclass(frozen=True)
class _TraceInfo:
    """What every span of one MLflow trace shares."""

    trace_id: str | None
    trace_name: str | None
    experiment_id: str | None
    metadata: dict[str, Any]
    tags: dict[str, Any]
    assessments: list[Any]
    failed: bool
    # The trace's token usage, used only when it holds exactly one LLM span.
    usage: Any


def _trace(value: Any, record: int, raw: str, rows: Rows) -> None:
    if not isinstance(value, Mapping) or not isinstance(value.get("info"), Mapping):
        rows.bad("trace", record, raw, "missing_field", "info: required (an MLflow trace has info and data.spans)")
        return
    info = value["info"]
    try:
        spans = as_list(as_mapping(value.get("data"), "data").get("spans"), "data.spans")
        trace = _trace_info(info, spans)
    except MappingError as exc:
        rows.bad("trace", record, raw, exc.reason, exc.detail)
        return
    calls: set[str] = set()
    for position, span in enumerate(spans):
        span_id = _span(span, position, trace, record, rows)
        if span_id is not None:
            calls.add(span_id)
    for assessment in trace.assessments:
        _assessment(assessment, trace.trace_id, calls, record, rows)


def _trace_info(info: Mapping[str, Any], spans: list[Any]) -> _TraceInfo:
    # Read in this order: the first field of the wrong shape names the quarantined record.
    trace_id = text(info.get("trace_id") or info.get("request_id"), "info.trace_id")
    metadata = as_object(info.get("trace_metadata") or info.get("request_metadata"), "info.trace_metadata")
    tags = as_mapping(info.get("tags"), "info.tags")
    assessments = as_list(info.get("assessments"), "info.assessments")
    location = as_mapping(info.get("trace_location"), "info.trace_location")
    experiment = as_mapping(location.get("mlflow_experiment"), "info.trace_location.mlflow_experiment").get(
        "experiment_id", info.get("experiment_id")
    )
    trace_name = text(tags.get("mlflow.traceName"), "mlflow.traceName")
    call_types = [
        _attribute(span.get("attributes") or {}, "mlflow.spanType")
        for span in spans
        if isinstance(span, Mapping) and isinstance(span.get("attributes") or {}, Mapping)
    ]
    single_call = sum(1 for t in call_types if isinstance(t, str) and t.upper() in CALL_TYPES) == 1
    return _TraceInfo(
        trace_id=trace_id,
        trace_name=trace_name,
        experiment_id=id_text(experiment),
        metadata=metadata,
        tags=tags,
        assessments=assessments,
        failed=str(info.get("state") or info.get("status") or "").upper() == "ERROR",
        usage=_attribute(metadata, "mlflow.trace.tokenUsage") if single_call else None,
    )


def _span(span: Any, position: int, trace: _TraceInfo, record: int, rows: Rows) -> str | None:
    """One span as a trace row, a skip or a quarantine row; its id when it is an LLM call."""
    span_raw = compact_json(span)
    if not isinstance(span, Mapping):
        rows.bad("trace", record, span_raw, "wrong_type", f"data.spans[{position}]: expected an object, got {json_type(span)}")
        return None
    span_id = None
    try:
        attributes = span.get("attributes") or {}
        if not isinstance(attributes, Mapping):
            raise MappingError("wrong_type", f"attributes: expected an object, got {json_type(attributes)}")
        context = span.get("context") if isinstance(span.get("context"), Mapping) else {}
        span_id = span_id_hex(span.get("span_id") or context.get("span_id"), "span_id")
        skip = _skip_reason(text(_attribute(attributes, "mlflow.spanType"), "mlflow.spanType"))
        status = span.get("status") if isinstance(span.get("status"), Mapping) else {}
        failed = trace.failed or str(status.get("code") or span.get("status_code") or "").upper() in ("STATUS_CODE_ERROR", "ERROR")
        if skip is not None or failed:
            rows.skip("trace", skip or SKIP_FAILED)
            return None
        if not span_id:
            raise MappingError("missing_field", "span_id: required")
        fields = _call_fields(span, span_id, attributes, trace)
        span_name = text(span.get("name"), "name")
        parent = span_id_hex(span.get("parent_span_id") or span.get("parent_id"), "parent_span_id")
    except MappingError as exc:
        rows.bad("trace", record, span_raw, exc.reason, exc.detail, span_id)
        return None
    user_tags = {k: v for k, v in trace.tags.items() if not str(k).startswith("mlflow.")}
    span_metadata = {
        "source_trace_id": trace.trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "span_name": span_name,
        "trace_name": trace.trace_name,
        "experiment_id": trace.experiment_id,
        "tags": user_tags,
    }
    match = Match(
        span_name=span_name,
        trace_name=trace.trace_name,
        tags=tuple(str(k) for k in user_tags) + tuple(f"{k}={v}" for k, v in user_tags.items()),
        metadata={**trace.metadata, **trace.tags},
    )
    rows.trace(record, span_raw, fields, match, span_metadata, scope=trace.trace_id)
    return span_id


def _call_fields(span: Mapping[str, Any], span_id: str, attributes: Mapping[str, Any], trace: _TraceInfo) -> dict[str, Any]:
    inputs = _attribute(attributes, "mlflow.spanInputs")
    outputs = _attribute(attributes, "mlflow.spanOutputs")
    tokens_in, tokens_out = _tokens(attributes, outputs, trace.usage)
    start = span.get("start_time_unix_nano", span.get("start_time"))
    end = span.get("end_time_unix_nano", span.get("end_time"))
    return {
        "trace_id": span_id,
        "timestamp": time_text(start, "start_time_unix_nano"),
        "latency_ms": latency_text(start, end),
        "model": text(_model(attributes, inputs, outputs), "model"),
        "input_tokens": text(tokens_in, "input_tokens"),
        "output_tokens": text(tokens_out, "output_tokens"),
        "user_id": text(trace.metadata.get("mlflow.trace.user"), "mlflow.trace.user"),
        "session_id": text(trace.metadata.get("mlflow.trace.session"), "mlflow.trace.session"),
        "messages": messages_from(inputs, "mlflow.spanInputs"),
        "output": output_from(outputs, "mlflow.spanOutputs"),
    }


def _assessment(assessment: Any, trace_id: str | None, calls: set[str], record: int, rows: Rows) -> None:
    raw = compact_json(assessment)
    try:
        if not isinstance(assessment, Mapping):
            raise MappingError("wrong_type", f"assessment: expected an object, got {json_type(assessment)}")
        if assessment.get("valid") is False:
            rows.skip("feedback", SKIP_SUPERSEDED)
            return
        name = text(assessment.get("assessment_name") or assessment.get("name"), "assessment_name")
        if not name:
            raise MappingError("missing_field", "assessment_name: required")
        source = assessment.get("source") if isinstance(assessment.get("source"), Mapping) else {}
        source_type = text(source.get("source_type"), "source.source_type")
        if source_type is None:
            raise MappingError("missing_field", "source.source_type: required (HUMAN, LLM_JUDGE or CODE)")
        canonical_source = ASSESSMENT_SOURCES.get(source_type.upper())
        if canonical_source is None:
            raise MappingError("invalid_value", f"source.source_type: {source_type!r} is not HUMAN, LLM_JUDGE or CODE")
        kind_hint = None
        label = None
        if isinstance(assessment.get("expectation"), Mapping):
            value = assessment["expectation"].get("value")
            label = value if isinstance(value, str) else json_text(value)
            value, kind_hint = None, "human_label"
        elif isinstance(assessment.get("feedback"), Mapping):
            feedback = assessment["feedback"]
            if feedback.get("value") is None and feedback.get("error") is not None:
                rows.skip("feedback", SKIP_FAILED)
                return
            value = feedback.get("value")
            if isinstance(value, (dict, list)):
                label, value = json_text(value), None
        else:
            raise MappingError("missing_field", "feedback or expectation: required")
        span = span_id_hex(assessment.get("span_id"), "span_id")
        target_trace = text(assessment.get("trace_id"), "trace_id") or trace_id
    except MappingError as exc:
        assessment_id = assessment.get("assessment_id") if isinstance(assessment, Mapping) else None
        rows.bad("feedback", record, raw, exc.reason, exc.detail, assessment_id if isinstance(assessment_id, str) else None)
        return
    rows.score(
        record,
        raw,
        timestamp=assessment.get("create_time") or assessment.get("create_time_ms") or assessment.get("last_update_time"),
        name=name,
        value=value,
        label=label,
        source=canonical_source,
        trace_id=span if span in calls else None,
        scope=target_trace,
        annotator_id=source.get("source_id"),
        feedback_id=assessment.get("assessment_id"),
        kind_hint=kind_hint,
    )


def read(data: str | bytes, context: AdapterContext) -> FormatOutput:
    return read_items(data, context, _trace)
