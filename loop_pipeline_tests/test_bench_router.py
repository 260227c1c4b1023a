"""``loop bench router`` on a small count: the router and the stand-in in their own processes,
every answer traced once, the JSON line's figures consistent with each other."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from loop_pipeline.bench.router_traces import account_traces, percentile
from loop_pipeline.cli import app
from loop_pipeline_tests.helpers import last_json_line

runner = CliRunner()


def test_bench_router_small_run(tmp_path, loop_home):
    requests, serial = 200, 20
    workdir = tmp_path / "bench"
    result = runner.invoke(
        app,
        ["bench", "router", "--requests", str(requests), "--concurrency", "16", "--serial-requests", str(serial),
         "--backend-latency-ms", "2", "--no-local", "--workdir", str(workdir)],
    )
    assert result.exit_code == 0, result.output
    report = last_json_line(result.stdout)
    assert report["benchmark"] == "router" and "local" not in report
    assert (report["requests"], report["concurrency"], report["backend_latency_ms"]) == (requests, 16, 2.0)
    assert report["errors"] == 0
    assert report["direct"]["answered"] == report["router"]["answered"] == requests
    assert report["router"]["routes"] == {"frontier": requests}  # no task type: the local model is not involved
    assert report["answered_through_router"] == requests + report["warmup_requests"] + serial
    assert report["traces_written"] == report["answered_through_router"] == report["ingest_valid"]
    assert report["traces_lost"] == report["traces_duplicated"] == report["traces_unanswered"] == 0
    assert report["open_segments_left"] == 0 and report["ingest_quarantined"] == 0
    assert report["router_stopped_cleanly"] is True
    for side in ("direct", "router"):
        figures = report[side]
        assert 2.0 <= figures["p50_ms"] <= figures["p99_ms"] and figures["requests_per_s"] > 0
    assert report["added_p50_ms"] == pytest.approx(report["router"]["p50_ms"] - report["direct"]["p50_ms"], abs=1e-3)
    assert report["added_p99_ms"] == pytest.approx(report["router"]["p99_ms"] - report["direct"]["p99_ms"], abs=1e-3)
    assert report["one_at_a_time"]["requests"] == serial and report["one_at_a_time"]["router_p50_ms"] > 0
    assert report["inside_router"]["traces"] == report["traces_written"]
    assert report["cpu_ms_per_request"]["router"] > 0 and report["cpu_ms_per_request"]["stand_in"] > 0
    assert isinstance(report["target_met"], bool)
    assert list(workdir.iterdir()) == []  # the router's landing folder is cleaned up


def test_bench_router_rejects_bad_arguments():
    assert runner.invoke(app, ["bench", "router", "--requests", "0"]).exit_code == 2
    assert runner.invoke(app, ["bench", "router", "--backend-latency-ms", "-1"]).exit_code == 2


def test_trace_accounting_sees_lost_duplicated_and_open_records(tmp_path):
    day = tmp_path / "traces" / "2026-12-01"
    day.mkdir(parents=True)
    (day / "router-a-1.jsonl").write_text("".join(json.dumps({"trace_id": t}) + "\n" for t in ("t1", "t2", "t2", "t9")))
    (day / ".router-a-2.jsonl").write_text(json.dumps({"trace_id": "t3"}) + "\n")  # still open
    counts = account_traces(tmp_path, ["t1", "t2", "t3"])
    assert counts == {
        "traces_written": 4, "traces_lost": 1, "traces_duplicated": 1, "traces_unanswered": 1, "segments": 1, "open_segments_left": 1,
    }
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0 and percentile(list(map(float, range(1, 101))), 0.99) == 99.0


def test_the_local_part_micro_batches_concurrent_requests(tmp_path, loop_home):
    from loop_pipeline.bench.router_local import bench_local_batching
    from loop_pipeline_tests.tiny_models import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny", ["how do i freeze my card", "what is my balance", "book a flight"] * 20)
    lines: list[str] = []
    report = bench_local_batching(8, lines.append, concurrency=8, base_model=str(model))
    assert report["requests"] == 8 and report["model"] == str(model)
    # The 8 concurrent requests ran in batches (warm-up not counted), one at a time ran 8 batches of one.
    sizes = {int(size): count for size, count in report["batch_sizes"].items()}
    assert sum(size * count for size, count in sizes.items()) == 8 and max(sizes) > 1
    assert report["one_at_a_time_requests_per_s"] > 0 and report["micro_batched_requests_per_s"] > 0
    assert report["speedup"] == pytest.approx(report["micro_batched_requests_per_s"] / report["one_at_a_time_requests_per_s"], rel=0.05)
    assert 0.0 <= report["same_answer_share"] <= 1.0 and isinstance(report["target_met"], bool)
    assert any("in process" in line for line in lines)
