"""Which format a file is in, from its first records (``--format auto``).

The first records that parse decide; a file whose records do not parse (a truncated export) is
recognised by the names it contains. Anything unrecognised is the native format, whose reader
quarantines what it cannot use, as before there were other formats.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from loop_pipeline.core.ingest.safejson import loads

NATIVE = "native"
HEAD_BYTES = 1 << 20
_HEAD_RECORDS = 20

LANGFUSE_EVENT_TYPES = frozenset(
    {
        "trace-create",
        "generation-create",
        "generation-update",
        "span-create",
        "span-update",
        "event-create",
        "score-create",
        "observation-create",
        "observation-update",
        "sdk-log",
    }
)
LANGFUSE_OBSERVATION_TYPES = frozenset(
    {"SPAN", "GENERATION", "EVENT", "AGENT", "TOOL", "CHAIN", "RETRIEVER", "EVALUATOR", "EMBEDDING", "GUARDRAIL"}
)
# OpenInference's own names (``llm.request.type`` and other ``llm.*`` keys are OpenLLMetry's, on OTel spans).
_OPENINFERENCE_PREFIXES = (
    "openinference.",
    "llm.model_name",
    "llm.input_messages",
    "llm.output_messages",
    "llm.token_count.",
    "llm.invocation_parameters",
    "llm.prompts",
    "input.value",
    "output.value",
    "annotations.",
    "evaluations.",
    "trace.annotations.",
    "session.annotations.",
)
# Names that give a format away in text that does not parse, most specific first.
_SNIFF = (
    ("otlp", re.compile(r'"resourceSpans"\s*:')),
    ("mlflow", re.compile(r'"mlflow\.(?:spanType|traceRequestId|trace_schema\.version)"')),
    ("langfuse", re.compile(r'"(?:observations|batch)"\s*:|"type"\s*:\s*"(?:trace|generation|score|span)-create"')),
    ("openai-batch", re.compile(r'"custom_id"\s*:')),
    ("litellm", re.compile(r'"call_type"\s*:')),
    ("openinference", re.compile(r'"(?:openinference\.span\.kind|llm\.model_name|llm\.input_messages)')),
    ("otel", re.compile(r'"gen_ai\.[a-z_.]+"')),
)


def _attribute_keys(record: Mapping[str, Any]) -> set[str]:
    attributes = record.get("attributes")
    if isinstance(attributes, Mapping):
        return set(attributes)
    if isinstance(attributes, list):
        return {item.get("key") for item in attributes if isinstance(item, Mapping) and isinstance(item.get("key"), str)}
    return set(record)


def classify_record(record: Any) -> str | None:
    """The format one parsed record belongs to, or None when it says nothing."""
    if isinstance(record, list):
        for item in record[:_HEAD_RECORDS]:
            found = classify_record(item)
            if found:
                return found
        return None
    if not isinstance(record, Mapping):
        return None
    keys = set(record)
    if "resourceSpans" in keys:
        return "otlp"
    if isinstance(record.get("batch"), list) or (record.get("type") in LANGFUSE_EVENT_TYPES and "body" in keys):
        return "langfuse"
    if isinstance(record.get("trace"), Mapping) and "observations" in keys:
        return "langfuse"
    if "traceId" in keys and (record.get("type") in LANGFUSE_OBSERVATION_TYPES or "dataType" in keys):
        return "langfuse"
    if isinstance(record.get("info"), Mapping) and isinstance(record.get("data"), Mapping):
        return "mlflow"
    if "custom_id" in keys and keys & {"response", "error", "body"}:
        return "openai-batch"
    if "call_type" in keys and keys & {"response_cost", "model_map_information", "hidden_params", "spend", "messages"}:
        return "litellm"
    attribute_keys = _attribute_keys(record)
    if any(key.startswith(_OPENINFERENCE_PREFIXES) for key in attribute_keys):
        return "openinference"
    if any(key.startswith("gen_ai.") for key in attribute_keys):
        return "otel"
    if "trace_id" in keys and keys & {"messages", "output", "model", "kind"}:
        return NATIVE
    return None


def _head(data: str | bytes) -> tuple[str, bool]:
    """The first MiB of the file as text, and whether that is the whole file."""
    if isinstance(data, bytes):
        chunk = data[: HEAD_BYTES + 1]
    else:
        with open(data, "rb") as handle:
            chunk = handle.read(HEAD_BYTES + 1)
    return chunk[:HEAD_BYTES].decode("utf-8", errors="replace"), len(chunk) <= HEAD_BYTES


def detect_format(data: str | bytes) -> str:
    """``native`` or one of the foreign format names, from the head of a JSON / JSONL file."""
    head, whole = _head(data)
    lines = [line for line in head.splitlines() if line.strip()]
    if not lines:
        return NATIVE
    parsed: list[Any] = []
    try:
        parsed.append(loads(lines[0]))
    except ValueError:
        if lines[0].lstrip()[:1] in ("{", "[") and whole:
            # A pretty-printed document: it is parsed whole (a truncated one is sniffed below).
            try:
                parsed.append(loads(head))
            except ValueError:
                parsed = []
    else:
        rest = (lines[1:] if whole else lines[1:-1])[:_HEAD_RECORDS]  # a cut head's last line is partial
        for line in rest:
            try:
                parsed.append(loads(line))
            except ValueError:
                continue
    for record in parsed:
        found = classify_record(record)
        if found:
            return found
    if any(isinstance(record, (dict, list)) for record in parsed):
        return NATIVE
    for name, pattern in _SNIFF:
        if pattern.search(head):
            return name
    return NATIVE


def is_batch_input(data: str | bytes) -> bool:
    """An OpenAI Batch *input* file: request lines with custom_id, method, url and body."""
    head, _ = _head(data)
    for line in head.splitlines():
        if not line.strip():
            continue
        try:
            record = loads(line)
        except ValueError:
            return False
        return isinstance(record, Mapping) and "custom_id" in record and "body" in record and "response" not in record
    return False
