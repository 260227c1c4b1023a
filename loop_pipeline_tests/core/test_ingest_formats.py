"""Foreign trace formats: every fixture ingested with exact field values, broken variants quarantined
with reasons, the accounting invariant across formats, auto-detection, overrides, mappings, OTLP's
two paths agreeing, the CLI."""

from __future__ import annotations

import copy
import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from loop_pipeline.cli import app
from loop_pipeline.bench.synthetic import synthetic_otlp_lines
from loop_pipeline.core.ingest import FORMAT_CHOICES, IngestConfig, SourceFile, discover, ingest
from loop_pipeline.core.ingest.formats import detect_format
from loop_pipeline.core.ingest.formats.mapping import FeedbackMapping, TaskTypeMapping
from loop_pipeline.config import ConfigError
from loop_pipeline.core.costs import PriceTable
from loop_pipeline.settings import REPO_ROOT
from loop_pipeline_tests.helpers import last_json_line

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
OTEL = FIXTURES / "otel-genai" / "examples-llm-calls.extracted.json"
OI = FIXTURES / "openinference"
LANGFUSE = FIXTURES / "langfuse"
FRAMEWORKS = LANGFUSE / "framework-traces"
MLFLOW = FIXTURES / "mlflow" / "trace_v3_generated_by_mlflow-skinny-3.17.2.json"
LITELLM = FIXTURES / "litellm"
BATCH = FIXTURES / "openai-batch"
UTC = dt.timezone.utc
START_NS = 1_793_527_200_000_000_000  # 2026-11-01T10:00:00Z
START = dt.datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
DEFAULT = IngestConfig()
PRICES = PriceTable.from_yaml(REPO_ROOT / "configs" / "prices.yaml")
MINI = PRICES.models["gpt-4o-mini"]
DROP = ["source_format", "source_file"]
JOKE = " Why did the developer bring OpenTelemetry to the party? Because it always knows how to trace the fun!"
PARIS = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": 'Absolutely! Let me check the weather for you.\n{"name": "get_weather", "arguments": {"location": "Paris"}}',
    },
    {"role": "tool", "content": "rainy, 57°F"},
]
PARIS_ANSWER = "The weather in Paris is currently rainy with a temperature of 57°F."

runner = CliRunner()


def run(paths: list[Path | str], config: IngestConfig = DEFAULT, **kwargs: Any):
    return ingest(discover([str(p) for p in paths]), config, PRICES, **kwargs)


def assert_accounting(summary: dict[str, Any]) -> None:
    for scope in (summary, summary["traces"], summary["feedback"]):
        assert scope["records_in"] == scope["valid"] + scope["duplicates"] + scope["quarantined"] + scope["skipped"], scope
        assert sum(scope["quarantined_by_reason"].values()) == scope["quarantined"], scope
        assert sum(scope["skipped_by_reason"].values()) == scope["skipped"], scope
    for key in ("records_in", "valid", "duplicates", "quarantined", "skipped"):
        assert summary[key] == summary["traces"][key] + summary["feedback"][key]
    assert sum(entry["records_in"] for entry in summary["formats"].values()) == summary["records_in"]


def row(frame: pl.DataFrame, trace_id: str) -> dict[str, Any]:
    found = frame.filter(pl.col("trace_id") == trace_id)
    assert found.height == 1, (trace_id, frame.get_column("trace_id").to_list())
    return found.row(0, named=True)


def reasons(result) -> list[tuple[str, str]]:
    return sorted(zip(result.quarantine["reason"], result.quarantine["detail"]))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, records: list[Any]) -> Path:
    return write(path, "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


# ---------------------------------------------------------------------------------------------
# Spans for the OTel tests: flat envelopes and OTLP/JSON export requests of the same spans


def span(
    attributes: dict[str, Any],
    trace_id: str,
    span_id: str,
    name: str = "chat gpt-4",
    offset_ms: int = 0,
    duration_ms: int = 1500,
    events: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A span in the OTel SDK's ``to_json`` shape, times in epoch nanoseconds."""
    start = START_NS + offset_ms * 1_000_000
    return {
        "name": name,
        "context": {"trace_id": f"0x{trace_id}", "span_id": f"0x{span_id}"},
        "parent_id": None,
        "start_time": start,
        "end_time": start + duration_ms * 1_000_000,
        "status": {"status_code": "UNSET"},
        "attributes": attributes,
        "events": events or [],
        "resource": {"attributes": {"service.name": "support-bot"}},
        **extra,
    }


def any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    return {"stringValue": json.dumps(value, ensure_ascii=False)}  # structured content: JSON text, as SDKs write it


def key_values(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "value": any_value(value)} for key, value in attributes.items()]


def otlp_request(spans: list[dict[str, Any]]) -> dict[str, Any]:
    """Flat spans (as :func:`span` makes them) as one OTLP/JSON export request."""
    out = []
    for flat in spans:
        out.append(
            {
                "traceId": flat["context"]["trace_id"][2:],
                "spanId": flat["context"]["span_id"][2:],
                "parentSpanId": "",
                "name": flat["name"],
                "kind": 3,
                "startTimeUnixNano": str(flat["start_time"]),
                "endTimeUnixNano": str(flat["end_time"]),
                "attributes": key_values(flat["attributes"]),
                "events": [
                    {"timeUnixNano": str(e["timestamp"]), "name": e["name"], "attributes": key_values(e["attributes"])}
                    for e in flat["events"]
                ],
                "status": {"code": 2 if flat["status"]["status_code"] == "ERROR" else 0},
            }
        )
    resource = {"attributes": key_values(spans[0]["resource"]["attributes"])} if spans else {"attributes": []}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {"name": "test"}, "spans": out}]}]}


def spec_spans() -> list[dict[str, Any]]:
    """The OTel spec's example spans, each with its own test ids (the spec reuses one pair); an
    example of kind "Event" (content on an event) becomes the details event of the span before it."""
    examples = json.loads(OTEL.read_text(encoding="utf-8"))["examples"]
    spans: list[dict[str, Any]] = []
    for number, example in enumerate(examples, start=1):
        properties = dict(example["properties"])
        name = properties.pop("Span name", None)
        properties.pop("Trace id", None)
        properties.pop("Span id", None)
        if example["kind"] == "Event":
            spans[-1]["events"].append(
                {
                    "name": "gen_ai.client.inference.operation.details",
                    "timestamp": spans[-1]["end_time"],
                    "attributes": properties,
                }
            )
            continue
        spans.append(span(properties, f"{number:032x}", f"{number:016x}", name=name, offset_ms=number))
    return spans


# ---------------------------------------------------------------------------------------------
# 1. OpenTelemetry GenAI: the spec's examples, flat and as OTLP/JSON


@pytest.mark.parametrize("shape", ["otel", "otlp"])
def test_otel_spec_examples_exact_values(tmp_path, shape):
    spans = spec_spans()
    if shape == "otel":
        path = jsonl(tmp_path / "spans.jsonl", spans)
    else:
        path = jsonl(tmp_path / "export.jsonl", [otlp_request([s]) for s in spans])

    result = run([path])
    summary = result.summary()

    assert summary["formats"].keys() == {shape}
    ids = {f"{n:016x}": n for n in range(1, 15)}
    by_example = {ids[t]: r for t, r in zip(result.traces["trace_id"], result.traces.iter_rows(named=True))}
    # Chat with content on span attributes (2), on an event (3), tool call / tool result (8, 10),
    # system instructions (11), reasoning (12), built-in tools (13), two choices (14).
    assert sorted(by_example) == [2, 3, 8, 10, 11, 12, 13, 14]
    simple = by_example[2]
    assert simple["model"] == "gpt-4-0613" and simple["provider"] == "openai"
    assert (simple["input_tokens"], simple["output_tokens"]) == (52, 47)
    assert simple["messages"] == [
        {"role": "system", "content": "You are a helpful bot"},
        {"role": "user", "content": "Tell me a joke about OpenTelemetry"},
    ]
    assert simple["output"] == JOKE
    assert simple["app"] == "support-bot"
    assert simple["timestamp"] == START + dt.timedelta(milliseconds=2)
    assert simple["latency_ms"] == 1500.0
    assert simple["cost_usd"] is None and simple["cost_source"] is None  # no price for gpt-4-0613
    assert json.loads(simple["metadata"]) == {
        "source_trace_id": f"{2:032x}",
        "span_id": f"{2:016x}",
        "parent_span_id": None,
        "span_name": "chat gpt-4",
        "operation": "chat",
        "response_id": "chatcmpl-9J3uIL87gldCFtiIbyaOvTeYBRA3l",
        "request_model": "gpt-4",
    }
    assert simple["source_format"] == shape and simple["source_file"] == str(path)
    assert {k: by_example[3][k] for k in ("messages", "output")} == {k: simple[k] for k in ("messages", "output")}
    assert by_example[8]["messages"] == [{"role": "user", "content": "Weather in Paris?"}]
    assert by_example[8]["output"] == '{"name": "get_weather", "arguments": {"location": "Paris"}}'
    assert by_example[10]["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": '{"name": "get_weather", "arguments": {"location": "Paris"}}'},
        {"role": "tool", "content": "rainy, 57°F"},
    ]
    assert by_example[10]["output"] == "The weather in Paris is currently rainy with a temperature of 57°F."
    assert (by_example[10]["input_tokens"], by_example[10]["output_tokens"]) == (97, 52)
    assert by_example[11]["messages"][0] == {"role": "system", "content": "You must never tell jokes"}
    assert by_example[11]["output"] == "I'm sorry, but I can't assist with that"
    assert by_example[12]["output"] == JOKE  # the reasoning part is not the answer
    assert by_example[13]["output"] == "The generated random number is **89**, and the result of squaring it is **7921**"
    assert by_example[14]["output"] == JOKE and by_example[14]["output_tokens"] == 77  # the first choice
    # Content capture off: a call without messages cannot become a trace.
    assert reasons(result) == [("missing_field", "messages: required, at least one message")] * 3
    assert sorted(result.quarantine["record_id"].to_list()) == [f"{n:016x}" for n in (1, 5, 7)]
    assert summary["traces"]["skipped_by_reason"] == {"tool_span": 2}
    assert_accounting(summary)


@pytest.mark.parametrize("shape", ["otel", "otlp"])
def test_deprecated_otel_content_forms(tmp_path, shape):
    """OpenLLMetry-style indexed prompt / completion attributes and the old per-message events."""
    indexed = span(
        {
            "gen_ai.system": "openai",
            "llm.request.type": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.prompt_tokens": 30,
            "gen_ai.usage.completion_tokens": 2,
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "Classify the intent.",
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": "I lost my card",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "report_lost_card",
        },
        "1" * 32,
        "1" * 16,
    )
    events = span(
        {"gen_ai.system": "openai", "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"},
        "2" * 32,
        "2" * 16,
        events=[
            {"name": "gen_ai.system.message", "timestamp": START_NS, "attributes": {"content": "Classify the intent."}},
            {"name": "gen_ai.user.message", "timestamp": START_NS, "attributes": {"content": "I lost my card"}},
            {"name": "gen_ai.choice", "timestamp": START_NS, "attributes": {"message": json.dumps({"role": "assistant", "content": "report_lost_card"})}},
        ],
    )
    path = jsonl(tmp_path / "spans.jsonl", [indexed, events] if shape == "otel" else [otlp_request([indexed, events])])

    result = run([path])

    assert result.traces.height == 2, reasons(result)
    for record in result.traces.iter_rows(named=True):
        assert record["source_format"] == shape and record["provider"] == "openai"
        assert record["messages"] == [
            {"role": "system", "content": "Classify the intent."},
            {"role": "user", "content": "I lost my card"},
        ]
        assert record["output"] == "report_lost_card"
    first = row(result.traces, "1" * 16)
    assert (first["input_tokens"], first["output_tokens"]) == (30, 2)
    assert first["cost_usd"] == pytest.approx((30 * MINI.input_per_mtok + 2 * MINI.output_per_mtok) / 1e6)
    assert first["cost_source"] == "computed"


def test_otlp_fast_path_matches_the_per_span_path(tmp_path):
    """Plain spans go the vectorized way, the rest span by span: both must give the same rows."""
    lines = synthetic_otlp_lines(300, bad_rate=0.05, seed=3).to_list()
    flat: list[str] = []
    for line in lines:
        try:
            request = json.loads(line)
        except ValueError:
            flat.append(line)
            continue
        resource_spans = request["resourceSpans"][0]
        for item in resource_spans["scopeSpans"][0]["spans"]:
            item = dict(item, resource={"attributes": resource_spans["resource"]["attributes"]})
            flat.append(json.dumps(item))
    otlp = write(tmp_path / "export.jsonl", "\n".join(lines) + "\n")
    spans = write(tmp_path / "spans.jsonl", "\n".join(flat) + "\n")

    fast = run([otlp])
    slow = run([spans], source_format="otel")

    assert fast.traces.height > 250 and fast.feedback.height > 20
    assert fast.traces.drop(DROP).equals(slow.traces.drop(DROP))
    assert fast.feedback.drop(DROP).equals(slow.feedback.drop(DROP))
    assert fast.quarantine.drop(DROP + ["raw"]).equals(slow.quarantine.drop(DROP + ["raw"]))
    assert set(fast.quarantine["reason"]) == {"malformed_json", "negative_value", "wrong_type", "missing_field"}
    first = fast.traces.row(0, named=True)
    assert first["task_type"] == "intent"  # the task_type attribute, through the default rule
    assert first["cost_source"] == "computed" and first["cost_usd"] > 0
    assert fast.feedback["kind"].unique().to_list() == ["judge_score"]
    assert set(fast.feedback["trace_id"]) <= set(fast.traces["trace_id"])


def test_otlp_mixes_fast_and_per_span_lines_and_slices(tmp_path):
    """One file: plain lines, lines needing the per-span path (deprecated attributes, tool parts,
    OpenInference keys, a kvlist value) and broken lines; any slice size gives the same result."""
    deprecated = json.loads((OI / "otel_genai_deprecated_client_span_tool_calls.json").read_text())
    requests = [
        *[json.loads(line) for line in synthetic_otlp_lines(6, seed=1).to_list()],
        otlp_request([span(deprecated, "a" * 32, "a" * 16)]),
        otlp_request(spec_spans()[7:10]),  # tool call parts, an execute_tool span
        otlp_request([span({"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", "input.value": "hi", "output.value": "hello"}, "b" * 32, "b" * 16)]),
    ]
    nested = otlp_request([span({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}, "c" * 32, "c" * 16)])
    nested["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"][1]["value"] = {"kvlistValue": {"values": []}}
    lines = [json.dumps(r) for r in requests] + [json.dumps(nested), '{"resourceSpans": [{"scopeSpans": [', '{"something": "else"}']
    path = write(tmp_path / "export.jsonl", "\n".join(lines) + "\n")

    whole = run([path])
    small = run([path], config=IngestConfig(decode_slice_rows=2))
    one = run([path], config=IngestConfig(decode_slice_rows=1))

    for other in (small, one):
        assert other.traces.equals(whole.traces)
        assert other.quarantine.equals(whole.quarantine)
        assert other.summary() == whole.summary()
    deprecated_row = row(whole.traces, "a" * 16)
    assert deprecated_row["messages"] == PARIS and deprecated_row["output"] == PARIS_ANSWER
    # An OpenInference span inside OTLP (Phoenix exporting over OTLP) is read as OpenInference.
    phoenix = row(whole.traces, "b" * 16)
    assert (phoenix["model"], phoenix["messages"], phoenix["output"]) == ("gpt-4o", [{"role": "user", "content": "hi"}], "hello")
    assert phoenix["source_format"] == "otlp"
    assert row(whole.traces, f"{10:016x}")["messages"][1] == {
        "role": "assistant",
        "content": '{"name": "get_weather", "arguments": {"location": "Paris"}}',
    }
    assert whole.traces.height == 6 + 4
    assert whole.summary()["traces"]["skipped_by_reason"] == {"tool_span": 1}
    assert reasons(whole) == [
        ("malformed_json", "Expecting value at character 35"),
        ("missing_field", "resourceSpans: required (not an OTLP/JSON trace export request)"),
        ("wrong_type", "gen_ai.request.model: expected a string or number, got object"),
    ]
    assert_accounting(whole.summary())


# ---------------------------------------------------------------------------------------------
# 2. The OpenInference fixture pairs: the same call in four attribute dialects


PAIR_FILES = {
    "openinference_client_span_tool_calls.json": "openinference",
    "openinference_client_span_input_output_only.json": "openinference",
    "otel_genai_client_span_tool_calls.json": "otel",
    "otel_genai_deprecated_client_span_tool_calls.json": "otel",
}


def test_same_call_in_four_attribute_dialects_gives_one_canonical_row(tmp_path):
    for number, name in enumerate(PAIR_FILES, start=1):
        attributes = json.loads((OI / name).read_text(encoding="utf-8"))
        jsonl(tmp_path / name.replace(".json", ".jsonl"), [span(attributes, f"{number:032x}", f"{number:016x}")])
    jsonl(tmp_path / "tool.jsonl", [span(json.loads((OI / "otel_genai_tool_execution_span.json").read_text()), "9" * 32, "9" * 16, name="execute_tool get_weather")])

    result = run([tmp_path])

    assert result.traces.height == 4
    assert dict(zip(result.traces["trace_id"], result.traces["source_format"])) == {
        f"{n:016x}": fmt for n, fmt in enumerate(PAIR_FILES.values(), start=1)
    }
    for record in result.traces.iter_rows(named=True):
        assert record["model"] == "gpt-4-0613"
        assert record["provider"] == "openai"
        assert (record["input_tokens"], record["output_tokens"]) == (97, 52)
        assert record["messages"] == PARIS
        assert record["output"] == PARIS_ANSWER
        assert record["timestamp"] == START and record["latency_ms"] == 1500.0
    assert result.summary()["traces"]["skipped_by_reason"] == {"tool_span": 1}


def test_bare_attribute_objects_have_no_ids_and_are_quarantined():
    result = run([OI / name for name in PAIR_FILES] + [OI / "otel_genai_tool_execution_span.json"])

    assert result.traces.height == 0
    assert reasons(result) == [("missing_field", "trace id: required (span context)")] * 4
    summary = result.summary()
    assert summary["formats"] == {
        "openinference": {"files": 2, "records_in": 2, "traces": 0, "feedback": 0, "quarantined": 2, "skipped": 0},
        "otel": {"files": 3, "records_in": 3, "traces": 0, "feedback": 0, "quarantined": 2, "skipped": 1},
    }
    assert_accounting(summary)


def test_openinference_spec_llm_spans():
    result = run([OI / "llm_spans_examples_from_spec.json"])
    summary = result.summary()

    assert summary["formats"]["openinference"]["traces"] == 3
    chat = row(result.traces, "01fa9612-01b8-4358-85d6-e3e067305ec3")
    assert chat["model"] == "gpt-3.5-turbo-0613" and chat["provider"] == "openai"
    assert (chat["input_tokens"], chat["output_tokens"]) == (229, 21)
    assert chat["messages"][1] == {"role": "user", "content": "what is 23 times 87"}
    assert chat["messages"][0]["role"] == "system" and chat["messages"][0]["content"].startswith("You are a Shakespearean")
    assert chat["output"] == '{"name": "multiply", "arguments": {"a": 23, "b": 87}}'
    assert chat["timestamp"] == dt.datetime(2024, 1, 11, 23, 45, 17, 982858, tzinfo=UTC)
    assert chat["cost_usd"] == pytest.approx((229 * 0.5 + 21 * 1.5) / 1e6)  # computed: gpt-3.5-turbo prices
    assert chat["cost_source"] == "computed"
    answer = row(result.traces, "f26d1f26-9671-435d-9716-14a87a3f228b")
    assert answer["output"] == "The product of 23 times 87 is 2001."
    assert answer["messages"][2:] == [
        {"role": "assistant", "content": '{"name": "multiply", "arguments": {"a": 23, "b": 87}}'},
        {"role": "tool", "content": "2001"},
    ]
    assert answer["latency_ms"] == pytest.approx(639.718)
    assert json.loads(answer["metadata"])["source_trace_id"] == "409df945-e058-4829-b240-cfbdd2ff4488"
    completion = row(result.traces, "87654321-4321-8765-4321-876543218765")
    assert completion["model"] == "babbage:2023-07-21-v2"
    assert completion["messages"] == [{"role": "user", "content": "def fib(n):\n    if n <= 1:\n        return n\n    else:\n        return fib(n-1) + fib(n-2)"}]
    assert completion["output"] == " + fib(n-3) + fib(n-4)\n\ndef fib(n):\n    if n <= 1:\n        return"
    # The four attribute-only snippets have no ids; the bare message snippet is not a span.
    assert reasons(result) == [("missing_field", "trace id: required (span context)")] * 4
    assert summary["traces"]["skipped_by_reason"] == {"other_span": 1}
    assert_accounting(summary)


def test_openinference_annotations_become_feedback(tmp_path):
    snippets = json.loads((OI / "annotation_examples_from_spec.json").read_text(encoding="utf-8"))
    trace_id = "80f198ee56343ba864fe8b2a57d3eff7"
    call = span(
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o-mini",
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": "Which city hosts the Louvre?",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": "Paris.",
            "llm.token_count.prompt": 12,
            "llm.token_count.completion": 2,
            "llm.cost.total": 0.0001,
            "session.id": "session-123",
            "user.id": "user-7",
            "tag.tags": ["geo", "faq"],
            "metadata": json.dumps({"task_type": "qa"}),
        },
        trace_id,
        "e457b5a2e4d86bd1",
        name="ChatCompletion",
    )
    spans = [call]
    for number, snippet in enumerate(snippets, start=1):
        # The spec's snippets, given the ids and times a real span has (same trace as the call).
        spans.append(
            span(
                snippet.get("attributes", {}),
                trace_id,
                f"{number:016x}",
                name=snippet.get("name", "step"),
                offset_ms=-100,
                events=[dict(e, timestamp=START_NS + 5_000_000_000) for e in snippet.get("events", [])],
                links=snippet.get("links", []),
            )
        )
    path = jsonl(tmp_path / "phoenix.jsonl", spans)

    result = run([path], source_format="openinference")

    traced = row(result.traces, "e457b5a2e4d86bd1")
    assert traced["messages"] == [{"role": "user", "content": "Which city hosts the Louvre?"}]
    assert traced["output"] == "Paris."
    assert (traced["cost_usd"], traced["cost_source"]) == (0.0001, "reported")
    assert (traced["user_id"], traced["session_id"], traced["task_type"]) == ("user-7", "session-123", "qa")
    # Every annotation is about the call: on its trace, its session, or linked from an evaluator.
    assert set(result.feedback["trace_id"]) == {"e457b5a2e4d86bd1"}
    assert result.feedback.select("source_record", "kind", "value", "label", "source", "annotator_id").rows() == [
        (2, "hallucination", 1.0, "hallucinated", "llm", "judge-v2"),  # annotations.0 on a CHAIN span
        (3, "hallucination", 1.0, "hallucinated", "llm", None),  # evaluations.0 (older name)
        (4, "judge_score", 0.92, "retrieval_quality", "code", None),  # trace.annotations
        (4, "human_label", None, "coherent", "human_reviewer", None),  # session.annotations
        (5, "hallucination", 1.0, "hallucinated", "human_reviewer", None),  # EVALUATOR span, via its link
        (6, "hallucination", 1.0, "hallucinated", "llm", None),  # a gen_ai.evaluation.result event
    ]
    assert result.feedback.height == 6
    assert result.summary()["traces"]["skipped_by_reason"] == {"agent_span": 1, "other_span": 4}
    assert_accounting(result.summary())


def test_openinference_annotation_snippets_without_ids_or_times_are_quarantined():
    result = run([OI / "annotation_examples_from_spec.json"])

    quarantined = result.quarantine.filter(pl.col("record_kind") == "feedback")
    assert quarantined.height == 6 and result.feedback.height == 0
    assert set(quarantined["reason"]) == {"missing_field"}
    assert set(quarantined["detail"]) == {"trace_id: required", "timestamp: required"}
    assert_accounting(result.summary())


# ---------------------------------------------------------------------------------------------
# 3. Langfuse


# file -> (valid traces, quarantined traces, skipped by reason, feedback)
LANGFUSE_COUNTS = {
    "agno-2025-06-11.json": (4, 0, {"other_span": 2}, 0),
    "autogen-2025-06-06.json": (1, 0, {"other_span": 1}, 0),
    "beeai-2025-08-01.json": (0, 5, {"other_span": 24}, 2),
    "google-adk-2025-08-28.json": (2, 0, {"agent_span": 2, "tool_span": 1}, 2),
    "google-gemini-2025-08-01.json": (1, 0, {}, 2),
    "google-vertex-tools-langchain-2025-09-19.json": (1, 0, {}, 0),
    "koog-2025-08-26.json": (2, 0, {"agent_span": 2, "other_span": 7}, 0),
    "langgraph-2025-08-22.json": (2, 0, {"other_span": 7}, 2),
    "llamaindex-2025-06-05.json": (1, 0, {"other_span": 1}, 0),
    "microsoft-agent-2025-10-14.json": (2, 0, {"agent_span": 1, "tool_span": 1}, 2),
    "openai-agents-2025-09-30.json": (2, 0, {"agent_span": 2, "tool_span": 1}, 2),
    "openai-assistants-2024-05-29.json": (1, 0, {"other_span": 3}, 0),
    "pydantic-ai-tools-2025-12-04.json": (4, 0, {"other_span": 5, "tool_span": 3}, 0),
}


@pytest.mark.parametrize("name", sorted(LANGFUSE_COUNTS))
def test_langfuse_framework_exports(name):
    result = run([FRAMEWORKS / name])
    summary = result.summary()
    valid, quarantined, skipped, feedback = LANGFUSE_COUNTS[name]

    assert summary["formats"].keys() == {"langfuse"}
    assert summary["traces"]["valid"] == valid
    assert summary["traces"]["quarantined"] == quarantined
    assert summary["traces"]["skipped_by_reason"] == skipped
    assert summary["feedback"]["valid"] == feedback
    assert set(result.traces["cost_source"]) <= {"reported"}
    assert_accounting(summary)


def test_langfuse_exact_values():
    result = run(sorted(FRAMEWORKS.glob("*.json")))

    autogen = row(result.traces, "83517f9062f5ada4")
    assert autogen["model"] == "gpt-4o"
    assert (autogen["input_tokens"], autogen["output_tokens"]) == (41, 3)
    assert (autogen["cost_usd"], autogen["cost_source"]) == (2.5e-05, "reported")
    # The observation's input is a rendered transcript ("system: ...\nuser: ...").
    assert autogen["messages"] == [
        {"role": "system", "content": "You are a helpful AI assistant. Solve tasks using your tools. Reply with TERMINATE when the task has been completed."},
        {"role": "user", "content": "Say 'Hello World!'"},
    ]
    assert autogen["output"] == "Hello World!"
    assert (autogen["user_id"], autogen["session_id"]) == ("user_123", "session_abc")
    assert autogen["timestamp"] == dt.datetime(2025, 6, 6, 11, 31, 33, 978000, tzinfo=UTC)
    assert autogen["latency_ms"] == 628.0
    metadata = json.loads(autogen["metadata"])
    assert metadata["source_trace_id"] == "1b72c51fabed12ae7df83bfd4a09f545"
    assert (metadata["trace_name"], metadata["tags"]) == ("autogen-chat-trace", ["autogen", "dev"])

    gemini = row(result.traces, "b7a63ca7e1d083bc")
    assert gemini["model"] == "gemini-2.5-flash"
    assert (gemini["input_tokens"], gemini["output_tokens"]) == (6, 2055)
    assert gemini["cost_usd"] == 0.005139299999
    assert gemini["messages"] == [{"role": "user", "content": "What is Langfuse?"}]
    assert gemini["output"].startswith("**Langfuse** is an **open-source observability and evaluation platform")

    agents = row(result.traces, "90d94774e8e3724d")  # OpenAI Responses API input items and output
    assert agents["messages"] == [
        {"role": "user", "content": "What's the weather in Tokyo?"},
        {"role": "assistant", "content": '{"name": "get_weather", "arguments": {"city": "Tokyo"}}'},
        {"role": "tool", "content": "The weather in Tokyo is sunny."},
    ]
    assert agents["output"].startswith("The weather in Tokyo is currently sunny.")
    assert row(result.traces, "98870087af69bf06")["output"] == '{"name": "get_weather", "arguments": {"city": "Tokyo"}}'

    microsoft = row(result.traces, "3c2d6f2f26930c50")
    assert microsoft["output"] == "The weather in Portland is currently stormy with a high temperature of 19°C."

    feedback = result.feedback
    # Trace-level scores go to the trace's last generation.
    langgraph = feedback.filter(pl.col("trace_id") == "5ba09605e0929d78").sort("label")
    assert langgraph.select("kind", "value", "label", "source").rows() == [
        ("hallucination", 0.1, "hallucination", "llm"),
        ("judge_score", 1.0, "toxicity", "llm"),  # toxicity 0: inverted, higher is better
    ]
    agents_toxicity = feedback.filter((pl.col("trace_id") == "90d94774e8e3724d") & (pl.col("label") == "toxicity"))
    assert agents_toxicity["value"].to_list() == [pytest.approx(0.2)]
    microsoft_hallucination = feedback.filter((pl.col("trace_id") == "3c2d6f2f26930c50") & (pl.col("kind") == "hallucination"))
    assert microsoft_hallucination["value"].to_list() == [1.0]
    assert microsoft_hallucination["feedback_id"].to_list() != [None]
    # beeai's generations all lack input or output; its scores go to the last of them anyway.
    assert set(feedback.filter(pl.col("timestamp").dt.date() == dt.date(2025, 8, 1)).filter(pl.col("label") == "toxicity")["trace_id"]) >= {"b7b9a79830fe5c6b"}
    assert_accounting(result.summary())


def test_langfuse_ingestion_batches():
    result = run([LANGFUSE / "ingestion_examples_from_spec.json", LITELLM / "langfuse_ingestion_request_body_completion.json"])

    litellm = row(result.traces, "time-11-28-54-796360_chatcmpl-521e530f-5e29-4d0a-8d1a-58fca0a847c2")
    assert litellm["model"] == "gpt-3.5-turbo"
    assert (litellm["input_tokens"], litellm["output_tokens"]) == (10, 20)
    assert (litellm["cost_usd"], litellm["cost_source"]) == (5.4999999999999995e-05, "reported")
    assert litellm["messages"] == [{"role": "user", "content": "Hello!"}]
    assert litellm["output"] == "Hello! How can I assist you today?"
    assert litellm["timestamp"] == dt.datetime(2025, 1, 16, 19, 28, 54, 796360, tzinfo=UTC)
    assert litellm["latency_ms"] == pytest.approx(327.993)
    assert json.loads(litellm["metadata"])["source_trace_id"] == "litellm-test-793c217f-9417-4e77-84a7-8dcc16e5b72b"
    score = result.feedback.row(0, named=True)
    assert (score["trace_id"], score["kind"], score["value"], score["label"], score["source"]) == (
        "1234-5678-90ab-cdef",  # no generation of that trace here: the Langfuse trace id stays
        "judge_score",
        0.9,
        "My Score",
        "code",
    )
    assert score["feedback_id"] == "abcdef-1234-5678-90ab"
    assert result.summary()["traces"]["skipped_by_reason"] == {"other_span": 1}
    assert_accounting(result.summary())


def test_langfuse_scores_data_types_and_updates(tmp_path):
    batch = {
        "batch": [
            {"type": "trace-create", "body": {"id": "t-1", "name": "classify", "userId": "u-1", "tags": ["intent"]}},
            {
                "type": "generation-create",
                "body": {"id": "g-1", "traceId": "t-1", "startTime": "2026-11-01T10:00:00Z", "model": "gpt-4o-mini", "input": [{"role": "user", "content": "my card was declined"}]},
            },
            {
                "type": "generation-update",
                "body": {"id": "g-1", "endTime": "2026-11-01T10:00:00.400Z", "output": {"role": "assistant", "content": "card_declined"}, "usageDetails": {"input": 1000, "output": 200}},
            },
            {
                "type": "score-create",
                "body": {"id": "s-1", "traceId": "t-1", "observationId": "g-1", "name": "user_feedback", "value": 1, "dataType": "BOOLEAN", "source": "API"},
                "timestamp": "2026-11-01T10:01:00Z",
            },
            {"type": "score-create", "body": {"id": "s-2", "traceId": "t-1", "name": "intent", "value": "card_declined", "dataType": "CATEGORICAL", "source": "ANNOTATION", "authorUserId": "rev-1"}, "timestamp": "2026-11-02T09:00:00Z"},
            {"type": "score-create", "body": {"id": "s-3", "traceId": "t-1", "name": "note", "value": "looks fine", "dataType": "TEXT"}, "timestamp": "2026-11-02T09:00:00Z"},
            {"type": "score-create", "body": {"id": "s-4", "traceId": "t-1", "name": "correct", "value": "yes", "dataType": "CATEGORICAL", "source": "EVAL"}, "timestamp": "2026-11-02T09:00:00Z"},
            {"type": "sdk-log", "body": {"log": "flushed"}},
        ]
    }
    path = jsonl(tmp_path / "batch.jsonl", [batch])

    result = run([path])

    call = row(result.traces, "g-1")
    assert call["output"] == "card_declined" and call["latency_ms"] == 400.0
    assert call["cost_usd"] == (1000 * MINI.input_per_mtok + 200 * MINI.output_per_mtok) / 1e6
    assert call["cost_source"] == "computed"
    assert call["user_id"] == "u-1"
    feedback = {r["feedback_id"]: r for r in result.feedback.iter_rows(named=True)}
    assert (feedback["s-1"]["kind"], feedback["s-1"]["value"], feedback["s-1"]["source"]) == ("thumbs", 1.0, "user")
    review = feedback["s-2"]
    assert (review["kind"], review["value"], review["label"], review["source"], review["annotator_id"]) == (
        "human_label",
        None,
        "card_declined",
        "human_reviewer",
        "rev-1",
    )
    assert (feedback["s-4"]["kind"], feedback["s-4"]["value"], feedback["s-4"]["source"]) == ("judge_score", 1.0, "llm")
    assert set(result.feedback["trace_id"]) == {"g-1"}
    summary = result.summary()
    assert summary["feedback"]["skipped_by_reason"] == {"unmapped_feedback": 1}  # the TEXT score
    assert summary["traces"]["records_in"] == 1  # create + update are one observation
    assert_accounting(summary)


# ---------------------------------------------------------------------------------------------
# 4. MLflow, LiteLLM, OpenAI Batch


def test_mlflow_trace_and_assessments():
    result = run([MLFLOW])

    call = row(result.traces, "b0c548edee0626df")  # base64 span id "sMVI7e4GJt8=" as hex
    assert call["model"] == "gpt-4o-mini"
    assert (call["input_tokens"], call["output_tokens"]) == (41, 1)
    assert call["messages"] == [
        {"role": "system", "content": "Classify the banking/assistant request into one of 150 intents, or 'oos'."},
        {"role": "user", "content": "how much has the dow changed today"},
    ]
    assert call["output"] == "oos"
    assert (call["cost_usd"], call["cost_source"]) == ((41 * MINI.input_per_mtok + 1 * MINI.output_per_mtok) / 1e6, "computed")
    assert call["timestamp"] == dt.datetime(2026, 11, 28, 6, 32, 36, 506975, tzinfo=UTC)
    assert call["latency_ms"] == pytest.approx(12.071276)
    metadata = json.loads(call["metadata"])
    assert (metadata["source_trace_id"], metadata["trace_name"], metadata["experiment_id"]) == (
        "tr-b3a880ff7993a64e3bebfe7deeddc9fe",
        "classify_intent",
        "741947775696195980",
    )
    feedback = {r["feedback_id"]: r for r in result.feedback.iter_rows(named=True)}
    assert set(result.feedback["trace_id"]) == {"b0c548edee0626df"}
    expectation = feedback["a-b81b362a8f76418ab7d89136e3f8cfb1"]
    assert (expectation["kind"], expectation["label"], expectation["value"], expectation["source"], expectation["annotator_id"]) == (
        "human_label",
        "oos",
        None,
        "human_reviewer",
        "annotator_7",
    )
    judge = feedback["a-eb22c65594dc49c1a0fc4915d9b8bff1"]
    assert (judge["kind"], judge["value"], judge["label"], judge["source"], judge["annotator_id"]) == ("judge_score", 1.0, "yes", "llm", "judge-v1")
    thumbs = feedback["a-c9944e8b96a840afb7ac435219e7030e"]
    assert (thumbs["kind"], thumbs["value"], thumbs["source"], thumbs["annotator_id"]) == ("thumbs", 1.0, "user", "user_123")
    assert thumbs["timestamp"] == dt.datetime(2026, 11, 28, 6, 32, 36, 534000, tzinfo=UTC)
    assert_accounting(result.summary())


def test_litellm_payloads():
    result = run([LITELLM / "standard_logging_payload.json", LITELLM / "spend_logs_payload.json"])

    call = row(result.traces, "chatcmpl-2299b6a2-82a3-465a-b47c-04e685a2227f")
    assert (call["model"], call["provider"]) == ("gpt-4o", "openai")
    assert (call["input_tokens"], call["output_tokens"]) == (10, 20)
    assert (call["cost_usd"], call["cost_source"]) == (0.00022500000000000002, "reported")
    assert call["messages"] == [{"role": "user", "content": "Hello, world!"}]
    assert call["output"] == "hi"
    assert call["timestamp"] == dt.datetime(2025, 1, 24, 9, 20, 46, 847371, tzinfo=UTC)
    assert call["latency_ms"] == pytest.approx(4.583)
    # SpendLogs written without prompts ("messages": "{}") cannot become a trace.
    quarantined = result.quarantine.row(0, named=True)
    assert (quarantined["reason"], quarantined["detail"], quarantined["record_id"]) == (
        "missing_field",
        "messages: required, at least one message",
        "chatcmpl-2283081b-dc89-41f6-93e6-d4f914774027",
    )
    assert result.summary()["formats"]["litellm"]["files"] == 2
    assert_accounting(result.summary())


def test_openai_batch_output_joins_its_input_beside_it(tmp_path):
    folder = tmp_path / "batch"
    folder.mkdir()
    shutil.copy(BATCH / "batch_output_sample.jsonl", folder / "output.jsonl")
    shutil.copy(BATCH / "batch_job_results_furniture.jsonl", folder / "input.jsonl")

    result = run([folder])

    first = row(result.traces, "batch_req_6769ca596b38819093d7ae9f522de924")
    assert first["model"] == "gpt-4o-mini-2024-07-18" and first["provider"] == "openai"
    assert first["messages"] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello world!"},
    ]
    assert first["output"] == "Hello! How can I assist you today?"
    assert (first["input_tokens"], first["output_tokens"]) == (20, 10)
    assert first["cost_usd"] == pytest.approx((20 * MINI.input_per_mtok + 10 * MINI.output_per_mtok) / 1e6 * 0.5)  # Batch: half price
    assert first["cost_source"] == "computed"
    assert first["timestamp"] == dt.datetime(2024, 12, 23, 20, 36, 42, tzinfo=UTC)
    assert json.loads(first["metadata"])["custom_id"] == "request-1"
    second = row(result.traces, "batch_req_6769ca597e588190920666612634e2b4")
    assert second["messages"][0] == {"role": "system", "content": "You are an unhelpful assistant."}
    assert json.loads(second["metadata"])["finish_reason"] == "length"
    summary = result.summary()
    assert summary["traces"]["skipped_by_reason"] == {"batch_request": 2}  # the input file's request lines
    assert_accounting(summary)


def test_openai_batch_join_needs_the_input(tmp_path):
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(BATCH / "batch_output_sample.jsonl", alone / "output.jsonl")
    elsewhere = tmp_path / "inputs"
    elsewhere.mkdir()
    shutil.copy(BATCH / "batch_job_results_furniture.jsonl", elsewhere / "requests.jsonl")

    missing = run([alone])
    named = run([alone], batch_inputs=[str(elsewhere / "requests.jsonl")])

    assert missing.traces.height == 0
    assert set(missing.quarantine["reason"]) == {"missing_field"}
    assert all("--batch-input" in detail for detail in missing.quarantine["detail"])
    assert named.traces.height == 2 and named.quarantine.height == 0

    requests = [json.loads(line) for line in (BATCH / "batch_job_results_furniture.jsonl").read_text().splitlines() if line.strip()]
    jsonl(alone / "input.jsonl", requests)
    changed = copy.deepcopy(requests)
    changed[0]["body"]["messages"][1]["content"] = "Hello other world!"
    jsonl(alone / "other_input.jsonl", changed)
    ambiguous = run([alone / "output.jsonl"])
    assert ambiguous.quarantine.select("record_id", "reason").rows() == [("batch_req_6769ca596b38819093d7ae9f522de924", "invalid_value")]
    assert ambiguous.traces["trace_id"].to_list() == ["batch_req_6769ca597e588190920666612634e2b4"]


# ---------------------------------------------------------------------------------------------
# 5. Broken variants of every format


def _langfuse_generation(**changes: Any) -> dict[str, Any]:
    body = {
        "id": "g-1",
        "traceId": "t-1",
        "type": "GENERATION",
        "startTime": "2026-11-01T10:00:00Z",
        "model": "gpt-4o",
        "input": [{"role": "user", "content": "hi"}],
        "output": "hello",
        "usageDetails": {"input": 3, "output": 1},
    }
    body.update(changes)
    return body


def _mlflow(**changes: Any) -> dict[str, Any]:
    trace = json.loads(MLFLOW.read_text(encoding="utf-8"))
    spans = trace["data"]["spans"]
    for key, value in changes.items():
        if key == "attributes":
            spans[0]["attributes"].update(value)
        elif key == "drop_span_id":
            del spans[0]["span_id"]
        elif key == "assessment_source":
            trace["info"]["assessments"][0].pop("source")
    return trace


def _litellm(**changes: Any) -> dict[str, Any]:
    payload = json.loads((LITELLM / "standard_logging_payload.json").read_text(encoding="utf-8"))
    payload.update(changes)
    return payload


def _batch_line(index: int = 0, **changes: Any) -> dict[str, Any]:
    line = json.loads((BATCH / "batch_output_sample.jsonl").read_text(encoding="utf-8").splitlines()[index])
    for key, value in changes.items():
        if key == "body":
            line["response"]["body"] = value
        elif key == "usage":
            line["response"]["body"]["usage"].update(value)
        else:
            line[key] = value
    return line


def _otel_call(**attributes: Any) -> dict[str, Any]:
    base = json.loads((OI / "otel_genai_client_span_tool_calls.json").read_text(encoding="utf-8"))
    base.update(attributes)
    return base


# format -> (good record, [(broken record or text, reason, detail part)])
BROKEN = {
    "otel": (
        span(_otel_call(), "1" * 32, "1" * 16),
        [
            (json.dumps(span(_otel_call(), "2" * 32, "2" * 16))[:120], "malformed_json", "character"),
            ({**span(_otel_call(), "3" * 32, "3" * 16), "context": {"trace_id": "0x" + "3" * 32}}, "missing_field", "span id"),
            (span(_otel_call(**{"gen_ai.usage.input_tokens": "many"}), "4" * 32, "4" * 16), "wrong_type", "input_tokens"),
            (span(_otel_call(**{"gen_ai.request.model": ["gpt-4"], "gen_ai.response.model": None}), "5" * 32, "5" * 16), "wrong_type", "gen_ai.request.model"),
            (span(_otel_call(**{"gen_ai.input.messages": 42}), "6" * 32, "6" * 16), "wrong_type", "gen_ai.input.messages"),
            (span(_otel_call(**{"gen_ai.input.messages": '[{"role": "user", "parts": ['}), "7" * 32, "7" * 16), "malformed_json", "gen_ai.input.messages"),
        ],
    ),
    "otlp": (
        otlp_request([span(_otel_call(), "1" * 32, "1" * 16)]),
        [
            (json.dumps(otlp_request([span(_otel_call(), "2" * 32, "2" * 16)]))[:300], "malformed_json", "character"),
            (json.loads(json.dumps(otlp_request([span(_otel_call(), "3" * 32, "")]))), "missing_field", "span id"),
            (otlp_request([span(_otel_call(**{"gen_ai.usage.output_tokens": "lots"}), "4" * 32, "4" * 16)]), "wrong_type", "output_tokens"),
            ({"resourceSpans": {"spans": []}}, "wrong_type", "resourceSpans"),
            ({"resourceMetrics": []}, "missing_field", "resourceSpans"),
        ],
    ),
    "openinference": (
        span({"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", "input.value": "hi", "output.value": "hello"}, "1" * 32, "1" * 16),
        [
            ('{"name": "llm", "context": {"trace_id": "x", "span_id"', "malformed_json", "character"),
            ({"attributes": {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", "input.value": "hi", "output.value": "x"}}, "missing_field", "trace id"),
            (span({"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", "input.value": "hi", "output.value": "x", "llm.token_count.prompt": "lots"}, "3" * 32, "3" * 16), "wrong_type", "input_tokens"),
            (span({"openinference.span.kind": "LLM", "llm.model_name": ["gpt-4o"], "input.value": "hi", "output.value": "x"}, "4" * 32, "4" * 16), "wrong_type", "llm.model_name"),
        ],
    ),
    "langfuse": (
        _langfuse_generation(),
        [
            ('{"trace": {"id": "t-9"}, "observations": [{"id": "g-9", "type": "GENER', "malformed_json", "character"),
            (_langfuse_generation(id=None), "missing_field", "id"),
            (_langfuse_generation(id="g-3", usageDetails={"input": "three", "output": 1}), "wrong_type", "input_tokens"),
            (_langfuse_generation(id="g-4", model={"name": "gpt-4o"}), "wrong_type", "model"),
        ],
    ),
    "mlflow": (
        _mlflow(),
        [
            (json.dumps(_mlflow())[:200], "malformed_json", "character"),
            (_mlflow(drop_span_id=True), "missing_field", "span_id"),
            (_mlflow(attributes={"mlflow.chat.tokenUsage": json.dumps({"input_tokens": "many", "output_tokens": 1})}), "wrong_type", "input_tokens"),
            ({"data": {"spans": []}}, "missing_field", "info"),
        ],
    ),
    "litellm": (
        _litellm(),
        [
            (json.dumps(_litellm())[:150], "malformed_json", "character"),
            (_litellm(id=None), "missing_field", "id"),
            (_litellm(id="c-3", prompt_tokens="ten"), "wrong_type", "input_tokens"),
            (_litellm(id="c-4", messages=42), "wrong_type", "messages"),
        ],
    ),
    "openai-batch": (
        _batch_line(),
        [
            (json.dumps(_batch_line(1))[:90], "malformed_json", "character"),
            (_batch_line(1, id="batch_req_2", custom_id=None), "missing_field", "custom_id"),
            (_batch_line(1, id="batch_req_3", usage={"prompt_tokens": "twenty"}), "wrong_type", "input_tokens"),
            (_batch_line(1, id="batch_req_4", body="not an object"), "wrong_type", "response.body"),
        ],
    ),
}


@pytest.mark.parametrize("fmt", sorted(BROKEN))
def test_broken_variants_are_quarantined_with_reasons(tmp_path, fmt):
    good, broken = BROKEN[fmt]
    records = [good] + [item for item, _, _ in broken]
    if fmt == "openai-batch":
        shutil.copy(BATCH / "batch_job_results_furniture.jsonl", tmp_path / "input.jsonl")
    path = jsonl(tmp_path / "records.jsonl", records)

    result = run([path], source_format=fmt)

    trace_rows = result.quarantine.filter(pl.col("record_kind") == "trace").sort("source_record")
    assert trace_rows.height == len(broken), reasons(result)
    for (_, reason, detail_part), quarantined in zip(broken, trace_rows.iter_rows(named=True)):
        assert quarantined["reason"] == reason, quarantined
        assert detail_part in quarantined["detail"], quarantined
        assert quarantined["source_format"] == fmt and quarantined["raw"]
    assert result.traces.height == 1
    assert result.traces["source_record"].to_list() == [1]
    assert_accounting(result.summary())


def test_broken_feedback_is_quarantined_with_reasons(tmp_path):
    evaluation = span(
        _otel_call(),
        "1" * 32,
        "1" * 16,
        events=[
            {"name": "gen_ai.evaluation.result", "timestamp": START_NS, "attributes": {"gen_ai.evaluation.score.value": 0.5}},
            {"name": "gen_ai.evaluation.result", "timestamp": START_NS, "attributes": {"gen_ai.evaluation.name": "Relevance", "gen_ai.evaluation.score.value": "high"}},
            {"name": "gen_ai.evaluation.result", "timestamp": "last week", "attributes": {"gen_ai.evaluation.name": "Relevance", "gen_ai.evaluation.score.value": 0.5}},
        ],
    )
    jsonl(tmp_path / "otel.jsonl", [evaluation])
    jsonl(
        tmp_path / "langfuse.jsonl",
        [
            {"id": "s-1", "traceId": "t-1", "name": "quality", "value": "high", "dataType": "NUMERIC"},
            {"id": "s-2", "name": "quality", "value": 0.4, "dataType": "NUMERIC"},
            {"id": "s-3", "traceId": "t-1", "name": "quality", "value": 0.4, "dataType": "NUMERIC", "source": "GUESS"},
        ],
    )
    trace = _mlflow(assessment_source=True)
    write(tmp_path / "mlflow.json", json.dumps(trace))

    result = run([tmp_path])

    feedback_rows = result.quarantine.filter(pl.col("record_kind") == "feedback")
    assert sorted(zip(feedback_rows["source_format"], feedback_rows["reason"])) == [
        ("langfuse", "invalid_value"),
        ("langfuse", "missing_field"),
        ("langfuse", "wrong_type"),
        ("mlflow", "missing_field"),
        ("otel", "missing_field"),
        ("otel", "unparsable_timestamp"),
        ("otel", "wrong_type"),
    ]
    assert result.feedback.height == 2  # MLflow's other two assessments
    assert_accounting(result.summary())


# ---------------------------------------------------------------------------------------------
# 6. Every format in one run; detection; overrides


def _mixed_folder(folder: Path) -> Path:
    shutil.copytree(FRAMEWORKS, folder / "langfuse")
    shutil.copy(LANGFUSE / "ingestion_examples_from_spec.json", folder / "langfuse" / "batch_examples.json")
    shutil.copytree(LITELLM, folder / "litellm")
    shutil.copy(MLFLOW, folder / "mlflow.json")
    shutil.copy(OI / "llm_spans_examples_from_spec.json", folder / "phoenix.json")
    shutil.copytree(BATCH, folder / "batch")
    jsonl(folder / "spans.jsonl", spec_spans())
    jsonl(folder / "export.jsonl", [otlp_request(spec_spans()[:4])] + [json.loads(line) for line in synthetic_otlp_lines(30, seed=5).to_list()])
    for fmt, (good, broken) in BROKEN.items():
        if fmt != "openai-batch":
            jsonl(folder / "broken" / f"{fmt}.jsonl", [good] + [item for item, _, _ in broken])
    jsonl(
        folder / "native.jsonl",
        [
            {"trace_id": "n-1", "timestamp": "2026-11-01T10:00:00Z", "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "output": "hello"},
            '{"trace_id": "n-2", "timest',
        ],
    )
    return folder


def test_every_format_in_one_run_keeps_the_accounting_invariant(tmp_path):
    folder = _mixed_folder(tmp_path / "landing")

    result = run([folder])
    summary = result.summary(include_sources=True)

    assert_accounting(summary)
    assert set(summary["formats"]) == {"langfuse", "litellm", "mlflow", "native_jsonl", "openai-batch", "openinference", "otel", "otlp"}
    for fmt, entry in summary["formats"].items():
        # What is not valid, quarantined or skipped collapsed as a duplicate.
        assert entry["records_in"] >= entry["traces"] + entry["feedback"] + entry["quarantined"] + entry["skipped"], fmt
        assert result.traces.filter(pl.col("source_format") == fmt).height == entry["traces"]
    assert summary["formats"]["otlp"]["traces"] == 30 + 2  # 30 synthetic calls + spec examples 2 and 3
    assert summary["formats"]["native_jsonl"] == {"files": 1, "records_in": 2, "traces": 1, "feedback": 0, "quarantined": 1, "skipped": 0}
    assert summary["traces"]["skipped"] > 0 and summary["feedback"]["valid"] > 0
    files = {Path(entry["file"]).name: entry for entry in summary["sources"]}
    assert files["export.jsonl"]["lines"] == 31 and files["mlflow.json"]["format"] == "mlflow"
    assert result.traces["trace_id"].is_unique().all()
    assert result.feedback["feedback_id"].is_unique().all()


EXPECTED_FORMATS = {
    **{f"langfuse/framework-traces/{name}": "langfuse" for name in LANGFUSE_COUNTS},
    "langfuse/ingestion_examples_from_spec.json": "langfuse",
    "litellm/langfuse_ingestion_request_body_completion.json": "langfuse",
    "litellm/standard_logging_payload.json": "litellm",
    "litellm/spend_logs_payload.json": "litellm",
    "mlflow/trace_v3_generated_by_mlflow-skinny-3.17.2.json": "mlflow",
    "openai-batch/batch_output_sample.jsonl": "openai-batch",
    "openai-batch/batch_job_results_furniture.jsonl": "openai-batch",
    "openinference/llm_spans_examples_from_spec.json": "openinference",
    "openinference/annotation_examples_from_spec.json": "openinference",
    "openinference/openinference_client_span_tool_calls.json": "openinference",
    "openinference/openinference_client_span_input_output_only.json": "openinference",
    "openinference/otel_genai_client_span_tool_calls.json": "otel",
    "openinference/otel_genai_deprecated_client_span_tool_calls.json": "otel",
    "openinference/otel_genai_tool_execution_span.json": "otel",
    "dialogsum/sample.jsonl": "native",
}


@pytest.mark.parametrize("relative", sorted(EXPECTED_FORMATS))
def test_auto_detection_per_fixture(relative):
    assert detect_format(str(FIXTURES / relative)) == EXPECTED_FORMATS[relative]


def test_auto_detection_of_truncated_files_and_otlp(tmp_path):
    export = jsonl(tmp_path / "export.jsonl", [otlp_request(spec_spans()[:2])])
    truncated = write(tmp_path / "cut.json", MLFLOW.read_text(encoding="utf-8")[:1500])
    cut_langfuse = write(tmp_path / "cut_langfuse.json", (FRAMEWORKS / "autogen-2025-06-06.json").read_text()[:3000])
    native = jsonl(tmp_path / "native.jsonl", [{"trace_id": "t", "kind": "accepted", "timestamp": "2026-11-01"}])

    assert detect_format(str(export)) == "otlp"
    assert detect_format(str(truncated)) == "mlflow"
    assert detect_format(str(cut_langfuse)) == "langfuse"
    assert detect_format(str(native)) == "native"
    result = run([truncated])
    assert result.quarantine.select("source_format", "reason", "source_record").rows() == [("mlflow", "malformed_json", 1)]
    assert_accounting(result.summary())


def test_explicit_format_overrides_detection(tmp_path):
    path = jsonl(tmp_path / "spans.jsonl", [span(_otel_call(), "1" * 32, "1" * 16)])

    detected = run([path])
    as_native = run([path], source_format="native")
    as_openinference = run([path], source_format="openinference")
    per_file = ingest([SourceFile(str(path), "spans.jsonl", source_format="litellm")], DEFAULT, PRICES)

    assert detected.traces["source_format"].to_list() == ["otel"]
    assert as_native.traces.height == 0
    assert as_native.quarantine.select("source_format", "reason").rows() == [("native_jsonl", "missing_field")]
    # No openinference.span.kind and no llm.* model: not an LLM call in that convention.
    assert as_openinference.summary()["skipped_by_reason"] == {"other_span": 1}
    assert per_file.quarantine.select("source_format", "reason").rows() == [("litellm", "missing_field")]
    with pytest.raises(ValueError, match="unknown source format"):
        run([path], source_format="splunk")


# ---------------------------------------------------------------------------------------------
# 7. Task type and feedback mappings


def test_task_type_rules_in_order_with_a_default():
    config = IngestConfig(
        task_type=TaskTypeMapping.from_mapping(
            {
                "default": "general",
                "rules": [
                    {"match": "metadata_key", "key": "task_type"},
                    {"match": "tag", "pattern": "^autogen$", "task_type": "chitchat"},
                    {"match": "trace_name", "pattern": "langgraph", "task_type": "research"},
                    {"match": "span_name", "pattern": "^call_llm$", "task_type": "greeting"},
                    {"match": "metadata_key", "key": "resourceAttributes.service.name", "pattern": "^weather", "task_type": "weather"},
                    {"match": "prompt_name", "pattern": "never", "task_type": "unused"},
                ],
            }
        )
    )
    result = run(
        [FRAMEWORKS / n for n in ("autogen-2025-06-06.json", "langgraph-2025-08-22.json", "google-adk-2025-08-28.json", "llamaindex-2025-06-05.json")],
        config=config,
    )
    by_file = dict(zip(result.traces["source_file"].str.split("/").list.last(), result.traces["task_type"]))

    assert by_file == {
        "autogen-2025-06-06.json": "chitchat",
        "langgraph-2025-08-22.json": "research",
        "google-adk-2025-08-28.json": "greeting",
        "llamaindex-2025-06-05.json": "general",
    }


def test_task_type_from_a_metadata_key_on_every_format(tmp_path):
    jsonl(tmp_path / "spans.jsonl", [span(_otel_call(task_type="intent"), "1" * 32, "1" * 16)])
    jsonl(tmp_path / "export.jsonl", [otlp_request([span(_otel_call(task_type="intent"), "2" * 32, "2" * 16)])])
    jsonl(tmp_path / "langfuse.jsonl", [_langfuse_generation(metadata={"task_type": "intent"})])
    jsonl(tmp_path / "litellm.jsonl", [_litellm(metadata={"requester_metadata": {"task_type": "intent"}})])

    result = run([tmp_path])

    assert result.traces.height == 4
    assert result.traces["task_type"].to_list() == ["intent"] * 4


@pytest.mark.parametrize(
    ("section", "raw", "message"),
    [
        ("task_type", {"rules": [{"match": "color", "pattern": "x", "task_type": "y"}]}, r"task_type\.rules\[0\]\.match: Input should be 'span_name'"),
        ("task_type", {"rules": [{"match": "span_name", "pattern": "(", "task_type": "y"}]}, r"task_type\.rules\[0\]\.pattern: .*invalid regular expression"),
        ("task_type", {"rules": [{"match": "span_name", "pattern": "x"}]}, r"task_type\.rules\[0\]: .*task_type: required for match: span_name"),
        ("task_type", {"rules": [{"match": "tag", "task_type": "y"}]}, r"task_type\.rules\[0\]: .*pattern: required for match: tag"),
        ("task_type", {"rules": [{"match": "metadata_key"}]}, r"task_type\.rules\[0\]: .*key: the metadata key to read"),
        ("task_type", {"rules": [{"match": "span_name", "key": "k", "pattern": "x", "task_type": "y"}]}, r"task_type\.rules\[0\]: .*key: only for match: metadata_key"),
        ("task_type", {"default": 3}, r"task_type\.default: Input should be a valid string \(got 3\)"),
        ("task_type", {"default": " "}, r"task_type\.default: String should match pattern"),
        ("task_type", {"fallback": "x"}, r"task_type\.fallback: unknown key"),
        ("feedback", {"rules": [{"name": "x", "kind": "loved"}]}, r"feedback\.rules\[0\]\.kind: Input should be .*'skip' \(got 'loved'\)"),
        ("feedback", {"rules": [{"kind": "thumbs"}]}, r"feedback\.rules\[0\]: .*at least one of name, source, value_type"),
        ("feedback", {"rules": [{"name": "x", "kind": "thumbs", "value_type": "emoji"}]}, r"feedback\.rules\[0\]\.value_type"),
        ("feedback", {"rules": [{"name": "x", "kind": "thumbs", "invert": "yes"}]}, r"feedback\.rules\[0\]\.invert: Input should be a valid boolean"),
        ("feedback", {"by_source": {"robot": "thumbs"}}, r"feedback\.by_source\.robot: unknown key"),
        ("feedback", {"labels": {"positive": "yes"}}, r"feedback\.labels\.positive: Input should be a valid tuple"),
        ("max_record_bytes", 0, r"max_record_bytes: Input should be greater than or equal to 1 \(got 0\)"),
        ("decode_slice_rows", True, r"decode_slice_rows: Input should be a valid integer \(got True\)"),
        ("openai_batch_price_factor", 2, r"openai_batch_price_factor: Input should be less than or equal to 1"),
    ],
)
def test_config_errors_are_one_line_naming_file_and_field(tmp_path, section, raw, message):
    path = tmp_path / "ingest.yaml"
    path.write_text(json.dumps({section: raw}), encoding="utf-8")  # JSON is YAML

    with pytest.raises(ConfigError, match=rf"^{tmp_path}/ingest\.yaml: {message}") as caught:
        IngestConfig.from_yaml(path)
    assert "\n" not in str(caught.value)


def test_labels_read_as_lowercase_text_and_missing_by_source_entries_keep_their_default():
    mapping = FeedbackMapping.from_mapping(
        {"labels": {"positive": [True, 1, " Yes "]}, "by_source": {"user": "judge_score"}}
    )

    assert (mapping.labels.positive, mapping.labels.negative) == (("true", "1", "yes"), ())
    assert mapping.by_source.model_dump() == {"user": "judge_score", "human_reviewer": "human_label", "code": "judge_score", "llm": "judge_score"}


def test_shipped_ingest_yaml_is_the_code_default():
    assert IngestConfig.from_yaml(REPO_ROOT / "configs" / "ingest.yaml") == IngestConfig()
    with pytest.raises(ConfigError, match="openai_batch_price_factor"):
        IngestConfig.from_mapping({"openai_batch_price_factor": 2})


def test_feedback_rules_change_what_a_score_means():
    config = IngestConfig(
        feedback=FeedbackMapping.from_mapping(
            {
                "rules": [
                    {"name": "^correctness$", "kind": "human_label", "set_source": "human_reviewer"},
                    {"name": "thumbs", "kind": "skip"},
                ],
                "by_source": {"human_reviewer": "judge_score"},
            }
        )
    )
    result = run([MLFLOW], config=config)

    kinds = dict(zip(result.feedback["feedback_id"], zip(result.feedback["kind"], result.feedback["source"], result.feedback["value"])))
    assert kinds == {
        "a-eb22c65594dc49c1a0fc4915d9b8bff1": ("human_label", "human_reviewer", 1.0),
        "a-b81b362a8f76418ab7d89136e3f8cfb1": ("human_label", "human_reviewer", None),  # the expectation's own hint
    }
    assert result.summary()["feedback"]["skipped_by_reason"] == {"unmapped_feedback": 1}


# ---------------------------------------------------------------------------------------------
# 8. The CLI


def test_cli_ingests_a_mixed_folder_and_overrides_the_format(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOP_HOME", str(tmp_path / "home"))
    folder = _mixed_folder(tmp_path / "landing")
    out = tmp_path / "out"

    result = runner.invoke(app, ["ingest", str(folder), "--out", str(out)])

    assert result.exit_code == 0, result.output
    summary = last_json_line(result.stdout)
    assert summary["records_in"] == summary["valid"] + summary["duplicates"] + summary["quarantined"] + summary["skipped"]
    assert summary["formats"]["mlflow"]["traces"] == 1
    assert json.loads((out / "summary.json").read_text()) == summary
    written = pl.read_parquet(out / "raw_traces" / "*.parquet")
    assert set(written["source_format"]) == {fmt for fmt, entry in summary["formats"].items() if entry["traces"]}

    forced = runner.invoke(app, ["ingest", str(folder / "export.jsonl"), "--format", "otlp", "--out", str(tmp_path / "o2")])
    assert forced.exit_code == 0, forced.output
    assert last_json_line(forced.stdout)["formats"]["otlp"]["traces"] == 32

    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(BATCH / "batch_output_sample.jsonl", alone / "output.jsonl")
    joined = runner.invoke(
        app, ["ingest", str(alone), "--batch-input", str(BATCH / "batch_job_results_furniture.jsonl"), "--out", str(tmp_path / "o3")]
    )
    assert joined.exit_code == 0, joined.output
    assert last_json_line(joined.stdout)["valid"] == 2

    bad = runner.invoke(app, ["ingest", str(folder), "--format", "splunk"])
    assert bad.exit_code == 2 and "--format" in bad.stderr
    assert set(FORMAT_CHOICES) >= {"auto", "native", "otel", "otlp", "openinference", "langfuse", "mlflow", "litellm", "openai-batch"}


def test_bench_ingest_otlp_reports_both_timings(tmp_path):
    result = runner.invoke(app, ["bench", "ingest", "--format", "otlp", "--rows", "400", "--bad-rate", "0.05", "--workdir", str(tmp_path)])

    assert result.exit_code == 0, result.output
    report = last_json_line(result.stdout)
    assert (report["format"], report["baseline"], report["rows"]) == ("otlp", "json.loads per line", 400)
    # Both times are rounded to the millisecond: the ratio matches them within that rounding.
    assert report["ratio"] * report["baseline_s"] == pytest.approx(report["ingest_s"], abs=0.0005 * report["ratio"] + 0.0005)
    assert report["ratio"] > 1
    assert report["quarantined"] == 20
    assert set(report["quarantined_by_reason"]) == {"malformed_json", "negative_value", "wrong_type", "missing_field"}
    assert report["valid_feedback"] > 0 and report["peak_rss_mb"] > 0
    assert list(tmp_path.iterdir()) == []  # the generated files are removed


def test_ingest_formats_import_no_heavy_library():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from loop_pipeline.core.ingest import ingest, formats\n"
        "from loop_pipeline.core.ingest.formats import otlp, otel, openinference, langfuse, mlflow_traces, litellm, openai_batch\n"
        "print(sorted(m for m in ('torch', 'transformers', 'great_expectations', 'dagster', 'mlflow', 'sklearn') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------------------------------------
# 9. Records of odd shapes never stop a run


_ODD_VALUES = [None, 1, -1, 2.5, True, "x", "", [], {}, [1, "a"], {"a": {"b": 1}}, [{"role": 1}], "[{", "{}"]


def _mutate(value: Any, rng) -> Any:
    if isinstance(value, dict):
        return {k: rng.choice(_ODD_VALUES) if rng.random() < 0.15 else _mutate(v, rng) for k, v in value.items()}
    if isinstance(value, list):
        return [_mutate(item, rng) for item in value]
    return value


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mutated_records_are_accounted_never_crash(tmp_path, seed):
    """Every field of every fixture replaced at random by values of other types: each record ends
    up valid, quarantined with a reason or skipped, whatever the format."""
    import random

    rng = random.Random(seed)
    snippets = json.loads((OI / "annotation_examples_from_spec.json").read_text(encoding="utf-8"))
    sources: dict[str, list[Any]] = {
        "otel": spec_spans(),
        "otlp": [otlp_request([s]) for s in spec_spans()] + [json.loads(line) for line in synthetic_otlp_lines(10, seed=seed).to_list()],
        "openinference": json.loads((OI / "llm_spans_examples_from_spec.json").read_text())
        + [span(s.get("attributes", {}), "8" * 32, f"{i:016x}", events=[dict(e, timestamp=START_NS) for e in s.get("events", [])]) for i, s in enumerate(snippets, 1)],
        "langfuse": [json.loads(p.read_text()) for p in sorted(FRAMEWORKS.glob("*.json"))[:5]]
        + [json.loads((LITELLM / "langfuse_ingestion_request_body_completion.json").read_text())],
        "mlflow": [json.loads(MLFLOW.read_text())],
        "litellm": [json.loads((LITELLM / "standard_logging_payload.json").read_text())],
        "openai-batch": [json.loads(line) for line in (BATCH / "batch_output_sample.jsonl").read_text().splitlines() if line.strip()],
    }
    for fmt, records in sources.items():
        for round_ in range(4):
            path = jsonl(tmp_path / f"{fmt}_{round_}.jsonl", [_mutate(r, rng) for r in records])
            result = run([path], source_format=fmt)
            assert_accounting(result.summary())
            assert result.quarantine.filter(pl.col("detail") == "").height == 0
