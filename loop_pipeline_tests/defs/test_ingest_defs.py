"""The ingest stage through real Dagster materializations on SQLite and PostgreSQL instances."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from loop_pipeline.sim import SimulationConfig
from loop_pipeline.defs.ingest import checks as ingest_checks
from loop_pipeline.defs.ingest.assets import landed_records
from loop_pipeline.defs.ingest.sensors import landing_files_sensor
from loop_pipeline.instance import ensure_dagster_home
from loop_pipeline.resources import LoopConfigs, LoopStorage
from loop_pipeline.config import ConfigError
from loop_pipeline.settings import REPO_ROOT
from loop_pipeline_tests.helpers import simulate_landing

DAY = "2026-11-01"
CHECKS = dg.load_asset_checks_from_modules([ingest_checks])
BAD_LINES = [
    '{"trace_id": "bad-1", "timestamp": "2026-11-01T09:00:00Z"',  # truncated
    '{"trace_id": "bad-2", "timestamp": "noon", "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "output": "x"}',
    '{"trace_id": "bad-3", "timestamp": "2026-11-01T09:00:00Z", "model": "gpt-4o", "messages": "hi", "output": "x"}',
]


def _landing(tmp_path: Path) -> Path:
    landing = tmp_path / "landing"
    simulate_landing(SimulationConfig.from_mapping({"days": 2, "traces_per_day": 120, "start_date": DAY}), landing)
    messy = landing / "traces" / DAY / "messy.jsonl"
    good = (landing / "traces" / DAY / "traces.jsonl").read_text(encoding="utf-8").splitlines()[0]
    # An exact re-send of a good record and three broken ones.
    messy.write_text("\n".join([good, *BAD_LINES]) + "\n", encoding="utf-8")
    return landing


def _storage(tmp_path: Path, landing: Path) -> LoopStorage:
    return LoopStorage(landing_url=str(landing), warehouse_dir=str(tmp_path / "warehouse"))


def _materialize(
    storage: LoopStorage, instance: dg.DagsterInstance, day: str = DAY, overrides: dict | None = None
) -> dg.ExecuteInProcessResult:
    configs = LoopConfigs(config_dir=str(REPO_ROOT / "configs"), overrides=overrides or {})
    return dg.materialize(
        [landed_records, *CHECKS],
        partition_key=day,
        instance=instance,
        resources={"storage": storage, "configs": configs},
    )


def _assert_ingested(result: dg.ExecuteInProcessResult, storage: LoopStorage, landing: Path) -> None:
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {
        "raw_traces_records_accounted",
        "feedback_events_records_accounted",
        "raw_traces_match_schema",
        "feedback_events_match_schema",
        "quarantined_records_match_schema",
    }
    assert all(e.passed for e in evaluations.values()), {k: e.metadata for k, e in evaluations.items()}

    traces = storage.read_table("raw_traces", DAY)
    quarantine = storage.read_table("quarantined_records", DAY)
    landed = sum(
        1 for f in (landing / "traces" / DAY).glob("*.jsonl") for line in f.read_text().splitlines() if line.strip()
    )
    assert traces.height == landed - 1 - len(BAD_LINES)  # one duplicate collapsed, three quarantined
    assert sorted(quarantine.get_column("reason").to_list()) == ["malformed_json", "unparsable_timestamp", "wrong_type"]
    assert set(quarantine.get_column("source_file")) == {f"traces/{DAY}/messy.jsonl"}
    assert traces.get_column("trace_id").is_unique().all()
    assert traces.get_column("cost_source").unique().to_list() == ["computed"]

    materialization = result.asset_materializations_for_node("landed_records")
    by_key = {m.asset_key.to_user_string(): m.metadata for m in materialization}
    assert by_key["raw_traces"]["dagster/row_count"].value == traces.height
    assert by_key["raw_traces"]["duplicates"].value == 1
    assert by_key["quarantined_records"]["quarantined_by_reason"].value == {
        "malformed_json": 1,
        "unparsable_timestamp": 1,
        "wrong_type": 1,
    }


def test_ingest_assets_materialize_on_sqlite_instance(tmp_path):
    landing = _landing(tmp_path)
    storage = _storage(tmp_path, landing)
    instance = dg.DagsterInstance.from_config(str(ensure_dagster_home(tmp_path / "dagster", pg_url="")))
    result = _materialize(storage, instance)
    _assert_ingested(result, storage, landing)
    stored = instance.get_latest_materialization_event(dg.AssetKey("raw_traces"))
    assert stored is not None and stored.asset_materialization.partition == DAY
    assert (tmp_path / "dagster" / "storage").is_dir()  # SQLite files under the instance folder


@pytest.mark.postgres
def test_ingest_assets_materialize_on_postgres_instance(tmp_path, postgres_url):
    landing = _landing(tmp_path)
    storage = _storage(tmp_path, landing)
    instance = dg.DagsterInstance.from_config(str(ensure_dagster_home(tmp_path / "dagster", pg_url=postgres_url)))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = _materialize(storage, instance)
        _assert_ingested(result, storage, landing)
        stored = instance.get_latest_materialization_event(dg.AssetKey("raw_traces"))
        assert stored is not None and stored.asset_materialization.partition == DAY
        assert instance.get_run_by_id(result.run_id).is_success
    finally:
        instance.dispose()


def test_rematerializing_a_partition_is_idempotent(tmp_path):
    landing = _landing(tmp_path)
    storage = _storage(tmp_path, landing)
    with dg.instance_for_test() as instance:
        _materialize(storage, instance)
        first = {t: storage.table_path(t, DAY).read_bytes() for t in ("raw_traces", "feedback_events", "quarantined_records")}
        _materialize(storage, instance)
        second = {t: storage.table_path(t, DAY).read_bytes() for t in first}
    assert first == second


def test_accounting_check_fails_when_landing_records_are_unaccounted(tmp_path):
    landing = _landing(tmp_path)
    storage = _storage(tmp_path, landing)
    with dg.instance_for_test() as instance:
        assert _materialize(storage, instance).success
        # A record lands after the ingest ran: the tables no longer account for the landing folder.
        with open(landing / "traces" / DAY / "messy.jsonl", "a", encoding="utf-8") as handle:
            handle.write('{"trace_id": "late-arrival"}\n')
    # Dagster cannot run a partitioned check without its asset; the check's body is this call.
    accounted = ingest_checks.accounting_result(storage, DAY, "trace", "raw_traces")
    assert not accounted.passed
    assert accounted.metadata["unaccounted"].value == 1
    assert accounted.metadata["records_in_landing"].value == accounted.metadata["valid"].value + 1 + 3 + 1
    feedback = ingest_checks.accounting_result(storage, DAY, "feedback", "feedback_events")
    assert feedback.passed


def test_empty_landing_day_materializes_empty_tables(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    storage = _storage(tmp_path, landing)
    with dg.instance_for_test() as instance:
        result = _materialize(storage, instance, day="2026-11-05")
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert storage.read_table("raw_traces", "2026-11-05").height == 0


def test_landing_on_an_fsspec_url(tmp_path):
    import fsspec

    local = _landing(tmp_path)
    fs = fsspec.filesystem("memory")
    root = f"memory://landing-{tmp_path.name}"
    for path in sorted(local.rglob("*.jsonl")):
        with fs.open(f"{root}/{path.relative_to(local).as_posix()}", "wb") as handle:
            handle.write(path.read_bytes())
    storage = LoopStorage(landing_url=root, warehouse_dir=str(tmp_path / "warehouse"))
    with dg.instance_for_test() as instance:
        result = _materialize(storage, instance)
    assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
    local_storage = _storage(tmp_path / "local", local)
    with dg.instance_for_test() as instance:
        _materialize(local_storage, instance)
    assert storage.read_table("raw_traces", DAY).equals(local_storage.read_table("raw_traces", DAY))


def test_sensor_requests_each_new_or_changed_landing_day(tmp_path):
    landing = _landing(tmp_path)
    storage = _storage(tmp_path, landing)
    context = dg.build_sensor_context(resources={"storage": storage})
    first = landing_files_sensor(context)
    days = sorted(r.partition_key for r in first.run_requests)
    expected_days = sorted(p.name for p in (landing / "traces").iterdir()) + [
        p.name for p in (landing / "feedback").iterdir() if not (landing / "traces" / p.name).exists()
    ]
    assert days == sorted(set(expected_days))

    again = landing_files_sensor(dg.build_sensor_context(cursor=first.cursor, resources={"storage": storage}))
    assert again.run_requests == []

    (landing / "feedback" / DAY / "late.jsonl").write_text(
        json.dumps({"trace_id": "x", "timestamp": "2026-11-03T00:00:00Z", "kind": "accepted"}) + "\n"
    )
    changed = landing_files_sensor(dg.build_sensor_context(cursor=first.cursor, resources={"storage": storage}))
    assert [r.partition_key for r in changed.run_requests] == [DAY]
    assert changed.run_requests[0].run_key.startswith(f"{DAY}:")


def test_definitions_snapshot_and_light_imports():
    code = (
        "import sys, json\n"
        "from loop_pipeline.definitions import defs\n"
        "g = defs.resolve_asset_graph()\n"
        "print(json.dumps({'assets': sorted(k.to_user_string() for k in g.get_all_asset_keys()),"
        " 'checks': sorted(k.to_user_string() for k in g.asset_check_keys),"
        " 'jobs': sorted(j.name for j in defs.jobs), 'sensors': sorted(s.name for s in defs.sensors),"
        " 'heavy': sorted(m for m in ('torch', 'transformers', 'trl', 'great_expectations', 'mlflow', 'sklearn')"
        " if m in sys.modules)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == {
        "assets": [
            "feedback_events",
            "holdout_eval",
            "loop_report",
            "lora_adapter",
            "quality_model",
            "quarantined_records",
            "raw_traces",
            "registered_model",
            "score_thresholds",
            "scored_traces",
            "trace_signals",
            "training_datasets",
        ],
        "checks": [
            "feedback_events:feedback_events_match_schema",
            "feedback_events:feedback_events_records_accounted",
            "holdout_eval:holdout_eval_dataset_checks_passed",
            "holdout_eval:holdout_eval_no_regression_vs_champion",
            "holdout_eval:holdout_eval_reaches_target_at_min_coverage",
            "quarantined_records:quarantined_records_match_schema",
            "raw_traces:raw_traces_match_schema",
            "raw_traces:raw_traces_records_accounted",
            "score_thresholds:score_thresholds_reach_precision_target",
            "training_datasets:training_datasets_have_min_rows_per_task",
            "training_datasets:training_datasets_have_no_empty_targets",
            "training_datasets:training_datasets_have_no_sensitive_text",
            "training_datasets:training_datasets_holdout_disjoint_from_train",
            "training_datasets:training_datasets_label_shares_within_bounds",
        ],
        "jobs": ["ingest_job", "retrain_job"],
        "sensors": [
            "champion_reload_sensor",
            "default_automation_condition_sensor",
            "landing_files_sensor",
            "retrain_sensor",
            "run_failure_sensor",
        ],
        "heavy": [],
    }


@pytest.mark.postgres
def test_shipped_dagster_yaml_runs_on_postgres(tmp_path, postgres_url, monkeypatch):
    monkeypatch.setenv("LOOP_PG_URL", postgres_url)
    # A copy: the instance keeps its compute logs beside its config, which must not be the repo.
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert instance.get_settings("telemetry") == {"enabled": False}
        landing = _landing(tmp_path)
        result = _materialize(_storage(tmp_path, landing), instance)
        assert result.success
    finally:
        instance.dispose()


def test_quarantine_rows_keep_the_raw_record(tmp_path):
    landing = _landing(tmp_path)
    storage = _storage(tmp_path, landing)
    with dg.instance_for_test() as instance:
        _materialize(storage, instance)
    quarantine = storage.read_table("quarantined_records", DAY).sort("source_record")
    assert quarantine.get_column("raw").to_list() == BAD_LINES
    assert quarantine.get_column("source_record").to_list() == [2, 3, 4]
    assert quarantine.filter(pl.col("detail") == "").height == 0


def test_ingest_reads_its_configs_from_the_resource_and_records_them(tmp_path):
    landing = _landing(tmp_path)
    storage = _storage(tmp_path, landing)
    with dg.instance_for_test() as instance:
        result = _materialize(storage, instance, overrides={"ingest": {"max_record_bytes": 64}})

    assert result.success
    quarantine = storage.read_table("quarantined_records", DAY)
    assert storage.read_table("raw_traces", DAY).height == 0  # every simulated record is over 64 bytes
    assert "oversized_record" in set(quarantine["reason"])
    by_key = {m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("landed_records")}
    for key in ("raw_traces", "feedback_events", "quarantined_records"):
        assert by_key[key]["config/ingest"].value["max_record_bytes"] == 64
        assert "gpt-4o-mini" in by_key[key]["config/prices"].value["models"]


def test_a_bad_config_override_fails_naming_file_and_field(tmp_path):
    storage = _storage(tmp_path, _landing(tmp_path))
    expected = r"ingest\.yaml: decode_slice_rows: Input should be greater than or equal to 1 \(got 0\)"
    with dg.instance_for_test() as instance, pytest.raises(ConfigError, match=expected):
        _materialize(storage, instance, overrides={"ingest": {"decode_slice_rows": 0}})
    assert not storage.table_path("raw_traces", DAY).exists()


def test_compressed_broken_and_unsupported_landing_files_are_accounted_and_reported(tmp_path):
    import gzip

    import zstandard

    landing = _landing(tmp_path)
    folder = landing / "traces" / DAY
    plain = folder / "traces.jsonl"
    data = plain.read_bytes()
    lines = data.splitlines(keepends=True)
    half = len(lines) // 2
    # The day's traces split across a .gz and a .zst file; a truncated .gz copy of the messy file;
    # a file ingest does not read.
    (folder / "first.jsonl.gz").write_bytes(gzip.compress(b"".join(lines[:half])))
    (folder / "second.ndjson.zst").write_bytes(zstandard.ZstdCompressor().compress(b"".join(lines[half:])))
    plain.unlink()
    packed = gzip.compress((folder / "messy.jsonl").read_bytes() * 40)
    (folder / "cut.jsonl.gz").write_bytes(packed[: len(packed) * 3 // 4])
    (folder / "notes.txt").write_text("not a trace file", encoding="utf-8")
    storage = _storage(tmp_path, landing)

    with dg.instance_for_test() as instance:
        result = _materialize(storage, instance)

    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert all(e.passed for e in evaluations.values()), {k: e.metadata for k, e in evaluations.items()}
    traces = storage.read_table("raw_traces", DAY)
    assert set(traces["source_file"]) == {f"traces/{DAY}/first.jsonl.gz", f"traces/{DAY}/second.ndjson.zst"}
    assert traces.height == len(lines)
    quarantine = storage.read_table("quarantined_records", DAY)
    assert quarantine.filter(pl.col("reason") == "unreadable_file")["source_file"].to_list() == [f"traces/{DAY}/cut.jsonl.gz"]
    materialization = result.asset_materializations_for_node("landed_records")
    by_key = {m.asset_key.to_user_string(): m.metadata for m in materialization}
    expected = [{"file": f"traces/{DAY}/notes.txt", "reason": "unsupported_file", "bytes": 16}]
    assert by_key["raw_traces"]["unsupported_files"].value == expected
    summary = json.loads(storage.summary_path(DAY).read_text(encoding="utf-8"))
    assert summary["unsupported_files"] == expected
