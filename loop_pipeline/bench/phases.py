"""Benchmark phases, each run in a fresh Python process (``python -m loop_pipeline.bench.phases NAME ...``)
so that its peak RSS is its own (``os.wait4`` reports the child's ``ru_maxrss``); the time is
taken inside the child around the work alone. The phases load the project's configs the way the CLI
does (``LoopSettings``)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import polars as pl

from loop_pipeline.bench.synthetic import synthetic_otlp_lines, synthetic_trace_lines, write_synthetic
from loop_pipeline.settings import LoopSettings


def _ingest_path():
    """The ingest function with the project's configs bound, as `loop ingest` runs it. Imports and
    config loading happen here, before a phase starts its clock (the old phases imported first too)."""
    from loop_pipeline.core.costs import PriceTable
    from loop_pipeline.core.ingest import IngestConfig, discover, ingest

    settings = LoopSettings()
    config, prices = settings.load(IngestConfig), settings.load(PriceTable)

    def run(paths: list[str], record_kind: str | None = None, **options: Any):
        return ingest(discover(paths, record_kind=record_kind), config, prices, **options)

    return run


# The baseline parses the file in blocks of whole lines of this size (as ingest reads it in
# batches), so that it too runs in bounded memory on a file of any size.
BASELINE_BLOCK_BYTES = 64 << 20


def _line_blocks(path: str, size: int):
    with open(path, "rb") as handle:
        carry = b""
        while block := handle.read(size):
            data = carry + block
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if cut:
                yield data[:cut]
        if carry:
            yield carry


def _phase_baseline(path: str) -> dict[str, Any]:
    """Bare parsing: ``polars.read_ndjson`` of each block of whole lines, every column inferred."""
    start = time.perf_counter()
    rows = 0
    for block in _line_blocks(path, BASELINE_BLOCK_BYTES):
        rows += pl.read_ndjson(io.BytesIO(block)).height
    return {"seconds": time.perf_counter() - start, "rows": rows}


def _phase_ingest(path: str) -> dict[str, Any]:
    """``ingest`` as `loop ingest` runs it, up to its result: the day's tables checked and
    written as Parquet parts in the run's folder beside the input (what the writers stream from)."""
    run = _ingest_path()
    start = time.perf_counter()
    with run([path], record_kind="trace", spill_dir=Path(path).parent) as result:
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "rows": result.height("traces"), "summary": result.summary()}


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
    run = _ingest_path()
    start = time.perf_counter()
    with run([path], source_format="otlp", spill_dir=Path(path).parent) as result:
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "rows": result.height("traces"), "feedback": result.height("feedback"), "summary": result.summary()}


def _phase_generate_scored(folder: str, rows: str) -> dict[str, Any]:
    """Scored traces for the datasets benchmark: synthetic traces with PII, ingested, given
    vectorized synthetic feedback (accept / edit / reject / hallucination / review), scored."""
    from loop_pipeline.core import scoring
    from loop_pipeline.core.tasks import TasksConfig

    start = time.perf_counter()
    root = Path(folder)
    lines_path = root / "traces.jsonl"
    write_synthetic(lines_path, int(rows), synthetic_trace_lines, bad_rate=0.0, pii_every=50)
    with _ingest_path()([str(lines_path)], record_kind="trace", spill_dir=root) as result:
        traces = result.traces
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
    settings = LoopSettings()
    config = settings.load(scoring.ScoringConfig)
    signals = scoring.trace_signals(traces, feedback, config, settings.load(TasksConfig))
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
    from loop_pipeline.core.datasets import DatasetConfig, build_datasets, curate_examples
    from loop_pipeline.core.dedup import DedupConfig
    from loop_pipeline.core.redaction import RedactionConfig

    settings = LoopSettings()
    configs = [settings.load(model) for model in (DatasetConfig, RedactionConfig, DedupConfig)]
    start = time.perf_counter()
    # Scans, as the training_datasets asset passes them: only the columns curation uses are read.
    scored = pl.scan_parquet(Path(folder) / "scored.parquet")
    traces = pl.scan_parquet(Path(folder) / "traces.parquet")
    curation = curate_examples(scored, traces, {"intent": 0.5}, None, *configs, work_dir=folder)
    datasets = build_datasets(curation.examples)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows": scored.select(pl.len()).collect().item(),
        "datasets": {name: frame.height for name, frame in datasets.items()},
        "redacted": curation.stats["redacted"],
        "dedup": {k: v for k, v in curation.stats.items() if k.startswith("dedup_") or k.startswith("train_excluded")},
    }


def _phase_generate(path: str, rows: str, bad_rate: str, source_format: str = "native") -> dict[str, Any]:
    start = time.perf_counter()
    generate = synthetic_otlp_lines if source_format == "otlp" else synthetic_trace_lines
    write_synthetic(Path(path), int(rows), generate, bad_rate=float(bad_rate))
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
    command = [sys.executable, "-m", "loop_pipeline.bench.phases", name, str(path), *map(str, args)]
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
    # CPU time of the whole process (imports and config loading included): steadier than the
    # wall time on a machine shared with other work.
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    return result


def main_phase(argv: list[str]) -> None:
    name, *args = argv
    print(json.dumps(PHASES[name](*args)))


if __name__ == "__main__":
    main_phase(sys.argv[1:])
