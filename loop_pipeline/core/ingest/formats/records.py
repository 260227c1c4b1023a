"""Reading a foreign file into records: JSONL lines, items of a JSON array, or a whole document."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loop_pipeline.core.ingest.formats.values import compact_json
from loop_pipeline.core.ingest.safejson import error_detail, error_reason, loads
from loop_pipeline.core.ingest.sources import source_bytes


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


def read_units(data: str | bytes, max_record_bytes: int, max_document_bytes: int) -> ReadResult:
    """JSONL (one record per line) or one JSON document (an object, or an array of records).

    A file whose first non-blank line is not JSON by itself but starts an object or array is a
    document; a document that does not parse is one malformed record.
    """
    content = source_bytes(data).decode("utf-8", errors="replace")
    raw_lines = content.split("\n")
    non_blank = [(number, line.rstrip("\r")) for number, line in enumerate(raw_lines, start=1) if line.strip()]
    lines = len(non_blank)
    if not non_blank:
        return ReadResult([], [], 0)
    first = non_blank[0][1].strip()
    document = False
    if first[0] in "[{":
        try:
            parsed_first = loads(first)
        except ValueError:
            document = True
        else:
            document = isinstance(parsed_first, list)
    if document:
        if len(content.encode("utf-8")) > max_document_bytes:
            return ReadResult([], [(1, content[:2000], "oversized_record", f"document is over the {max_document_bytes} byte limit")], lines)
        try:
            value = loads(content)
        except ValueError as exc:
            return ReadResult([], [(1, content[:100_000], error_reason(exc), error_detail(exc))], lines)
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
            value = loads(line)
        except ValueError as exc:
            bad.append((number, line, error_reason(exc), error_detail(exc)))
            continue
        units.append(Unit(number, value, line))
    return ReadResult(units, bad, lines)
