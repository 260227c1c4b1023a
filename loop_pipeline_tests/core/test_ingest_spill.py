"""Ingest in bounded memory: every batch's rows are spilled to Parquet parts in a temporary folder
and the end of the run reads them back in chunks, so the results must not depend on the batch
sizes (duplicates and conflicting duplicates spanning batches and files included), and the folder
must not outlive the result."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from loop_pipeline.bench.phases import _line_blocks
from loop_pipeline.bench.synthetic import synthetic_otlp_lines, synthetic_trace_lines, write_lines, write_synthetic
from loop_pipeline.core.costs import PriceTable
from loop_pipeline.core.ingest import IngestConfig, discover, ingest, write_result
from loop_pipeline.core.ingest.spill import PREFIX, SpillError
from loop_pipeline.settings import REPO_ROOT

PRICES = PriceTable.from_yaml(REPO_ROOT / "configs" / "prices.yaml")


def trace(trace_id: str, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "trace_id": trace_id,
        "timestamp": "2026-11-01T10:00:00Z",
        "task_type": "intent",
        "model": "gpt-4o-2024-08-06",
        "messages": [{"role": "user", "content": f"question {trace_id}"}],
        "output": "card_declined",
        "input_tokens": 40,
        "output_tokens": 3,
        "metadata": {"row": trace_id},
    }
    record.update(fields)
    return record


def jsonl(records: list[Any]) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def _landing(root: Path) -> Path:
    """A day whose repeated ids span batches, files and formats (see the expectations below)."""
    traces, feedback = root / "traces", root / "feedback"
    traces.mkdir(parents=True)
    feedback.mkdir(parents=True)

    def numbered(i: int) -> dict[str, Any]:
        # Varying sizes (so batch edges fall anywhere); no cost: computed from the price table.
        return trace(f"t-{i}", output="y" * (i % 37), input_tokens=i, timestamp=f"2026-11-0{1 + i // 200}T10:00:00Z")

    first: list[Any] = []
    for i in range(200):
        if i % 50 == 0:
            first += ["{bad json", ""]
        first.append(numbered(i))
    (traces / "a.jsonl").write_text(jsonl(first), encoding="utf-8")
    second = [numbered(i) for i in range(200, 400)]
    # t-10: an identical copy in another file; t-20: a conflicting copy, then an identical one;
    # t-399: an identical copy in the same file.
    second += [numbered(10), {**numbered(20), "output": "other"}, numbered(20), numbered(399)]
    with gzip.open(traces / "b.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(jsonl(second))
    # A Parquet file: t-405 twice with different outputs.
    rows = [{**numbered(i), "metadata": json.dumps({"row": i})} for i in range(400, 410)] + [
        {**numbered(405), "metadata": json.dumps({"row": 405}), "output": "z"}
    ]
    pl.DataFrame(rows).write_parquet(traces / "c.parquet")

    events = [{"trace_id": f"t-{i}", "timestamp": "2026-11-01T11:00:00Z", "kind": "thumbs", "value": i % 2} for i in range(120)]
    events += events[:5]  # identical re-sent events: the same derived id
    events += [
        {"feedback_id": "fb-x", "trace_id": "t-1", "timestamp": "2026-11-01T11:00:00Z", "kind": "accepted"},
        {"feedback_id": "fb-x", "trace_id": "t-1", "timestamp": "2026-11-01T11:00:00Z", "kind": "rejected"},
    ]
    (feedback / "fb.jsonl").write_text(jsonl(events), encoding="utf-8")
    return root


def _run(landing: Path, **config: int):
    sources = discover([str(landing / "traces")], record_kind="trace") + discover([str(landing / "feedback")], record_kind="feedback")
    return ingest(sources, IngestConfig(**config), PRICES, spill_dir=landing.parent / "spill")


def _tables(result) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    return result.traces, result.feedback, result.quarantine, result.summary(include_sources=True)


def test_the_expected_rows_whatever_the_batch_sizes(tmp_path):
    landing = _landing(tmp_path / "landing")
    with _run(landing) as whole:
        traces, feedback, quarantine, summary = _tables(whole)

    ids = [f"t-{i}" for i in range(410) if i not in (20, 405)]
    assert traces["trace_id"].to_list() == ids  # read order, first copies kept
    kept_10 = traces.filter(pl.col("trace_id") == "t-10").row(0, named=True)
    assert (Path(kept_10["source_file"]).name, kept_10["source_record"]) == ("a.jsonl", 13)
    assert traces["cost_source"].unique().to_list() == ["computed"]
    assert summary["traces"]["records_in"] == 200 + 4 + 204 + 11
    assert (summary["traces"]["valid"], summary["traces"]["duplicates"]) == (408, 2)
    assert summary["traces"]["quarantined_by_reason"] == {"conflicting_duplicate": 5, "malformed_json": 4}
    assert (summary["feedback"]["valid"], summary["feedback"]["duplicates"]) == (120, 5)
    assert summary["feedback"]["quarantined_by_reason"] == {"conflicting_duplicate": 2}
    # Quarantine: read order, then the conflicting copies (traces, then feedback), in read order.
    conflicts = quarantine.filter(pl.col("reason") == "conflicting_duplicate")
    assert quarantine["reason"].to_list()[:4] == ["malformed_json"] * 4
    assert conflicts.select("record_id", pl.col("source_file").str.extract(r"([^/]+)$")).rows() == [
        ("t-20", "a.jsonl"), ("t-20", "b.jsonl.gz"), ("t-20", "b.jsonl.gz"),
        ("t-405", "c.parquet"), ("t-405", "c.parquet"), ("fb-x", "fb.jsonl"), ("fb-x", "fb.jsonl"),
    ]  # fmt: skip
    assert conflicts["detail"][0] == "trace_id appears 3 times with 2 different contents; every copy is held back"
    assert json.loads(conflicts["raw"][1])["output"] == "other"

    # Batches of 4 KB (about 16 lines; one line each: test_ingest_hostile.py), end-of-run chunks of
    # one, three and fifty rows: copies and conflicting copies fall in other batches and chunks.
    for read_batch_bytes, finalize_batch_rows in ((4096, 3), (4096, 1), (4096, 50)):
        with _run(landing, read_batch_bytes=read_batch_bytes, finalize_batch_rows=finalize_batch_rows) as batched:
            if finalize_batch_rows < 100:  # the valid rows were checked and written in many chunks
                assert len(batched.parts["traces"]) > 3
            again = _tables(batched)
        for mine, theirs in zip(again, (traces, feedback, quarantine, summary)):
            if isinstance(mine, pl.DataFrame):
                assert mine.schema == theirs.schema and mine.equals(theirs), (read_batch_bytes, finalize_batch_rows)
            else:
                assert mine == theirs, (read_batch_bytes, finalize_batch_rows)


def test_written_tables_do_not_depend_on_the_batch_sizes(tmp_path):
    landing = _landing(tmp_path / "landing")
    with _run(landing) as whole:
        write_result(whole, tmp_path / "whole")
    with _run(landing, read_batch_bytes=4096, finalize_batch_rows=50) as batched:
        write_result(batched, tmp_path / "batched")

    files = sorted(p.relative_to(tmp_path / "whole") for p in (tmp_path / "whole").rglob("*.parquet"))
    assert [str(f) for f in files] == [
        "feedback_events/2026-11-01.parquet",
        "quarantined_records/2026-11-03.parquet",
        "raw_traces/2026-11-01.parquet",
        "raw_traces/2026-11-02.parquet",
        "raw_traces/2026-11-03.parquet",
    ]
    for name in files:
        assert (tmp_path / "batched" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    by_day = pl.read_parquet(tmp_path / "whole" / "raw_traces" / "2026-11-02.parquet")
    assert by_day["trace_id"].to_list() == [f"t-{i}" for i in range(200, 400)]


def test_the_rows_wait_on_disk_and_the_folder_goes_with_the_result(tmp_path):
    landing = _landing(tmp_path / "landing")
    spill = tmp_path / "spill"
    seen: list[list[str]] = []

    def progress(message: str) -> None:
        if message.startswith("read ") and "a.jsonl:" in message:  # the first file read: its rows are parts already
            seen.append(sorted(p.name for p in spill.glob(f"{PREFIX}*/*.parquet")))

    sources = discover([str(landing / "traces")], record_kind="trace")
    result = ingest(sources, IngestConfig(read_batch_bytes=2000), PRICES, progress=progress, spill_dir=spill)
    assert len([name for name in seen[0] if name.endswith("-candidates-trace.parquet")]) > 3
    (folder,) = spill.glob(f"{PREFIX}*")
    # Only the result's tables are left once the run is over.
    assert {p.name.split("-", 1)[1] for p in folder.iterdir()} == {"valid-trace.parquet", "valid-quarantine.parquet"}
    assert result.height("traces") == result.traces.height == 408
    assert result.scan("traces").select(pl.len()).collect().item() == 408
    result.close()
    assert not folder.exists()
    with pytest.raises(RuntimeError, match="closed"):
        result.traces
    assert result.summary()["valid"] == 408  # the counts outlive the tables


def test_a_failing_run_removes_its_folder(tmp_path):
    landing = _landing(tmp_path / "landing")
    spill = tmp_path / "spill"

    def progress(message: str) -> None:
        if message.startswith("read ") and "b.jsonl.gz:" in message:
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        ingest(discover([str(landing / "traces")]), IngestConfig(), PRICES, progress=progress, spill_dir=spill)
    assert list(spill.iterdir()) == []


def test_a_failed_spill_write_fails_the_run_and_blames_no_landing_file(tmp_path):
    landing = _landing(tmp_path / "landing")
    spill = tmp_path / "spill"

    def progress(message: str) -> None:
        if message.startswith("read ") and "a.jsonl:" in message:
            for folder in spill.glob(f"{PREFIX}*"):
                shutil.rmtree(folder)  # the disk lost the run's folder

    with pytest.raises(SpillError, match="cannot write ingest's temporary rows"):
        ingest(discover([str(landing / "traces")]), IngestConfig(), PRICES, progress=progress, spill_dir=spill)


def test_folders_of_dead_runs_are_removed_and_live_ones_kept(tmp_path):
    landing = _landing(tmp_path / "landing")
    spill = tmp_path / "spill"
    host = socket.gethostname().replace("-", "_")
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead = spill / f"{PREFIX}{host}-{finished.stdout.strip()}-abc"
    live = spill / f"{PREFIX}{host}-{os.getppid()}-def"  # pytest's parent process is alive
    elsewhere = spill / f"{PREFIX}other_host-{finished.stdout.strip()}-ghi"
    for folder in (dead, live, elsewhere):
        folder.mkdir(parents=True)
        (folder / "000000001-candidates-trace.parquet").write_bytes(b"left behind")

    with _run(landing):
        assert not dead.exists()
        assert live.exists() and elsewhere.exists()


# ---------------------------------------------------------------------------------------------
# The benchmark's generator and baseline in bounded memory


@pytest.mark.parametrize("generate", [synthetic_trace_lines, synthetic_otlp_lines])
def test_the_generator_writes_the_same_file_chunk_by_chunk(tmp_path, generate):
    write_lines(generate(1000, bad_rate=0.01), tmp_path / "whole.jsonl")
    write_synthetic(tmp_path / "chunked.jsonl", 1000, generate, chunk_rows=77, bad_rate=0.01)
    assert (tmp_path / "chunked.jsonl").read_bytes() == (tmp_path / "whole.jsonl").read_bytes()


def test_the_baseline_reads_blocks_of_whole_lines(tmp_path):
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b'{"a":1}\n{"bb":22}\n\n{"ccc":333}\n{"d":4}')
    blocks = list(_line_blocks(str(path), 10))
    assert b"".join(blocks) == path.read_bytes()
    assert all(block.endswith(b"\n") for block in blocks[:-1]) and len(blocks) >= 3
