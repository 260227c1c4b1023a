"""The scoring stage through real Dagster materializations: late feedback re-scores, MLflow runs."""

import base64
import datetime as dt
import json
from pathlib import Path

import dagster as dg
import polars as pl

from loop_pipeline.core.scoring import ScoringConfig
from loop_pipeline.sim import SimulationConfig
from loop_pipeline.defs import ingest as ingest_stage
from loop_pipeline.defs.scoring import scoring_defs
from loop_pipeline.resources import LoopConfigs, LoopStorage, MlflowTracking
from loop_pipeline.runs import materialize_ingest, materialize_scoring
from loop_pipeline.settings import LoopSettings
from loop_pipeline_tests.helpers import REPO_CONFIGS, simulate_landing

DAY = "2026-11-01"
LOOKBACK = ScoringConfig.from_yaml(REPO_CONFIGS / "scoring.yaml").feedback_lookback_days
SCORING_STAGE = scoring_defs(LOOKBACK)
EVERYTHING = [
    *ingest_stage.defs.assets,
    *SCORING_STAGE.assets,
    *ingest_stage.defs.asset_checks,
    *SCORING_STAGE.asset_checks,
]
INGEST_KEYS = ("raw_traces", "feedback_events", "quarantined_records")
SCORING_KEYS = ("trace_signals", "quality_model", "scored_traces", "score_thresholds")
CHECK = dg.AssetCheckKey(dg.AssetKey("score_thresholds"), "score_thresholds_reach_precision_target")


def plus_days(day: str, days: int) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()


def land_feedback(landing: Path, day: str, name: str, records: list[dict]) -> None:
    folder = landing / "feedback" / day
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def materialize(instance, resources, keys, day=None, raise_on_error=True) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        EVERYTHING,
        selection=dg.AssetSelection.assets(*keys),
        partition_key=day,
        instance=instance,
        resources=resources,
        raise_on_error=raise_on_error,
    )
    assert result.success or not raise_on_error
    return result


def metadata_of(result: dg.ExecuteInProcessResult, key: str) -> dict:
    (materialization,) = [m for m in result.get_asset_materialization_events() if m.asset_key.to_user_string() == key]
    return {k: v.value for k, v in materialization.materialization.metadata.items()}


def test_late_feedback_changes_a_score_on_rerun_and_too_late_feedback_does_not(tmp_path):
    landing = tmp_path / "landing"
    simulate_landing(
        SimulationConfig.from_mapping({"days": 1, "traces_per_day": 150, "start_date": DAY, "human_review_rate": 0.2}),
        landing,
    )
    storage = LoopStorage(landing_url=str(landing), warehouse_dir=str(tmp_path / "warehouse"))
    resources = {
        "storage": storage,
        # Not used by the assets run here; the definitions need it bound.
        "mlflow": MlflowTracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=(tmp_path / "artifacts").as_uri()),
        "configs": LoopConfigs(config_dir=str(REPO_CONFIGS)),
    }
    late_day, too_late_day = plus_days(DAY, 2), plus_days(DAY, LOOKBACK + 1)
    with dg.instance_for_test() as instance:
        for day in sorted(storage.landing_days()):
            materialize(instance, resources, INGEST_KEYS, day)
        first_signals = metadata_of(materialize(instance, resources, ["trace_signals"], DAY), "trace_signals")
        materialize(instance, resources, ["quality_model"])
        materialize(instance, resources, ["scored_traces"], DAY)
        before = storage.read_table("scored_traces", DAY)

        # Two accepted, unreviewed, well-scored traces of day D: one gets a rejection two days
        # later, the other one a day after the lookback.
        candidates = before.filter(pl.col("accepted") & ~pl.col("vetoed") & ~pl.col("reviewed")).sort("trace_id")
        target, too_late_target = candidates.get_column("trace_id").to_list()[:2]
        land_feedback(
            landing,
            late_day,
            "late.jsonl",
            [{"trace_id": target, "timestamp": f"{late_day}T12:00:00Z", "kind": "rejected", "source": "user", "annotator_id": "user-late"}],
        )
        land_feedback(
            landing,
            too_late_day,
            "too_late.jsonl",
            [{"trace_id": too_late_target, "timestamp": f"{too_late_day}T08:00:00Z", "kind": "rejected", "source": "user", "annotator_id": "user-late"}],
        )
        materialize(instance, resources, INGEST_KEYS, late_day)
        materialize(instance, resources, INGEST_KEYS, too_late_day)
        assert too_late_target in storage.read_table("feedback_events", too_late_day).get_column("trace_id").to_list()

        second_signals = metadata_of(materialize(instance, resources, ["trace_signals"], DAY), "trace_signals")
        materialize(instance, resources, ["scored_traces"], DAY)
        after = storage.read_table("scored_traces", DAY)
        assert instance.get_materialized_partitions(dg.AssetKey("scored_traces")) == {DAY}

        # The lookback is part of the asset graph: a run that overrides it fails and says why.
        longer = {**resources, "configs": LoopConfigs(config_dir=str(REPO_CONFIGS), overrides={"scoring": {"feedback_lookback_days": LOOKBACK + 2}})}
        refused = materialize(instance, longer, ["trace_signals"], DAY, raise_on_error=False)
        assert not refused.success
        failure = next(e for e in refused.all_events if e.is_step_failure).step_failure_data.error.to_string()
        assert f"feedback_lookback_days is {LOOKBACK + 2} for this run but the asset graph was built with {LOOKBACK}" in failure

    # The trace with late feedback: its signals show it, its score drops.
    was, now = (frame.filter(pl.col("trace_id") == target).row(0, named=True) for frame in (before, after))
    assert was["rejected"] is False and now["rejected"] is True and now["vetoed"] is True
    assert now["feedback_events"] == was["feedback_events"] + 1
    assert now["p_good"] < was["p_good"] and now["p_good_signals"] < was["p_good_signals"]
    assert second_signals["signal_counts"]["rejected"] == first_signals["signal_counts"]["rejected"] + 1
    assert late_day in second_signals["feedback_partitions"]
    assert too_late_day not in second_signals["feedback_partitions"]
    assert second_signals["feedback_partitions"] == [plus_days(DAY, i) for i in range(LOOKBACK + 1) if (landing / "feedback" / plus_days(DAY, i)).is_dir()]
    # Everything else, the too-late trace included, scores exactly as before.
    others = pl.col("trace_id") != target
    assert before.filter(others).equals(after.filter(others))
    assert after.filter(pl.col("trace_id") == too_late_target).get_column("rejected").to_list() == [False]


def test_scoring_assets_materialize_with_thresholds_plot_and_mlflow_runs(loop_home, monkeypatch):
    from mlflow.tracking import MlflowClient

    for name in ("LOOP_MLFLOW_TRACKING_URI", "LOOP_MLFLOW_ARTIFACT_ROOT"):
        monkeypatch.delenv(name, raising=False)
    home = LoopSettings().paths
    simulate_landing(
        SimulationConfig.from_mapping({"days": 2, "traces_per_day": 250, "start_date": DAY, "human_review_rate": 0.3}),
        home.landing,
    )
    orphan = {"trace_id": "no-such-trace", "timestamp": f"{DAY}T12:00:00Z", "kind": "thumbs", "value": 0.0, "source": "user"}
    land_feedback(home.landing, DAY, "orphan.jsonl", [orphan])

    with dg.instance_for_test() as instance:
        ingested = materialize_ingest(instance=instance)
        document = materialize_scoring(instance=instance)
        days = [p["partition"] for p in ingested]
        for key in SCORING_KEYS:
            assert instance.get_latest_materialization_event(dg.AssetKey(key)) is not None, key
        assert instance.get_materialized_partitions(dg.AssetKey("trace_signals")) == set(days)
        assert instance.get_materialized_partitions(dg.AssetKey("scored_traces")) == set(days)

        def metadata(key: str) -> dict:
            event = instance.get_latest_materialization_event(dg.AssetKey(key))
            return {k: v.value for k, v in event.asset_materialization.metadata.items()}

        model, thresholds = metadata("quality_model"), metadata("score_thresholds")
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key([CHECK])[CHECK]
        evaluation = check.event.dagster_event.event_specific_data

    # Orphan feedback: reported, and still in feedback_events.
    assert model["orphan_feedback_events"] == 1
    storage = LoopStorage(landing_url=str(home.landing), warehouse_dir=str(home.warehouse))
    assert "no-such-trace" in storage.read_table("feedback_events", DAY).get_column("trace_id").to_list()
    assert storage.read_table("orphan_feedback", "all").get_column("trace_id").to_list() == ["no-such-trace"]
    assert model["method"] == "platt" and model["n_reviewed"] > 20

    # score_thresholds: thresholds, comparison, an embedded plot, one MLflow run per candidate.
    assert thresholds["thresholds"] == document["thresholds"]
    entry = thresholds["thresholds"]["intent"]
    assert {"rule", "threshold", "fallback", "reason", "kept", "selection", "certification", "estimated_precision", "precision_interval"} <= set(entry)
    assert thresholds["rules"] == {task: e["rule"] for task, e in document["thresholds"].items()}
    assert document["fallback"] == entry["fallback"] == "acceptance"
    assert set(thresholds["comparison"]) == {
        "none", "acceptance", "fused", "fused_at_acceptance_volume", "fused_at_95pct_acceptance_volume"
    }
    markdown = thresholds["precision_vs_volume"]
    assert "data:image/png;base64," in markdown
    png = base64.b64decode(markdown.split("data:image/png;base64,", 1)[1].rstrip(")"))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    # The document keeps the plot beside it and the orphan count `loop thresholds sweep` prints.
    assert Path(document["plot"]).read_bytes() == png and document["orphan_feedback_events"] == 1
    # Each materialization records the configuration it ran with.
    assert thresholds["config/scoring"]["feedback_lookback_days"] == LOOKBACK
    assert model["config/scoring"]["calibration"] == "platt"

    tracking = LoopSettings().tracking()
    assert tracking.tracking_uri == f"sqlite:///{home.mlflow / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=tracking.tracking_uri)
    experiment = client.get_experiment_by_name(thresholds["mlflow_experiment"])
    children = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{thresholds['mlflow_parent_run_id']}'", max_results=1000
    )
    assert thresholds["candidate_runs"] == len(children) == document["candidates"] > 0
    assert {r.data.tags["loop.kind"] for r in children} == {"threshold_candidate"}

    # The non-blocking check ran, and passes exactly when every task type has a certified threshold;
    # otherwise it warns naming each task type and the rule it falls back to.
    assert evaluation.asset_check_key == CHECK
    assert evaluation.passed == all(e["threshold"] is not None for e in document["thresholds"].values())
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    if entry["threshold"] is None:
        assert not evaluation.passed and entry["rule"] == "acceptance"
        assert f"intent falls back to acceptance (keeps {entry['kept']})" in evaluation.description
        assert entry["reason"] in evaluation.description
    else:
        assert evaluation.passed and entry["rule"] == "score"


def test_scoring_definitions_snapshot(loop_home):
    from loop_pipeline.definitions import build_defs

    graph = build_defs().resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert set(SCORING_KEYS) <= keys
    assert CHECK in graph.asset_check_keys
    # trace_signals of a day reads feedback that landed on that day and the lookback days after.
    node = graph.get(dg.AssetKey("trace_signals"))
    assert {k.to_user_string() for k in node.parent_keys} == {"raw_traces", "feedback_events"}
    mapping = node.partition_mappings[dg.AssetKey("feedback_events")]
    assert (mapping.start_offset, mapping.end_offset) == (0, LOOKBACK)


def test_the_graph_takes_its_lookback_from_the_value_it_is_built_with():
    (trace_signals,) = [a for a in scoring_defs(LOOKBACK + 4).assets if a.key == dg.AssetKey("trace_signals")]
    mapping = trace_signals.get_partition_mapping(dg.AssetKey("feedback_events"))
    assert (mapping.start_offset, mapping.end_offset) == (0, LOOKBACK + 4)


def test_the_threshold_check_warns_naming_each_task_type_and_its_fallback(tmp_path):
    from loop_pipeline.defs.scoring.checks import score_thresholds_reach_precision_target as check

    storage = LoopStorage(landing_url=str(tmp_path / "landing"), warehouse_dir=str(tmp_path / "warehouse"))
    certified = {"rule": "score", "threshold": 0.97, "kept": 900, "reason": None}
    storage.write_document("score_thresholds", {"thresholds": {"intent": certified}})
    result = check(storage=storage)
    assert result.passed and result.description is None and result.severity == dg.AssetCheckSeverity.WARN

    fallen_back = {
        "intent": certified,
        "slots": {"rule": "acceptance", "threshold": None, "kept": 412, "reason": "too few reviews to select and certify"},
        "summary": {"rule": "none", "threshold": None, "kept": 0, "reason": "no threshold's lower bound reaches 0.95"},
    }
    storage.write_document("score_thresholds", {"thresholds": fallen_back})
    result = check(storage=storage)
    assert not result.passed
    assert "slots falls back to acceptance (keeps 412): too few reviews to select and certify" in result.description
    assert "summary falls back to none (keeps 0): no threshold's lower bound reaches 0.95" in result.description
    assert "intent" not in result.description
    assert set(result.metadata["task_types_without_threshold"].data) == {"slots", "summary"}
    assert result.metadata["rules"].data == {"intent": "score", "slots": "acceptance", "summary": "none"}
