"""OpenTelemetry GenAI spans as flat attribute objects (one span per JSONL line, or a JSON array).

Accepted span shapes: the OTel SDK's ``span.to_json()`` / Phoenix envelope (``context.trace_id``,
``context.span_id``, ``parent_id``, ``start_time``, ``end_time``, ``status``, ``attributes``,
``events``, ``resource``), a single OTLP span object (``traceId``, ``spanId``,
``startTimeUnixNano``, key/value attribute list), or a bare attribute object (no ids: such a span
is quarantined as ``missing_field``, since a trace needs an id and a time).

Attribute names: the current ``gen_ai.*`` conventions and the deprecated ones still seen in the
wild (``gen_ai.system``, ``gen_ai.usage.prompt_tokens`` / ``completion_tokens``, ``gen_ai.prompt`` /
``gen_ai.completion`` as JSON text or indexed ``gen_ai.prompt.<i>.role|content``, the per-message
``gen_ai.*.message`` / ``gen_ai.choice`` events, and ``gen_ai.client.inference.operation.details``
events carrying the messages). Only LLM calls (operation chat, text_completion, generate_content)
become traces; tool, agent and other spans are counted as skipped. ``gen_ai.evaluation.result``
events become feedback on the span they are attached to.

The canonical ``trace_id`` of a call is its span id (one OTel trace may hold several calls); the OTel
trace id is kept in ``metadata.source_trace_id`` and used to attach trace-level feedback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from loop_pipeline.core.ingest.formats.messages import message_item, messages_from, output_from, render_content
from loop_pipeline.core.ingest.formats.rows import (
    SKIP_AGENT,
    SKIP_FAILED,
    SKIP_OTHER,
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
    compact_json,
    hex_id,
    is_json,
    json_type,
    latency_text,
    parse_json,
    text,
    time_text,
)

FORMAT = "otel"

LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "completion"})
TOOL_OPERATIONS = frozenset({"execute_tool"})
AGENT_OPERATIONS = frozenset({"invoke_agent", "create_agent", "invoke_workflow"})

OPERATION_KEYS = ("gen_ai.operation.name", "llm.request.type")
MODEL_KEYS = ("gen_ai.response.model", "gen_ai.request.model")
PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system")
INPUT_TOKEN_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT_TOKEN_KEYS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
COST_KEYS = ("gen_ai.usage.cost",)
USER_KEYS = ("user.id", "enduser.id")
SESSION_KEYS = ("gen_ai.conversation.id", "session.id")
RESPONSE_ID_KEYS = ("gen_ai.response.id",)
REQUEST_MODEL_KEYS = ("gen_ai.request.model",)
# Scalar attributes in the order they are read (the first wrong type found names the record).
SCALAR_KEYS = (
    OPERATION_KEYS
    + MODEL_KEYS
    + PROVIDER_KEYS
    + INPUT_TOKEN_KEYS
    + OUTPUT_TOKEN_KEYS
    + COST_KEYS
    + USER_KEYS
    + SESSION_KEYS
    + RESPONSE_ID_KEYS
)
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
EVALUATION_EVENT = "gen_ai.evaluation.result"
DETAILS_EVENT = "gen_ai.client.inference.operation.details"
MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
EVALUATION_SOURCE = "llm"
# metadata keys of an OTel call, in order (the OTLP fast path writes the same object)
METADATA_KEYS = ("source_trace_id", "span_id", "parent_span_id", "span_name", "operation", "response_id", "request_model")


@dataclass
class Span:
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    name: str | None = None
    start: Any = None
    end: Any = None
    error: bool = False
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)
    links: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# OTLP AnyValue and span shapes


def any_value(value: Any, name: str) -> Any:
    """An OTLP/JSON ``AnyValue`` object to a Python value."""
    if not isinstance(value, Mapping):
        raise MappingError("wrong_type", f"{name}: expected an AnyValue object, got {json_type(value)}")
    if value.get("stringValue") is not None:
        return value["stringValue"]
    if value.get("intValue") is not None:
        raw = value["intValue"]
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise MappingError("wrong_type", f"{name}: intValue must be an integer, got {json_type(raw)}")
        try:
            return int(raw)
        except ValueError as exc:
            raise MappingError("wrong_type", f"{name}: intValue {raw!r} is not an integer") from exc
    if value.get("doubleValue") is not None:
        raw = value["doubleValue"]
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, str) and raw in ("NaN", "Infinity", "-Infinity"):
            return float(raw.replace("Infinity", "inf"))
        raise MappingError("wrong_type", f"{name}: doubleValue must be a number, got {json_type(raw)}")
    if value.get("boolValue") is not None:
        raw = value["boolValue"]
        if not isinstance(raw, bool):
            raise MappingError("wrong_type", f"{name}: boolValue must be true or false, got {json_type(raw)}")
        return raw
    if value.get("arrayValue") is not None:
        items = as_list(as_mapping(value["arrayValue"], f"{name}.arrayValue").get("values"), f"{name}.arrayValue.values")
        return [any_value(item, f"{name}[{i}]") for i, item in enumerate(items)]
    if value.get("kvlistValue") is not None:
        return key_values(as_mapping(value["kvlistValue"], f"{name}.kvlistValue").get("values") or [], name)
    if value.get("bytesValue") is not None:
        return value["bytesValue"]
    return None


def key_values(items: Any, name: str) -> dict[str, Any]:
    """An OTLP key/value list (``[{"key": ..., "value": {...}}]``) to a dict."""
    if not isinstance(items, list):
        raise MappingError("wrong_type", f"{name}: expected a list of key/value objects, got {json_type(items)}")
    out: dict[str, Any] = {}
    for position, item in enumerate(items):
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
            raise MappingError("wrong_type", f"{name}[{position}]: expected {{key, value}}, got {json_type(item)}")
        out[item["key"]] = any_value(item["value"] if item.get("value") is not None else {}, item["key"])
    return out


def _attributes(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, list):
        return key_values(value, name)
    if isinstance(value, Mapping):
        return dict(value)
    raise MappingError("wrong_type", f"{name}: expected an object or a key/value list, got {json_type(value)}")


def _status_error(record: Mapping[str, Any]) -> bool:
    status = record.get("status")
    codes = [record.get("status_code")]
    if isinstance(status, Mapping):
        codes += [status.get("status_code"), status.get("code")]
    return any(str(code).upper() in ("ERROR", "STATUS_CODE_ERROR", "2", "STATUSCODE.ERROR") for code in codes if code is not None)


def _first_key(record: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if record.get(key) is not None:
            return record[key]
    return None


ENVELOPE_KEYS = frozenset(
    {
        "attributes",
        "context",
        "traceId",
        "spanId",
        "trace_id",
        "span_id",
        "startTimeUnixNano",
        "start_time",
        "name",
        "events",
        "links",
        "parent_id",
        "status",
    }
)


def span_from_record(record: Any) -> Span:
    """A flat span (any of the shapes in the module docstring) to a :class:`Span`."""
    if not isinstance(record, Mapping):
        raise MappingError("malformed_json", f"expected a span object, got {json_type(record)}")
    if not (set(record) & ENVELOPE_KEYS) or not isinstance(record.get("attributes", {}), (Mapping, list)):
        if "attributes" in record:
            raise MappingError("wrong_type", f"attributes: expected an object, got {json_type(record['attributes'])}")
        return Span(attributes=dict(record))  # a bare attribute object
    context = record.get("context") if isinstance(record.get("context"), Mapping) else {}
    events = []
    raw_events = as_list(record.get("events"), "events")
    for position, event in enumerate(raw_events):
        if not isinstance(event, Mapping):
            raise MappingError("wrong_type", f"events[{position}]: expected an object, got {json_type(event)}")
        events.append(
            {
                "name": text(event.get("name"), f"events[{position}].name"),
                "time": _first_key(event, "timeUnixNano", "time_unix_nano", "timestamp", "time"),
                "attributes": _attributes(event.get("attributes"), f"events[{position}].attributes"),
            }
        )
    resource = record.get("resource")
    resource_attributes = _attributes(resource.get("attributes") if isinstance(resource, Mapping) else None, "resource.attributes")
    links = [link for link in as_list(record.get("links"), "links") if isinstance(link, Mapping)]
    return Span(
        trace_id=hex_id(_first_key(context, "trace_id", "traceId") or _first_key(record, "trace_id", "traceId"), "trace id"),
        span_id=hex_id(_first_key(context, "span_id", "spanId") or _first_key(record, "span_id", "spanId"), "span id"),
        parent_span_id=hex_id(_first_key(record, "parent_id", "parent_span_id", "parentSpanId"), "parent span id"),
        name=text(record.get("name"), "name"),
        start=_first_key(record, "startTimeUnixNano", "start_time_unix_nano", "start_time", "startTime"),
        end=_first_key(record, "endTimeUnixNano", "end_time_unix_nano", "end_time", "endTime"),
        error=_status_error(record),
        attributes=_attributes(record.get("attributes"), "attributes"),
        events=events,
        resource=resource_attributes,
        links=[
            {"trace_id": hex_id(_first_key(link, "trace_id", "traceId"), "link trace id"), "span_id": hex_id(_first_key(link, "span_id", "spanId"), "link span id")}
            for link in links
        ],
    )


# ---------------------------------------------------------------------------------------------
# Attributes to canonical fields


def first_text(attributes: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = attributes.get(key)
        if value is not None:
            return text(value, key)
    return None


def classify(attributes: Mapping[str, Any]) -> str:
    """``llm`` for an LLM call, else the skip reason."""
    operation = first_text(attributes, OPERATION_KEYS)
    if operation:
        lowered = operation.strip().lower()
        if lowered in LLM_OPERATIONS:
            return "llm"
        if lowered in TOOL_OPERATIONS:
            return SKIP_TOOL
        if lowered in AGENT_OPERATIONS:
            return SKIP_AGENT
        return SKIP_OTHER
    if any(attributes.get(key) is not None for key in MODEL_KEYS):
        return "llm"
    return SKIP_OTHER


def structured(value: Any, name: str) -> Any:
    """A JSON attribute value: JSON text is parsed (broken JSON is malformed), others pass."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("[", "{"):
            parsed = parse_json(stripped)
            if not is_json(parsed):
                raise MappingError("malformed_json", f"{name}: not valid JSON ({stripped[:60]!r}...)")
            return parsed
    return value


def _indexed(attributes: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    """``gen_ai.prompt.0.role`` / ``gen_ai.prompt.0.content`` ... to a list of message objects."""
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.([A-Za-z_]+)$")
    items: dict[int, dict[str, Any]] = {}
    for key, value in attributes.items():
        match = pattern.match(key)
        if match:
            items.setdefault(int(match.group(1)), {})[match.group(2)] = value
    return [items[i] for i in sorted(items)]


def _system_message(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    content = render_content(structured(value, SYSTEM_INSTRUCTIONS))
    return {"role": "system", "content": content} if content else None


def otel_output(value: Any, name: str) -> str | None:
    """``gen_ai.output.messages``: one entry per choice; the first choice is the output."""
    parsed = structured(value, name)
    if isinstance(parsed, list):
        if not parsed:
            return None
        first = parsed[0]
        if not isinstance(first, Mapping):
            raise MappingError("wrong_type", f"{name}: item 0: expected an object, got {json_type(first)}")
        return message_item(first, name, 0)["content"]
    if isinstance(parsed, (dict, str)):
        return output_from(parsed, name)
    raise MappingError("wrong_type", f"{name}: expected messages, got {json_type(parsed)}")


def span_messages(span: Span) -> tuple[list[dict[str, Any]] | None, str | None]:
    """Input messages and output text, wherever this span's instrumentation put them."""
    attributes = dict(span.attributes)
    for event in span.events:  # content captured on an event instead of the span
        if event.get("name") == DETAILS_EVENT:
            for key in (INPUT_MESSAGES, OUTPUT_MESSAGES, SYSTEM_INSTRUCTIONS):
                if attributes.get(key) is None and event["attributes"].get(key) is not None:
                    attributes[key] = event["attributes"][key]
    system = _system_message(attributes.get(SYSTEM_INSTRUCTIONS))
    messages = None
    if attributes.get(INPUT_MESSAGES) is not None:
        messages = messages_from(structured(attributes[INPUT_MESSAGES], INPUT_MESSAGES), INPUT_MESSAGES)
    elif attributes.get("gen_ai.prompt") is not None:
        messages = messages_from(structured(attributes["gen_ai.prompt"], "gen_ai.prompt"), "gen_ai.prompt")
    elif _indexed(attributes, "gen_ai.prompt"):
        messages = messages_from(_indexed(attributes, "gen_ai.prompt"), "gen_ai.prompt")
    else:
        from_events = []
        for event in span.events:
            name = event.get("name")
            attrs = event["attributes"]
            if name in MESSAGE_EVENTS:
                content = attrs.get("content", attrs.get("gen_ai.event.content"))
                message = structured(content, name) if content is not None else None
                if isinstance(message, Mapping) and ("content" in message or "parts" in message):
                    from_events.append(message_item({"role": MESSAGE_EVENTS[name], **message}, name, len(from_events)))
                else:
                    from_events.append({"role": MESSAGE_EVENTS[name], "content": render_content(message)})
            elif name == "gen_ai.content.prompt" and attrs.get("gen_ai.prompt") is not None:
                from_events.extend(messages_from(structured(attrs["gen_ai.prompt"], "gen_ai.prompt"), "gen_ai.prompt") or [])
        messages = from_events or None
    if system is not None:
        messages = [system] + (messages or [])
    output = None
    if attributes.get(OUTPUT_MESSAGES) is not None:
        output = otel_output(attributes[OUTPUT_MESSAGES], OUTPUT_MESSAGES)
    elif attributes.get("gen_ai.completion") is not None:
        output = output_from(structured(attributes["gen_ai.completion"], "gen_ai.completion"), "gen_ai.completion")
    elif _indexed(attributes, "gen_ai.completion"):
        output = message_item(_indexed(attributes, "gen_ai.completion")[0], "gen_ai.completion", 0)["content"]
    else:
        for event in span.events:
            attrs = event["attributes"]
            if event.get("name") == "gen_ai.choice":
                choice = structured(attrs.get("message", attrs.get("content")), "gen_ai.choice")
                output = output_from(choice, "gen_ai.choice")
                break
            if event.get("name") == "gen_ai.content.completion" and attrs.get("gen_ai.completion") is not None:
                output = output_from(structured(attrs["gen_ai.completion"], "gen_ai.completion"), "gen_ai.completion")
                break
    return messages, output


def metadata_for(span: Span) -> dict[str, Any]:
    return dict(
        zip(
            METADATA_KEYS,
            (
                span.trace_id,
                span.span_id,
                span.parent_span_id,
                span.name,
                first_text(span.attributes, OPERATION_KEYS),
                first_text(span.attributes, RESPONSE_ID_KEYS),
                first_text(span.attributes, REQUEST_MODEL_KEYS),
            ),
        )
    )


def _require_ids(span: Span) -> None:
    if not span.trace_id:
        raise MappingError("missing_field", "trace id: required (span context)")
    if not span.span_id:
        raise MappingError("missing_field", "span id: required (span context)")


def map_span(span: Span, rows: Rows, record: int, raw: str) -> None:
    """One span to a trace row, a quarantine row or a skip; its evaluation events to feedback."""
    try:
        kind = classify(span.attributes)
    except MappingError as exc:
        rows.bad("trace", record, raw, exc.reason, exc.detail, span.span_id)
        kind = None
    is_call = kind == "llm"
    if kind is not None and kind != "llm":
        rows.skip("trace", kind)
    elif kind == "llm" and span.error:
        rows.skip("trace", SKIP_FAILED)
    elif kind == "llm":
        try:
            _require_ids(span)
            fields = {
                "trace_id": span.span_id,
                "timestamp": time_text(span.start, "start time"),
                "latency_ms": latency_text(span.start, span.end),
                "app": text(span.resource.get("service.name"), "service.name"),
                "model": first_text(span.attributes, MODEL_KEYS),
                "provider": first_text(span.attributes, PROVIDER_KEYS),
                "input_tokens": first_text(span.attributes, INPUT_TOKEN_KEYS),
                "output_tokens": first_text(span.attributes, OUTPUT_TOKEN_KEYS),
                "cost_usd": first_text(span.attributes, COST_KEYS),
                "user_id": first_text(span.attributes, USER_KEYS),
                "session_id": first_text(span.attributes, SESSION_KEYS),
            }
            fields["messages"], fields["output"] = span_messages(span)
            metadata = metadata_for(span)
        except MappingError as exc:
            rows.bad("trace", record, raw, exc.reason, exc.detail, span.span_id)
        else:
            match = Match(span_name=span.name, metadata={**span.resource, **span.attributes})
            rows.trace(record, raw, fields, match, metadata, scope=span.trace_id)
    for event in span.events:
        if event.get("name") == EVALUATION_EVENT:
            evaluation(event, span, is_call, rows, record, raw)


def evaluation(event: Mapping[str, Any], span: Span, is_call: bool, rows: Rows, record: int, raw: str) -> None:
    """A ``gen_ai.evaluation.result`` event to a feedback row about its span (or its trace)."""
    attrs = event["attributes"]
    event_raw = compact_json({"trace_id": span.trace_id, "span_id": span.span_id, "event": event})
    try:
        name = text(attrs.get("gen_ai.evaluation.name"), "gen_ai.evaluation.name")
        if not name:
            raise MappingError("missing_field", "gen_ai.evaluation.name: required")
        score = attrs.get("gen_ai.evaluation.score.value")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise MappingError("wrong_type", f"gen_ai.evaluation.score.value: expected a number, got {json_type(score)}")
        label = text(attrs.get("gen_ai.evaluation.score.label"), "gen_ai.evaluation.score.label")
    except MappingError as exc:
        rows.bad("feedback", record, event_raw, exc.reason, exc.detail)
        return
    rows.score(
        record,
        event_raw,
        timestamp=event.get("time") if event.get("time") is not None else span.end,
        name=name,
        value=score,
        label=label,
        source=EVALUATION_SOURCE,
        trace_id=span.span_id if is_call else None,
        scope=span.trace_id,
    )


def read(data: str | bytes, context: AdapterContext) -> FormatOutput:
    return read_items(data, context, span_handler(map_span))


def span_handler(map_one: Callable[[Any, Rows, int, str], None]) -> Callable[[Any, int, str, Rows], None]:
    """For read_items: parse the span (quarantined when it is not one), then map it with ``map_one``."""

    def handle(item: Any, record: int, raw: str, rows: Rows) -> None:
        try:
            span = span_from_record(item)
        except MappingError as exc:
            rows.bad("trace", record, raw, exc.reason, exc.detail)
            return
        map_one(span, rows, record, raw)

    return handle
