"""The traffic simulator: output contract, determinism, realised rates, datasets, config errors.

Production's mess (wrong reviewers, false flags, partial edits, repeats, ...) has its own tests in
test_messy_traffic.py; these run with the realistic defaults and check what holds whatever the mess."""

from __future__ import annotations

import collections
import csv
import datetime as dt
import difflib
import json
import re
from pathlib import Path

import pytest

from loop_pipeline.config import ConfigError
from loop_pipeline.core.costs import ModelPrice, PriceTable
from loop_pipeline.schemas import FEEDBACK_KINDS, FEEDBACK_SOURCES
from loop_pipeline.sim import OUT_OF_SCOPE, SimulationConfig, bundled_clinc150_dir, simulate
from loop_pipeline_tests.helpers import simulate_landing

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RESTAURANT8K = FIXTURES / "restaurant8k" / "sample.json"
DIALOGSUM = FIXTURES / "dialogsum" / "sample.jsonl"

TRACE_KEYS = {
    "trace_id", "timestamp", "task_type", "app", "model", "provider", "messages", "output",
    "input_tokens", "output_tokens", "latency_ms", "user_id", "session_id", "prompt_version", "metadata",
}
FEEDBACK_KEYS = {"trace_id", "timestamp", "kind", "value", "label", "edited_output", "source", "annotator_id"}
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")


def parse_ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def read_folder(out: Path, kind: str) -> list[tuple[str, dict]]:
    """(folder date, record) for every line under out/<kind>/<date>/<kind>.jsonl, folders in date order."""
    rows = []
    for path in sorted((out / kind).glob(f"*/{kind}.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            rows.append((path.parent.name, json.loads(line)))
    return rows


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def user_kinds(events: list[dict]) -> set[str]:
    return {e["kind"] for e in events if e["source"] == "user"}


@pytest.fixture(scope="module")
def clinc_run(tmp_path_factory):
    """4 days x 1000 CLINC150 traces with rates high enough to measure on 4000 traces."""
    out = tmp_path_factory.mktemp("clinc")
    config = SimulationConfig(
        days=4,
        traces_per_day=1000,
        frontier_error_rate=0.2,
        human_review_rate=0.1,
        out_of_scope_rate=0.15,
        hallucination_flag_rate=0.3,
        seed=7,
    )
    lines: list[str] = []
    summary = simulate_landing(config, out, progress=lines.append)
    traces = read_folder(out, "traces")
    feedback = read_folder(out, "feedback")
    by_id = {record["trace_id"]: record for _, record in traces}
    events = collections.defaultdict(list)
    for _, event in feedback:
        events[event["trace_id"]].append(event)
    return {"config": config, "out": out, "summary": summary, "progress": lines, "traces": traces,
            "feedback": feedback, "by_id": by_id, "events": events}


# ---- determinism and files ------------------------------------------------------------------------


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    config = SimulationConfig(days=2, traces_per_day=150, human_review_rate=0.2, seed=3)
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    simulate_landing(config, first)
    simulate_landing(config, second)
    simulate_landing(SimulationConfig(days=2, traces_per_day=150, human_review_rate=0.2, seed=4), other)
    a, b, c = snapshot(first), snapshot(second), snapshot(other)
    assert a == b
    assert set(a) == set(c)  # same calendar, so the same files...
    assert all(a[name] != c[name] for name in a)  # ...with different contents
    simulate_landing(config, first)  # rerun in place: atomically replaced with the same bytes, no temp files left
    assert snapshot(first) == a
    assert not [p for p in first.rglob("*") if p.name.startswith(".")]


def test_summary_progress_and_files_agree(clinc_run):
    summary, out = clinc_run["summary"], clinc_run["out"]
    assert summary.traces == len(clinc_run["traces"]) == 4000
    assert summary.feedback_events == len(clinc_run["feedback"])
    counted = collections.Counter(event["kind"] for _, event in clinc_run["feedback"])
    assert {k: v for k, v in summary.feedback_by_kind.items() if v} == dict(counted)
    assert summary.human_reviewed == counted["human_label"]
    assert sorted(summary.files) == sorted(str(p.relative_to(out)) for p in out.rglob("*.jsonl"))
    assert [f"traces/2026-11-0{d}/traces.jsonl" for d in range(1, 5)] == [
        f for f in summary.files if f.startswith("traces/")
    ]
    # One progress line per traffic day, then one per later day that only receives feedback.
    late_days = [f for f in summary.files if f.startswith("feedback/") and f.split("/")[1] > "2026-11-04"]
    assert len(clinc_run["progress"]) == 4 + len(late_days)
    assert clinc_run["progress"][0].startswith("2026-11-01: 1000 traces")
    wrong = sum(not r["metadata"]["sim"]["frontier_correct"] for _, r in clinc_run["traces"])
    assert summary.frontier_errors == wrong
    json.dumps(summary.to_dict())  # serialisable for the CLI


def test_trace_records_follow_the_native_contract(clinc_run):
    config = clinc_run["config"]
    traces = clinc_run["traces"]
    ids = [record["trace_id"] for _, record in traces]
    assert len(set(ids)) == len(ids)
    for folder, day in itertools_groupby_folder(traces):
        stamps = [parse_ts(r["timestamp"]) for r in day]
        assert stamps == sorted(stamps)
        assert {s.date().isoformat() for s in stamps} == {folder}
    for _, record in traces:
        assert set(record) == TRACE_KEYS  # no cost_usd: ingest computes it
        assert re.fullmatch(r"[0-9a-f]{32}", record["trace_id"])
        assert TIMESTAMP.match(record["timestamp"])
        assert record["task_type"] == "intent"
        assert (record["model"], record["provider"], record["app"]) == (
            config.frontier_model, config.provider, config.app)
        sim = record["metadata"]["sim"]
        roles = ["system", "user"] if sim["turns"] == 1 else ["system", "user", "assistant", "user"]
        assert [m["role"] for m in record["messages"]] == roles
        assert isinstance(record["input_tokens"], int) and record["input_tokens"] > 0
        assert isinstance(record["output_tokens"], int) and record["output_tokens"] >= 1
        assert record["output_tokens"] == max(1, -(-len(record["output"]) // 4))
        assert 100 < record["latency_ms"] < 10_000
        assert record["user_id"].startswith("user-") and record["session_id"]
        assert set(record["metadata"]) == {"gold", "sim"}
        assert set(sim) == {"frontier_correct", "user_type", "seed", "turns", "repeat", "edit_kind", "review"}
        assert sim["seed"] == 7 and sim["user_type"] in ("rushed", "careful")
        assert sim["frontier_correct"] == (record["output"] == record["metadata"]["gold"])
        assert sim["repeat"] in (None, "exact", "paraphrase") and sim["edit_kind"] in (None, "gold", "partial", "wrong")
        assert sim["review"] in (None, "right", "wrong")


def itertools_groupby_folder(rows):
    grouped = collections.defaultdict(list)
    for folder, record in rows:
        grouped[folder].append(record)
    return sorted(grouped.items())


def test_gold_lives_only_in_metadata(clinc_run):
    splits = json.loads((bundled_clinc150_dir() / "data_full.json").read_text(encoding="utf-8"))
    labels_of = collections.defaultdict(set)
    for rows in splits.values():
        for text, intent in rows:
            labels_of[text].add(OUT_OF_SCOPE if intent == "oos" else intent)
    system_prompts = {r["messages"][0]["content"] for _, r in clinc_run["traces"]}
    assert len(system_prompts) == 1  # the same instruction for every trace: it cannot carry a gold label
    for _, record in clinc_run["traces"]:
        assert all(set(message) == {"role", "content"} for message in record["messages"])
        user = record["messages"][-1]["content"]  # the question is the last user message
        # The user message is the raw utterance (or a repeat lightly retyped); its gold label is only in metadata.
        if record["metadata"]["sim"]["repeat"] != "paraphrase":
            assert record["metadata"]["gold"] in labels_of[user]
        assert user != record["metadata"]["gold"]


# ---- realised rates -------------------------------------------------------------------------------


def test_realised_rates_match_configuration(clinc_run):
    traces = [r for _, r in clinc_run["traces"]]
    n = len(traces)
    wrong = sum(not r["metadata"]["sim"]["frontier_correct"] for r in traces)
    assert abs(wrong / n - 0.2) < 0.03
    assert abs(clinc_run["summary"].frontier_error_rate - wrong / n) < 1e-12
    reviewed = {e["trace_id"] for _, e in clinc_run["feedback"] if e["kind"] == "human_label"}
    assert abs(len(reviewed) / n - 0.1) < 0.025
    oos = sum(r["metadata"]["gold"] == OUT_OF_SCOPE for r in traces)
    assert abs(oos / n - 0.15) < 0.03 and clinc_run["summary"].out_of_scope == oos
    flagged = {e["trace_id"] for _, e in clinc_run["feedback"] if e["kind"] == "hallucination"}
    flagged_wrong = sum(not clinc_run["by_id"][t]["metadata"]["sim"]["frontier_correct"] for t in flagged)
    assert abs(flagged_wrong / wrong - 0.3) < 0.08
    # Checks and judges also flag correct outputs, at hallucination_false_flag_rate (default 0.01).
    assert 0.002 < (len(flagged) - flagged_wrong) / (n - wrong) < 0.025


def test_rushed_users_accept_wrong_outputs_more_than_careful_users(clinc_run):
    user_types = collections.defaultdict(set)
    accepted = collections.Counter()
    wrong = collections.Counter()
    for _, record in clinc_run["traces"]:
        sim = record["metadata"]["sim"]
        user_types[record["user_id"]].add(sim["user_type"])
        if not sim["frontier_correct"]:
            wrong[sim["user_type"]] += 1
            accepted[sim["user_type"]] += "accepted" in user_kinds(clinc_run["events"][record["trace_id"]])
    assert all(len(kinds) == 1 for kinds in user_types.values())  # a user keeps their type
    assert sum("rushed" in kinds for kinds in user_types.values()) <= round(0.3 * 200)
    rushed, careful = accepted["rushed"] / wrong["rushed"], accepted["careful"] / wrong["careful"]
    assert abs(rushed - 0.6) < 0.12 and abs(careful - 0.05) < 0.05
    assert rushed > careful + 0.3


def test_correct_outputs_are_mostly_accepted_and_wrong_ones_mostly_not_by_careful_users(clinc_run):
    outcomes = collections.Counter()
    for _, record in clinc_run["traces"]:
        sim = record["metadata"]["sim"]
        kinds = user_kinds(clinc_run["events"][record["trace_id"]])
        outcomes[(sim["frontier_correct"], sim["user_type"], "accepted" in kinds)] += 1
        outcomes[(sim["frontier_correct"], sim["user_type"], "edited" in kinds, "edit")] += 1
    careful_ok = outcomes[(True, "careful", True)] / (outcomes[(True, "careful", True)] + outcomes[(True, "careful", False)])
    assert careful_ok > 0.6
    careful_wrong_edited = outcomes[(False, "careful", True, "edit")] / (
        outcomes[(False, "careful", True, "edit")] + outcomes[(False, "careful", False, "edit")])
    assert careful_wrong_edited > 0.3
    # A few correct outputs are edited into wrong ones (edit_correct_rate, default 0.005).
    correct = sum(v for k, v in outcomes.items() if k[0] and len(k) == 3)
    assert 0 < outcomes[(True, "careful", True, "edit")] + outcomes[(True, "rushed", True, "edit")] < 0.015 * correct


# ---- feedback -------------------------------------------------------------------------------------


def test_feedback_events_follow_the_contract(clinc_run):
    by_id = clinc_run["by_id"]
    for folder, day in itertools_groupby_folder(clinc_run["feedback"]):
        stamps = [parse_ts(e["timestamp"]) for e in day]
        assert stamps == sorted(stamps)
        assert {s.date().isoformat() for s in stamps} == {folder}  # lands in the day it arrives
    for _, event in clinc_run["feedback"]:
        assert set(event) == FEEDBACK_KEYS
        assert event["kind"] in FEEDBACK_KINDS and event["source"] in FEEDBACK_SOURCES
        assert TIMESTAMP.match(event["timestamp"])
        trace = by_id[event["trace_id"]]  # every event belongs to a trace
        gold, correct = trace["metadata"]["gold"], trace["metadata"]["sim"]["frontier_correct"]
        assert parse_ts(event["timestamp"]) > parse_ts(trace["timestamp"])
        kind, sim = event["kind"], trace["metadata"]["sim"]
        assert (event["label"] is not None) == (kind == "human_label")
        assert (event["edited_output"] is not None) == (kind == "edited")
        if kind == "edited":  # the gold exactly when the edit says so (mess: test_messy_traffic.py)
            assert (event["edited_output"] == gold) == (sim["edit_kind"] == "gold")
            assert event["edited_output"] != trace["output"]
        elif kind == "human_label":
            right = sim["review"] == "right"
            assert (event["label"] == gold) == right
            assert event["value"] == (1.0 if correct == right else 0.0)
            assert event["source"] == "human_reviewer" and event["annotator_id"].startswith("reviewer-")
        elif kind == "hallucination":
            assert event["value"] == 1.0 and event["source"] in ("code", "llm")
        elif kind == "thumbs":
            assert event["value"] in (0.0, 1.0)
        else:
            assert event["value"] is None
        if event["source"] == "user":
            assert event["annotator_id"] == trace["user_id"]
            assert parse_ts(event["timestamp"]) - parse_ts(trace["timestamp"]) < dt.timedelta(hours=1)
    assert max(len(v) for v in clinc_run["events"].values()) <= 6


def test_human_reviews_arrive_days_later_in_later_folders(clinc_run):
    delays = []
    for folder, event in clinc_run["feedback"]:
        if event["kind"] == "human_label":
            trace_day = parse_ts(clinc_run["by_id"][event["trace_id"]]["timestamp"]).date()
            delays.append((dt.date.fromisoformat(folder) - trace_day).days)
    assert delays and min(delays) >= 1 and max(delays) <= 3
    assert set(delays) == {1, 2, 3}
    after_traffic = [f for f, e in clinc_run["feedback"] if f > "2026-11-04"]
    assert after_traffic
    kinds_after = {e["kind"] for f, e in clinc_run["feedback"] if f > "2026-11-05"}
    assert kinds_after == {"human_label"}


# ---- CLINC150 confusions --------------------------------------------------------------------------


def test_clinc_errors_are_realistic_confusions(clinc_run):
    domains = json.loads((bundled_clinc150_dir() / "domains.json").read_text(encoding="utf-8"))
    domain_of = {intent: d for d, intents in domains.items() for intent in intents}
    same = total = 0
    for _, record in clinc_run["traces"]:
        gold, output = record["metadata"]["gold"], record["output"]
        if output == gold:
            continue
        if gold == OUT_OF_SCOPE:
            assert output in domain_of  # an oos query is mistaken for an in-scope intent
        else:
            assert output in domain_of or output == OUT_OF_SCOPE
            total += 1
            same += domain_of.get(output) == domain_of[gold]
    assert 0.6 < same / total < 0.85


def test_clinc_domains_restrict_the_traffic(tmp_path):
    config = SimulationConfig(days=1, traces_per_day=400, domains=["banking", "travel"],
                              frontier_error_rate=0.5, seed=1)
    simulate_landing(config, tmp_path)
    domains = json.loads((bundled_clinc150_dir() / "domains.json").read_text(encoding="utf-8"))
    allowed = set(domains["banking"]) | set(domains["travel"]) | {OUT_OF_SCOPE}
    traces = [r for _, r in read_folder(tmp_path, "traces")]
    assert {r["metadata"]["gold"] for r in traces} <= allowed
    assert {r["output"] for r in traces} <= allowed
    assert len({r["metadata"]["gold"] for r in traces}) > 20


# ---- other datasets -------------------------------------------------------------------------------


def test_restaurant8k_produces_slot_json(tmp_path):
    items = json.loads(RESTAURANT8K.read_text(encoding="utf-8"))
    expected = {}
    for item in items:
        text = item["userInput"]["text"]
        expected[text] = {lab["slot"]: text[lab["valueSpan"].get("startIndex", 0):lab["valueSpan"]["endIndex"]]
                          for lab in item.get("labels", [])}
    config = SimulationConfig(dataset="restaurant8k", input_path=str(RESTAURANT8K), days=2,
                              traces_per_day=40, frontier_error_rate=0.5, seed=2, repeat_rate=0.0,
                              label_drift=0.0)
    summary = simulate_landing(config, tmp_path)
    traces = [r for _, r in read_folder(tmp_path, "traces")]
    assert summary.task_type == "slot_extraction" and summary.out_of_scope == 0
    # Sampled without replacement while the pool lasts: 80 traces use each of the 40 items twice.
    twice = {text: 2 * count for text, count in collections.Counter(i["userInput"]["text"] for i in items).items()}
    assert collections.Counter(r["messages"][-1]["content"] for r in traces) == twice
    wrong = 0
    for record in traces:
        text = record["messages"][-1]["content"]
        gold = json.loads(record["metadata"]["gold"])
        assert gold == expected[text]
        output = json.loads(record["output"])
        assert isinstance(output, dict) and all(isinstance(v, str) and v in text for v in output.values())
        assert record["metadata"]["gold"] not in json.dumps(record["messages"][-1], ensure_ascii=False) or gold == {}
        if not record["metadata"]["sim"]["frontier_correct"]:
            wrong += 1
            assert output != gold
            assert set(output) <= {"people", "time", "date", "first_name", "last_name"}
    assert 20 <= wrong <= 60


def test_dialogsum_produces_summaries(tmp_path):
    rows = [json.loads(line) for line in DIALOGSUM.read_text(encoding="utf-8").splitlines()]
    summaries = {row["dialogue"]: row["summary1"].strip() for row in rows}
    config = SimulationConfig(dataset="dialogsum", input_path=str(DIALOGSUM), days=1, traces_per_day=60,
                              frontier_error_rate=0.5, hallucination_flag_rate=1.0, seed=5,
                              hallucination_false_flag_rate=0.0)
    simulate_landing(config, tmp_path)
    traces = [r for _, r in read_folder(tmp_path, "traces")]
    kinds = collections.Counter()
    for record in traces:
        dialogue, gold = record["messages"][-1]["content"], record["metadata"]["gold"]
        if record["metadata"]["sim"]["repeat"] == "paraphrase":
            dialogue = min(summaries, key=lambda known: _distance(known, dialogue))  # retyped lightly
        assert record["task_type"] == "summarization" and summaries[dialogue] == gold
        assert gold not in json.dumps(record["messages"][-1], ensure_ascii=False)
        if record["output"] != gold:
            if record["output"] in summaries.values():
                kinds["other_dialogue"] += 1
            else:
                assert gold.startswith(record["output"]) and len(record["output"]) < len(gold)
                kinds["truncated"] += 1
    assert kinds["other_dialogue"] > 0 and kinds["truncated"] > 0
    flags = [e for _, e in read_folder(tmp_path, "feedback") if e["kind"] == "hallucination"]
    assert len(flags) == sum(kinds.values())  # flag rate 1.0: every wrong output is flagged

    # The dev split names its reference `summary` instead of `summary1`.
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps({"fname": r["fname"], "dialogue": r["dialogue"], "summary": r["summary2"]})
                           + "\n" for r in rows), encoding="utf-8")
    simulate_landing(SimulationConfig(dataset="dialogsum", input_path=str(dev), days=1, traces_per_day=5,
                              frontier_error_rate=0.0, repeat_rate=0.0), tmp_path / "dev")
    dev_traces = [r for _, r in read_folder(tmp_path / "dev", "traces")]
    assert sorted(r["output"] for r in dev_traces) == sorted(r["summary2"].strip() for r in rows)


def _distance(a: str, b: str) -> float:
    return 1.0 - difflib.SequenceMatcher(None, a, b).ratio()


def test_labeled_csv_with_custom_columns(tmp_path):
    labels = ["card_lost", "card_stolen", "card_arrival", "refund_status", "refund_request", "weather"]
    path = tmp_path / "labeled.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "utterance", "intent"])
        for i in range(300):
            label = labels[i % len(labels)]
            writer.writerow([i, f"message number {i}, about {label.replace('_', ' ')} — ça va?", label])
    config = SimulationConfig(dataset="labeled", input_path=str(path), text_column="utterance",
                              label_column="intent", days=2, traces_per_day=500, frontier_error_rate=0.4,
                              task_type="support_routing", seed=9, out_of_scope_label_share=0.0)
    simulate_landing(config, tmp_path / "out")
    traces = [r for _, r in read_folder(tmp_path / "out", "traces")]
    assert {r["task_type"] for r in traces} == {"support_routing"}
    assert {r["output"] for r in traces} <= set(labels)
    assert any("ça va" in r["messages"][-1]["content"] for r in traces)  # ensure_ascii=False keeps text
    assert "ça va" in (tmp_path / "out" / "traces" / "2026-11-01" / "traces.jsonl").read_text(encoding="utf-8")
    shares_word = total = 0
    for record in traces:
        gold, output = record["metadata"]["gold"], record["output"]
        if output != gold and gold != "weather":  # weather shares no word with any other label
            total += 1
            shares_word += bool(set(gold.split("_")) & set(output.split("_")))
    assert total > 100 and shares_word / total > 0.7


def test_labeled_jsonl_is_read_too(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"text": f"row {i}", "label": i % 3}) + "\n" for i in range(30)),
                    encoding="utf-8")
    simulate_landing(SimulationConfig(dataset="labeled", input_path=str(path), days=1, traces_per_day=30), tmp_path / "o")
    traces = [r for _, r in read_folder(tmp_path / "o", "traces")]
    assert len(traces) == 30 and {r["metadata"]["gold"] for r in traces} == {"0", "1", "2"}
    assert traces[0]["task_type"] == "classification"


# ---- unusable inputs -----------------------------------------------------------------------------


def test_data_problems_raise_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="input_path"):
        simulate_landing(SimulationConfig(dataset="labeled", input_path=str(tmp_path / "missing.csv")), tmp_path / "o")
    path = tmp_path / "data.csv"
    path.write_text("text,category\nhello,a\nbye,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'label'.*label_column"):
        simulate_landing(SimulationConfig(dataset="labeled", input_path=str(path)), tmp_path / "o")
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n,a\nhello,\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty dataset"):
        simulate_landing(SimulationConfig(dataset="labeled", input_path=str(empty)), tmp_path / "o")
    with pytest.raises(ConfigError, match="domains.*atlantis"):
        simulate_landing(SimulationConfig(domains=["banking", "atlantis"]), tmp_path / "o")
    assert not (tmp_path / "o").exists()  # nothing written when the input is unusable


def test_bundled_clinc150_is_complete_with_attribution():
    folder = bundled_clinc150_dir()
    splits = json.loads((folder / "data_full.json").read_text(encoding="utf-8"))
    assert {k: len(v) for k, v in splits.items()} == {
        "train": 15000, "val": 3000, "test": 4500, "oos_train": 100, "oos_val": 100, "oos_test": 1000}
    assert len(json.loads((folder / "domains.json").read_text(encoding="utf-8"))) == 10
    source = (folder / "SOURCE.md").read_text(encoding="utf-8")
    assert "CC BY 3.0" in source and "828f8093932c8fe6ca7936c3d2e52903b1c523de" in source


# ---- prices and boundaries ------------------------------------------------------------------------


def test_cost_estimate_comes_from_the_price_table_it_is_given(tmp_path):
    config = SimulationConfig(days=1, traces_per_day=50, frontier_model="acme-large-2")
    priced = simulate(config, tmp_path / "priced",
                      prices=PriceTable(models={"acme-large": ModelPrice(input_per_mtok=2.0, output_per_mtok=8.0)}))
    traces = [r for _, r in read_folder(tmp_path / "priced", "traces")]
    expected = sum(2.0 * r["input_tokens"] + 8.0 * r["output_tokens"] for r in traces) / 1e6
    assert expected > 0 and priced.estimated_frontier_cost_usd == round(expected, 6)
    unpriced = simulate(config, tmp_path / "unpriced",
                        prices=PriceTable(models={"gpt-4o": ModelPrice(input_per_mtok=1.0, output_per_mtok=1.0)}))
    assert unpriced.estimated_frontier_cost_usd is None  # a model without a price has no estimate
    assert snapshot(tmp_path / "priced") == snapshot(tmp_path / "unpriced")  # prices never change the files


def test_simulator_reads_no_environment_and_loads_no_settings():
    package = Path(bundled_clinc150_dir()).parents[1] / "sim"
    sources = {path.name: path.read_text(encoding="utf-8") for path in package.glob("*.py")}
    assert "run.py" in sources and "config.py" in sources
    for name, source in sources.items():
        for forbidden in ("os.environ", "getenv", "loop_pipeline.settings", "LoopSettings", "import dagster"):
            assert forbidden not in source, f"loop_pipeline/sim/{name} uses {forbidden}"
