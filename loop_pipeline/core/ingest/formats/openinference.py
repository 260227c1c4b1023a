"""OpenInference (Arize Phoenix) spans: ``llm.*`` attributes, annotations as feedback.

Span shapes as for :mod:`otel` (Phoenix's JSON envelope with ``context.trace_id`` / ``span_id``,
``start_time``, ``attributes``; or a bare attribute object, quarantined for want of ids).
Attributes may be flat (``llm.input_messages.0.message.role``), lists of objects
(``"llm.input_messages": [{"message.role": ...}]``) or nested objects
(``{"llm": {"input_messages": [...]}}``): all are read the same.

Only ``openinference.span.kind`` LLM spans become traces (TOOL, AGENT / CHAIN and the other kinds
are counted as skipped). Feedback: ``annotations.<i>.annotation.*`` and ``evaluations.<i>.*`` on a
span (about that span, or its trace when the span is not an LLM call; an EVALUATOR span's
annotations are about the span it links to), ``trace.annotations`` (the trace) and
``session.annotations`` (the session); ``annotator_kind`` HUMAN / LLM / CODE gives the source.
``gen_ai.evaluation.result`` events are read as in :mod:`otel`.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from loop_pipeline.core.ingest.formats import otel
from loop_pipeline.core.ingest.formats.messages import message_item, messages_from, output_from
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
    as_object,
    compact_json,
    json_type,
    latency_text,
    parse_json,
    text,
    time_text,
)

FORMAT = "openinference"
ANNOTATOR_SOURCES = {"HUMAN": "human_reviewer", "LLM": "llm", "CODE": "code"}
_FIRST_INDEX = re.compile(r"^(.*?)\.(\d+)(?:\.(.*))?$")


def flatten(attributes: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects and lists of objects to dotted keys (``a.0.b``); scalar lists stay lists."""
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(item, Mapping) for item in value):
            for index, item in enumerate(value):
                out.update(flatten(item, f"{name}.{index}."))
        else:
            out[name] = value
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys with indices back to lists: ``{"a.0.b": 1}`` -> ``{"a": [{"b": 1}]}``."""
    out: dict[str, Any] = {}
    groups: dict[str, dict[int, dict[str, Any]]] = {}
    for key, value in flat.items():
        match = _FIRST_INDEX.match(key)
        if not match:
            out[key] = value
            continue
        head, index, rest = match.group(1), int(match.group(2)), match.group(3)
        groups.setdefault(head, {}).setdefault(index, {})[rest if rest is not None else ""] = value
    for head, items in groups.items():
        values = []
        for index in sorted(items):
            item = items[index]
            values.append(item[""] if set(item) == {""} else unflatten(item))
        out[head] = values
    return out


def _kind(attributes: Mapping[str, Any]) -> str:
    kind = text(attributes.get("openinference.span.kind"), "openinference.span.kind")
    if kind is None:
        if attributes.get("llm.model_name") is not None or attributes.get("llm.input_messages") is not None:
            return "llm"
        return SKIP_OTHER
    upper = kind.strip().upper()
    if upper == "LLM":
        return "llm"
    if upper == "TOOL":
        return SKIP_TOOL
    if upper in ("AGENT", "CHAIN"):
        return SKIP_AGENT
    return SKIP_OTHER


def _messages(nested: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    if isinstance(nested.get("llm.input_messages"), list):
        return messages_from(nested["llm.input_messages"], "llm.input_messages")
    if isinstance(nested.get("llm.prompts"), list):
        prompts = [item.get("prompt.text") if isinstance(item, Mapping) else item for item in nested["llm.prompts"]]
        return [{"role": "user", "content": text(prompt, "llm.prompts")} for prompt in prompts]
    value = nested.get("input.value")
    if value is None:
        return None
    if isinstance(value, str):
        parsed = parse_json(value)
        if isinstance(parsed, (dict, list)):
            return messages_from(parsed, "input.value")
    return messages_from(value, "input.value")


def _output(nested: Mapping[str, Any]) -> str | None:
    messages = nested.get("llm.output_messages")
    if isinstance(messages, list) and messages:
        if not isinstance(messages[0], Mapping):
            raise MappingError("wrong_type", f"llm.output_messages: item 0: expected an object, got {json_type(messages[0])}")
        return message_item(messages[0], "llm.output_messages", 0)["content"]
    choices = nested.get("llm.choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        return text(choices[0].get("completion.text"), "llm.choices.0.completion.text")
    return output_from(nested.get("output.value"), "output.value")


def _cost(attributes: Mapping[str, Any]) -> str | None:
    total = text(attributes.get("llm.cost.total"), "llm.cost.total")
    if total is not None:
        return total
    prompt, completion = attributes.get("llm.cost.prompt"), attributes.get("llm.cost.completion")
    if prompt is None and completion is None:
        return None
    for name, value in (("llm.cost.prompt", prompt), ("llm.cost.completion", completion)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise MappingError("wrong_type", f"{name}: expected a number, got {json_type(value)}")
    return repr(float(prompt or 0) + float(completion or 0))


def _annotations(
    nested: Mapping[str, Any],
    span: otel.Span,
    is_call: bool,
    session: str | None,
    rows: Rows,
    record: int,
) -> None:
    target_span, target_trace = (span.span_id if is_call else None), span.trace_id
    kind = str(nested.get("openinference.span.kind") or "").upper()
    if kind == "EVALUATOR" and span.links:
        target_span, target_trace = span.links[0]["span_id"], span.links[0]["trace_id"]
    groups = (
        ("annotations", "annotation", target_span, target_trace, "trace"),
        ("evaluations", "evaluation", target_span, target_trace, "trace"),
        ("trace.annotations", "annotation", None, span.trace_id, "trace"),
        ("session.annotations", "annotation", None, session, "session"),
    )
    for key, prefix, trace_id, scope, scope_kind in groups:
        items = nested.get(key)
        if not isinstance(items, list):
            continue
        for position, item in enumerate(items):
            raw = compact_json({"span_id": span.span_id, "trace_id": span.trace_id, key: {str(position): item}})
            try:
                if not isinstance(item, Mapping):
                    raise MappingError("wrong_type", f"{key}.{position}: expected an object, got {json_type(item)}")
                name = text(item.get(f"{prefix}.name"), f"{key}.{position}.{prefix}.name")
                if not name:
                    raise MappingError("missing_field", f"{key}.{position}.{prefix}.name: required")
                score = item.get(f"{prefix}.score")
                if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
                    raise MappingError("wrong_type", f"{key}.{position}.{prefix}.score: expected a number, got {json_type(score)}")
                label = text(item.get(f"{prefix}.label"), f"{key}.{position}.{prefix}.label")
                annotator = text(item.get(f"{prefix}.annotator_kind"), f"{key}.{position}.{prefix}.annotator_kind")
                source = ANNOTATOR_SOURCES.get((annotator or "LLM").strip().upper())
                if source is None:
                    raise MappingError("invalid_value", f"{key}.{position}.{prefix}.annotator_kind: {annotator!r} is not HUMAN, LLM or CODE")
            except MappingError as exc:
                rows.bad("feedback", record, raw, exc.reason, exc.detail)
                continue
            rows.score(
                record,
                raw,
                timestamp=span.end if span.end is not None else span.start,
                name=name,
                value=score,
                label=label,
                source=source,
                trace_id=trace_id,
                scope=scope,
                scope_kind=scope_kind,
                annotator_id=item.get(f"{prefix}.identifier"),
            )


def map_span(span: otel.Span, rows: Rows, record: int, raw: str) -> None:
    flat = flatten(span.attributes)
    nested = unflatten(flat)
    try:
        kind = _kind(flat)
    except MappingError as exc:
        rows.bad("trace", record, raw, exc.reason, exc.detail, span.span_id)
        return
    is_call = kind == "llm"
    # Session-level annotations need the session id; a non-text one is reported on the call itself.
    session = flat.get("session.id") if isinstance(flat.get("session.id"), str) else None
    if kind != "llm":
        rows.skip("trace", kind)
    elif span.error:
        rows.skip("trace", SKIP_FAILED)
    else:
        try:
            otel._require_ids(span)
            source_metadata = as_object(flat.get("metadata"), "metadata")
            fields = {
                "trace_id": span.span_id,
                "timestamp": time_text(span.start, "start time"),
                "latency_ms": latency_text(span.start, span.end),
                "app": text(span.resource.get("service.name"), "service.name"),
                "model": text(flat.get("llm.model_name"), "llm.model_name"),
                "provider": text(flat.get("llm.provider", flat.get("llm.system")), "llm.provider"),
                "input_tokens": text(flat.get("llm.token_count.prompt"), "llm.token_count.prompt"),
                "output_tokens": text(flat.get("llm.token_count.completion"), "llm.token_count.completion"),
                "cost_usd": _cost(flat),
                "user_id": text(flat.get("user.id"), "user.id"),
                "session_id": text(flat.get("session.id"), "session.id"),
                "prompt_version": text(flat.get("llm.prompt_template.version"), "llm.prompt_template.version"),
                "messages": _messages(nested),
                "output": _output(nested),
            }
        except MappingError as exc:
            rows.bad("trace", record, raw, exc.reason, exc.detail, span.span_id)
        else:
            tags = flat.get("tag.tags")
            metadata = {
                "source_trace_id": span.trace_id,
                "span_id": span.span_id,
                "parent_span_id": span.parent_span_id,
                "span_name": span.name,
            }
            if source_metadata:
                metadata["metadata"] = source_metadata
            match = Match(
                span_name=span.name,
                tags=tuple(tags) if isinstance(tags, list) else (),
                metadata={**span.resource, **flat, **source_metadata},
            )
            rows.trace(record, raw, fields, match, metadata, scope=span.trace_id)
    _annotations(nested, span, is_call, session, rows, record)
    for event in span.events:
        if event.get("name") == otel.EVALUATION_EVENT:
            otel.evaluation(event, span, is_call, rows, record, raw)


def read(data: str | bytes, context: AdapterContext) -> FormatOutput:
    return read_items(data, context, otel.span_handler(map_span))
