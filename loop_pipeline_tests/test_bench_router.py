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
         "--backend-latency-ms", "6", "--backend-jitter-ms", "3", "--no-local", "--workdir", str(workdir)],
    )
    assert result.exit_code == 0, result.output
    report = last_json_line(result.stdout)
    assert report["benchmark"] == "router" and "local" not in report
    assert (report["requests"], report["concurrency"]) == (requests, 16)
    assert set(report["load_average"]["before"]) == {"1m", "5m", "15m"}
    scenarios = report["scenarios"]
    assert set(scenarios) == {"realistic_backend", "instant_backend"}  # both, always
    assert report["target_scenario"] == "realistic_backend" and report["target_met"] == scenarios["realistic_backend"]["target_met"]
    realistic, instant = scenarios["realistic_backend"], scenarios["instant_backend"]
    assert (realistic["backend_latency_ms"], realistic["backend_jitter_ms"]) == (6.0, 3.0)
    assert (instant["backend_latency_ms"], instant["backend_jitter_ms"]) == (0.0, 0.0)
    assert "saturation" in instant["what_it_measures"] and "target" in realistic["what_it_measures"]
    for name, figures in scenarios.items():
        serial_here = serial if name == "instant_backend" else 0
        assert figures["errors"] == 0, name
        assert figures["direct"]["answered"] == figures["router"]["answered"] == requests
        assert figures["router"]["routes"] == {"frontier": requests}  # no task type: the local model is not involved
        assert figures["answered_through_router"] == requests + figures["warmup_requests"] + serial_here
        assert figures["traces_written"] == figures["answered_through_router"] == figures["ingest_valid"]
        assert figures["traces_lost"] == figures["traces_duplicated"] == figures["traces_unanswered"] == 0
        assert figures["open_segments_left"] == 0 and figures["ingest_quarantined"] == 0
        assert figures["router_stopped_cleanly"] is True
        for side in ("direct", "router"):
            assert 0 < figures[side]["p50_ms"] <= figures[side]["p99_ms"] and figures[side]["requests_per_s"] > 0
        assert figures["added_p50_ms"] == pytest.approx(figures["router"]["p50_ms"] - figures["direct"]["p50_ms"], abs=1e-3)
        assert figures["added_p99_ms"] == pytest.approx(figures["router"]["p99_ms"] - figures["direct"]["p99_ms"], abs=1e-3)
        assert figures["inside_router"]["traces"] == figures["traces_written"]
        assert figures["cpu_ms_per_request"]["router"] > 0 and figures["cpu_ms_per_request"]["stand_in"] > 0
        assert isinstance(figures["target_met"], bool) and set(figures["load_average_1m"]) == {"before", "after"}
    # The realistic backend waits 3 to 9 ms per request, drawn per request: the direct side spreads over it.
    assert 3.0 <= realistic["direct"]["p50_ms"] and realistic["direct"]["p99_ms"] - realistic["direct"]["p50_ms"] >= 1.0
    assert realistic["one_at_a_time"] is None
    assert instant["one_at_a_time"]["requests"] == serial and instant["one_at_a_time"]["router_p50_ms"] > 0
    assert "saturation" in result.stderr and "realistic_backend" in result.stderr
    assert list(workdir.iterdir()) == []  # the router's landing folders are cleaned up


def test_bench_router_rejects_bad_arguments():
    assert runner.invoke(app, ["bench", "router", "--requests", "0"]).exit_code == 2
    assert runner.invoke(app, ["bench", "router", "--backend-latency-ms", "-1"]).exit_code == 2
    assert runner.invoke(app, ["bench", "router", "--backend-latency-ms", "0"]).exit_code == 2
    assert runner.invoke(app, ["bench", "router", "--backend-latency-ms", "10", "--backend-jitter-ms", "11"]).exit_code == 2


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
