"""The shapes the OTLP fast path decodes to, and the expressions that read them.

Every nested value is decoded to a fixed polars type in one call; a value that does not fit is
found by halving (:func:`decode_flagged`) and left to the per-span path.
"""

from __future__ import annotations

import polars as pl

_PRESENT = pl.Struct({"_": pl.Null})  # decodes any object: tells a nested value is there
ANY_VALUE = pl.Struct(
    {
        "stringValue": pl.String,
        "intValue": pl.String,
        "doubleValue": pl.String,
        "boolValue": pl.String,
        "bytesValue": pl.String,
        "arrayValue": _PRESENT,
        "kvlistValue": _PRESENT,
    }
)
KEY_VALUES = pl.List(pl.Struct({"key": pl.String, "value": ANY_VALUE}))
EVENT = pl.Struct({"timeUnixNano": pl.String, "name": pl.String, "attributes": KEY_VALUES})
SPAN = pl.Struct(
    {
        "traceId": pl.String,
        "spanId": pl.String,
        "parentSpanId": pl.String,
        "name": pl.String,
        "startTimeUnixNano": pl.String,
        "endTimeUnixNano": pl.String,
        "attributes": KEY_VALUES,
        "events": pl.List(EVENT),
        "status": pl.Struct({"code": pl.String}),
    }
)
REQUEST = pl.Struct(
    {
        "resourceSpans": pl.List(
            pl.Struct({"resource": pl.Struct({"attributes": KEY_VALUES}), "scopeSpans": pl.List(pl.Struct({"spans": pl.List(SPAN)}))})
        )
    }
)
PART = pl.Struct({"type": pl.String, "content": pl.String, "text": pl.String})
# ``type`` and ``text`` are read only to send such messages to the per-span path.
MESSAGES_JSON = pl.List(
    pl.Struct({"role": pl.String, "parts": pl.List(PART), "content": pl.String, "type": pl.String, "text": pl.String})
)
PARTS_JSON = pl.List(PART)



def _decode(raw: pl.Series, dtype: pl.DataType) -> pl.Series:
    return raw.to_frame("raw").select(pl.col("raw").str.json_decode(dtype)).to_series()


def decode_flagged(raw: pl.Series, dtype: pl.DataType, screen: pl.Expr | None = None) -> tuple[pl.Series, pl.Series]:
    """Decode each value to ``dtype``; values that do not decode come back null and flagged.

    One call for the whole series when it decodes; otherwise an optional vectorized screen sets the
    obviously bad values aside and the rest is halved until each failing value stands alone.
    """
    try:
        return _decode(raw, dtype), pl.Series([False] * len(raw), dtype=pl.Boolean)
    except pl.exceptions.PolarsError:
        pass
    flagged = [False] * len(raw)
    if screen is not None:
        suspect = raw.to_frame("raw").select(screen.fill_null(True)).to_series()
        for index in suspect.arg_true().to_list():
            flagged[index] = True
    keep = pl.Series(flagged, dtype=pl.Boolean).not_()
    patched = raw.to_frame("raw").select(pl.when(keep).then(pl.col("raw"))).to_series()

    def bisect(start: int, stop: int) -> list[pl.Series]:
        part = patched.slice(start, stop - start)
        try:
            return [_decode(part, dtype)]
        except pl.exceptions.PolarsError:
            if stop - start == 1:
                flagged[start] = True
                return [pl.Series([None], dtype=dtype)]
        middle = (start + stop) // 2
        return bisect(start, middle) + bisect(middle, stop)

    decoded = pl.concat(bisect(0, len(raw))) if len(raw) else pl.Series([], dtype=dtype)
    return decoded, pl.Series(flagged, dtype=pl.Boolean)


def any_value_text(value: pl.Expr) -> pl.Expr:
    """An AnyValue struct as the text the per-span path would give a scalar."""
    return pl.coalesce(
        value.struct.field("stringValue"),
        value.struct.field("intValue"),
        value.struct.field("doubleValue"),
        value.struct.field("boolValue"),
        value.struct.field("bytesValue"),
    )


def is_nested(value: pl.Expr) -> pl.Expr:
    return value.struct.field("arrayValue").is_not_null() | value.struct.field("kvlistValue").is_not_null()


def hex_expr(expr: pl.Expr) -> pl.Expr:
    stripped = expr.str.strip_chars().str.replace(r"^0[xX]", "")
    return pl.when(stripped != "").then(stripped)


def nanos_text_expr(nanos: pl.Expr) -> pl.Expr:
    micros = nanos.cast(pl.Int64, strict=False) // 1000
    return pl.format("{}.{}", micros // 1000, (micros % 1000).cast(pl.String).str.pad_start(3, "0"))


def is_nanos(expr: pl.Expr) -> pl.Expr:
    return expr.str.contains(r"^\d{17,19}$").fill_null(False)
