"""What every foreign-format adapter shares: reading records, rendering messages, building rows.

An adapter turns each source record it understands into one *text-typed* candidate row (the
canonical fields as text, messages as ``[{role, content}]``) or a quarantine row with a reason,
and counts the records it deliberately skips (tool / agent spans, failed calls, batch requests).
The rows are then typed and checked by the same code as the native format
(:func:`native.type_traces`), so a token count of ``"many"`` is ``wrong_type`` whatever the source.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import polars as pl

from loop_pipeline.core.ingest import native
from loop_pipeline.core.ingest.formats.mapping import (
    SKIP_KIND,
    FeedbackMapping,
    TaskTypeMapping,
    apply_feedback_mapping,
    apply_task_type,
    meta_column,
)
from loop_pipeline.schemas.traces import MESSAGES_DTYPE


class MappingError(Exception):
    """A record this adapter cannot turn into a canonical row; ``reason`` is a quarantine reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# Skipped records are counted by reason, per record kind; these are the reasons adapters use.
SKIP_TOOL = "tool_span"  # a tool execution (OTel execute_tool, OpenInference / Langfuse / MLflow TOOL)
SKIP_AGENT = "agent_span"  # an agent, chain or workflow step around the LLM calls
SKIP_OTHER = "other_span"  # any other non-LLM operation: embeddings, retrieval, guardrails, plain spans
SKIP_FAILED = "failed_call"  # an LLM call that ended in an error: no output to learn from
SKIP_BATCH_REQUEST = "batch_request"  # an OpenAI Batch input line: the request half of an output line
SKIP_UNMAPPED_FEEDBACK = "unmapped_feedback"  # a score the feedback mapping says to skip (e.g. free text)
SKIP_SUPERSEDED = "superseded_feedback"  # an MLflow assessment marked invalid (overridden)


# ---------------------------------------------------------------------------------------------
# Values


def json_type(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(type(value), "number")


def json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def text(value: Any, name: str) -> str | None:
    """A scalar as the text the native decoder would have read; objects and arrays are wrong types."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return repr(value)
    raise MappingError("wrong_type", f"{name}: expected a string or number, got {json_type(value)}")


_NOT_JSON = object()


def parse_json(value: str) -> Any:
    """``json.loads`` of a string, or ``_NOT_JSON`` when it is not JSON."""
    stripped = value.strip()
    if not stripped or stripped[0] not in "[{\"":
        return _NOT_JSON
    try:
        return json.loads(stripped)
    except ValueError:
        return _NOT_JSON


def is_json(value: Any) -> bool:
    return value is not _NOT_JSON


def nanos_text(nanos: int) -> str:
    """Epoch nanoseconds as epoch milliseconds with a microsecond fraction (what ingest parses)."""
    micros = nanos // 1000
    return f"{micros // 1000}.{micros % 1000:03d}"


def to_nanos(value: Any) -> int | None:
    """Epoch ns / ms / s (number or numeric text) or ISO-8601 text to epoch nanoseconds."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        stripped = value.strip()
        if re.fullmatch(r"-?\d+", stripped):
            value = int(stripped)
        elif re.fullmatch(r"-?\d+\.\d+", stripped):
            value = float(stripped)
        else:
            iso = stripped.replace(" ", "T", 1) if re.match(r"^\d{4}-\d{2}-\d{2} ", stripped) else stripped
            try:
                moment = dt.datetime.fromisoformat(iso)
            except ValueError:
                return None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.timezone.utc)
            delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
            return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    if isinstance(value, int):
        magnitude = abs(value)
        if magnitude >= 10**17:
            return value
        if magnitude >= 10**14:
            return value * 1000
        if magnitude >= 10**11:
            return value * 1_000_000
        return value * 1_000_000_000
    if isinstance(value, float):
        magnitude = abs(value)
        if magnitude >= 1e17:
            return int(value)
        if magnitude >= 1e14:
            return int(round(value * 1e3))
        if magnitude >= 1e11:
            return int(round(value * 1e6))
        return int(round(value * 1e9))
    return None


def time_text(value: Any, name: str) -> str | None:
    """A timestamp field as text: nanosecond integers are converted, anything else is parsed later."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**17:
        return nanos_text(value)
    if isinstance(value, str) and re.fullmatch(r"\d{17,}", value.strip()):
        return nanos_text(int(value.strip()))
    return text(value, name)


def latency_text(start: Any, end: Any) -> str | None:
    begin, finish = to_nanos(start), to_nanos(end)
    if begin is None or finish is None:
        return None
    return repr((finish - begin) / 1e6)


def lookup(mapping: Mapping[str, Any] | None, key: str) -> Any:
    """``mapping[key]``, else the dotted path ``a.b`` through nested objects."""
    if not isinstance(mapping, Mapping):
        return None
    if key in mapping:
        return mapping[key]
    current: Any = mapping
    for part in key.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return current


def as_list(value: Any, name: str) -> list[Any]:
    """An array (null: empty); anything else is the wrong type."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    raise MappingError("wrong_type", f"{name}: expected an array, got {json_type(value)}")


def as_mapping(value: Any, name: str) -> dict[str, Any]:
    """An object (null: empty); anything else is the wrong type."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    raise MappingError("wrong_type", f"{name}: expected an object, got {json_type(value)}")


def id_text(value: Any) -> str | None:
    """An id as text when it is one (a string, or an integer); None for anything else."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def as_object(value: Any, name: str) -> dict[str, Any]:
    """A JSON object, or a string holding one (metadata is often stored as JSON text)."""
    if value is None:
        return {}
    if isinstance(value, str):
        parsed = parse_json(value)
        return parsed if isinstance(parsed, dict) else {}
    if isinstance(value, Mapping):
        return dict(value)
    raise MappingError("wrong_type", f"{name}: expected an object, got {json_type(value)}")


# ---------------------------------------------------------------------------------------------
# Messages and outputs

ROLE_ALIASES = {
    "model": "assistant",
    "ai": "assistant",
    "bot": "assistant",
    "chatbot": "assistant",
    "human": "user",
    "function": "tool",
    "ipython": "tool",
}
# Part types that are not the answer: the model's reasoning, and tools the provider ran itself.
DROPPED_PART_TYPES = frozenset(
    {"reasoning", "thinking", "redacted_thinking", "server_tool_call", "server_tool_call_response"}
)
TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
TOOL_CALL_TYPES = frozenset({"tool_call", "function_call", "function", "tool_use"})
TOOL_RESULT_TYPES = frozenset({"tool_call_response", "function_call_output", "function_response", "tool_result"})
_TRANSCRIPT = re.compile(r"^(system|developer|user|assistant|tool|human|ai): ", re.MULTILINE)


def normalize_role(role: Any) -> str | None:
    if role is None:
        return None
    if not isinstance(role, str):
        raise MappingError("wrong_type", f"message role: expected a string, got {json_type(role)}")
    lowered = role.strip().lower()
    return ROLE_ALIASES.get(lowered, lowered)


def _arguments(value: Any) -> Any:
    if isinstance(value, str):
        parsed = parse_json(value)
        return parsed if is_json(parsed) else value
    return value


def render_tool_call(call: Mapping[str, Any]) -> str:
    """One tool call as ``{"name": ..., "arguments": ...}``; ids are dropped (they are random)."""
    function = call.get("function") if isinstance(call.get("function"), Mapping) else None
    gemini = call.get("function_call") if isinstance(call.get("function_call"), Mapping) else None
    name = (
        call.get("name")
        or (function or {}).get("name")
        or (gemini or {}).get("name")
        or call.get("tool_call.function.name")
    )
    if "arguments" in call:
        arguments = call["arguments"]
    elif function is not None and "arguments" in function:
        arguments = function["arguments"]
    elif gemini is not None:
        arguments = gemini.get("args", gemini.get("arguments"))
    elif "input" in call:
        arguments = call["input"]
    else:
        arguments = call.get("tool_call.function.arguments")
    return json_text({"name": name, "arguments": _arguments(arguments)})


def _value_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return text(value, "value") if not isinstance(value, (dict, list)) else json_text(value)


def render_content(content: Any) -> str:
    """Message content (text, a list of parts, a part) as one text; tool calls as JSON lines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (bool, int, float)):
        return _value_text(content)
    parts = [content] if isinstance(content, dict) else content
    pieces: list[str] = []
    for part in parts:
        if isinstance(part, str):
            pieces.append(part)
            continue
        if not isinstance(part, dict):
            pieces.append(_value_text(part))
            continue
        kind = str(part.get("type") or part.get("message_content.type") or "").lower()
        if kind in DROPPED_PART_TYPES:
            continue
        if kind in TOOL_CALL_TYPES or (not kind and isinstance(part.get("function_call"), Mapping)):
            pieces.append(render_tool_call(part))
            continue
        if kind in TOOL_RESULT_TYPES or (not kind and "function_response" in part):
            result = next((part[k] for k in ("response", "output", "function_response", "content", "result") if k in part), None)
            pieces.append(_value_text(result))
            continue
        for key in ("content", "text", "message_content.text"):
            if isinstance(part.get(key), str):
                pieces.append(part[key])
                break
        else:
            if isinstance(part.get("content"), (list, dict)):  # a message item (OpenAI Responses output)
                pieces.append(render_content(part["content"]))
                continue
            if kind in TEXT_PART_TYPES:
                pieces.append("")
            elif kind:
                pieces.append(f"[{kind}]")  # images, audio, files: not text
            else:
                pieces.append(json_text(part))
    return "\n".join(pieces)


def _tool_calls(item: Mapping[str, Any]) -> list[Any]:
    calls = item.get("tool_calls") or item.get("message.tool_calls")
    if not calls and isinstance(item.get("additional_kwargs"), Mapping):
        calls = item["additional_kwargs"].get("tool_calls")
    if not calls and isinstance(item.get("function_call"), Mapping) and "role" in item:
        calls = [item["function_call"]]
    return list(calls) if isinstance(calls, list) else []


def message_item(item: Mapping[str, Any], name: str, position: int) -> dict[str, Any]:
    """One message object of any dialect (OpenAI, OTel parts, Gemini, LangChain, OpenInference,
    Responses API items) as ``{role, content}``; tool calls are rendered into the content."""
    kind = str(item.get("type") or "").lower()
    role = item.get("role", item.get("message.role"))
    if role is None and kind in ("human", "ai", "system", "tool"):
        role = kind
    if kind in ("function_call",) and role is None:  # OpenAI Responses API input item
        return {"role": "assistant", "content": render_tool_call(item)}
    if kind in ("function_call_output",) and role is None:
        return {"role": "tool", "content": _value_text(item.get("output"))}
    if "parts" in item:
        body: Any = item["parts"]
    elif "content" in item:
        body = item["content"]
    elif "message.content" in item or "message.contents" in item:
        body = item.get("message.contents") if item.get("message.contents") is not None else item.get("message.content")
    elif "text" in item:
        body = item["text"]
    else:
        body = None
    calls = _tool_calls(item)
    if body is None and not calls:
        return {"role": normalize_role(role), "content": None}
    pieces = [render_content(body)] if body is not None else []
    pieces += [render_tool_call(call) for call in calls if isinstance(call, Mapping)]
    return {"role": normalize_role(role), "content": "\n".join(piece for piece in pieces if piece)}


def _transcript(value: str) -> list[dict[str, Any]] | None:
    """``"system: ...\\nuser: ..."`` (how several SDKs render a chat as text) to messages."""
    starts = list(_TRANSCRIPT.finditer(value))
    if not starts or starts[0].start() != 0:
        return None
    messages = []
    for index, match in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(value)
        messages.append({"role": normalize_role(match.group(1)), "content": value[match.end() : end].rstrip("\n")})
    return messages


def messages_from(value: Any, name: str) -> list[dict[str, Any]] | None:
    """The input of a call, in any shape the formats use, as ``[{role, content}]``."""
    if value is None:
        return None
    if isinstance(value, str):
        parsed = parse_json(value)
        if isinstance(parsed, (list, dict)):
            return messages_from(parsed, name)
        return _transcript(value) or [{"role": "user", "content": value}]
    if isinstance(value, dict):
        if not value:
            return None
        system: list[dict[str, Any]] = []
        config = value.get("config") if isinstance(value.get("config"), Mapping) else {}
        for instruction in (value.get("system_instruction"), config.get("system_instruction"), value.get("instructions"), value.get("system")):
            if isinstance(instruction, (str, list, dict)) and instruction:
                system.append({"role": "system", "content": render_content(instruction)})
        for key in ("messages", "contents", "input"):
            if key in value and value[key] is not None:
                inner = messages_from(value[key], f"{name}.{key}")
                return system + (inner or [])
        if "prompt" in value:
            return system + [{"role": "user", "content": _value_text(value["prompt"])}]
        if isinstance(value.get("args"), list) and value["args"]:
            return system + [{"role": "user", "content": _value_text(arg)} for arg in value["args"]]
        if any(k in value for k in ("role", "message.role", "parts")):
            return system + [message_item(value, name, 0)]
        return system + [{"role": "user", "content": json_text(value)}]
    if isinstance(value, list):
        messages: list[dict[str, Any]] = []
        for position, item in enumerate(value):
            if isinstance(item, str):
                messages.append({"role": "user", "content": item})
            elif isinstance(item, dict):
                messages.append(message_item(item, name, position))
            else:
                raise MappingError("wrong_type", f"{name}: item {position}: expected an object, got {json_type(item)}")
        return messages
    raise MappingError("wrong_type", f"{name}: expected messages (an array or text), got {json_type(value)}")


def _first(items: Any) -> Any:
    return items[0] if isinstance(items, list) and items else None


def _output_from_structure(value: Any) -> str | None:
    """The answer inside a provider response, a message or a message list; None if unrecognized."""
    if isinstance(value, list):
        first = _first(value)
        if isinstance(first, dict):
            return _output_from_structure(first)
        if isinstance(first, str):
            return first
        return None
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("choices"), list):  # OpenAI chat.completion / completion
        choice = _first(value["choices"])
        if not isinstance(choice, dict):
            return None
        if isinstance(choice.get("message"), dict):
            return message_item(choice["message"], "output", 0)["content"]
        if "text" in choice:
            return _value_text(choice["text"])
        return None
    if isinstance(value.get("candidates"), list):  # Gemini GenerateContentResponse
        candidate = _first(value["candidates"])
        if isinstance(candidate, dict) and isinstance(candidate.get("content"), dict):
            return message_item(candidate["content"], "output", 0)["content"]
        return None
    if value.get("object") == "response" and isinstance(value.get("output"), list):  # OpenAI Responses
        pieces = [render_content(item) for item in value["output"] if isinstance(item, dict) and item.get("type") != "reasoning"]
        return "\n".join(p for p in pieces if p)
    if isinstance(value.get("content"), dict) and "parts" in value["content"]:  # Gemini content
        return message_item(value["content"], "output", 0)["content"]
    if any(k in value for k in ("role", "message.role", "parts")) or (
        "content" in value and ("additional_kwargs" in value or "tool_calls" in value)
    ):
        return message_item(value, "output", 0)["content"]
    if isinstance(value.get("text"), str):
        return value["text"]
    if isinstance(value.get("content"), str):
        return value["content"]
    if isinstance(value.get("messages"), list) and value["messages"]:
        return _output_from_structure(value["messages"][-1])
    return None


def output_from(value: Any, name: str) -> str | None:
    """The output of a call as text: provider responses and message objects are unwrapped."""
    if value is None:
        return None
    if isinstance(value, str):
        parsed = parse_json(value)
        if isinstance(parsed, (dict, list)):
            extracted = _output_from_structure(parsed)
            if extracted is not None:
                return extracted
        return value
    if isinstance(value, (dict, list)):
        extracted = _output_from_structure(value)
        return extracted if extracted is not None else json_text(value)
    return text(value, name)


def hex_id(value: Any, name: str) -> str | None:
    """An OTel-style id as lowercase hex: ``0x`` prefixes dropped, base64 (MLflow) decoded."""
    raw = text(value, name)
    if raw is None:
        return None
    stripped = raw.strip()
    if stripped.lower().startswith("0x"):
        stripped = stripped[2:]
    return stripped or None


# ---------------------------------------------------------------------------------------------
# Reading records


@dataclass(frozen=True)
class Unit:
    """One top-level record of a file: a JSONL line, an item of a JSON array, or a whole document."""

    record: int
    value: Any
    raw: str


@dataclass
class ReadResult:
    units: list[Unit]
    bad: list[tuple[int, str, str, str]]  # (record, raw, reason, detail)
    lines: int  # non-blank lines in the file


def load_bytes(data: str | bytes) -> bytes:
    if isinstance(data, bytes):
        return data
    with open(data, "rb") as handle:
        return handle.read()


def _json_error(exc: ValueError) -> str:
    message = getattr(exc, "msg", str(exc))
    position = getattr(exc, "pos", None)
    return f"{message} at character {position}" if position is not None else message


def read_units(data: str | bytes, max_record_bytes: int, max_document_bytes: int) -> ReadResult:
    """JSONL (one record per line) or one JSON document (an object, or an array of records).

    A file whose first non-blank line is not JSON by itself but starts an object or array is a
    document; a document that does not parse is one malformed record.
    """
    content = load_bytes(data).decode("utf-8", errors="replace")
    raw_lines = content.split("\n")
    non_blank = [(number, line.rstrip("\r")) for number, line in enumerate(raw_lines, start=1) if line.strip()]
    lines = len(non_blank)
    if not non_blank:
        return ReadResult([], [], 0)
    first = non_blank[0][1].strip()
    document = False
    if first[0] in "[{":
        try:
            parsed_first = json.loads(first)
        except ValueError:
            document = True
        else:
            document = isinstance(parsed_first, list)
    if document:
        if len(content.encode("utf-8")) > max_document_bytes:
            return ReadResult([], [(1, content[:2000], "oversized_record", f"document is over the {max_document_bytes} byte limit")], lines)
        try:
            value = json.loads(content)
        except ValueError as exc:
            return ReadResult([], [(1, content[:100_000], "malformed_json", _json_error(exc))], lines)
        if isinstance(value, list):
            return ReadResult([Unit(i + 1, item, compact_json(item)) for i, item in enumerate(value)], [], lines)
        return ReadResult([Unit(1, value, content.strip())], [], lines)
    units: list[Unit] = []
    bad: list[tuple[int, str, str, str]] = []
    for number, line in non_blank:
        if len(line.encode("utf-8")) > max_record_bytes:
            bad.append((number, line, "oversized_record", f"record is {len(line.encode('utf-8'))} bytes, over the {max_record_bytes} byte limit"))
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            bad.append((number, line, "malformed_json", _json_error(exc)))
            continue
        units.append(Unit(number, value, line))
    return ReadResult(units, bad, lines)


# ---------------------------------------------------------------------------------------------
# Building rows


TRACE_TEXT_FIELDS = tuple(name for name in native.TRACE_FIELDS if name != "messages")


@dataclass(frozen=True)
class Match:
    """What the task-type rules look at for one call."""

    span_name: str | None = None
    trace_name: str | None = None
    tags: tuple[str, ...] = ()
    prompt_name: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


def trace_schema(metadata_keys: Iterable[str]) -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {name: pl.String for name in TRACE_TEXT_FIELDS}
    schema["messages"] = MESSAGES_DTYPE
    schema.update(
        {
            "metadata": pl.String,
            "source_record": pl.Int64,
            "raw": pl.String,
            "_reason": pl.String,
            "_detail": pl.String,
            "_scope": pl.String,
            "_span_name": pl.String,
            "_trace_name": pl.String,
            "_prompt_name": pl.String,
            "_tags": pl.List(pl.String),
        }
    )
    for key in metadata_keys:
        schema[meta_column(key)] = pl.String
    return schema


FEEDBACK_RAW_SCHEMA: dict[str, pl.DataType] = {
    "feedback_id": pl.String,
    "trace_id": pl.String,
    "timestamp": pl.String,
    "edited_output": pl.String,
    "source": pl.String,
    "annotator_id": pl.String,
    "_name": pl.String,
    "_value_type": pl.String,
    "_raw_value": pl.String,
    "_label": pl.String,
    "_kind_hint": pl.String,
    "_scope": pl.String,
    "_scope_kind": pl.String,
    "source_record": pl.Int64,
    "raw": pl.String,
    "_reason": pl.String,
    "_detail": pl.String,
}


def feedback_value(value: Any, name: str) -> tuple[str | None, str | None, str | None]:
    """(value type, value text, label) of a score value as the formats give it."""
    if value is None:
        return None, None, None
    if isinstance(value, bool):
        return "boolean", "true" if value else "false", None
    if isinstance(value, (int, float)):
        return "number", repr(value), None
    if isinstance(value, str):
        return "label", None, value
    return "text", None, json_text(value)


@dataclass
class Rows:
    """Collects an adapter's candidate rows, quarantine rows and skip counts for one file."""

    task_type: TaskTypeMapping
    traces: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # (record kind, reason) -> n

    def skip(self, kind: str, reason: str, n: int = 1) -> None:
        self.skipped[(kind, reason)] += n

    def bad(self, kind: str, record: int, raw: str | None, reason: str, detail: str, record_id: str | None = None) -> None:
        row = {"source_record": record, "raw": raw, "_reason": reason, "_detail": detail}
        if kind == "trace":
            row["trace_id"] = record_id
            self.traces.append(row)
        else:
            row["feedback_id"] = record_id
            self.feedback.append(row)

    def trace(
        self,
        record: int,
        raw: str | None,
        fields: Mapping[str, Any],
        match: Match,
        metadata: Mapping[str, Any],
        scope: str | None = None,
    ) -> None:
        row = {name: fields.get(name) for name in TRACE_TEXT_FIELDS}
        row["messages"] = fields.get("messages")
        row.update(
            {
                "metadata": compact_json({k: v for k, v in metadata.items()}),
                "source_record": record,
                "raw": raw,
                "_scope": id_text(scope),
                "_span_name": match.span_name if isinstance(match.span_name, str) else None,
                "_trace_name": match.trace_name if isinstance(match.trace_name, str) else None,
                "_prompt_name": match.prompt_name if isinstance(match.prompt_name, str) else None,
                "_tags": [t for t in match.tags if isinstance(t, str)],
            }
        )
        for key in self.task_type.metadata_keys:
            value = lookup(match.metadata, key)
            row[meta_column(key)] = None if value is None else (value if isinstance(value, str) else json_text(value))
        self.traces.append(row)

    def score(
        self,
        record: int,
        raw: str | None,
        *,
        timestamp: Any,
        name: str | None,
        value: Any,
        source: str,
        trace_id: str | None = None,
        scope: str | None = None,
        scope_kind: str = "trace",
        label: str | None = None,
        annotator_id: Any = None,
        feedback_id: Any = None,
        kind_hint: str | None = None,
    ) -> None:
        value_type, value_text, value_label = feedback_value(value, "value")
        if value_type is None and label is not None:
            value_type = "label"  # a label without a score: the labels table may give it a value
        try:
            timestamp_text = time_text(timestamp, "timestamp")
            annotator = text(annotator_id, "annotator id")
        except MappingError as exc:
            self.bad("feedback", record, raw, exc.reason, exc.detail, id_text(feedback_id))
            return
        self.feedback.append(
            {
                "feedback_id": id_text(feedback_id),
                "trace_id": id_text(trace_id),
                "timestamp": timestamp_text,
                "edited_output": None,
                "source": source,
                "annotator_id": annotator,
                "_name": name,
                "_value_type": value_type,
                "_raw_value": value_text,
                "_label": label if label is not None else value_label,
                "_kind_hint": kind_hint,
                "_scope": id_text(scope),
                "_scope_kind": scope_kind,
                "source_record": record,
                "raw": raw,
            }
        )

    def trace_frame(self) -> pl.DataFrame:
        schema = trace_schema(self.task_type.metadata_keys)
        return pl.DataFrame({name: [row.get(name) for row in self.traces] for name in schema}, schema=schema)

    def feedback_frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {name: [row.get(name) for row in self.feedback] for name in FEEDBACK_RAW_SCHEMA}, schema=FEEDBACK_RAW_SCHEMA
        )


@dataclass
class FormatOutput:
    """An adapter's result for one file.

    ``traces`` are typed and checked (``_reason`` set on failures); ``feedback`` is mapped to
    canonical kinds but its ``trace_id`` may still be null with a ``_scope`` (a trace or session)
    that the pipeline resolves once every file is read.
    """

    traces: pl.DataFrame
    feedback: pl.DataFrame
    skipped: Counter
    lines: int

    def records_in(self) -> dict[str, int]:
        counts = {"trace": self.traces.height, "feedback": self.feedback.height}
        for (kind, _), n in self.skipped.items():
            counts[kind] += n
        return counts


def finish(
    traces: pl.DataFrame,
    feedback: pl.DataFrame,
    skipped: Counter,
    lines: int,
    task_type: TaskTypeMapping,
    feedback_mapping: FeedbackMapping,
) -> FormatOutput:
    """Task types, typing and checks for traces; kinds for feedback (``skip`` rows counted out).

    Rows come back in file order (``source_record``), whichever path produced them.
    """
    traces = native.type_traces(apply_task_type(traces.sort("source_record", maintain_order=True), task_type))
    feedback = feedback.sort("source_record", maintain_order=True)
    if feedback.height:
        feedback = apply_feedback_mapping(feedback, feedback_mapping)
        dropped = feedback.filter((pl.col("kind") == SKIP_KIND) & pl.col("_reason").is_null())
        if dropped.height:
            skipped = Counter(skipped)
            skipped[("feedback", SKIP_UNMAPPED_FEEDBACK)] += dropped.height
            feedback = feedback.filter(~((pl.col("kind") == SKIP_KIND) & pl.col("_reason").is_null()))
    else:
        feedback = feedback.with_columns(
            pl.lit(None, dtype=pl.String).alias(name) for name in ("kind", "value", "label")
        )
    return FormatOutput(traces, feedback, skipped, lines)


def finish_rows(rows: Rows, lines: int, feedback_mapping: FeedbackMapping) -> FormatOutput:
    return finish(rows.trace_frame(), rows.feedback_frame(), rows.skipped, lines, rows.task_type, feedback_mapping)


@dataclass(frozen=True)
class AdapterContext:
    """Everything an adapter may need besides the file itself."""

    task_type: TaskTypeMapping
    feedback: FeedbackMapping
    max_record_bytes: int
    max_document_bytes: int
    decode_slice_rows: int
    prices: Any  # costs.PriceTable
    openai_batch_price_factor: float = 0.5
    # OpenAI Batch: request bodies by custom_id, from the input files joined to an output file.
    batch_requests: Mapping[str, Any] = field(default_factory=dict)

    def rows(self) -> Rows:
        return Rows(self.task_type)


def read_items(data: str | bytes, context: "AdapterContext", handle: Callable[[Any, int, str, "Rows"], None]) -> "FormatOutput":
    """The document reader most formats share: every JSON object of the file (each element of a
    top-level array) goes to ``handle(item, record, raw, rows)``; unreadable lines and documents are
    quarantined as traces."""
    read_result = read_units(data, context.max_record_bytes, context.max_document_bytes)
    rows = context.rows()
    for record, raw, reason, detail in read_result.bad:
        rows.bad("trace", record, raw, reason, detail)
    for unit in read_result.units:
        items = unit.value if isinstance(unit.value, list) else [unit.value]
        for item in items:
            handle(item, unit.record, unit.raw if len(items) == 1 else compact_json(item), rows)
    return finish_rows(rows, read_result.lines, context.feedback)
