"""Values inside foreign records: JSON types, scalars as the text ingest parses, times, ids, lookups.

An adapter that meets a value of the wrong shape raises :class:`MappingError`; the record becomes
a quarantine row with that reason.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any, Mapping

from loop_pipeline.core.ingest.safejson import loads


class MappingError(Exception):
    """A record this adapter cannot turn into a canonical row; ``reason`` is a quarantine reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


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
        return loads(stripped)
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


def hex_id(value: Any, name: str) -> str | None:
    """An OTel-style id as hex text, a ``0x`` prefix dropped (MLflow's base64 ids: ``mlflow_traces``)."""
    raw = text(value, name)
    if raw is None:
        return None
    stripped = raw.strip()
    if stripped.lower().startswith("0x"):
        stripped = stripped[2:]
    return stripped or None
