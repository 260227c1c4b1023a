"""Native ingest: quarantine reasons, accounting, slicing, idempotency, timestamps, costs, formats."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import fsspec
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loop_pipeline.core.costs import PriceTable
from loop_pipeline.core.ingest import IngestConfig, IngestInputError, SourceFile, discover, ingest, write_result
from loop_pipeline.resources import LoopStorage
from loop_pipeline.sim import SimulationConfig
from loop_pipeline.schemas import QUARANTINE_REASONS
from loop_pipeline.settings import REPO_ROOT
from loop_pipeline_tests.helpers import simulate_landing

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 1, 10, 0, 0, tzinfo=UTC)
DEFAULT = IngestConfig()
PRICES = PriceTable.from_yaml(REPO_ROOT / "configs" / "prices.yaml")
COUNT_KEYS = ("records_in", "valid", "duplicates", "quarantined")


def trace(trace_id: str = "t-good", **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "trace_id": trace_id,
        "timestamp": "2026-11-01T10:00:00Z",
        "task_type": "intent",
        "app": "support-bot",
        "model": "gpt-4o-2024-08-06",
        "provider": "openai",
        "messages": [{"role": "system", "content": "classify"}, {"role": "user", "content": "my card was declined"}],
        "output": "card_declined",
        "input_tokens": 40,
        "output_tokens": 3,
        "latency_ms": 412.5,
        "user_id": "user-1",
        "session_id": "session-1",
        "prompt_version": "intent-v3",
        "metadata": {"gold": "card_declined", "row": 1},
    }
    record.update(fields)
    return record


def without(record: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in names}


def feedback(trace_id: str = "t-good", **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "trace_id": trace_id,
        "timestamp": "2026-11-01T10:05:00Z",
        "kind": "accepted",
        "value": 1,
        "source": "user",
        "annotator_id": "user-1",
    }
    record.update(fields)
    return record


def line(item: dict[str, Any] | str) -> str:
    return item if isinstance(item, str) else json.dumps(item)


def write_jsonl(path: Path, items: list[dict[str, Any] | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line(item) + "\n" for item in items), encoding="utf-8")
    return path


def run(paths: list[Path | str], kind: str | None = None, config: IngestConfig = DEFAULT):
    return ingest(discover([str(p) for p in paths], record_kind=kind), config, PRICES)


def assert_accounting(summary: dict[str, Any]) -> None:
    for scope in (summary, summary["traces"], summary["feedback"]):
        assert scope["records_in"] == scope["valid"] + scope["duplicates"] + scope["quarantined"] + scope["skipped"], scope
        assert sum(scope["quarantined_by_reason"].values()) == scope["quarantined"], scope
        assert sum(scope["skipped_by_reason"].values()) == scope["skipped"], scope
    for key in COUNT_KEYS:
        assert summary[key] == summary["traces"][key] + summary["feedback"][key]


# ---------------------------------------------------------------------------------------------
# 1. Every quarantine reason, through a real file

# id, record kind, bad line, expected reason, text the detail must contain, config
BAD_LINES = [
    ("truncated_json", "trace", json.dumps(trace("t-bad"))[:57], "malformed_json", "character", DEFAULT),
    ("json_array", "trace", "[1, 2, 3]", "malformed_json", "array", DEFAULT),
    ("json_scalar", "trace", '"just a string"', "malformed_json", "string", DEFAULT),
    ("model_is_object", "trace", trace("t-bad", model={"name": "x"}), "wrong_type", "model", DEFAULT),
    ("messages_is_string", "trace", trace("t-bad", messages="hello"), "wrong_type", "messages", DEFAULT),
    ("content_is_list", "trace", trace("t-bad", messages=[{"role": "user", "content": [{"text": "x"}]}]), "wrong_type", "content", DEFAULT),
    ("tokens_are_words", "trace", trace("t-bad", input_tokens="many"), "wrong_type", "input_tokens", DEFAULT),
    ("tokens_fractional", "trace", trace("t-bad", input_tokens=5.5), "wrong_type", "input_tokens", DEFAULT),
    ("tokens_boolean", "trace", trace("t-bad", output_tokens=True), "wrong_type", "output_tokens", DEFAULT),
    ("latency_is_text", "trace", trace("t-bad", latency_ms="slow"), "wrong_type", "latency_ms", DEFAULT),
    ("metadata_is_list", "trace", trace("t-bad", metadata=[1, 2]), "wrong_type", "metadata", DEFAULT),
    ("missing_output", "trace", without(trace("t-bad"), "output"), "missing_field", "output", DEFAULT),
    ("missing_model", "trace", without(trace("t-bad"), "model"), "missing_field", "model", DEFAULT),
    ("blank_trace_id", "trace", trace("  "), "missing_field", "trace_id", DEFAULT),
    ("missing_timestamp", "trace", without(trace("t-bad"), "timestamp"), "missing_field", "timestamp", DEFAULT),
    ("empty_messages", "trace", trace("t-bad", messages=[]), "missing_field", "messages", DEFAULT),
    ("message_without_content", "trace", trace("t-bad", messages=[{"role": "user"}]), "missing_field", "content", DEFAULT),
    ("message_without_role", "trace", trace("t-bad", messages=[{"content": "hi"}]), "missing_field", "role", DEFAULT),
    ("timestamp_yesterday", "trace", trace("t-bad", timestamp="yesterday"), "unparsable_timestamp", "timestamp", DEFAULT),
    ("timestamp_bad_month", "trace", trace("t-bad", timestamp="2026-13-01T00:00:00Z"), "unparsable_timestamp", "timestamp", DEFAULT),
    ("negative_cost", "trace", trace("t-bad", cost_usd=-0.01), "negative_value", "cost_usd", DEFAULT),
    ("negative_latency", "trace", trace("t-bad", latency_ms=-5), "negative_value", "latency_ms", DEFAULT),
    ("negative_tokens", "trace", trace("t-bad", output_tokens=-3), "negative_value", "output_tokens", DEFAULT),
    ("role_wizard", "trace", trace("t-bad", messages=[{"role": "wizard", "content": "abracadabra"}]), "invalid_value", "role", DEFAULT),
    ("cost_source_guessed", "trace", trace("t-bad", cost_usd=0.1, cost_source="guessed"), "invalid_value", "cost_source", DEFAULT),
    # Past 64 bits a token count cannot be typed: it must not become a silent null.
    ("tokens_past_64_bits", "trace", trace("t-bad", input_tokens=2**70), "invalid_value", "input_tokens", DEFAULT),
    # 5,000 nested arrays: Python's json recursion limit and polars' JSON path limit are far below.
    ("metadata_nests_5000_arrays", "trace", json.dumps(trace("t-bad"))[:-1] + ', "deep": ' + "[" * 5000 + "]" * 5000 + "}", "too_deeply_nested", "levels deep", DEFAULT),
    ("oversized_trace", "trace", trace("t-bad", output="x" * 2000), "oversized_record", "byte limit", IngestConfig(max_record_bytes=1000)),
    ("feedback_kind_loved", "feedback", feedback("t-bad", kind="loved"), "invalid_value", "kind", DEFAULT),
    ("feedback_source_alien", "feedback", feedback("t-bad", source="alien"), "invalid_value", "source", DEFAULT),
    ("feedback_edited_without_edit", "feedback", feedback("t-bad", kind="edited"), "missing_field", "edited_output", DEFAULT),
    ("feedback_missing_kind", "feedback", without(feedback("t-bad"), "kind"), "missing_field", "kind", DEFAULT),
    ("feedback_value_maybe", "feedback", feedback("t-bad", value="maybe"), "wrong_type", "value", DEFAULT),
    ("feedback_timestamp_yesterday", "feedback", feedback("t-bad", timestamp="yesterday"), "unparsable_timestamp", "timestamp", DEFAULT),
    ("feedback_truncated", "feedback", json.dumps(feedback("t-bad"))[:20], "malformed_json", "character", DEFAULT),
    ("oversized_feedback", "feedback", feedback("t-bad", label="y" * 600), "oversized_record", "byte limit", IngestConfig(max_record_bytes=500)),
]


@pytest.mark.parametrize(
    ("kind", "bad", "reason", "detail_part", "config"),
    [case[1:] for case in BAD_LINES],
    ids=[case[0] for case in BAD_LINES],
)
def test_bad_record_is_quarantined_with_reason_and_line(tmp_path, kind, bad, reason, detail_part, config):
    good = trace() if kind == "trace" else feedback()
    path = write_jsonl(tmp_path / "in.jsonl", [good, "", bad])  # the blank line still counts as a line

    result = run([path], kind=kind, config=config)

    valid = result.traces if kind == "trace" else result.feedback
    assert valid.height == 1 and valid["trace_id"].to_list() == ["t-good"]
    assert valid["source_record"].to_list() == [1]
    assert result.quarantine.height == 1
    row = result.quarantine.row(0, named=True)
    assert row["reason"] == reason
    assert detail_part in row["detail"]
    assert row["source_record"] == 3
    assert row["record_kind"] == kind
    assert row["source_file"] == str(path)
    assert row["raw"] == line(bad)
    summary = result.summary()
    assert summary["quarantined_by_reason"] == {reason: 1}
    assert (summary["records_in"], summary["valid"], summary["quarantined"]) == (2, 1, 1)
    assert_accounting(summary)


def test_unreadable_parquet_file_is_one_quarantined_record(tmp_path):
    good = write_jsonl(tmp_path / "a_good.jsonl", [trace()])
    corrupt = tmp_path / "b_corrupt.parquet"
    corrupt.write_bytes(b"this is not a parquet file \x00\x01\x02" * 20)

    result = run([good, corrupt], kind="trace")

    assert result.traces["trace_id"].to_list() == ["t-good"]
    row = result.quarantine.row(0, named=True)
    assert result.quarantine.height == 1
    assert row["reason"] == "unreadable_file"
    assert row["source_file"] == str(corrupt)
    assert row["source_record"] is None
    assert row["source_format"] == "native_parquet"
    assert row["detail"]
    summary = result.summary()
    assert summary["quarantined_by_reason"] == {"unreadable_file": 1}
    assert (summary["records_in"], summary["files"]) == (2, 2)
    assert_accounting(summary)


def test_conflicting_duplicate_quarantines_every_copy(tmp_path):
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [trace("t-1"), trace("t-2"), trace("t-2", output="balance"), trace("t-3"), trace("t-2")],
    )

    result = run([path], kind="trace")

    assert sorted(result.traces["trace_id"].to_list()) == ["t-1", "t-3"]
    quarantine = result.quarantine.sort("source_record")
    assert quarantine["reason"].to_list() == ["conflicting_duplicate"] * 3
    assert quarantine["record_id"].to_list() == ["t-2"] * 3
    assert quarantine["source_record"].to_list() == [2, 3, 5]
    assert all("trace_id" in detail for detail in quarantine["detail"])
    summary = result.summary()
    assert (summary["valid"], summary["duplicates"], summary["quarantined"]) == (2, 0, 3)
    assert_accounting(summary)


def test_conflicting_duplicate_across_files(tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", [trace("t-1")])
    second = write_jsonl(tmp_path / "b.jsonl", [trace("t-1", latency_ms=9.0)])

    result = run([tmp_path], kind="trace")

    assert result.traces.height == 0
    assert sorted(result.quarantine["source_file"].to_list()) == sorted([f"{tmp_path}/{first.name}", f"{tmp_path}/{second.name}"])
    assert set(result.quarantine["reason"]) == {"conflicting_duplicate"}


def test_identical_duplicate_collapses_and_is_counted(tmp_path):
    # The same instant written two ways is the same record.
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [trace("t-1"), trace("t-2"), trace("t-1"), trace("t-1", timestamp="2026-11-01T12:00:00+02:00")],
    )

    result = run([path], kind="trace")

    assert result.traces["trace_id"].to_list() == ["t-1", "t-2"]
    assert result.traces["source_record"].to_list() == [1, 2]  # the first copy is kept
    assert result.quarantine.height == 0
    summary = result.summary()
    assert (summary["records_in"], summary["valid"], summary["duplicates"], summary["quarantined"]) == (4, 2, 2, 0)
    assert summary["traces"]["duplicates"] == 2
    assert_accounting(summary)


def test_identical_feedback_collapses_distinct_feedback_stays(tmp_path):
    path = write_jsonl(
        tmp_path / "fb.jsonl",
        [feedback("t-1"), feedback("t-1"), feedback("t-1", kind="thumbs", value=0), feedback("t-2")],
    )

    result = run([path], kind="feedback")

    assert sorted(result.feedback["trace_id"].to_list()) == ["t-1", "t-1", "t-2"]
    assert result.feedback["feedback_id"].is_unique().all()
    summary = result.summary()
    assert (summary["feedback"]["valid"], summary["feedback"]["duplicates"]) == (3, 1)
    assert_accounting(summary)


def test_every_quarantine_reason_is_exercised():
    covered = {case[3] for case in BAD_LINES} | {"unreadable_file", "conflicting_duplicate"}
    assert covered == set(QUARANTINE_REASONS)


def test_missing_path_raises_input_error(tmp_path):
    with pytest.raises(IngestInputError, match="no such file"):
        discover([str(tmp_path / "nowhere")])


# ---------------------------------------------------------------------------------------------
# 2. Accounting


def test_accounting_on_a_mixed_folder(tmp_path):
    write_jsonl(
        tmp_path / "traces.jsonl",
        [
            trace("t-1"),
            trace("t-2"),
            trace("t-2"),  # identical duplicate
            trace("t-3"),
            trace("t-3", output="other"),  # conflict: both t-3 held back
            "",
            '{"trace_id": "t-4", "timestamp": ',  # truncated
            trace("t-5", input_tokens=-1),
            trace("t-6", model={"name": "x"}),
            trace("t-7", timestamp="soon"),
        ],
    )
    write_jsonl(
        tmp_path / "feedback.jsonl",
        [feedback("t-1"), feedback("t-1"), feedback("t-2", kind="loved"), feedback("t-2", kind="edited", edited_output="better"), "   "],
    )

    result = run([tmp_path])
    summary = result.summary()

    assert summary["traces"] == {
        "records_in": 9,
        "valid": 2,
        "duplicates": 1,
        "quarantined": 6,
        "skipped": 0,
        "quarantined_by_reason": {
            "conflicting_duplicate": 2,
            "malformed_json": 1,
            "negative_value": 1,
            "unparsable_timestamp": 1,
            "wrong_type": 1,
        },
        "skipped_by_reason": {},
    }
    assert summary["feedback"] == {
        "records_in": 4,
        "valid": 2,
        "duplicates": 1,
        "quarantined": 1,
        "skipped": 0,
        "quarantined_by_reason": {"invalid_value": 1},
        "skipped_by_reason": {},
    }
    assert summary["files"] == 2
    assert_accounting(summary)
    assert result.traces.height == summary["traces"]["valid"]
    assert result.feedback.height == summary["feedback"]["valid"]
    assert result.quarantine.height == summary["quarantined"]


def _trace_lines_from_plan(plan: list[tuple[str, int]]) -> tuple[list[str], dict[str, Any]]:
    """Lines for a plan of (line kind, salt) and the counts ingest must report for them."""
    lines: list[str] = []
    first_line: dict[str, str] = {}
    copies: dict[str, list[int]] = {}  # trace id -> line numbers of its well-formed copies
    versions: dict[str, set[str]] = {}  # trace id -> distinct contents
    bad_lines: dict[int, str] = {}  # line number -> reason
    for n, (kind, salt) in enumerate(plan):
        number = len(lines) + 1
        ids = sorted(first_line)
        if kind == "blank":
            lines.append(["", "   ", "\t"][salt % 3])
        elif kind == "good" or (kind in ("duplicate", "conflict") and not ids):
            trace_id = f"h-{n}"
            text = json.dumps(trace(trace_id, input_tokens=salt % 500))
            first_line[trace_id] = text
            lines.append(text)
            copies[trace_id] = [number]
            versions[trace_id] = {text}
        elif kind == "duplicate":
            trace_id = ids[salt % len(ids)]
            lines.append(first_line[trace_id])
            copies[trace_id].append(number)
        elif kind == "conflict":
            trace_id = ids[salt % len(ids)]
            text = json.dumps(trace(trace_id, output=f"other answer {n}"))
            lines.append(text)
            copies[trace_id].append(number)
            versions[trace_id].add(text)
        elif kind == "truncated":
            full = json.dumps(trace(f"x-{n}"))
            lines.append(full[: 1 + salt % (len(full) - 1)])
            bad_lines[number] = "malformed_json"
        elif kind == "wrong_type":
            lines.append(json.dumps(trace(f"w-{n}", model={"name": "gpt-4o"})))
            bad_lines[number] = "wrong_type"
        else:  # pragma: no cover - the strategy only draws the kinds above
            raise AssertionError(kind)
    conflicted = {t for t, v in versions.items() if len(v) > 1}
    for trace_id in conflicted:
        for number in copies[trace_id]:
            bad_lines[number] = "conflicting_duplicate"
    expected = {
        "records_in": sum(1 for text in lines if text.strip()),
        "valid_ids": set(copies) - conflicted,
        "duplicates": sum(len(copies[t]) - 1 for t in copies if t not in conflicted),
        "bad_lines": bad_lines,
    }
    return lines, expected


LINE_KINDS = ["good", "good", "duplicate", "conflict", "truncated", "wrong_type", "blank"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=st.lists(st.tuples(st.sampled_from(LINE_KINDS), st.integers(0, 10_000)), max_size=40),
    feedback_plan=st.lists(st.sampled_from(["good", "duplicate", "bad"]), max_size=12),
    slice_rows=st.integers(1, 12),
)
def test_accounting_property(tmp_path_factory, plan, feedback_plan, slice_rows):
    folder = tmp_path_factory.mktemp("prop")
    lines, expected = _trace_lines_from_plan(plan)
    (folder / "traces.jsonl").write_text("".join(text + "\n" for text in lines), encoding="utf-8")
    feedback_lines: list[str] = []
    good_feedback: list[str] = []
    fb_duplicates = fb_bad = 0
    for n, kind in enumerate(feedback_plan):
        if kind == "duplicate" and good_feedback:
            feedback_lines.append(good_feedback[n % len(good_feedback)])
            fb_duplicates += 1
        elif kind == "bad":
            feedback_lines.append(json.dumps(feedback(f"h-{n}", kind="loved")))
            fb_bad += 1
        else:
            good_feedback.append(json.dumps(feedback(f"h-{n}", value=n % 2)))
            feedback_lines.append(good_feedback[-1])
    fb_valid = len(good_feedback)
    (folder / "feedback.jsonl").write_text("".join(text + "\n" for text in feedback_lines), encoding="utf-8")

    sources = discover([str(folder / "traces.jsonl")], record_kind="trace") + discover(
        [str(folder / "feedback.jsonl")], record_kind="feedback"
    )
    result = ingest(sources, IngestConfig(decode_slice_rows=slice_rows), PRICES)
    summary = result.summary()

    assert_accounting(summary)
    bad_lines = expected["bad_lines"]
    traces = summary["traces"]
    assert traces["records_in"] == expected["records_in"]
    assert traces["valid"] == len(expected["valid_ids"])
    assert traces["duplicates"] == expected["duplicates"]
    assert traces["quarantined"] == len(bad_lines)
    expected_reasons: dict[str, int] = {}
    for reason in bad_lines.values():
        expected_reasons[reason] = expected_reasons.get(reason, 0) + 1
    assert traces["quarantined_by_reason"] == expected_reasons
    assert result.traces["trace_id"].is_unique().all()
    assert set(result.traces["trace_id"]) == expected["valid_ids"]
    quarantined_traces = result.quarantine.filter(pl.col("record_kind") == "trace")
    assert dict(zip(quarantined_traces["source_record"], quarantined_traces["reason"])) == bad_lines
    assert summary["feedback"]["records_in"] == len(feedback_lines)
    assert summary["feedback"]["valid"] == fb_valid
    assert summary["feedback"]["duplicates"] == fb_duplicates
    assert summary["feedback"]["quarantined"] == fb_bad


# ---------------------------------------------------------------------------------------------
# 3. Slice boundaries


def test_small_decode_slices_give_the_same_result(tmp_path):
    items: list[dict[str, Any] | str] = []
    for i in range(60):
        if i % 9 == 4:
            items.append(json.dumps(trace(f"t-{i}"))[: 15 + i])  # truncated
        elif i % 11 == 6:
            items.append(trace(f"t-{i}", model={"name": "x"}))  # wrong type, caught before decoding
        elif i % 13 == 7:
            items.append(trace(f"t-{i}", input_tokens=2**70))  # decodes, fails typing
        elif i % 7 == 3:
            # Looks suspicious to the screen (a nested "model": {...}) but is fine.
            items.append(trace(f"t-{i}", metadata={"model": {"name": "inner"}, "messages": "text"}))
        elif i % 17 == 0:
            items.append("")
        else:
            items.append(trace(f"t-{i}", input_tokens=i))
    path = write_jsonl(tmp_path / "in.jsonl", items)

    sliced = run([path], kind="trace", config=IngestConfig(decode_slice_rows=7))
    whole = run([path], kind="trace")
    single = run([path], kind="trace", config=IngestConfig(decode_slice_rows=1))

    assert whole.quarantine.height > 10
    assert set(whole.quarantine["reason"]) == {"malformed_json", "wrong_type", "invalid_value"}
    for other in (sliced, single):
        assert other.traces.equals(whole.traces)
        assert other.quarantine.equals(whole.quarantine)
        assert other.summary() == whole.summary()
    nested = whole.traces.filter(pl.col("trace_id") == "t-3")
    assert json.loads(nested["metadata"][0]) == {"model": {"name": "inner"}, "messages": "text"}


# ---------------------------------------------------------------------------------------------
# 4. Idempotent re-ingest


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_reingest_writes_byte_identical_files(tmp_path):
    landing = tmp_path / "landing"
    write_jsonl(
        landing / "traces.jsonl",
        [trace("t-1"), trace("t-2", timestamp="2026-11-02T08:00:00Z"), trace("t-2", timestamp="2026-11-02T08:00:00Z"), "{oops"],
    )
    write_jsonl(landing / "feedback.jsonl", [feedback("t-1"), feedback("t-2", timestamp="2026-11-03T00:00:00Z"), feedback("t-1", kind="loved")])

    first, second = tmp_path / "out1", tmp_path / "out2"
    summary = write_result(run([landing]), first)
    write_result(run([landing]), second)
    before = _snapshot(first)
    write_result(run([landing]), first)

    # The warehouse layout: tables by event day; the quarantine under the run's newest day.
    assert sorted(before) == [
        "feedback_events/2026-11-01.parquet",
        "feedback_events/2026-11-03.parquet",
        "quarantined_records/2026-11-03.parquet",
        "raw_traces/2026-11-01.parquet",
        "raw_traces/2026-11-02.parquet",
        "summary.json",
    ]
    assert _snapshot(second) == before
    assert _snapshot(first) == before
    assert json.loads((first / "summary.json").read_text()) == summary
    assert pl.read_parquet(first / "raw_traces/2026-11-02.parquet")["trace_id"].to_list() == ["t-2"]
    assert pl.read_parquet(first / "quarantined_records/2026-11-03.parquet")["reason"].sort().to_list() == ["invalid_value", "malformed_json"]
    # The same tables the Dagster assets write, so the warehouse's reader opens the folder.
    warehouse = LoopStorage(landing_url=str(landing), warehouse_dir=str(first))
    assert warehouse.read_partitions("raw_traces")["trace_id"].to_list() == ["t-1", "t-2"]
    assert warehouse.table_partitions("feedback_events") == ["2026-11-01", "2026-11-03"]
    # Nothing but the result is left beside the output folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["landing", "out1", "out2"]


def test_write_result_with_nothing_valid_keeps_the_quarantine_undated(tmp_path):
    landing = write_jsonl(tmp_path / "landing" / "traces.jsonl", ["{oops", json.dumps(trace("t-1", timestamp="whenever"))])

    write_result(run([landing]), tmp_path / "out")

    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file()) == [
        "quarantined_records/undated.parquet",
        "summary.json",
    ]
    quarantine = pl.read_parquet(tmp_path / "out" / "quarantined_records" / "undated.parquet")
    assert quarantine["reason"].sort().to_list() == ["malformed_json", "unparsable_timestamp"]


# ---------------------------------------------------------------------------------------------
# 5. Timestamps


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2026-11-01T10:00:00Z", T0),
        ("2026-11-01T10:00:00.250Z", T0 + dt.timedelta(milliseconds=250)),
        ("2026-11-01T12:00:00+02:00", T0),
        ("2026-11-01T05:30:00-04:30", T0),
        ("2026-11-01T12:00:00+0200", T0),
        ("2026-11-01T10:00:00", T0),  # naive is UTC
        ("2026-11-01 10:00:00", T0),
        ("2026-11-01", T0.replace(hour=0)),
        (int(T0.timestamp()), T0),  # epoch seconds
        (int(T0.timestamp()) * 1000 + 7, T0 + dt.timedelta(milliseconds=7)),  # epoch milliseconds
        (str(int(T0.timestamp())), T0),
        (T0.timestamp() + 0.5, T0 + dt.timedelta(milliseconds=500)),
    ],
    ids=["z", "z_millis", "plus_2h", "minus_4h30", "compact_offset", "naive", "space", "date_only", "epoch_s", "epoch_ms", "epoch_s_text", "epoch_s_fraction"],
)
def test_timestamp_forms_parse_to_the_utc_instant(tmp_path, written, expected):
    path = write_jsonl(tmp_path / "t.jsonl", [trace("t-1", timestamp=written)])
    fb_path = write_jsonl(tmp_path / "f.jsonl", [feedback("t-1", timestamp=written)])

    result = run([path], kind="trace")
    fb = run([fb_path], kind="feedback")

    assert result.quarantine.height == 0 and fb.quarantine.height == 0
    assert result.traces.schema["timestamp"] == pl.Datetime("us", "UTC")
    assert result.traces["timestamp"][0] == expected
    assert fb.feedback["timestamp"][0] == expected


# ---------------------------------------------------------------------------------------------
# 6. Cost


def test_costs_computed_reported_and_unknown(tmp_path):
    models = PRICES.models
    mini, full = models["gpt-4o-mini"], models["gpt-4o"]
    path = write_jsonl(
        tmp_path / "t.jsonl",
        [
            trace("mini", model="gpt-4o-mini-2024-07-18", input_tokens=1000, output_tokens=200),
            trace("full", model="gpt-4o-2024-08-06", input_tokens=1000, output_tokens=200),
            trace("reported", model="gpt-4o-mini-2024-07-18", cost_usd=0.5),
            trace("unknown", model="mystery-7b-instruct", input_tokens=1000, output_tokens=200),
            trace("no_tokens", model="gpt-4o-2024-08-06", input_tokens=None),
        ],
    )

    result = run([path], kind="trace")
    rows = {r["trace_id"]: r for r in result.traces.iter_rows(named=True)}

    expected_mini = (1000 * mini.input_per_mtok + 200 * mini.output_per_mtok) / 1e6
    expected_full = (1000 * full.input_per_mtok + 200 * full.output_per_mtok) / 1e6
    assert expected_mini != expected_full
    assert rows["mini"]["cost_usd"] == expected_mini
    assert rows["mini"]["cost_source"] == "computed"
    assert rows["full"]["cost_usd"] == expected_full
    assert rows["full"]["cost_source"] == "computed"
    assert rows["reported"]["cost_usd"] == 0.5
    assert rows["reported"]["cost_source"] == "reported"
    assert rows["unknown"]["cost_usd"] is None
    assert rows["unknown"]["cost_source"] is None
    assert rows["no_tokens"]["cost_usd"] is None
    assert rows["no_tokens"]["cost_source"] is None


def test_price_lookup_prefers_the_longest_prefix():
    prices = PRICES
    assert prices.lookup("gpt-4o-mini-2024-07-18") == prices.lookup("gpt-4o-mini")
    assert prices.lookup("gpt-4o-mini-2024-07-18") != prices.lookup("gpt-4o")
    assert prices.lookup("gpt-4.1-nano-2025-04-14") == prices.lookup("gpt-4.1-nano")
    assert prices.lookup("no-such-model") is None


# ---------------------------------------------------------------------------------------------
# 7. Parquet input


def _canonical(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.drop("source_format", "source_file")


def test_parquet_traces_match_jsonl(tmp_path):
    records = [
        trace("t-1"),
        trace("t-2", timestamp="2026-11-02T00:00:01Z", cost_usd=0.25, metadata={"gold": "balance", "row": 2}),
        trace("t-3", task_type=None, user_id=None, latency_ms=0.0, metadata={"gold": "x", "row": 3}),
    ]
    jsonl = write_jsonl(tmp_path / "t.jsonl", records)
    table = pl.DataFrame(
        {
            **{key: [r[key] for r in records] for key in records[0] if key not in ("timestamp", "metadata")},
            "timestamp": [dt.datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")) for r in records],
            "cost_usd": [r.get("cost_usd") for r in records],
            "metadata": [r["metadata"] for r in records],
        }
    )
    assert isinstance(table.schema["metadata"], pl.Struct)
    table.write_parquet(tmp_path / "t.parquet")

    from_jsonl = run([jsonl], kind="trace")
    from_parquet = run([tmp_path / "t.parquet"])  # kind detected from the columns

    assert from_parquet.quarantine.height == 0
    assert _canonical(from_parquet.traces).equals(_canonical(from_jsonl.traces))
    assert set(from_parquet.traces["source_format"]) == {"native_parquet"}
    assert from_parquet.traces["source_record"].to_list() == [1, 2, 3]
    assert json.loads(from_parquet.traces["metadata"][1]) == {"gold": "balance", "row": 2}
    assert from_parquet.traces["cost_source"].to_list() == ["computed", "reported", "computed"]


def test_parquet_feedback_matches_jsonl(tmp_path):
    records = [
        feedback("t-1"),
        feedback("t-1", kind="edited", value=None, edited_output="better answer", timestamp="2026-11-01T11:00:00Z"),
        feedback("t-2", kind="human_label", value=None, label="balance", source="human_reviewer", annotator_id="r-1"),
        feedback("t-2", kind="thumbs", value=0, timestamp="2026-11-02T00:00:00Z"),
    ]
    jsonl = write_jsonl(tmp_path / "f.jsonl", records)
    pl.DataFrame(
        {
            "trace_id": [r["trace_id"] for r in records],
            "timestamp": [dt.datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")) for r in records],
            "kind": [r["kind"] for r in records],
            "value": [None if r["value"] is None else float(r["value"]) for r in records],
            "label": [r.get("label") for r in records],
            "edited_output": [r.get("edited_output") for r in records],
            "source": [r["source"] for r in records],
            "annotator_id": [r["annotator_id"] for r in records],
        }
    ).write_parquet(tmp_path / "f.parquet")

    from_jsonl = run([jsonl], kind="feedback")
    from_parquet = run([tmp_path / "f.parquet"])

    assert from_parquet.quarantine.height == 0
    assert from_parquet.summary()["feedback"]["valid"] == 4
    assert _canonical(from_parquet.feedback).equals(_canonical(from_jsonl.feedback))
    assert from_parquet.feedback["value"].to_list() == [1.0, None, None, 0.0]


def test_parquet_nested_column_for_scalar_field_is_wrong_type(tmp_path):
    pl.DataFrame(
        {
            "trace_id": ["t-1", "t-2"],
            "timestamp": ["2026-11-01T10:00:00Z"] * 2,
            "model": [{"name": "gpt-4o"}, None],
            "messages": [[{"role": "user", "content": "hi"}]] * 2,
            "output": ["ok", "ok"],
        }
    ).write_parquet(tmp_path / "t.parquet")

    result = run([tmp_path / "t.parquet"], kind="trace")

    row = result.quarantine.row(0, named=True)
    assert result.quarantine.height == 2
    assert row["reason"] == "wrong_type" and "model" in row["detail"] and row["source_record"] == 1
    assert result.quarantine.row(1, named=True)["reason"] == "missing_field"


# ---------------------------------------------------------------------------------------------
# 8. fsspec


def test_fsspec_memory_folder_ingests_like_local(tmp_path):
    local = tmp_path / "landing"
    write_jsonl(local / "traces" / "2026-11-01" / "traces.jsonl", [trace("t-1"), trace("t-2"), "{broken"])
    write_jsonl(local / "feedback" / "2026-11-01" / "feedback.jsonl", [feedback("t-1"), feedback("t-2", kind="loved")])
    fs = fsspec.filesystem("memory")
    root = f"/loop-test-{uuid.uuid4().hex}"
    try:
        for path in local.rglob("*.jsonl"):
            fs.pipe(f"{root}/{path.relative_to(local).as_posix()}", path.read_bytes())
        url = f"memory://{root.lstrip('/')}"

        sources = discover([url])
        remote = ingest(sources, DEFAULT, PRICES)
    finally:
        fs.rm(root, recursive=True)
    here = run([local])

    assert [s.name for s in sources] == [
        f"{url}/feedback/2026-11-01/feedback.jsonl",
        f"{url}/traces/2026-11-01/traces.jsonl",
    ]
    assert all(s.location.startswith("memory://") for s in sources)
    assert remote.summary() == here.summary()
    assert remote.traces.drop("source_file").equals(here.traces.drop("source_file"))
    assert remote.feedback.drop("source_file").equals(here.feedback.drop("source_file"))
    assert remote.quarantine.drop("source_file").equals(here.quarantine.drop("source_file"))
    assert set(remote.traces["source_file"]) == {f"{url}/traces/2026-11-01/traces.jsonl"}


def test_fsspec_missing_url_raises_input_error():
    with pytest.raises(IngestInputError):
        discover([f"memory://loop-test-{uuid.uuid4().hex}/nothing"])


# ---------------------------------------------------------------------------------------------
# 9. Record kind detection


def test_detect_splits_traces_and_feedback(tmp_path):
    write_jsonl(tmp_path / "a" / "calls.jsonl", [trace("t-1"), trace("t-2")])
    write_jsonl(tmp_path / "b" / "events.ndjson", [feedback("t-1"), feedback("t-2", kind="rejected", value=0)])
    # Nothing to tell from the records: the folder name decides.
    write_jsonl(tmp_path / "feedback" / "broken.jsonl", ["{not json", "[]"])
    write_jsonl(tmp_path / "traces" / "broken.jsonl", ["{not json"])
    (tmp_path / "notes.txt").write_text("not ingestible")
    write_jsonl(tmp_path / ".hidden" / "skip.jsonl", [trace("t-hidden")])

    sources = discover([str(tmp_path)])
    result = ingest(sources, DEFAULT, PRICES)

    assert len([source for source in sources if not source.unsupported]) == 4
    assert result.summary()["unsupported_files"] == [{"file": f"{tmp_path}/notes.txt", "reason": "unsupported_file", "bytes": 14}]
    assert len(result.files) == 4
    assert sorted(result.traces["trace_id"].to_list()) == ["t-1", "t-2"]
    assert sorted(result.feedback["kind"].to_list()) == ["accepted", "rejected"]
    kinds = dict(
        result.quarantine.group_by("source_file").agg(pl.col("record_kind").unique().first()).iter_rows()
    )
    assert kinds == {f"{tmp_path}/feedback/broken.jsonl": "feedback", f"{tmp_path}/traces/broken.jsonl": "trace"}
    summary = result.summary()
    assert (summary["traces"]["records_in"], summary["feedback"]["records_in"]) == (3, 4)
    assert_accounting(summary)


def test_explicit_kind_overrides_detection(tmp_path):
    path = write_jsonl(tmp_path / "feedback" / "x.jsonl", [trace("t-1")])
    result = ingest([SourceFile(str(path), "x.jsonl", "trace")], DEFAULT, PRICES)
    assert result.traces["trace_id"].to_list() == ["t-1"]
    assert result.traces["source_file"].to_list() == ["x.jsonl"]


# ---------------------------------------------------------------------------------------------
# 10. The simulator's output


def test_simulated_landing_ingests_clean(tmp_path):
    landing = tmp_path / "landing"
    sim = simulate_landing(SimulationConfig.from_mapping({"days": 2, "traces_per_day": 200}), landing).to_dict()

    result = run([landing])
    summary = result.summary()

    assert summary["quarantined"] == 0, result.quarantine.head(5)
    assert summary["traces"]["valid"] == sim["traces"] == 400
    assert summary["feedback"]["valid"] == sim["feedback_events"] > 0
    assert summary["duplicates"] == 0
    assert_accounting(summary)
    assert set(result.feedback["trace_id"]) <= set(result.traces["trace_id"])
    assert result.traces["cost_usd"].null_count() == 0
    assert set(result.traces["cost_source"]) == {"computed"}
    assert result.traces["cost_usd"].sum() == pytest.approx(sim["estimated_frontier_cost_usd"], rel=1e-3)
