"""Hostile landing files: whatever a file holds, every record is valid, quarantined with a reason or
an ``unreadable_file`` row; files ingest does not read are reported; compressed files read as
streams; results do not depend on the read batch size."""

from __future__ import annotations

import gzip
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import zstandard

from loop_pipeline.core.costs import PriceTable
from loop_pipeline.core.ingest import IngestConfig, IngestInputError, SourceFile, discover, ingest
from loop_pipeline.core.ingest.safejson import MAX_DEPTH, TooDeeplyNested, loads, nesting_over
from loop_pipeline.core.ingest.stream import line_batches, open_stream
from loop_pipeline.settings import REPO_ROOT

DEFAULT = IngestConfig()
PRICES = PriceTable.from_yaml(REPO_ROOT / "configs" / "prices.yaml")
DEEP = "[" * 5000 + "]" * 5000


def trace(trace_id: str, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "trace_id": trace_id,
        "timestamp": "2026-11-01T10:00:00Z",
        "task_type": "intent",
        "model": "gpt-4o-2024-08-06",
        "messages": [{"role": "user", "content": "my card was declined"}],
        "output": "card_declined",
        "input_tokens": 40,
        "output_tokens": 3,
        "metadata": {"row": trace_id},
    }
    record.update(fields)
    return record


def dumps(record: Any) -> str:
    return record if isinstance(record, str) else json.dumps(record)


def write_lines(path: Path, records: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def deep_line(trace_id: str) -> str:
    return json.dumps(trace(trace_id))[:-1] + ', "metadata": {"x": ' + DEEP + "}}"


def assert_accounting(summary: dict[str, Any]) -> None:
    for scope in (summary, summary["traces"], summary["feedback"]):
        assert scope["records_in"] == scope["valid"] + scope["duplicates"] + scope["quarantined"] + scope["skipped"], scope


def run(paths: list[Path], config: IngestConfig = DEFAULT, **options: Any):
    return ingest(discover([str(p) for p in paths]), config, PRICES, **options)


# ---------------------------------------------------------------------------------------------
# 1. Deep nesting and files ingest does not read


@pytest.mark.parametrize("source_format", ["auto", "native"])
def test_a_5000_deep_metadata_is_quarantined_and_the_rest_of_its_file_ingested(tmp_path, source_format):
    path = tmp_path / "day.jsonl"
    path.write_text(
        "\n".join([json.dumps(trace("t-1")), deep_line("t-deep"), json.dumps(trace("t-2"))]) + "\n", encoding="utf-8"
    )

    result = run([path], source_format=source_format)

    assert result.traces["trace_id"].to_list() == ["t-1", "t-2"]
    row = result.quarantine.row(0, named=True)
    assert result.quarantine.height == 1
    assert (row["reason"], row["source_record"]) == ("too_deeply_nested", 2)
    assert f"more than {MAX_DEPTH} levels" in row["detail"]
    assert row["raw"] == deep_line("t-deep")
    assert_accounting(result.summary())


def test_a_deep_first_line_does_not_break_format_detection(tmp_path):
    # The deep record is the first the detector sees; the file is still native.
    path = write_lines(tmp_path / "day.jsonl", [deep_line("t-deep"), trace("t-1")])

    result = run([path])

    assert result.traces["trace_id"].to_list() == ["t-1"]
    assert result.quarantine["reason"].to_list() == ["too_deeply_nested"]
    assert result.summary()["formats"]["native_jsonl"]["records_in"] == 2


def test_metadata_deeper_than_polars_reads_is_quarantined_not_silently_emptied(tmp_path):
    # polars' JSON path reader gives null past ~127 levels: the metadata would become "{}".
    for depth in (MAX_DEPTH - 2, 130):
        path = write_lines(tmp_path / f"d{depth}.jsonl", [trace("t-1", metadata={"x": json.loads("[" * depth + "]" * depth)})])
        result = run([path])
        if depth < MAX_DEPTH:
            assert json.loads(result.traces["metadata"][0]) == {"x": json.loads("[" * depth + "]" * depth)}
        else:
            assert result.traces.height == 0 and result.quarantine["reason"].to_list() == ["too_deeply_nested"]


def test_deep_records_in_foreign_formats_are_quarantined(tmp_path):
    span = {"name": "chat gpt-4o", "context": {"trace_id": "0x1", "span_id": "0x2"}, "attributes": {"gen_ai.operation.name": "chat"}}
    otel = tmp_path / "spans.jsonl"
    otel.write_text(json.dumps(span) + "\n" + json.dumps(span)[:-1] + ', "deep": ' + DEEP + "}\n", encoding="utf-8")
    otlp = tmp_path / "otlp.jsonl"
    otlp.write_text('{"resourceSpans": [], "deep": ' + DEEP + "}\n", encoding="utf-8")

    for path, fmt in ((otel, "otel"), (otlp, "otlp")):
        result = run([path], source_format=fmt)
        quarantine = result.quarantine.filter(pl.col("reason") == "too_deeply_nested")
        assert quarantine.height == 1, (fmt, result.quarantine)
        assert_accounting(result.summary())


def test_safe_loads_bounds_nesting_exactly():
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(TooDeeplyNested):
        loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    # Brackets inside strings do not nest; a wide record is not deep.
    assert not nesting_over(json.dumps({"text": "[" * 1000, "items": [[1]] * 1000}))
    # Unbalanced deep text (a truncated record) is malformed or too deep, never a crash.
    with pytest.raises(ValueError):
        loads("[" * 5000)


def test_unsupported_files_are_reported_with_their_size(tmp_path):
    write_lines(tmp_path / "day" / "traces.jsonl", [trace("t-1")])
    (tmp_path / "day" / "notes.txt").write_text("hello", encoding="utf-8")
    (tmp_path / "day" / "export.csv").write_bytes(b"a,b\n1,2\n")

    result = run([tmp_path / "day"])

    summary = result.summary()
    assert summary["unsupported_files"] == [
        {"file": f"{tmp_path / 'day'}/export.csv", "reason": "unsupported_file", "bytes": 8},
        {"file": f"{tmp_path / 'day'}/notes.txt", "reason": "unsupported_file", "bytes": 5},
    ]
    assert (summary["files"], summary["records_in"], summary["valid"]) == (1, 1, 1)


def test_a_folder_of_only_unsupported_files_says_so(tmp_path):
    (tmp_path / "day").mkdir()
    (tmp_path / "day" / "traces.jsonl.bz2").write_bytes(b"BZh9" + b"\x00" * 10)

    with pytest.raises(IngestInputError, match=r"unsupported file\(s\) not read: .*traces\.jsonl\.bz2 \(14 bytes\)"):
        discover([str(tmp_path / "day")])


# ---------------------------------------------------------------------------------------------
# 2. Compressed landing files


def _compressed_copies(plain: Path, folder: Path) -> dict[str, Path]:
    data = plain.read_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    gz = folder / (plain.name + ".gz")
    gz.write_bytes(gzip.compress(data))
    zst = folder / (plain.name + ".zst")
    # Two zstd frames, as a log shipper appending to a file writes them.
    half = len(data) // 2
    cut = data.rfind(b"\n", 0, half) + 1
    zst.write_bytes(zstandard.ZstdCompressor().compress(data[:cut]) + zstandard.ZstdCompressor().compress(data[cut:]))
    return {"gz": gz, "zst": zst}


def _rows(result) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    return tuple(frame.drop("source_file") for frame in (result.traces, result.feedback, result.quarantine))  # type: ignore[return-value]


def test_gz_and_zst_copies_of_a_native_file_ingest_to_the_same_rows(tmp_path):
    records = [trace(f"t-{i}", output=f"out {i}") for i in range(40)]
    records[7] = "{broken"
    records[12] = trace("t-3", output="a conflicting copy")
    records[20] = deep_line("t-deep")
    plain = write_lines(tmp_path / "plain" / "traces.jsonl", ["", *records, "   "])
    copies = _compressed_copies(plain, tmp_path / "packed")

    expected = run([plain])
    assert expected.quarantine.height == 4  # broken, two conflicting copies, too deep
    for name, path in copies.items():
        for config in (DEFAULT, IngestConfig(read_batch_bytes=300)):
            result = run([path], config)
            for got, want in zip(_rows(result), _rows(expected)):
                assert got.equals(want), (name, got, want)
            assert result.summary() == expected.summary() | {"formats": result.summary()["formats"]}
            assert result.sources[0]["lines"] == expected.sources[0]["lines"] == 40  # non-blank


def test_compressed_foreign_files_read_with_their_line_numbers(tmp_path):
    fixtures = REPO_ROOT / "loop_pipeline_tests" / "fixtures" / "formats"
    plain_files = sorted(p for p in fixtures.rglob("*") if p.suffix in (".jsonl", ".json")) if fixtures.exists() else []
    span = {
        "name": "chat gpt-4o",
        "context": {"trace_id": "0xabc", "span_id": "0x01"},
        "start_time": "2026-11-01T10:00:00Z",
        "end_time": "2026-11-01T10:00:01Z",
        "attributes": {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "hello"}]}]),
            "task_type": "intent",
        },
    }
    own = write_lines(tmp_path / "own" / "spans.jsonl", [span, "", "{cut", {**span, "context": {"trace_id": "0xabd", "span_id": "0x02"}}])
    for plain in [own, *plain_files[:6]]:
        expected = run([plain])
        copies = _compressed_copies(plain, tmp_path / "packed" / plain.parent.name)
        for path in copies.values():
            result = run([path])
            assert [s["format"] for s in result.sources] == [s["format"] for s in expected.sources], path
            for got, want in zip(_rows(result), _rows(expected)):
                assert got.equals(want), (path, got, want)
    own_result = run([own])
    assert own_result.quarantine["source_record"].to_list() == [3]
    assert own_result.traces.height == 2


def test_a_truncated_gz_keeps_what_was_read_and_adds_one_unreadable_row(tmp_path):
    plain = write_lines(tmp_path / "t.jsonl", [trace(f"t-{i}", output="x" * 200) for i in range(2000)])
    packed = gzip.compress(plain.read_bytes())
    broken = tmp_path / "broken" / "t.jsonl.gz"
    broken.parent.mkdir()
    broken.write_bytes(packed[: len(packed) // 2])

    result = run([broken.parent], IngestConfig(read_batch_bytes=4096))

    unreadable = result.quarantine.filter(pl.col("reason") == "unreadable_file")
    assert unreadable.height == 1 and "EOFError" in unreadable["detail"][0]
    assert 0 < result.traces.height < 2000
    assert result.sources[0]["error"].startswith("UnreadableFileError")
    assert result.sources[0]["records_in"]["trace"] == result.traces.height + 1
    assert_accounting(result.summary())


@pytest.mark.parametrize("payload", [b"not gzip at all", b"\x28\xb5\x2f\xfd garbage"], ids=["gz", "zst"])
def test_a_corrupt_compressed_file_is_one_unreadable_record(tmp_path, payload):
    suffix = ".gz" if payload.startswith(b"not") else ".zst"
    write_lines(tmp_path / "a.jsonl", [trace("t-1")])
    (tmp_path / f"b.jsonl{suffix}").write_bytes(payload)

    result = run([tmp_path])

    assert result.traces["trace_id"].to_list() == ["t-1"]
    assert result.quarantine["reason"].to_list() == ["unreadable_file"]
    assert result.quarantine["source_file"].to_list() == [f"{tmp_path}/b.jsonl{suffix}"]
    assert_accounting(result.summary())


# ---------------------------------------------------------------------------------------------
# 3. Other hostile input


HOSTILE_LINES: list[tuple[str, bytes, str | None]] = [
    # (id, the line's bytes, the reason; None: valid)
    ("lone_surrogate_escape", json.dumps(trace("t-x", output="\ud800 broken")).encode(), None),
    ("nul_escape", json.dumps(trace("t-x", output="a\u0000b")).encode(), None),
    ("raw_nul_byte", json.dumps(trace("t-x")).encode().replace(b"card", b"ca\x00rd"), "malformed_json"),
    ("invalid_utf8", json.dumps(trace("t-x")).encode().replace(b"card", b"ca\xff\xferd"), None),
    ("tokens_past_int64", json.dumps(trace("t-x")).encode().replace(b'"input_tokens": 40', b'"input_tokens": 99999999999999999999999'), "invalid_value"),
    ("cost_nan", json.dumps(trace("t-x")).encode().replace(b'"input_tokens": 40', b'"cost_usd": NaN, "input_tokens": 40'), "malformed_json"),
    ("latency_infinity", json.dumps(trace("t-x")).encode().replace(b'"input_tokens": 40', b'"latency_ms": Infinity, "input_tokens": 40'), "malformed_json"),
    ("cost_1e400", json.dumps(trace("t-x")).encode().replace(b'"input_tokens": 40', b'"cost_usd": 1e400, "input_tokens": 40'), "malformed_json"),
    ("binary_garbage", bytes(range(256)).replace(b"\n", b""), "malformed_json"),
    ("lone_bracket", b"{", "malformed_json"),
]


@pytest.mark.parametrize(("line", "reason"), [case[1:] for case in HOSTILE_LINES], ids=[case[0] for case in HOSTILE_LINES])
def test_hostile_line_is_valid_or_quarantined_and_its_neighbours_ingested(tmp_path, line, reason):
    path = tmp_path / "day.jsonl"
    path.write_bytes(json.dumps(trace("t-1")).encode() + b"\n" + line + b"\n" + json.dumps(trace("t-2")).encode() + b"\n")

    result = run([path])

    assert {"t-1", "t-2"} <= set(result.traces["trace_id"])
    if reason is None:
        assert result.traces.height == 3 and result.quarantine.height == 0, result.quarantine
    else:
        assert result.quarantine["reason"].to_list() == [reason], result.quarantine
        assert result.quarantine["source_record"].to_list() == [2]
    assert_accounting(result.summary())


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be"])
def test_byte_order_marked_files_read_as_text(tmp_path, encoding):
    text = "".join(json.dumps(trace(f"t-{i}", output="café")) + "\n" for i in range(3))
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    path = tmp_path / "day.jsonl"
    path.write_bytes(data)

    result = run([path])

    assert result.traces["trace_id"].to_list() == ["t-0", "t-1", "t-2"]
    assert result.traces["output"].to_list() == ["café"] * 3
    assert result.quarantine.height == 0


def test_a_truncated_last_line_is_one_malformed_record(tmp_path):
    path = tmp_path / "day.jsonl"
    path.write_text(json.dumps(trace("t-1")) + "\n" + json.dumps(trace("t-2"))[:50], encoding="utf-8")

    result = run([path], IngestConfig(read_batch_bytes=64))

    assert result.traces["trace_id"].to_list() == ["t-1"]
    assert result.quarantine.select("reason", "source_record").rows() == [("malformed_json", 2)]


def test_a_line_longer_than_a_batch_and_the_limit_is_not_held_whole(tmp_path):
    path = tmp_path / "day.jsonl"
    garbage = b"\x00\x01garbage" * 50_000  # 450 kB, no line break
    path.write_bytes(json.dumps(trace("t-1")).encode() + b"\n" + garbage + b"\n" + json.dumps(trace("t-2")).encode() + b"\n")
    config = IngestConfig(read_batch_bytes=4096, max_record_bytes=10_000)

    result = run([path], config)

    assert result.traces["trace_id"].to_list() == ["t-1", "t-2"]
    row = result.quarantine.row(0, named=True)
    assert (row["reason"], row["source_record"]) == ("oversized_record", 2)
    assert f"record is {len(garbage)} bytes" in row["detail"]
    assert len(row["raw"].encode("utf-8")) <= 3 * 10_000  # its head, not the whole line


def test_a_file_vanishing_before_it_is_read_is_one_unreadable_record(tmp_path):
    write_lines(tmp_path / "a.jsonl", [trace("t-1")])
    gone = write_lines(tmp_path / "b.jsonl", [trace("t-2")])
    sources = discover([str(tmp_path)])
    gone.unlink()

    result = ingest(sources, DEFAULT, PRICES)

    assert result.traces["trace_id"].to_list() == ["t-1"]
    assert result.quarantine.select("reason", "source_file").rows() == [("unreadable_file", str(gone))]
    assert_accounting(result.summary())


def test_a_file_growing_while_read_gives_whole_lines_and_a_counted_tail(tmp_path):
    path = write_lines(tmp_path / "day.jsonl", [trace(f"t-{i}") for i in range(2000)])
    stop = threading.Event()

    def append() -> None:
        with path.open("ab") as handle:
            for i in range(2000, 6000):
                if stop.is_set():
                    return
                # A record written in two pieces: a reader may see the first half only.
                line = json.dumps(trace(f"t-{i}")).encode()
                handle.write(line[:40])
                handle.flush()
                handle.write(line[40:] + b"\n")
                handle.flush()
                time.sleep(0)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        result = run([path], IngestConfig(read_batch_bytes=2048))
    finally:
        stop.set()
        writer.join()

    summary = result.summary()
    assert_accounting(summary)
    assert result.traces.height >= 2000
    # Only a last, half-written line can be malformed; every record read is counted.
    assert set(result.quarantine["reason"]) <= {"malformed_json"} and result.quarantine.height <= 1
    assert summary["records_in"] == result.sources[0]["lines"]


def test_symlink_loops_and_directories_named_like_files(tmp_path):
    day = tmp_path / "day"
    write_lines(day / "a.jsonl", [trace("t-1")])
    os.symlink("loop.jsonl", day / "loop.jsonl")
    (day / "folder.jsonl").mkdir()
    write_lines(day / "folder.jsonl" / "inner.jsonl", [trace("t-2")])
    (day / "empty.ndjson").mkdir()

    result = run([day])

    assert sorted(result.traces["trace_id"].to_list()) == ["t-1", "t-2"]
    assert result.quarantine.select("reason", "source_file").rows() == [("unreadable_file", f"{day}/loop.jsonl")]
    assert "Too many levels of symbolic links" in result.quarantine["detail"][0]
    assert_accounting(result.summary())
    # Named directly, a directory named like a file is read as the folder it is.
    assert run([day / "folder.jsonl"]).traces["trace_id"].to_list() == ["t-2"]
    # A source pointing at a directory (a listing gone stale) is one unreadable record.
    stale = ingest([SourceFile(str(day / "empty.ndjson"), "empty.ndjson")], DEFAULT, PRICES)
    assert stale.quarantine.select("reason", "source_file").rows() == [("unreadable_file", "empty.ndjson")]
    assert "is a directory" in stale.quarantine["detail"][0]


# ---------------------------------------------------------------------------------------------
# 5. Batches: results do not depend on the read batch size


def test_line_batches_keep_line_numbers_across_batches(tmp_path):
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b'{"a":1}\n\n{"b":2}\r\n   \n{"c":3}')
    for batch_bytes in (1, 3, 8, 1 << 20):
        with open_stream(str(path)) as stream:
            batches = list(line_batches(stream, batch_bytes, 1 << 20))
        frame = pl.concat([batch.lines.select("source_record", "raw") for batch in batches])
        assert frame["source_record"].to_list() == [1, 3, 5], batch_bytes
        assert [raw.rstrip("\r") for raw in frame["raw"]] == ['{"a":1}', '{"b":2}', '{"c":3}']
        assert sum(batch.line_count for batch in batches) == 5


def test_results_are_identical_with_a_tiny_batch_size(tmp_path):
    records: list[Any] = []
    for i in range(300):
        records.append(trace(f"t-{i}", output="y" * (i % 37), input_tokens=i))
        if i % 50 == 7:
            records.extend(["", "{bad json", trace(f"t-{i}"), trace(f"t-{i}", output="other")])
    feedback = [{"trace_id": f"t-{i}", "timestamp": "2026-11-01T10:00:00Z", "kind": "thumbs", "value": i % 2} for i in range(100)]
    traces_path = write_lines(tmp_path / "traces" / "day.jsonl", records)
    write_lines(tmp_path / "feedback" / "day.jsonl", feedback + feedback[:5])

    whole = run([tmp_path])
    assert whole.traces.height > 250 and whole.quarantine.height > 10 and whole.summary()["duplicates"] > 0
    for batch_bytes in (1, 700, 5000):
        batched = run([tmp_path], IngestConfig(read_batch_bytes=batch_bytes))
        assert batched.traces.equals(whole.traces)
        assert batched.feedback.equals(whole.feedback)
        assert batched.quarantine.equals(whole.quarantine)
        assert batched.summary(include_sources=True) == whole.summary(include_sources=True)
    assert traces_path.stat().st_size > 100 * 700  # many batches of 700 bytes


@pytest.mark.parametrize("source_format", ["auto", "langfuse", "otel", "litellm"])
def test_lone_surrogate_escapes_in_foreign_records_do_not_escape_the_reader(tmp_path, source_format):
    # json.loads keeps "\ud800" as a lone surrogate, which no polars column can hold (found by the fuzz suite).
    path = tmp_path / "export.jsonl"
    export = {"id": "tr-1", "timestamp": "2026-11-01T10:00:00Z", "observations": [{"id": "o-1", "type": "GENERATION", "model": "gpt-4o", "input": "hi", "output": "ok"}]}
    path.write_text(json.dumps(export) + "\n" + '["\\ud800"]\n' + '{"name": "\\udfff", "x": "\\ud83d\\ude00"}\n', encoding="utf-8")

    result = run([path], source_format=source_format)

    assert_accounting(result.summary())
    assert result.summary()["records_in"] >= 2


def test_batches_hold_about_batch_bytes_whatever_the_file_size(tmp_path):
    path = write_lines(tmp_path / "big.jsonl", [trace(f"t-{i}", output="z" * (i % 300)) for i in range(6000)])
    longest = max(len(line) for line in path.read_bytes().split(b"\n"))
    with open_stream(str(path)) as stream:
        sizes = [batch.lines["raw"].str.len_bytes().sum() for batch in line_batches(stream, 64 << 10, 1 << 20)]
    assert path.stat().st_size > 20 * (64 << 10)
    assert len(sizes) > 20
    assert max(sizes) <= (64 << 10) + longest
