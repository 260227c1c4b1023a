"""The ``loop`` command: ingest, simulate, bench ingest, and a light ``--help``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from loop_pipeline.cli import app
from loop_pipeline.bench import synthetic as bench
from loop_pipeline_tests.helpers import last_json_line

REPO_ROOT = Path(__file__).resolve().parent.parent
HEAVY_MODULES = ("torch", "transformers", "trl", "great_expectations", "dagster")
SUMMARY_KEYS = {"records_in", "valid", "duplicates", "quarantined", "quarantined_by_reason"}

runner = CliRunner()


@pytest.fixture(autouse=True)
def cli_home(loop_home) -> Path:
    """Every CLI test gets its own empty LOOP_HOME (and no other LOOP_* setting)."""
    return loop_home


def subprocess_env(home: Path) -> dict[str, str]:
    """This process's environment (the fixture already cleared the LOOP_* settings), another home."""
    return {**os.environ, "LOOP_HOME": str(home)}


def trace(trace_id: str, **fields: Any) -> dict[str, Any]:
    record = {
        "trace_id": trace_id,
        "timestamp": "2026-11-01T10:00:00Z",
        "model": "gpt-4o-2024-08-06",
        "messages": [{"role": "user", "content": "what is my balance"}],
        "output": "balance",
        "input_tokens": 12,
        "output_tokens": 1,
    }
    record.update(fields)
    return record


def write_landing(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(trace("t-1")),
        json.dumps(trace("t-2")),
        json.dumps(trace("t-2")),  # identical duplicate
        '{"trace_id": "t-3", "timest',  # truncated
        json.dumps(trace("t-4", timestamp="whenever")),
    ]
    (folder / "traces.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    feedback = [
        {"trace_id": "t-1", "timestamp": "2026-11-01T10:01:00Z", "kind": "accepted", "value": 1, "source": "user"},
        {"trace_id": "t-2", "timestamp": "2026-11-01T10:02:00Z", "kind": "loved", "source": "user"},
    ]
    (folder / "feedback.jsonl").write_text("".join(json.dumps(f) + "\n" for f in feedback), encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------------------------
# loop ingest


def test_ingest_prints_summary_and_exits_zero_with_quarantine(tmp_path):
    landing = write_landing(tmp_path / "landing")
    out = tmp_path / "out"

    result = runner.invoke(app, ["ingest", str(landing), "--out", str(out)])

    assert result.exit_code == 0, result.output
    summary = last_json_line(result.stdout)
    assert SUMMARY_KEYS <= set(summary)
    assert summary["records_in"] == 7
    assert summary["valid"] == 3
    assert summary["duplicates"] == 1
    assert summary["quarantined"] == 3
    assert summary["quarantined_by_reason"] == {"invalid_value": 1, "malformed_json": 1, "unparsable_timestamp": 1}
    assert summary["records_in"] == summary["valid"] + summary["duplicates"] + summary["quarantined"]
    assert json.loads((out / "summary.json").read_text()) == summary
    # The warehouse's own table layout: the Dagster assets and `--traces DIR` read it as it is.
    assert pl.read_parquet(out / "raw_traces" / "2026-11-01.parquet")["trace_id"].sort().to_list() == ["t-1", "t-2"]
    assert pl.read_parquet(out / "quarantined_records" / "2026-11-01.parquet").height == 3
    assert "error" not in result.stderr


def test_ingest_defaults_to_loop_home(tmp_path, cli_home):
    landing = write_landing(tmp_path / "landing")

    result = runner.invoke(app, ["ingest", str(landing / "traces.jsonl"), "--kind", "trace"])

    assert result.exit_code == 0, result.output
    summary = last_json_line(result.stdout)
    assert summary["traces"]["records_in"] == 5
    assert json.loads((cli_home / "ingested" / "summary.json").read_text()) == summary


def test_ingest_missing_path_exits_2(tmp_path):
    missing = tmp_path / "no_such_folder"
    out = tmp_path / "out"

    result = runner.invoke(app, ["ingest", str(missing), "--out", str(out)])

    assert result.exit_code == 2
    assert "no such file or folder" in result.stderr
    assert str(missing) in result.stderr
    assert result.stdout.strip() == ""
    assert not out.exists()


def test_ingest_only_unreadable_file_exits_2(tmp_path):
    corrupt = tmp_path / "traces.parquet"
    corrupt.write_bytes(b"\x00garbage, not parquet\xff" * 16)
    out = tmp_path / "out"

    result = runner.invoke(app, ["ingest", str(corrupt), "--out", str(out)])

    assert result.exit_code == 2
    assert "could be read" in result.stderr
    assert not out.exists()


def test_ingest_unreadable_beside_an_unsupported_file_exits_2(tmp_path):
    """An unsupported file is listed, not read: it does not make an unreadable day a success."""
    (tmp_path / "traces.parquet").write_bytes(b"\x00garbage, not parquet\xff" * 16)
    (tmp_path / "notes.txt").write_text("not a trace file")

    result = runner.invoke(app, ["ingest", str(tmp_path), "--out", str(tmp_path / "out")])

    assert result.exit_code == 2, result.stderr
    assert "none of the 1 file(s) could be read" in result.stderr


def test_ingest_unreadable_beside_readable_exits_zero(tmp_path):
    landing = write_landing(tmp_path / "landing")
    (landing / "broken.parquet").write_bytes(b"garbage" * 10)

    result = runner.invoke(app, ["ingest", str(landing), "--out", str(tmp_path / "out")])

    assert result.exit_code == 0, result.output
    summary = last_json_line(result.stdout)
    assert summary["quarantined_by_reason"]["unreadable_file"] == 1
    assert summary["files"] == 3


def test_ingest_folder_without_files_and_bad_kind_exit_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing to ingest")

    no_files = runner.invoke(app, ["ingest", str(empty), "--out", str(tmp_path / "out")])
    bad_kind = runner.invoke(app, ["ingest", str(empty), "--kind", "spans"])

    assert no_files.exit_code == 2 and "no .jsonl" in no_files.stderr
    assert bad_kind.exit_code == 2 and "--kind" in bad_kind.stderr


def test_ingest_in_a_subprocess(tmp_path):
    landing = write_landing(tmp_path / "landing")
    out = tmp_path / "out"

    done = subprocess.run(
        [sys.executable, "-m", "loop_pipeline.cli", "ingest", str(landing), "--out", str(out)],
        capture_output=True,
        text=True,
        env=subprocess_env(tmp_path / "home"),
        cwd=REPO_ROOT,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    summary = last_json_line(done.stdout)
    assert (summary["records_in"], summary["valid"], summary["quarantined"]) == (7, 3, 3)
    assert (out / "summary.json").is_file()

    missing = subprocess.run(
        [sys.executable, "-m", "loop_pipeline.cli", "ingest", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        env=subprocess_env(tmp_path / "home"),
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert missing.returncode == 2
    assert "no such file or folder" in missing.stderr


# ---------------------------------------------------------------------------------------------
# loop simulate


def test_simulate_writes_landing_layout(tmp_path):
    out = tmp_path / "landing"

    result = runner.invoke(app, ["simulate", "--days", "1", "--traces-per-day", "50", "--out", str(out)])

    assert result.exit_code == 0, result.output
    summary = last_json_line(result.stdout)
    assert summary["traces"] == 50
    assert summary["days"] == 1
    trace_files = sorted(out.glob("traces/*/traces.jsonl"))
    assert len(trace_files) == 1
    assert trace_files[0].parent.name == summary["start_date"] == summary["end_date"]
    assert len(trace_files[0].read_text().splitlines()) == 50
    feedback_files = sorted(out.glob("feedback/*/feedback.jsonl"))
    assert feedback_files
    feedback_lines = sum(len(p.read_text().splitlines()) for p in feedback_files)
    assert feedback_lines == summary["feedback_events"] > 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted(summary["files"])


def test_simulate_defaults_to_loop_home_landing(cli_home):
    result = runner.invoke(app, ["simulate", "--days", "1", "--traces-per-day", "10"])

    assert result.exit_code == 0, result.output
    assert last_json_line(result.stdout)["traces"] == 10
    assert len(list((cli_home / "landing").glob("traces/*/traces.jsonl"))) == 1


def test_simulate_rejects_bad_value(tmp_path):
    result = runner.invoke(app, ["simulate", "--days", "1", "--frontier-error-rate", "1.5", "--out", str(tmp_path / "x")])

    assert result.exit_code == 2
    assert "frontier_error_rate" in result.stderr


# ---------------------------------------------------------------------------------------------
# loop bench ingest


def _expected_broken(rows: int, bad_rate: float) -> dict[str, int]:
    """Which lines bench.synthetic_trace_lines breaks, and the reason each must be quarantined for.

    Every ``round(1 / bad_rate)``-th line is broken, cycling through four ways: truncated write,
    negative input_tokens, model as an object, timestamp "last tuesday".
    """
    every = max(int(round(1 / bad_rate)), 1)
    reason_of_variant = ["malformed_json", "negative_value", "wrong_type", "unparsable_timestamp"]
    expected: dict[str, int] = {}
    for position in range(rows):
        if position % every == every - 1:
            reason = reason_of_variant[(position // every) % 4]
            expected[reason] = expected.get(reason, 0) + 1
    return expected


def test_bench_generator_breaks_the_expected_lines():
    rows, bad_rate = 1000, 0.01
    clean = bench.synthetic_trace_lines(rows, 0.0).to_list()
    dirty = bench.synthetic_trace_lines(rows, bad_rate).to_list()
    changed = [i for i, (a, b) in enumerate(zip(clean, dirty)) if a != b]
    assert changed == [i for i in range(rows) if i % 100 == 99]
    assert sum(_expected_broken(rows, bad_rate).values()) == len(changed) == 10


def test_bench_ingest(tmp_path):
    rows, bad_rate = 3000, 0.01
    workdir = tmp_path / "bench"
    workdir.mkdir()

    result = runner.invoke(
        app, ["bench", "ingest", "--rows", str(rows), "--bad-rate", str(bad_rate), "--workdir", str(workdir)]
    )

    assert result.exit_code == 0, result.output
    report = last_json_line(result.stdout)
    for key in ("ratio", "rows_per_s", "peak_rss_mb", "baseline_s", "ingest_s"):
        assert isinstance(report[key], (int, float)) and report[key] > 0, key
    assert report["ratio"] == pytest.approx(report["ingest_s"] / report["baseline_s"], rel=0.05)
    assert report["rows_per_s"] == pytest.approx(rows / report["ingest_s"], rel=0.05)
    assert report["rows"] == rows
    assert report["valid"] + report["quarantined"] == rows
    expected = _expected_broken(rows, bad_rate)
    assert report["quarantined"] == sum(expected.values()) == 30
    assert report["quarantined_by_reason"] == expected
    assert list(workdir.iterdir()) == []  # generated files are cleaned up


def test_bench_rejects_bad_arguments(tmp_path):
    assert runner.invoke(app, ["bench", "ingest", "--rows", "0"]).exit_code == 2
    assert runner.invoke(app, ["bench", "ingest", "--rows", "10", "--bad-rate", "1.5"]).exit_code == 2
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    not_a_folder = runner.invoke(app, ["bench", "ingest", "--rows", "10", "--workdir", str(a_file)])
    assert not_a_folder.exit_code == 2
    assert "--workdir" in not_a_folder.stderr


def test_bench_creates_a_missing_workdir(tmp_path):
    workdir = tmp_path / "not" / "yet"

    result = runner.invoke(app, ["bench", "ingest", "--rows", "200", "--workdir", str(workdir)])

    assert result.exit_code == 0, result.output
    report = last_json_line(result.stdout)
    assert (report["rows"], report["valid"], report["quarantined"]) == (200, 200, 0)
    assert workdir.is_dir() and list(workdir.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# A light CLI


def test_help_runs_in_a_subprocess(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "loop_pipeline.cli", "--help"],
        capture_output=True,
        text=True,
        env=subprocess_env(tmp_path / "home"),
        cwd=tmp_path,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    for command in ("simulate", "ingest", "bench"):
        assert command in done.stdout
    assert not (tmp_path / "home").exists()  # --help creates no state


def test_importing_the_cli_loads_no_heavy_library(tmp_path):
    code = (
        "import loop_pipeline.cli, sys, json; "
        f"heavy = {HEAVY_MODULES!r}; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))"
    )

    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env(tmp_path / "home"),
        cwd=tmp_path,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_train_rejects_a_bad_config_naming_the_field(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        f"model: {{base: somewhere}}\nlora: {{r: 0}}\ndata: {{sft: x.parquet}}\noutput_dir: {tmp_path / 'out'}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 2
    assert "lora.r" in result.output
