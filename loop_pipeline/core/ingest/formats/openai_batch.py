"""OpenAI Batch API output JSONL, joined with its input JSONL by ``custom_id``.

An output line (``id``, ``custom_id``, ``response{status_code, body}``, ``error``) becomes a trace
(id: the line's ``batch_req_...`` id; model, output and usage from the response body; timestamp:
the body's ``created``). Its messages come from the request line with the same ``custom_id``: from
input files named to ingest (``--batch-input``) or lying in the same folder as the output file.
Without its request a line is quarantined (``missing_field``: messages), as is a custom_id that
matches different requests in several input files (``invalid_value``). Failed requests (an
``error``, or a status other than 200) are skipped, as are the request lines of an input file
ingested by itself (each is the request half of an output line).

There is no cost in a batch file: it is computed from ``configs/prices.yaml`` times
``openai_batch_price_factor`` (the Batch API bills half price), ``cost_source`` computed.
"""

from __future__ import annotations

from typing import Any, Mapping

from loop_pipeline.core.ingest.formats.messages import messages_from, output_from
from loop_pipeline.core.ingest.safejson import loads
from loop_pipeline.core.ingest.formats.rows import (
    SKIP_BATCH_REQUEST,
    SKIP_FAILED,
    SKIP_OTHER,
    AdapterContext,
    FormatOutput,
    Match,
    Rows,
    read_items,
)
from loop_pipeline.core.ingest.formats.values import MappingError, json_type, text, time_text

FORMAT = "openai-batch"
_NOT_CHAT = ("/v1/embeddings", "/v1/moderations")


def _usage(body: Mapping[str, Any]) -> tuple[Any, Any]:
    usage = body.get("usage") if isinstance(body.get("usage"), Mapping) else {}
    tokens_in = usage.get("prompt_tokens", usage.get("input_tokens"))
    tokens_out = usage.get("completion_tokens", usage.get("output_tokens"))
    return tokens_in, tokens_out


def _line(value: Any, record: int, raw: str, context: AdapterContext, rows: Rows) -> None:
    if not isinstance(value, Mapping):
        rows.bad("trace", record, raw, "malformed_json", f"expected a batch line object, got {json_type(value)}")
        return
    if "response" not in value and "error" not in value and "body" in value:
        rows.skip("trace", SKIP_BATCH_REQUEST)
        return
    line_id = value.get("id")
    custom_id = value.get("custom_id")
    try:
        response = value.get("response")
        if value.get("error") is not None or not isinstance(response, Mapping):
            if value.get("error") is None and response is not None:
                raise MappingError("wrong_type", f"response: expected an object, got {json_type(response)}")
            rows.skip("trace", SKIP_FAILED)
            return
        if response.get("status_code") not in (200, "200", None):
            rows.skip("trace", SKIP_FAILED)
            return
        body = response.get("body")
        if not isinstance(body, Mapping):
            raise MappingError("wrong_type", f"response.body: expected an object, got {json_type(body)}")
        if body.get("object") in ("list", "embedding"):
            rows.skip("trace", SKIP_OTHER)
            return
        trace_id = text(line_id, "id") or text(body.get("id"), "response.body.id")
        if not trace_id:
            raise MappingError("missing_field", "id: required (the batch request id)")
        if not isinstance(custom_id, str) or not custom_id:
            raise MappingError("missing_field", "custom_id: required (it joins the output to its request)")
        requests = context.batch_requests.get(custom_id) or []
        if len(requests) > 1:
            raise MappingError(
                "invalid_value",
                f"custom_id {custom_id!r} matches {len(requests)} different requests in the input files: name the right one with --batch-input",
            )
        request = requests[0] if requests else None
        if request is None:
            messages = None
        elif not isinstance(request, Mapping):
            raise MappingError("wrong_type", f"request body for {custom_id!r}: expected an object, got {json_type(request)}")
        else:
            messages = messages_from(request, f"request {custom_id} body")
        if messages is None:
            raise MappingError(
                "missing_field",
                f"messages: no request with custom_id {custom_id!r} (pass the batch input file with --batch-input, or put it beside the output)",
            )
        model = text(body.get("model"), "response.body.model")
        tokens_in, tokens_out = _usage(body)
        cost = None
        price = context.prices.lookup(model) if model else None
        if price is not None and isinstance(tokens_in, int) and isinstance(tokens_out, int) and not isinstance(tokens_in, bool):
            cost = price.cost(tokens_in, tokens_out) * context.openai_batch_price_factor
        fields = {
            "trace_id": trace_id,
            "timestamp": time_text(body.get("created", body.get("created_at")), "response.body.created"),
            "model": model,
            "provider": "openai",
            "input_tokens": text(tokens_in, "usage.prompt_tokens"),
            "output_tokens": text(tokens_out, "usage.completion_tokens"),
            "cost_usd": None if cost is None else repr(cost),
            "cost_source": None if cost is None else "computed",
            "messages": messages,
            "output": output_from(body, "response.body"),
        }
    except MappingError as exc:
        rows.bad("trace", record, raw, exc.reason, exc.detail, line_id if isinstance(line_id, str) else None)
        return
    choice = body.get("choices")[0] if isinstance(body.get("choices"), list) and body.get("choices") else {}
    request_metadata = request.get("metadata") if isinstance(request, Mapping) and isinstance(request.get("metadata"), Mapping) else {}
    metadata = {
        "custom_id": custom_id,
        "batch_request_id": response.get("request_id"),
        "response_id": body.get("id"),
        "finish_reason": choice.get("finish_reason") if isinstance(choice, Mapping) else None,
        "batch_price_factor": context.openai_batch_price_factor if cost is not None else None,
    }
    rows.trace(record, raw, fields, Match(metadata=request_metadata), metadata)


def read(data: str | bytes, context: AdapterContext) -> FormatOutput:
    return read_items(data, context, lambda item, record, raw, rows: _line(item, record, raw, context, rows))


def load_requests(lines: str) -> dict[str, list[Any]]:
    """custom_id -> the distinct request bodies of an input file's lines."""
    found: dict[str, list[Any]] = {}
    for line in lines.splitlines():
        if not line.strip():
            continue
        try:
            record = loads(line)
        except ValueError:
            continue  # a broken input line: its output line is quarantined for want of messages
        if isinstance(record, Mapping) and isinstance(record.get("custom_id"), str):
            bodies = found.setdefault(record["custom_id"], [])
            if record.get("body") not in bodies:
                bodies.append(record.get("body"))
    return found
