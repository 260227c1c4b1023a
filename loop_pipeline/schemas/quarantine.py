"""Records that could not become canonical rows, each with one machine-readable reason."""

from __future__ import annotations

from typing import Optional

import pandera.polars as pa

QUARANTINE_REASONS = (
    "unreadable_file",  # the whole file could not be opened or parsed (counts as one record)
    "oversized_record",  # over ingest.max_record_bytes
    "malformed_json",  # not parsable, or not a JSON object
    "too_deeply_nested",  # arrays / objects nested deeper than ingest reads (core/ingest/safejson.py)
    "wrong_type",  # a field holds a value of the wrong type
    "missing_field",  # a required field is absent or null
    "unparsable_timestamp",
    "negative_value",  # tokens, cost or latency below zero
    "invalid_value",  # outside the allowed set (feedback kind, message role, ...)
    "conflicting_duplicate",  # same id, different content: every copy is held back
)
RECORD_KINDS = ("trace", "feedback")


class QuarantineSchema(pa.DataFrameModel):
    record_kind: str = pa.Field(isin=list(RECORD_KINDS))
    source_format: str = pa.Field()
    source_file: str = pa.Field()
    # 1-based line number (JSONL) or row number (Parquet); null for a whole unreadable file.
    source_record: Optional[int] = pa.Field(nullable=True, ge=1)
    reason: str = pa.Field(isin=list(QUARANTINE_REASONS))
    detail: str = pa.Field()
    record_id: Optional[str] = pa.Field(nullable=True)
    raw: Optional[str] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True


QUARANTINE_COLUMNS: tuple[str, ...] = tuple(QuarantineSchema.to_schema().columns)
