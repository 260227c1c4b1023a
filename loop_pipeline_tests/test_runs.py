"""`loop demo` / `loop materialize` end to end on an embedded (SQLite) LOOP_HOME."""

import dagster as dg
import pytest

from loop_pipeline.core.datasets import DatasetConfig
from loop_pipeline.demo import run_demo
from loop_pipeline.runs import materialize_ingest
from loop_pipeline.settings import REPO_ROOT, LoopSettings


def test_demo_simulates_and_ingests_every_landing_day(loop_home):
    summary = run_demo(days=2, traces_per_day=60, seed=3, train=False)
    simulated = summary["simulation"]
    assert summary["loop_home"] == str(loop_home.resolve())
    assert summary["ingest"]["records_in"] == simulated["traces"] + simulated["feedback_events"]
    assert summary["ingest"]["valid"] == summary["ingest"]["records_in"]  # simulated traffic is clean
    days = [p["partition"] for p in summary["partitions"]]
    assert days == sorted(p.name for p in (loop_home / "landing" / "feedback").iterdir())
    assert all(p["checks_passed"] == "5/5" for p in summary["partitions"])

    home = LoopSettings().paths
    instance = dg.DagsterInstance.from_config(str(home.dagster_home))
    try:
        event = instance.get_latest_materialization_event(dg.AssetKey("raw_traces"))
        assert event is not None and event.asset_materialization.partition == days[-1]
        partitions = instance.get_materialized_partitions(dg.AssetKey("raw_traces"))
        assert partitions == set(days)
    finally:
        instance.dispose()
    assert (home.dagster_home / "dagster.yaml").read_text().count("enabled: false") == 1


def test_rerunning_the_demo_rewrites_identical_tables(loop_home):
    first = run_demo(days=1, traces_per_day=40, seed=1, train=False)
    tables = sorted((loop_home / "warehouse").rglob("*.parquet"))
    before = {p: p.read_bytes() for p in tables}
    second = run_demo(days=1, traces_per_day=40, seed=1, train=False)
    assert {p: p.read_bytes() for p in sorted((loop_home / "warehouse").rglob("*.parquet"))} == before
    # Same inputs, same dataset version, reused rather than rewritten.
    assert second["datasets"]["version"] == first["datasets"]["version"]
    assert first["datasets"]["new_version"] is True and second["datasets"]["new_version"] is False
    versions = [p.name for p in (loop_home / "datasets").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert versions == [first["datasets"]["version"]]
    # One review in 40 traces certifies no threshold: the intent task keeps what users accepted (the
    # fallback, with its reason), and those outputs fill the training set past min_rows_per_task.
    intent = first["thresholds"]["intent"]
    assert (intent["rule"], intent["threshold"]) == ("acceptance", None) and intent["reason"].startswith("too few reviews")
    min_rows = DatasetConfig.from_yaml(REPO_ROOT / "configs" / "datasets.yaml").min_rows_per_task
    assert first["datasets"]["blocked_by"] == {} and first["datasets"]["rows_by_task_type"]["sft"]["intent"] >= min_rows


def test_materialize_without_landing_data_says_what_to_do(loop_home):
    with pytest.raises(RuntimeError, match="loop simulate"):
        materialize_ingest()
