"""Reading a JSONL file as lines and decoding them, one record never spoiling its neighbours.

The fast path reads every line into one string column (polars' multi-threaded CSV reader with a
separator that valid JSON never contains) and decodes the whole slice with ``str.json_decode``.
polars fails a whole slice for one bad record, so a failing slice is screened with one lenient
vectorized pass for lines that may be bad; only those pay Python's ``json.loads``, and whatever
still fails is halved until each bad line stands alone.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Mapping

import polars as pl

from loop_pipeline.core.ingest.safejson import MAX_DEPTH, error_detail, error_reason, loads, nesting_over

# A JSON text may not contain a raw U+001F (control characters must be escaped), so splitting on
# it gives whole lines; a malformed line holding one is caught and re-read by the slow path.
_SEPARATOR = "\x1f"


class UnreadableFileError(Exception):
    """The file could not be opened or read at all."""


def read_lines(source: str | bytes) -> pl.DataFrame:
    """Non-blank lines of a JSONL file or buffer as ``source_record`` (1-based line) and ``raw``."""
    try:
        frame = _read_lines_fast(source)
    except pl.exceptions.ComputeError:
        frame = _read_lines_python(source)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise UnreadableFileError(str(exc)) from exc
    return frame.filter(pl.col("raw").is_not_null() & (pl.col("raw").str.strip_chars() != ""))


def _read_lines_fast(source: str | bytes) -> pl.DataFrame:
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    frame = pl.read_csv(
        handle,
        has_header=False,
        separator=_SEPARATOR,
        quote_char=None,
        schema={"raw": pl.String},
        encoding="utf8-lossy",
        raise_if_empty=False,
        row_index_name="source_record",
        row_index_offset=1,
    )
    return frame.with_columns(pl.col("source_record").cast(pl.Int64))


def _read_lines_python(source: str | bytes) -> pl.DataFrame:
    if isinstance(source, bytes):
        data = source
    else:
        try:
            with open(source, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise UnreadableFileError(str(exc)) from exc
    lines = data.decode("utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return pl.DataFrame(
        {"source_record": range(1, len(lines) + 1), "raw": [line.rstrip("\r") for line in lines]},
        schema={"source_record": pl.Int64, "raw": pl.String},
    )


def too_deep(raw: pl.Series) -> pl.Series:
    """Lines nesting arrays / objects past :data:`safejson.MAX_DEPTH` (a bracket count screens,
    only lines with more brackets than the limit are checked exactly)."""
    screened = raw.to_frame("raw").select(pl.col("raw").str.count_matches(r"[\[{]").fill_null(0) > MAX_DEPTH).to_series()
    flags = [False] * len(raw)
    for index in screened.arg_true().to_list():
        flags[index] = nesting_over(raw[index])
    return pl.Series("too_deep", flags, dtype=pl.Boolean)


@dataclass(frozen=True)
class FieldSpec:
    """How a top-level field is decoded: ``scalar`` as text, ``messages`` as role/content list."""

    kind: str


def decode_records(
    raw: pl.Series, dtype: pl.Struct, fields: Mapping[str, FieldSpec], slice_rows: int
) -> tuple[pl.Series, pl.Series, pl.Series]:
    """Decode each line to ``dtype``.

    Returns the decoded struct series (null where decoding failed) and, aligned with it, a
    ``reason`` and ``detail`` series (null where decoding succeeded).
    """
    reasons: list[str | None] = [None] * len(raw)
    details: list[str | None] = [None] * len(raw)
    frame = raw.alias("raw").to_frame()
    parts = [
        _decode_slice(frame.slice(start, slice_rows), dtype, fields, start, reasons, details)
        for start in range(0, frame.height, max(slice_rows, 1))
    ]
    values = pl.concat(parts) if parts else pl.Series("decoded", [], dtype=dtype)
    return (
        values.alias("decoded"),
        pl.Series("reason", reasons, dtype=pl.String),
        pl.Series("detail", details, dtype=pl.String),
    )


def _decode(frame: pl.DataFrame, dtype: pl.Struct) -> pl.Series:
    # Inside a DataFrame the decoder runs in parallel; Series.str.json_decode was ~7x slower here.
    return frame.select(pl.col("raw").str.json_decode(dtype).alias("decoded")).to_series()


def _suspect_pattern(fields: Mapping[str, FieldSpec]) -> str:
    scalars = "|".join(name for name, spec in fields.items() if spec.kind == "scalar")
    lists = "|".join(name for name, spec in fields.items() if spec.kind == "messages")
    # A scalar field opening an object/array, a message list that is not a list, a message
    # part that is not text. Matches inside nested values only cost a slow-path look.
    pattern = rf'"(?:{scalars}|role|content)"\s*:\s*[\[{{]'
    if lists:
        pattern += rf'|"(?:{lists})"\s*:\s*[^\s\[n]'
    return pattern


def _decode_slice(
    frame: pl.DataFrame,
    dtype: pl.Struct,
    fields: Mapping[str, FieldSpec],
    offset: int,
    reasons: list[str | None],
    details: list[str | None],
) -> pl.Series:
    try:
        return _decode(frame, dtype)
    except pl.exceptions.PolarsError:
        pass
    # One vectorized screen picks the lines that may fail (not an object with a trace_id, or a
    # field of the wrong shape); the rest decode together, the suspects go through json.loads.
    suspect = frame.select(
        pl.col("raw").str.json_path_match("$.trace_id").is_null()
        | pl.col("raw").str.contains(_suspect_pattern(fields))
    ).to_series()
    cleared: list[int] = []
    for index in suspect.arg_true().to_list():
        problem = shape_problem(frame["raw"][index], fields)
        if problem is None:
            cleared.append(index)
        else:
            reasons[offset + index], details[offset + index] = problem
    decodable = (~suspect).scatter(cleared, True) if cleared else ~suspect
    patched = frame.select(pl.when(decodable).then(pl.col("raw")).otherwise(pl.lit("{}")).alias("raw"))
    positions = list(range(offset, offset + frame.height))
    decoded = _bisect(patched, dtype, fields, positions, reasons, details)
    return pl.select(pl.when(decodable).then(decoded)).to_series().cast(dtype)


def _bisect(
    frame: pl.DataFrame,
    dtype: pl.Struct,
    fields: Mapping[str, FieldSpec],
    positions: list[int],
    reasons: list[str | None],
    details: list[str | None],
) -> pl.Series:
    """Halve until each failing line stands alone (values JSON allows but the decoder does not)."""
    try:
        return _decode(frame, dtype)
    except pl.exceptions.PolarsError as exc:
        if frame.height == 1:
            reasons[positions[0]], details[positions[0]] = classify_undecodable(frame["raw"][0], fields, exc)
            return pl.Series("decoded", [None], dtype=dtype)
    middle = frame.height // 2
    return pl.concat(
        [
            _bisect(frame.slice(0, middle), dtype, fields, positions[:middle], reasons, details),
            _bisect(frame.slice(middle), dtype, fields, positions[middle:], reasons, details),
        ]
    )


def shape_problem(line: str, fields: Mapping[str, FieldSpec]) -> tuple[str, str] | None:
    """Why json.loads finds a line unfit for the decoder, or None when its shape is fine."""
    try:
        record = loads(line)
    except ValueError as exc:
        return error_reason(exc), error_detail(exc)
    if not isinstance(record, dict):
        return "malformed_json", f"expected a JSON object, got {_json_type(record)}"
    for name, spec in fields.items():
        value = record.get(name)
        if value is None:
            continue
        if spec.kind == "scalar" and isinstance(value, (dict, list)):
            return "wrong_type", f"{name}: expected a string or number, got {_json_type(value)}"
        if spec.kind == "messages":
            problem = _messages_shape_problem(value)
            if problem:
                return "wrong_type", f"{name}: {problem}"
    return None


def classify_undecodable(line: str, fields: Mapping[str, FieldSpec], error: Exception) -> tuple[str, str]:
    """Name why the decoder rejected one line."""
    problem = shape_problem(line, fields)
    if problem is not None:
        return problem
    # Valid JSON for Python but not for the columnar decoder (NaN, integers past 64 bits, ...).
    text = str(error).strip()
    first_line = text.splitlines()[0] if text else type(error).__name__
    return "malformed_json", f"not decodable: {first_line[:200]}"


def _messages_shape_problem(value: object) -> str | None:
    if not isinstance(value, list):
        return f"expected a list of {{role, content}} objects, got {_json_type(value)}"
    for position, message in enumerate(value):
        if not isinstance(message, dict):
            return f"item {position}: expected an object, got {_json_type(message)}"
        for key in ("role", "content"):
            if isinstance(message.get(key), (dict, list)):
                return f"item {position}.{key}: expected a string, got {_json_type(message[key])}"
    return None


def _json_type(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(type(value), "number")
