"""Benchmarks measured as ratios against a baseline timed in the same run.

Each phase runs in its own Python process so that its peak RSS is its own (``os.wait4`` reports
the child's ``ru_maxrss``), and the time is taken inside the child around the work alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

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


def synthetic_trace_lines(rows: int, bad_rate: float, seed: int = 0, pii_every: int = 0) -> pl.Series:
    """``rows`` native trace lines; every ``1/bad_rate``-th one broken in one of four ways, and
    every ``pii_every``-th user message carrying an email, a card number and an API key."""
    index = pl.int_range(0, rows, dtype=pl.Int64, eager=True).alias("i")
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
    position = pl.int_range(0, rows, dtype=pl.Int64, eager=True)
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


def synthetic_otlp_lines(rows: int, bad_rate: float = 0.0, seed: int = 0) -> pl.Series:
    """``rows`` OTLP/JSON export requests, one per line, each with one resource, one scope and one
    ``chat`` span (gen_ai.* attributes, input / output messages as JSON text with text parts);
    every 10th span carries a ``gen_ai.evaluation.result`` event. Every ``1/bad_rate``-th line is
    broken in one of four ways (truncated, negative tokens, tokens as words, no span id)."""
    index = pl.int_range(0, rows, dtype=pl.Int64, eager=True).alias("i")
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
    if bad_rate <= 0:
        return lines
    every = max(int(round(1 / bad_rate)), 1)
    position = pl.int_range(0, rows, dtype=pl.Int64, eager=True)
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


# ---------------------------------------------------------------------------------------------
# Phases, each run in a child process


def _phase_baseline(path: str) -> dict[str, Any]:
    start = time.perf_counter()
    frame = pl.read_ndjson(path)
    return {"seconds": time.perf_counter() - start, "rows": frame.height}


def _phase_ingest(path: str) -> dict[str, Any]:
    from loop_pipeline.core.ingest import discover, ingest

    start = time.perf_counter()
    result = ingest(discover([path], record_kind="trace"))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": result.traces.height, "summary": result.summary()}


def _phase_baseline_otlp(path: str) -> dict[str, Any]:
    """Bare parsing of an OTLP/JSON file: ``json.loads`` of every line, nothing mapped.

    (``polars.read_ndjson`` is no baseline here: inferring and building the nested OTLP schema
    takes several times longer than the whole ingest.)
    """
    start = time.perf_counter()
    rows = 0
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                json.loads(line)
                rows += 1
    return {"seconds": time.perf_counter() - start, "rows": rows}


def _phase_ingest_otlp(path: str) -> dict[str, Any]:
    from loop_pipeline.core.ingest import discover, ingest

    start = time.perf_counter()
    result = ingest(discover([path]), source_format="otlp")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": result.traces.height, "feedback": result.feedback.height, "summary": result.summary()}


def _phase_generate_scored(folder: str, rows: str) -> dict[str, Any]:
    """Scored traces for the datasets benchmark: synthetic traces with PII, ingested, given
    vectorized synthetic feedback (accept / edit / reject / hallucination / review), scored."""
    from loop_pipeline.core import scoring
    from loop_pipeline.core.ingest import discover, ingest

    start = time.perf_counter()
    root = Path(folder)
    lines_path = root / "traces.jsonl"
    write_lines(synthetic_trace_lines(int(rows), 0.0, pii_every=50), lines_path)
    traces = ingest(discover([str(lines_path)], record_kind="trace")).traces
    lines_path.unlink()
    roll = (pl.col("trace_id").hash(seed=3) % 1000).cast(pl.Int64)
    kind = (
        pl.when(roll < 700).then(pl.lit("accepted")).when(roll < 720).then(pl.lit("edited"))
        .when(roll < 750).then(pl.lit("rejected")).when(roll < 760).then(pl.lit("hallucination"))
        .when(roll < 780).then(pl.lit("human_label")).otherwise(pl.lit(None, dtype=pl.String))
    )
    events = traces.select("trace_id", "timestamp", "output", kind.alias("kind"), roll.alias("roll")).filter(
        pl.col("kind").is_not_null()
    )
    feedback = events.select(
        pl.format("fb-{}", pl.col("trace_id")).alias("feedback_id"),
        "trace_id",
        (pl.col("timestamp") + pl.duration(minutes=2)).alias("timestamp"),
        "kind",
        pl.when(pl.col("kind") == "human_label").then((pl.col("roll") % 2).cast(pl.Float64)).alias("value"),
        pl.when(pl.col("kind") == "human_label").then(pl.col("output")).alias("label"),
        pl.when(pl.col("kind") == "edited").then(pl.lit("balance")).alias("edited_output"),
        pl.when(pl.col("kind") == "human_label").then(pl.lit("human_reviewer")).otherwise(pl.lit("user")).alias("source"),
        pl.lit(None, dtype=pl.String).alias("annotator_id"),
        pl.lit("bench").alias("source_format"),
        pl.lit("bench").alias("source_file"),
        pl.lit(1, dtype=pl.Int64).alias("source_record"),
    )
    config = scoring.ScoringConfig.load()
    signals = scoring.trace_signals(traces, feedback, config=config)
    scored = scoring.score_traces(signals, scoring.fit_quality_model(signals, config), config)
    scored.write_parquet(root / "scored.parquet")
    traces.write_parquet(root / "traces.parquet")
    return {"seconds": time.perf_counter() - start, "rows": scored.height}


def _phase_baseline_scored(folder: str) -> dict[str, Any]:
    start = time.perf_counter()
    scored = pl.read_parquet(Path(folder) / "scored.parquet")
    traces = pl.read_parquet(Path(folder) / "traces.parquet")
    return {"seconds": time.perf_counter() - start, "rows": scored.height, "trace_rows": traces.height}


def _phase_datasets(folder: str) -> dict[str, Any]:
    from loop_pipeline.core.datasets import build_datasets, curate_examples

    start = time.perf_counter()
    scored = pl.read_parquet(Path(folder) / "scored.parquet")
    traces = pl.read_parquet(Path(folder) / "traces.parquet")
    curation = curate_examples(scored, traces, {"intent": 0.5})
    datasets = build_datasets(curation.examples)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows": scored.height,
        "datasets": {name: frame.height for name, frame in datasets.items()},
        "redacted": curation.stats["redacted"],
        "dedup": {k: v for k, v in curation.stats.items() if k.startswith("dedup_") or k.startswith("train_excluded")},
    }


def _phase_generate(path: str, rows: str, bad_rate: str, source_format: str = "native") -> dict[str, Any]:
    start = time.perf_counter()
    generate = synthetic_otlp_lines if source_format == "otlp" else synthetic_trace_lines
    write_lines(generate(int(rows), float(bad_rate)), Path(path))
    return {"seconds": time.perf_counter() - start, "rows": int(rows)}


PHASES: dict[str, Callable[..., dict[str, Any]]] = {
    "generate": _phase_generate,
    "generate_scored": _phase_generate_scored,
    "baseline_scored": _phase_baseline_scored,
    "datasets": _phase_datasets,
    "baseline": _phase_baseline,
    "ingest": _phase_ingest,
    "baseline_otlp": _phase_baseline_otlp,
    "ingest_otlp": _phase_ingest_otlp,
}


def run_phase(name: str, path: Path, *args: object) -> dict[str, Any]:
    """Run one phase in a fresh interpreter; add its peak RSS in MB.

    The parent stays small on purpose: a child's peak RSS would otherwise start from the pages
    it inherited when it was forked.
    """
    command = [sys.executable, "-m", "loop_pipeline.core.bench", name, str(path), *map(str, args)]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        raise RuntimeError(f"benchmark phase {name!r} failed (exit {process.returncode}):\n{stderr[-2000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # Linux reports KiB
    return result


def main_phase(argv: list[str]) -> None:
    name, *args = argv
    print(json.dumps(PHASES[name](*args)))


if __name__ == "__main__":
    main_phase(sys.argv[1:])


def _best_of(name: str, path: Path, repeat: int) -> dict[str, Any]:
    """The fastest of ``repeat`` runs (each in a fresh process), with the highest peak RSS seen."""
    runs = [run_phase(name, path) for _ in range(max(repeat, 1))]
    best = min(runs, key=lambda r: r["seconds"])
    return {**best, "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "all_seconds": [r["seconds"] for r in runs]}


def _versus_baseline(rows: int, baseline: dict[str, Any], measured: dict[str, Any], name: str) -> dict[str, Any]:
    """The figures every benchmark reports: both times, their ratio, rows/s and peak RSS."""
    return {
        "benchmark": name,
        "rows": rows,
        "baseline_s": round(baseline["seconds"], 3),
        f"{name}_s": round(measured["seconds"], 3),
        "ratio": round(measured["seconds"] / baseline["seconds"], 3),
        "rows_per_s": round(rows / measured["seconds"], 1),
        "peak_rss_mb": round(measured["peak_rss_mb"], 1),
        "baseline_peak_rss_mb": round(baseline["peak_rss_mb"], 1),
    }


def bench_ingest(
    rows: int,
    bad_rate: float = 0.0,
    workdir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    repeat: int = 1,
    source_format: str = "native",
) -> dict[str, Any]:
    """Bare parsing vs the ingest path (read, map, validate, quarantine, dedup, cost) on one file.

    ``native``: our JSONL against ``polars.read_ndjson``. ``otlp``: OTLP/JSON export requests (one
    chat span each, every 10th with an evaluation event) against ``json.loads`` of every line.
    With ``bad_rate`` > 0 the ingest reads the file with broken lines and the baseline its clean
    twin (a bare parser cannot read a broken file at all).
    """
    if source_format not in ("native", "otlp"):
        raise ValueError(f"source_format must be native or otlp, not {source_format!r}")
    say = progress or (lambda _: None)
    otlp = source_format == "otlp"
    baseline_phase, ingest_phase = ("baseline_otlp", "ingest_otlp") if otlp else ("baseline", "ingest")
    baseline_name = "json.loads per line" if otlp else "polars.read_ndjson"
    with tempfile.TemporaryDirectory(dir=workdir) as folder:
        clean = Path(folder) / ("otlp.jsonl" if otlp else "traces.jsonl")
        say(f"generating {rows:,} synthetic {'OTLP/JSON export requests' if otlp else 'traces'} ...")
        run_phase("generate", clean, rows, 0.0, source_format)
        target = clean
        if bad_rate > 0:
            target = Path(folder) / f"with_bad_lines_{clean.name}"
            run_phase("generate", target, rows, bad_rate, source_format)
        size_mb = target.stat().st_size / 1e6
        say(f"file: {size_mb:,.0f} MB; timing {baseline_name} (baseline) ...")
        baseline = _best_of(baseline_phase, clean, repeat)
        say(f"  baseline: {baseline['seconds']:.2f} s, peak RSS {baseline['peak_rss_mb']:,.0f} MB")
        say("timing loop ingest (read + map + validate + quarantine + dedup + cost) ...")
        ingested = _best_of(ingest_phase, target, repeat)
        say(f"  ingest:   {ingested['seconds']:.2f} s, peak RSS {ingested['peak_rss_mb']:,.0f} MB")
    ratio = ingested["seconds"] / baseline["seconds"]
    say(f"ratio ingest / baseline: {ratio:.2f}x, {rows / ingested['seconds']:,.0f} rows/s")
    summary = ingested["summary"]
    return {
        **_versus_baseline(rows, baseline, ingested, "ingest"),
        "format": source_format,
        "baseline": baseline_name,
        "bad_rate": bad_rate,
        "file_mb": round(size_mb, 1),
        "repeat": max(repeat, 1),
        "valid": summary["valid"],
        "quarantined": summary["quarantined"],
        "quarantined_by_reason": summary["quarantined_by_reason"],
        **({"valid_feedback": summary["feedback"]["valid"]} if otlp else {}),
    }


def bench_datasets(
    rows: int, workdir: Path | None = None, progress: Callable[[str], None] | None = None, repeat: int = 1
) -> dict[str, Any]:
    """Bare read of a scored table vs redaction + dedup + split + dataset shaping on it."""
    say = progress or (lambda _: None)
    with tempfile.TemporaryDirectory(dir=workdir) as folder:
        say(f"generating and scoring {rows:,} synthetic traces (not timed) ...")
        run_phase("generate_scored", Path(folder), rows)
        say("timing polars.read_parquet of the scored table and its traces (baseline) ...")
        baseline = _best_of("baseline_scored", Path(folder), repeat)
        say(f"  baseline: {baseline['seconds']:.2f} s, peak RSS {baseline['peak_rss_mb']:,.0f} MB")
        say("timing read + redaction + dedup + split + sft/kto/dpo/holdout ...")
        built = _best_of("datasets", Path(folder), repeat)
        say(f"  datasets: {built['seconds']:.2f} s, peak RSS {built['peak_rss_mb']:,.0f} MB")
    ratio = built["seconds"] / baseline["seconds"]
    say(f"ratio datasets / baseline: {ratio:.1f}x, {rows / built['seconds']:,.0f} rows/s")
    return {
        **_versus_baseline(rows, baseline, built, "datasets"),
        "repeat": max(repeat, 1),
        "datasets": built["datasets"],
        "redacted": built["redacted"],
        "dedup": built["dedup"],
    }
