"""Synthetic traffic for the benchmarks: native trace lines and OTLP/JSON export requests, built
with vectorized polars expressions (a million lines in seconds), with broken lines on request."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import polars as pl

_SYSTEM_PROMPT = (
    "You are the intent classifier of a retail bank's support assistant. Read the customer's message "
    "and answer with exactly one intent label from the catalogue, or out_of_scope when none applies."
)
_WORDS = (
    "please tell me how can i check my account balance transfer money to savings card was declined "
    "what is the routing number freeze lost stolen credit limit increase pay bill due date interest "
    "rate order new checks report fraud spending history last month pin change travel notice"
).split()
_LABELS = ["balance", "transfer", "card_declined", "routing", "freeze_account", "report_lost_card",
           "credit_limit_change", "pay_bill", "bill_due", "interest_rate", "order_checks", "report_fraud"]


def synthetic_trace_lines(rows: int, bad_rate: float, seed: int = 0, pii_every: int = 0, first: int = 0) -> pl.Series:
    """``rows`` native trace lines; every ``1/bad_rate``-th one broken in one of four ways, and
    every ``pii_every``-th user message carrying an email, a card number and an API key.
    ``first``: the index of the first line (lines ``first`` .. ``first + rows - 1`` of one file)."""
    index = pl.int_range(first, first + rows, dtype=pl.Int64, eager=True).alias("i")
    frame = pl.DataFrame(index)
    mix = (pl.col("i") * 2654435761 + seed) % 1_000_003
    words = pl.Series(_WORDS)
    user_text = pl.concat_str(
        [pl.lit("hi,"), *[pl.lit(" ") + _pick(words, (mix // (k + 1)) % len(words)) for k in range(14)]]
    )
    if pii_every > 0:
        pii = pl.format(
            " - reach me at customer{}@example.com, card 4111 1111 1111 1111, key sk-proj-{}Ab3xYz9QpLm7RtUv2",
            pl.col("i"),
            pl.col("i"),
        )
        user_text = pl.when(pl.col("i") % pii_every == 0).then(user_text + pii).otherwise(user_text)
    label = _pick(pl.Series(_LABELS), mix % len(_LABELS))
    start = pl.datetime(2026, 11, 1, time_zone="UTC")
    frame = frame.select(
        pl.format("{}", (pl.col("i") * 1_000_003 + seed).hash(seed=seed)).str.pad_start(20, "0").alias("trace_id"),
        (start + pl.duration(milliseconds=pl.col("i") * 86))
        .dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .alias("timestamp"),
        pl.lit("intent").alias("task_type"),
        pl.lit("support-bot").alias("app"),
        pl.lit("gpt-4o-2024-08-06").alias("model"),
        pl.lit("openai").alias("provider"),
        pl.concat_list(
            pl.struct(pl.lit("system").alias("role"), pl.lit(_SYSTEM_PROMPT).alias("content")),
            pl.struct(pl.lit("user").alias("role"), user_text.alias("content")),
        ).alias("messages"),
        label.alias("output"),
        (60 + mix % 40).alias("input_tokens"),
        (2 + mix % 5).alias("output_tokens"),
        (180.0 + (mix % 900).cast(pl.Float64) / 3).alias("latency_ms"),
        pl.format("user-{}", mix % 5000).alias("user_id"),
        pl.format("session-{}", mix % 50000).alias("session_id"),
        pl.lit("intent-v3").alias("prompt_version"),
        pl.struct(label.alias("gold"), pl.col("i").alias("row")).alias("metadata"),
    )
    lines = frame.select(pl.struct(pl.all()).struct.json_encode().alias("line")).to_series()
    if bad_rate <= 0:
        return lines
    every = max(int(round(1 / bad_rate)), 1)
    position = pl.int_range(first, first + rows, dtype=pl.Int64, eager=True)
    broken = (position % every) == (every - 1)
    variant = (position // every) % 4
    line = pl.col("line")
    return (
        pl.DataFrame({"line": lines, "broken": broken, "variant": variant})
        .select(
            pl.when(~pl.col("broken"))
            .then(line)
            .when(pl.col("variant") == 0)
            .then(line.str.slice(0, line.str.len_chars() // 2))  # truncated write
            .when(pl.col("variant") == 1)
            .then(line.str.replace('"input_tokens":', '"input_tokens":-'))  # negative tokens
            .when(pl.col("variant") == 2)
            .then(line.str.replace('"model":"gpt-4o-2024-08-06"', '"model":{"name":"gpt-4o"}'))  # wrong type
            .otherwise(line.str.replace(r'"timestamp":"[^"]*"', '"timestamp":"last tuesday"'))
            .alias("line")
        )
        .to_series()
    )


def _pick(options: pl.Series, index: pl.Expr) -> pl.Expr:
    return pl.lit(options).gather(index)


def _concat(*pieces: str | pl.Expr) -> pl.Expr:
    return pl.concat_str([pl.lit(p) if isinstance(p, str) else p for p in pieces])


def _json_string(expr: pl.Expr) -> pl.Expr:
    """A text column as a JSON string literal (quotes and escapes included)."""
    return pl.struct(expr.alias("v")).struct.json_encode().str.slice(5).str.strip_suffix("}")


def _attribute(key: str, kind: str, value: pl.Expr) -> pl.Expr:
    literal = _json_string(value) if kind in ("stringValue", "intValue") else value.cast(pl.String)
    return _concat('{"key":"', key, '","value":{"', kind, '":', literal, "}}")


def synthetic_otlp_lines(rows: int, bad_rate: float = 0.0, seed: int = 0, first: int = 0) -> pl.Series:
    """``rows`` OTLP/JSON export requests, one per line, each with one resource, one scope and one
    ``chat`` span (gen_ai.* attributes, input / output messages as JSON text with text parts);
    every 10th span carries a ``gen_ai.evaluation.result`` event. Every ``1/bad_rate``-th line is
    broken in one of four ways (truncated, negative tokens, tokens as words, no span id).
    ``first``: the index of the first line, as in :func:`synthetic_trace_lines`."""
    index = pl.int_range(first, first + rows, dtype=pl.Int64, eager=True).alias("i")
    mix = (pl.col("i") * 2654435761 + seed) % 1_000_003
    words = pl.Series(_WORDS)
    user_text = pl.concat_str(
        [pl.lit("hi,"), *[pl.lit(" ") + _pick(words, (mix // (k + 1)) % len(words)) for k in range(14)]]
    )
    label = _pick(pl.Series(_LABELS), mix % len(_LABELS))
    start_ns = pl.lit(1_793_527_200_000_000_000, dtype=pl.Int64) + pl.col("i") * 86_000_000
    end_ns = start_ns + (180 + mix % 900) * 1_000_000

    def message(role: str, content: pl.Expr) -> pl.Expr:
        return _concat('{"role":"', role, '","parts":[{"type":"text","content":', _json_string(content), "}]}")

    input_messages = _concat("[", message("system", pl.lit(_SYSTEM_PROMPT)), ",", message("user", user_text), "]")
    output_messages = _concat(
        '[{"role":"assistant","parts":[{"type":"text","content":', _json_string(label), '}],"finish_reason":"stop"}]'
    )
    trace_id = pl.format("{}", (pl.col("i") * 1_000_003 + seed).hash(seed=seed)).str.pad_start(20, "0")
    attributes = pl.concat_str(
        [
            _attribute("gen_ai.operation.name", "stringValue", pl.lit("chat")),
            _attribute("gen_ai.provider.name", "stringValue", pl.lit("openai")),
            _attribute("gen_ai.request.model", "stringValue", pl.lit("gpt-4o")),
            _attribute("gen_ai.response.model", "stringValue", pl.lit("gpt-4o-2024-08-06")),
            _attribute("gen_ai.response.id", "stringValue", pl.format("chatcmpl-{}", pl.col("i"))),
            _attribute("gen_ai.usage.input_tokens", "intValue", (60 + mix % 40).cast(pl.String)),
            _attribute("gen_ai.usage.output_tokens", "intValue", (2 + mix % 5).cast(pl.String)),
            _attribute("gen_ai.conversation.id", "stringValue", pl.format("session-{}", mix % 50000)),
            _attribute("user.id", "stringValue", pl.format("user-{}", mix % 5000)),
            _attribute("task_type", "stringValue", pl.lit("intent")),
            _attribute("gen_ai.input.messages", "stringValue", input_messages),
            _attribute("gen_ai.output.messages", "stringValue", output_messages),
        ],
        separator=",",
    )
    evaluation = _concat(
        '[{"timeUnixNano":"',
        (end_ns + 5_000_000_000).cast(pl.String),
        '","name":"gen_ai.evaluation.result","attributes":[',
        _attribute("gen_ai.evaluation.name", "stringValue", pl.lit("correctness")),
        ",",
        _attribute("gen_ai.evaluation.score.value", "doubleValue", ((mix % 100).cast(pl.Float64) / 100)),
        "]}]",
    )
    events = pl.when(pl.col("i") % 10 == 0).then(evaluation).otherwise(pl.lit("[]"))
    span = _concat(
        '{"traceId":"', trace_id.str.pad_start(32, "0"),
        '","spanId":"', trace_id.str.slice(4, 16),
        '","parentSpanId":"","name":"chat gpt-4o","kind":3,"startTimeUnixNano":"', start_ns.cast(pl.String),
        '","endTimeUnixNano":"', end_ns.cast(pl.String),
        '","attributes":[', attributes, '],"events":', events, ',"status":{"code":1}}',
    )
    line = _concat(
        '{"resourceSpans":[{"resource":{"attributes":[',
        _attribute("service.name", "stringValue", pl.lit("support-bot")),
        ']},"scopeSpans":[{"scope":{"name":"opentelemetry.instrumentation.openai_v2","version":"2.1b0"},"spans":[',
        span,
        "]}]}]}",
    )
    lines = pl.DataFrame(index).select(line.alias("line")).to_series()
    return _break_otlp_lines(lines, first, rows, bad_rate) if bad_rate > 0 else lines


def _break_otlp_lines(lines: pl.Series, first: int, rows: int, bad_rate: float) -> pl.Series:
    """Every ``1/bad_rate``-th line broken: truncated, negative tokens, tokens as words, no span id."""
    every = max(int(round(1 / bad_rate)), 1)
    position = pl.int_range(first, first + rows, dtype=pl.Int64, eager=True)
    frame = pl.DataFrame({"line": lines, "broken": (position % every) == (every - 1), "variant": (position // every) % 4})
    text = pl.col("line")
    return frame.select(
        pl.when(~pl.col("broken"))
        .then(text)
        .when(pl.col("variant") == 0)
        .then(text.str.slice(0, text.str.len_chars() // 2))  # truncated write
        .when(pl.col("variant") == 1)
        .then(text.str.replace(r'"gen_ai.usage.input_tokens","value":\{"intValue":"', '"gen_ai.usage.input_tokens","value":{"intValue":"-'))
        .when(pl.col("variant") == 2)
        .then(text.str.replace(r'"gen_ai.usage.output_tokens","value":\{"intValue":"\d+"', '"gen_ai.usage.output_tokens","value":{"stringValue":"many"'))
        .otherwise(text.str.replace(r'"spanId":"[0-9]+",', ""))  # no span id
        .alias("line")
    ).to_series()


def write_lines(lines: pl.Series, path: Path) -> None:
    pl.DataFrame({"line": lines}).write_csv(path, include_header=False, quote_style="never")


# Lines generated and written at a time: ten million lines (about 7 GB) in bounded memory.
GENERATE_CHUNK_ROWS = 250_000


def write_synthetic(
    path: Path, rows: int, generate: Callable[..., pl.Series], chunk_rows: int = GENERATE_CHUNK_ROWS, **options: object
) -> None:
    """``generate(n, first=..., **options)`` written chunk by chunk: the same file as writing
    ``generate(rows, **options)`` at once."""
    with open(path, "wb") as handle:
        for first in range(0, rows, max(chunk_rows, 1)):
            lines = generate(min(chunk_rows, rows - first), first=first, **options)
            pl.DataFrame({"line": lines}).write_csv(handle, include_header=False, quote_style="never")
