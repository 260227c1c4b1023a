"""The traces ``loop bench router``'s router wrote: counted against the answers, read for the
router's own overhead, and ingested back (valid vs quarantined)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in (0, 1])."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(-(-share * len(ordered) // 1)) - 1))]


def _closed_segments(root: Path) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    return [p for p in files if not any(part.startswith(".") for part in p.relative_to(root).parts)]


def _segment_lines(path: Path) -> list[str]:
    data = path.read_bytes()
    if path.suffix == ".gz":
        import gzip

        data = gzip.decompress(data)
    elif path.suffix == ".zst":
        import zstandard

        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return [line for line in data.decode("utf-8").splitlines() if line.strip()]


def account_traces(landing: Path, answered_ids: list[str]) -> dict[str, Any]:
    """The records under ``landing/traces`` against the trace ids of the answers."""
    root = landing / "traces"
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    open_segments = [p for p in files if any(part.startswith(".") for part in p.relative_to(root).parts)]
    written = [json.loads(line)["trace_id"] for p in files if p not in open_segments for line in _segment_lines(p)]
    unique, answered = set(written), set(answered_ids)
    return {
        "traces_written": len(written),
        "traces_lost": len(answered - unique),
        "traces_duplicated": len(written) - len(unique),
        "traces_unanswered": len(unique - answered),  # a trace of no answer seen here (a failed call)
        "segments": len(files) - len(open_segments),
        "open_segments_left": len(open_segments),
    }


def ingest_landing(landing: Path, loop_home: Path) -> dict[str, Any]:
    """Ingest the router's trace segments with the project's configs: valid and quarantined records."""
    from loop_pipeline.core.costs import PriceTable
    from loop_pipeline.core.ingest import IngestConfig, discover, ingest
    from loop_pipeline.settings import LoopSettings

    settings = LoopSettings(home=loop_home)
    summary = ingest(discover([str(landing / "traces")], record_kind="trace"), settings.load(IngestConfig), settings.load(PriceTable)).summary()
    return {
        "ingest_valid": summary["traces"]["valid"],
        "ingest_duplicates": summary["traces"]["duplicates"],
        "ingest_quarantined": summary["quarantined"],
    }


def router_side_overhead(landing: Path) -> dict[str, Any]:
    """``metadata.router_added_ms`` of the router's traces: its handler time minus the frontier call
    (from the request reaching the handler to the answer; HTTP parsing and event-loop queueing excluded)."""
    root = landing / "traces"
    added = [
        json.loads(line)["metadata"].get("router_added_ms")
        for p in _closed_segments(root)
        for line in _segment_lines(p)
    ]
    added = [float(a) for a in added if a is not None]
    if not added:
        return {}
    return {"p50_ms": round(percentile(added, 0.5), 3), "p99_ms": round(percentile(added, 0.99), 3), "traces": len(added)}
