"""A landing day holding every trace format materializes through the Dagster ingest assets."""

import json
import shutil
from pathlib import Path

import dagster as dg
import polars as pl

from loop_pipeline.bench.synthetic import synthetic_otlp_lines, write_lines
from loop_pipeline.defs.ingest import checks as ingest_checks
from loop_pipeline.defs.ingest.assets import landed_records
from loop_pipeline.resources import LoopConfigs, LoopStorage
from loop_pipeline.settings import REPO_ROOT

DAY = "2026-11-01"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CHECKS = dg.load_asset_checks_from_modules([ingest_checks])
CONFIGS = LoopConfigs(config_dir=str(REPO_ROOT / "configs"))


def _landing(tmp_path: Path) -> Path:
    """landing/traces/<day>/ with one folder per format (plus a few broken records)."""
    landing = tmp_path / "landing"
    day = landing / "traces" / DAY
    shutil.copytree(FIXTURES / "langfuse" / "framework-traces", day / "langfuse")
    shutil.copy(FIXTURES / "langfuse" / "ingestion_examples_from_spec.json", day / "langfuse" / "batch.json")
    shutil.copytree(FIXTURES / "litellm", day / "litellm")
    shutil.copytree(FIXTURES / "mlflow", day / "mlflow")
    shutil.copytree(FIXTURES / "openai-batch", day / "openai-batch")
    (day / "openinference").mkdir()
    shutil.copy(FIXTURES / "openinference" / "llm_spans_examples_from_spec.json", day / "openinference" / "phoenix.json")
    (day / "otel").mkdir()
    shutil.copy(FIXTURES / "openinference" / "otel_genai_tool_execution_span.json", day / "otel" / "tool_span.json")
    (day / "otlp").mkdir()
    write_lines(synthetic_otlp_lines(40, bad_rate=0.1, seed=7), day / "otlp" / "export.jsonl")
    native = {
        "trace_id": "native-1",
        "timestamp": "2026-11-01T09:00:00Z",
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "what is my balance"}],
        "output": "balance",
    }
    (day / "native.jsonl").write_text(json.dumps(native) + "\n", encoding="utf-8")
    feedback_day = landing / "feedback" / DAY
    feedback_day.mkdir(parents=True)
    (feedback_day / "feedback.jsonl").write_text(
        json.dumps({"trace_id": "native-1", "timestamp": "2026-11-01T09:05:00Z", "kind": "accepted"}) + "\n", encoding="utf-8"
    )
    return landing


def test_mixed_landing_day_materializes_with_per_format_counts(tmp_path):
    landing = _landing(tmp_path)
    storage = LoopStorage(landing_url=str(landing), warehouse_dir=str(tmp_path / "warehouse"))

    with dg.instance_for_test() as instance:
        result = dg.materialize([landed_records, *CHECKS], partition_key=DAY, instance=instance, resources={"storage": storage, "configs": CONFIGS})

    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert len(evaluations) == 5
    assert all(e.passed for e in evaluations.values()), {k: (e.description, e.metadata) for k, e in evaluations.items()}
    accounted = evaluations["raw_traces_records_accounted"].metadata
    assert accounted["skipped"].value > 0 and accounted["unaccounted"].value == 0

    traces = storage.read_table("raw_traces", DAY)
    feedback = storage.read_table("feedback_events", DAY)
    quarantine = storage.read_table("quarantined_records", DAY)
    per_format = dict(traces.group_by("source_format").len().iter_rows())
    assert per_format == {
        "langfuse": 23 + 1,  # framework exports + LiteLLM's ingestion batch
        "litellm": 1,
        "mlflow": 1,
        "native_jsonl": 1,
        "openai-batch": 2,
        "openinference": 3,
        "otlp": 36,  # 40 export requests, 4 broken
    }
    assert dict(feedback.group_by("source_format").len().iter_rows()) == {
        "langfuse": 12 + 1,  # two scores in each of six exports + the spec batch example's score
        "mlflow": 3,
        "native_jsonl": 1,
        "otlp": 4,
    }
    assert set(quarantine.filter(pl.col("source_format") == "otlp")["reason"]) == {
        "malformed_json",
        "negative_value",
        "wrong_type",
        "missing_field",
    }
    summary = json.loads(storage.summary_path(DAY).read_text(encoding="utf-8"))
    assert summary["formats"]["otel"] == {"files": 1, "records_in": 1, "traces": 0, "feedback": 0, "quarantined": 0, "skipped": 1}
    assert summary["records_in"] == summary["valid"] + summary["duplicates"] + summary["quarantined"] + summary["skipped"]
    materialized = {m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("landed_records")}
    assert materialized["raw_traces"]["rows_by_source_format"].value == {k: per_format[k] for k in sorted(per_format)}
    assert materialized["raw_traces"]["skipped_by_reason"].value == summary["traces"]["skipped_by_reason"]


def test_accounting_check_sees_a_foreign_file_changed_after_ingest(tmp_path):
    landing = _landing(tmp_path)
    storage = LoopStorage(landing_url=str(landing), warehouse_dir=str(tmp_path / "warehouse"))
    with dg.instance_for_test() as instance:
        assert dg.materialize([landed_records, *CHECKS], partition_key=DAY, instance=instance, resources={"storage": storage, "configs": CONFIGS}).success
    export = landing / "traces" / DAY / "otlp" / "export.jsonl"
    with open(export, "a", encoding="utf-8") as handle:
        handle.write(synthetic_otlp_lines(1, seed=99).to_list()[0] + "\n")

    accounted = ingest_checks.accounting_result(storage, DAY, "trace", "raw_traces")

    assert not accounted.passed
    assert accounted.metadata["files_with_unread_lines"].value == 1
    assert "otlp/export.jsonl" in (accounted.description or "")
