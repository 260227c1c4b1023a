"""`loop datasets build` on a `loop ingest --out` folder of simulated traffic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from typer.testing import CliRunner

from loop_pipeline.cli import app
from loop_pipeline.sim import SimulationConfig
from loop_pipeline.settings import REPO_ROOT
from loop_pipeline_tests.helpers import last_json_line, simulate_landing

runner = CliRunner()
SIMULATION = {"days": 2, "traces_per_day": 500, "start_date": "2026-11-01", "human_review_rate": 0.3}
NAMES = ("sft", "kto", "dpo", "holdout")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    """Simulated landing folder, ingested once by `loop ingest PATH --out DIR`."""
    root = tmp_path_factory.mktemp("cli_datasets")
    simulate_landing(SimulationConfig.from_mapping(SIMULATION), root / "landing")
    result = runner.invoke(app, ["ingest", str(root / "landing"), "--out", str(root / "ingested")])
    assert result.exit_code == 0, result.output
    return root / "ingested"


@pytest.fixture
def home(loop_home, monkeypatch) -> Path:
    monkeypatch.chdir(REPO_ROOT)
    return loop_home


def build(ingested: Path, out: Path) -> tuple[Any, dict[str, Any]]:
    result = runner.invoke(app, ["datasets", "build", "--traces", str(ingested), "--out", str(out), "--no-mlflow"])
    assert result.exit_code == 0, result.output
    return result, last_json_line(result.stdout)


def test_datasets_build_prints_version_paths_and_counts_and_a_rerun_reuses_it(ingested, home, tmp_path):
    out = tmp_path / "datasets"
    result, summary = build(ingested, out)
    version = summary["version"]
    assert version.startswith("ds-") and summary["created"] is True
    assert summary["mlflow_run_id"] is None and not (home / "mlflow").exists()
    assert set(summary["paths"]) == set(NAMES)
    for name, path in summary["paths"].items():
        assert Path(path) == out / version / f"{name}.parquet" and Path(path).is_file()
        frame = pl.read_parquet(path)
        assert frame.height == summary["rows"][name] > 0
        # Counts per dataset and task type add up to the rows, and match the file.
        assert sum(summary["counts"][name].values()) == summary["rows"][name]
        assert dict(frame.group_by("task_type").len().iter_rows()) == summary["counts"][name]
    assert set(summary["counts"]["sft"]) == {"intent"}
    assert (out / version / "README.md").is_file() and not (out / "LATEST").exists()
    ingested_ids = set(pl.read_parquet(sorted((ingested / "raw_traces").glob("*.parquet"))).get_column("trace_id"))
    assert set(pl.read_parquet(summary["paths"]["sft"]).get_column("trace_id")) <= ingested_ids
    assert f"dataset version {version} (new)" in result.stderr

    rerun, again = build(ingested, out)
    assert again["version"] == version and again["created"] is False
    assert again["rows"] == summary["rows"] and again["counts"] == summary["counts"]
    assert "unchanged, reused" in rerun.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(["holdout_groups.parquet", version])
    # The build went through the assets: the instance recorded the version and its expectations.
    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    try:
        event = instance.get_latest_materialization_event(dg.AssetKey("training_datasets"))
        assert event.asset_materialization.metadata["version"].value == version
        checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("training_datasets"), name) for name in summary["checks"]]
        )
        assert len(checks) == len(summary["checks"]) == 5
    finally:
        instance.dispose()


def test_datasets_build_gives_the_same_version_in_another_process(ingested, home, tmp_path):
    _, summary = build(ingested, tmp_path / "here")
    other = tmp_path / "there"
    command = [sys.executable, "-m", "loop_pipeline.cli", "datasets", "build", "--traces", str(ingested), "--out", str(other), "--no-mlflow"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert completed.returncode == 0, completed.stderr
    elsewhere = last_json_line(completed.stdout)
    assert elsewhere["version"] == summary["version"] and elsewhere["created"] is True
    for name in NAMES:
        assert Path(elsewhere["paths"][name]).read_bytes() == Path(summary["paths"][name]).read_bytes()


def test_datasets_build_on_a_missing_folder_exits_2_with_a_clear_message(home, tmp_path):
    missing = tmp_path / "not-ingested"
    result = runner.invoke(app, ["datasets", "build", "--traces", str(missing), "--out", str(tmp_path / "out"), "--no-mlflow"])
    assert result.exit_code == 2
    assert "error: no trace tables under" in result.stderr and str(missing) in result.stderr
    assert "loop ingest --out DIR" in result.stderr
    assert result.stdout.strip() == ""
    assert not (tmp_path / "out").exists()


def test_datasets_build_without_traces_reads_loop_home_and_says_how_to_fill_it(home, tmp_path):
    result = runner.invoke(app, ["datasets", "build", "--no-mlflow"])
    assert result.exit_code == 2
    assert "no scored traces / thresholds under" in result.stderr and "loop demo" in result.stderr
