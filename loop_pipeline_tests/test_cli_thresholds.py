"""`loop thresholds sweep` on a `loop ingest --out` folder of simulated traffic."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loop_pipeline.cli import app
from loop_pipeline.core.scoring.config import ScoringConfig
from loop_pipeline.settings import REPO_ROOT
from loop_pipeline.sim import SimulationConfig
from loop_pipeline_tests.helpers import last_json_line, simulate_landing

runner = CliRunner()
SIMULATION = {"days": 2, "traces_per_day": 250, "start_date": "2026-11-01", "human_review_rate": 0.3}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    """Simulated landing folder, ingested once by `loop ingest PATH --out DIR`."""
    root = tmp_path_factory.mktemp("cli_thresholds")
    simulate_landing(SimulationConfig.from_mapping(SIMULATION), root / "landing")
    result = runner.invoke(app, ["ingest", str(root / "landing"), "--out", str(root / "ingested")])
    assert result.exit_code == 0, result.output
    assert (root / "ingested" / "raw_traces").is_dir() and (root / "ingested" / "feedback_events").is_dir()
    return root / "ingested"


@pytest.fixture
def home(loop_home) -> Path:
    return loop_home


def test_thresholds_sweep_prints_thresholds_comparison_and_mlflow_runs(ingested, home, tmp_path):
    from mlflow.tracking import MlflowClient

    plot = tmp_path / "plots" / "precision.png"
    result = runner.invoke(app, ["thresholds", "sweep", "--traces", str(ingested), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    summary = last_json_line(result.stdout)

    entry = summary["thresholds"]["intent"]
    # 150 reviews of 500 traces certify a score threshold on this week: the rule is "score", not the fallback.
    assert (entry["rule"], entry["fallback"], entry["reason"]) == ("score", "acceptance", None)
    assert entry["threshold"] is not None and 0 < entry["kept"] <= entry["traces"] == 500
    low, high = entry["precision_interval"]
    assert low <= entry["estimated_precision"] <= high and low >= ScoringConfig.from_yaml(REPO_ROOT / "configs" / "scoring.yaml").precision_target
    selection, certification = entry["selection"], entry["certification"]  # disjoint halves of the reviews
    assert min(selection["reviewed"], certification["reviewed"]) > 0
    assert selection["reviewed"] + certification["reviewed"] == entry["reviewed"]
    assert f"selected on {selection['reviewed']} reviews ({selection['bad']} bad), certified on {certification['reviewed']}" in result.stderr

    comparison = summary["comparison"]
    assert set(comparison) == {"none", "acceptance", "fused", "fused_at_acceptance_volume", "fused_at_95pct_acceptance_volume"}
    assert comparison["none"]["kept"] == 500 and comparison["fused"]["kept"] == entry["kept"]
    accepted = comparison["acceptance"]["kept"]
    assert comparison["fused_at_acceptance_volume"]["kept"] == accepted
    assert comparison["fused_at_95pct_acceptance_volume"]["kept"] == math.ceil(0.95 * accepted)
    # At 95% of acceptance's kept volume the fused score's true error rate is below acceptance's (issue 13's bar).
    assert comparison["fused_at_95pct_acceptance_volume"]["true_error_rate"] < comparison["acceptance"]["true_error_rate"]
    assert summary["calibration"]["method"] == "platt"
    assert summary["orphan_feedback_events"] == 0
    assert "intent: threshold" in result.stderr and "logged" in result.stderr
    assert plot.read_bytes().startswith(b"\x89PNG") and summary["plot"] == str(plot)

    logged = summary["mlflow"]
    assert logged["tracking_uri"] == f"sqlite:///{home.resolve() / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=logged["tracking_uri"])
    candidates = client.search_runs(
        [logged["experiment_id"]], "tags.`loop.kind` = 'threshold_candidate'", max_results=1000
    )
    assert len(candidates) == logged["candidate_runs"] == summary["candidates"] > 0
    chosen = [r for r in candidates if r.data.tags["loop.chosen"] == "true"]
    assert [r.data.params["threshold"] for r in chosen] == [str(round(entry["threshold"], 6))]
    assert {r.data.tags["mlflow.parentRunId"] for r in candidates} == {logged["parent_run_id"]}


def test_thresholds_sweep_without_mlflow_logs_nothing(ingested, home):
    result = runner.invoke(app, ["thresholds", "sweep", "--traces", str(ingested), "--no-mlflow"])
    assert result.exit_code == 0, result.output
    summary = last_json_line(result.stdout)
    assert "mlflow" not in summary
    assert summary["thresholds"]["intent"]["rule"] == "score" and summary["thresholds"]["intent"]["threshold"] is not None
    assert not (home / "mlflow").exists()
    assert "logged" not in result.stderr


def test_thresholds_sweep_on_a_missing_folder_exits_2_with_a_clear_message(home, tmp_path):
    missing = tmp_path / "not-ingested"
    result = runner.invoke(app, ["thresholds", "sweep", "--traces", str(missing), "--no-mlflow"])
    assert result.exit_code == 2
    assert "error: no trace tables under" in result.stderr
    assert str(missing) in result.stderr and "loop ingest --out" in result.stderr
    assert result.stdout.strip() == ""
