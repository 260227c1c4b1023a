"""The per-span path: an export request read with ``json.loads`` and mapped span by span by
:func:`otel.map_span` (or :func:`openinference.map_span` for Phoenix spans over OTLP)."""

from __future__ import annotations

from typing import Any

from loop_pipeline.core.ingest.formats import openinference, otel
from loop_pipeline.core.ingest.formats.rows import Rows
from loop_pipeline.core.ingest.formats.values import MappingError, compact_json, json_type
from loop_pipeline.core.ingest.safejson import error_detail, error_reason, loads


def map_line(line: str, record: int, rows: Rows) -> None:
    """One export request, span by span, through :func:`otel.map_span`."""
    try:
        request = loads(line)
    except ValueError as exc:
        rows.bad("trace", record, line, error_reason(exc), error_detail(exc))
        return
    try:
        if not isinstance(request, dict):
            raise MappingError("malformed_json", f"expected an export request object, got {json_type(request)}")
        resource_spans = request.get("resourceSpans")
        if resource_spans is None:
            raise MappingError("missing_field", "resourceSpans: required (not an OTLP/JSON trace export request)")
        if not isinstance(resource_spans, list):
            raise MappingError("wrong_type", f"resourceSpans: expected an array, got {json_type(resource_spans)}")
        found: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for r, resource_span in enumerate(resource_spans):
            if not isinstance(resource_span, dict):
                raise MappingError("wrong_type", f"resourceSpans[{r}]: expected an object, got {json_type(resource_span)}")
            resource = resource_span.get("resource") or {}
            resource_attributes = otel.key_values(resource.get("attributes") or [], "resource.attributes") if isinstance(resource, dict) else {}
            scope_spans = resource_span.get("scopeSpans") or []
            if not isinstance(scope_spans, list):
                raise MappingError("wrong_type", f"resourceSpans[{r}].scopeSpans: expected an array, got {json_type(scope_spans)}")
            for s, scope_span in enumerate(scope_spans):
                spans = scope_span.get("spans") if isinstance(scope_span, dict) else None
                if not isinstance(spans, list):
                    raise MappingError("wrong_type", f"resourceSpans[{r}].scopeSpans[{s}].spans: expected an array, got {json_type(spans)}")
                found.extend((span, resource_attributes) for span in spans)
    except MappingError as exc:
        rows.bad("trace", record, line, exc.reason, exc.detail)
        return
    for span_record, resource_attributes in found:
        raw = compact_json(span_record)
        try:
            span = otel.span_from_record(span_record)
        except MappingError as exc:
            rows.bad("trace", record, raw, exc.reason, exc.detail)
            continue
        span.resource = resource_attributes
        if "openinference.span.kind" in span.attributes:  # Phoenix / OpenInference over OTLP
            openinference.map_span(span, rows, record, raw)
        else:
            otel.map_span(span, rows, record, raw)

