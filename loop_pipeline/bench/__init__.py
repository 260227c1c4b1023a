"""Benchmarks (``loop bench ...``), measured as ratios against a baseline timed in the same run.

Each phase runs in its own Python process (see :mod:`loop_pipeline.bench.phases`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

from loop_pipeline.bench.phases import run_phase

def _best_of(name: str, path: Path, repeat: int) -> dict[str, Any]:
    """The fastest of ``repeat`` runs (each in a fresh process), with the highest peak RSS seen."""
    runs = [run_phase(name, path) for _ in range(max(repeat, 1))]
    best = min(runs, key=lambda r: r["seconds"])
    return {
        **best,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "all_seconds": [r["seconds"] for r in runs],
        "cpu_seconds": min(r["cpu_seconds"] for r in runs),
    }


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
        # CPU seconds of each phase's process (imports included): steadier than wall time on a busy machine.
        f"{name}_cpu_s": round(measured["cpu_seconds"], 1),
        "baseline_cpu_s": round(baseline["cpu_seconds"], 1),
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

    ``native``: our JSONL against ``polars.read_ndjson`` (of 64 MiB blocks of whole lines: bounded
    memory at any size, as ingest's batches). ``otlp``: OTLP/JSON export requests (one
    chat span each, every 10th with an evaluation event) against ``json.loads`` of every line.
    With ``bad_rate`` > 0 the ingest reads the file with broken lines and the baseline its clean
    twin (a bare parser cannot read a broken file at all).
    """
    if source_format not in ("native", "otlp"):
        raise ValueError(f"source_format must be native or otlp, not {source_format!r}")
    say = progress or (lambda _: None)
    otlp = source_format == "otlp"
    baseline_phase, ingest_phase = ("baseline_otlp", "ingest_otlp") if otlp else ("baseline", "ingest")
    baseline_name = "json.loads per line" if otlp else "polars.read_ndjson per 64 MiB block"
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
        say(f"  baseline: {baseline['seconds']:.2f} s (cpu {baseline['cpu_seconds']:.1f} s), peak RSS {baseline['peak_rss_mb']:,.0f} MB")
        say("timing loop ingest (read + map + validate + quarantine + dedup + cost) ...")
        ingested = _best_of(ingest_phase, target, repeat)
        say(f"  ingest:   {ingested['seconds']:.2f} s (cpu {ingested['cpu_seconds']:.1f} s), peak RSS {ingested['peak_rss_mb']:,.0f} MB")
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
        say(f"  baseline: {baseline['seconds']:.2f} s (cpu {baseline['cpu_seconds']:.1f} s), peak RSS {baseline['peak_rss_mb']:,.0f} MB")
        say("timing read + redaction + dedup + split + sft/kto/dpo/holdout ...")
        built = _best_of("datasets", Path(folder), repeat)
        say(f"  datasets: {built['seconds']:.2f} s (cpu {built['cpu_seconds']:.1f} s), peak RSS {built['peak_rss_mb']:,.0f} MB")
    ratio = built["seconds"] / baseline["seconds"]
    say(f"ratio datasets / baseline: {ratio:.1f}x, {rows / built['seconds']:,.0f} rows/s")
    return {
        **_versus_baseline(rows, baseline, built, "datasets"),
        "repeat": max(repeat, 1),
        "datasets": built["datasets"],
        "redacted": built["redacted"],
        "dedup": built["dedup"],
    }
