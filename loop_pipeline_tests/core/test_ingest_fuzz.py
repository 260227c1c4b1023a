"""Fuzzing the readers: hostile records and files through the native reader and every foreign
adapter. Whatever a file holds, no exception escapes ingest and every record is accounted for
(``records_in = valid + duplicates + quarantined + skipped``, per kind and in total).

Deterministic (``derandomize``) and bounded (``max_examples``) so it fits CI's time budget.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loop_pipeline.core.costs import PriceTable
from loop_pipeline.core.ingest import FORMAT_CHOICES, IngestConfig, SourceFile, ingest
from loop_pipeline.schemas import QUARANTINE_REASONS
from loop_pipeline.settings import REPO_ROOT

PRICES = PriceTable.from_yaml(REPO_ROOT / "configs" / "prices.yaml")
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)

# JSON values a hostile producer writes: odd numbers, odd text, nesting.
_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=()), max_size=30) | st.sampled_from(
    ["", " ", "\u0000", "\ud800", "\ufeff", "NaN", "2026-11-01T10:00:00Z", "1e400", "-1", "user", "assistant"]
)
_scalar = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | _text
)
_json = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4), max_leaves=12)

_TRACE = {
    "trace_id": "t-1",
    "timestamp": "2026-11-01T10:00:00Z",
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "hi"}],
    "output": "ok",
    "input_tokens": 3,
    "output_tokens": 1,
    "metadata": {"task_type": "intent"},
}
_SPAN = {
    "name": "chat gpt-4o",
    "context": {"trace_id": "0xabc", "span_id": "0x01"},
    "start_time": "2026-11-01T10:00:00Z",
    "end_time": "2026-11-01T10:00:01Z",
    "attributes": {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "task_type": "intent"},
}
_OTLP = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bot"}}]},
            "scopeSpans": [
                {
                    "spans": [
                        {
                            "traceId": "5b8efff798038103d269b633813fc60c",
                            "spanId": "eee19b7ec3c1b174",
                            "name": "chat gpt-4o",
                            "startTimeUnixNano": "1793527200000000000",
                            "endTimeUnixNano": "1793527201000000000",
                            "attributes": [
                                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                                {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                            ],
                        }
                    ]
                }
            ],
        }
    ]
}
_LANGFUSE = {"id": "tr-1", "timestamp": "2026-11-01T10:00:00Z", "observations": [{"id": "o-1", "type": "GENERATION", "model": "gpt-4o", "input": "hi", "output": "ok"}]}
_BATCH = {"id": "b-1", "custom_id": "c-1", "response": {"status_code": 200, "body": {"model": "gpt-4o", "choices": [{"message": {"role": "assistant", "content": "ok"}}]}}}
_LITELLM = {"id": "l-1", "call_type": "completion", "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "response": {"choices": [{"message": {"content": "ok"}}]}, "startTime": "2026-11-01T10:00:00Z"}
TEMPLATES = [_TRACE, _SPAN, _OTLP, _LANGFUSE, _BATCH, _LITELLM]


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_paths(item, prefix + (key,)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_paths(item, prefix + (index,)))
    return found


def _replace(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copy


@st.composite
def mutated_record(draw: st.DrawFn) -> str:
    """A plausible record of some format with one value replaced by something hostile."""
    template = draw(st.sampled_from(TEMPLATES))
    path = draw(st.sampled_from(_paths(template)))
    record = _replace(template, path, draw(_json)) if draw(st.booleans()) else template
    return json.dumps(record, allow_nan=True, ensure_ascii=draw(st.booleans()))


_line = (
    mutated_record()
    | _json.map(lambda v: json.dumps(v, allow_nan=True))
    | st.text(max_size=60)
    | st.sampled_from([3, 99, 101, 130, 5000]).map(lambda d: '{"trace_id": "t-d", "metadata": ' + "[" * d + "]" * d + "}")
    | st.sampled_from(["", "   ", "{", '{"trace_id": "t-1"', "\x00\x00", "\ufeff{}", "[]", "null"])
)


def _line_bytes(line: str, raw: bytes | None) -> bytes:
    return raw if raw is not None else line.encode("utf-8", errors="surrogatepass")


@st.composite
def landing_file(draw: st.DrawFn) -> tuple[bytes, str]:
    """A file's bytes (lines of text or raw bytes, maybe without a last line break) and its suffix."""
    lines = draw(st.lists(st.tuples(_line, st.none() | st.binary(max_size=40)), max_size=12))
    body = b"\n".join(_line_bytes(line, raw if draw(st.integers(0, 9)) == 0 else None) for line, raw in lines)
    if draw(st.booleans()):
        body += b"\n"
    encoding = draw(st.sampled_from(["plain", "plain", "plain", "bom", "utf16"]))
    if encoding == "bom":
        body = b"\xef\xbb\xbf" + body
    elif encoding == "utf16":
        body = body.decode("utf-8", errors="replace").encode("utf-16")
    compression = draw(st.sampled_from(["", "", ".gz", ".zst", ".gz-cut"]))
    if compression == ".gz":
        body = gzip.compress(body)
    elif compression == ".zst":
        body = zstandard.ZstdCompressor().compress(body)
    elif compression == ".gz-cut":
        packed = gzip.compress(body)
        body, compression = packed[: max(len(packed) - draw(st.integers(1, 30)), 0)], ".gz"
    return body, ".jsonl" + compression


def _assert_accounted(result) -> None:
    summary = result.summary(include_sources=True)
    for scope in (summary, summary["traces"], summary["feedback"]):
        assert scope["records_in"] == scope["valid"] + scope["duplicates"] + scope["quarantined"] + scope["skipped"], scope
    assert set(result.quarantine["reason"]) <= set(QUARANTINE_REASONS)
    assert sum(sum(entry["records_in"].values()) for entry in summary["sources"]) == summary["records_in"]


def _ingest(tmp_path: Path, files: list[tuple[bytes, str]], source_format: str, config: IngestConfig):
    folder = tmp_path / f"case-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    sources = []
    for index, (data, suffix) in enumerate(files):
        path = folder / f"f{index}{suffix}"
        path.write_bytes(data)
        sources.append(SourceFile(str(path), path.name))
    return ingest(sources, config, PRICES, source_format=source_format)


@FUZZ
@given(files=st.lists(landing_file(), min_size=1, max_size=3), batch_bytes=st.sampled_from([1, 64, 1 << 20]))
def test_native_and_detected_reading_never_raises_and_accounts_for_every_record(tmp_path, files, batch_bytes):
    config = IngestConfig(read_batch_bytes=batch_bytes, max_record_bytes=2000)
    for source_format in ("auto", "native"):
        _assert_accounted(_ingest(tmp_path, files, source_format, config))


@FUZZ
@given(
    files=st.lists(landing_file(), min_size=1, max_size=2),
    source_format=st.sampled_from([name for name in FORMAT_CHOICES if name not in ("auto", "native")]),
)
def test_foreign_readers_never_raise_and_account_for_every_record(tmp_path, files, source_format):
    _assert_accounted(_ingest(tmp_path, files, source_format, IngestConfig(max_record_bytes=2000)))


@FUZZ
@given(lines=st.lists(mutated_record(), min_size=1, max_size=8))
def test_batch_size_never_changes_the_result(tmp_path, lines):
    data = ("\n".join(lines) + "\n").encode("utf-8", errors="surrogatepass")
    whole = _ingest(tmp_path, [(data, ".jsonl")], "native", IngestConfig())
    tiny = _ingest(tmp_path, [(data, ".jsonl")], "native", IngestConfig(read_batch_bytes=7))
    for got, want in ((tiny.traces, whole.traces), (tiny.feedback, whole.feedback), (tiny.quarantine, whole.quarantine)):
        assert got.drop("source_file").equals(want.drop("source_file"))
