"""Production's mess in simulated traffic: each kind happens at about its configured rate when on and
never when off; turning one off leaves the other behaviours' draws alone; NO_MESS is the first
simulator's tidy traffic."""

from __future__ import annotations

import collections
import csv
import difflib
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from loop_pipeline.config import ConfigError
from loop_pipeline.sim import NO_MESS, OUT_OF_SCOPE, SimulationConfig, bundled_clinc150_dir
from loop_pipeline.sim.hardness import scaled_propensities
from loop_pipeline_tests.helpers import simulate_landing
from loop_pipeline_tests.sim.test_simulate import DIALOGSUM, RESTAURANT8K, read_folder, snapshot

LABELS = ["card_lost", "card_stolen", "card_arrival", "refund_status", "refund_request", "weather",
          "transfer_failed", "transfer_limit", "pin_change", "balance"]


class Run:
    """A simulated landing folder read back: traces, feedback by trace, summary."""

    def __init__(self, config: SimulationConfig, out: Path):
        self.config = config
        self.summary = simulate_landing(config, out)
        self.traces = [record for _, record in read_folder(out, "traces")]
        self.feedback = [event for _, event in read_folder(out, "feedback")]
        self.by_id = {record["trace_id"]: record for record in self.traces}
        self.events = collections.defaultdict(list)
        for event in self.feedback:
            self.events[event["trace_id"]].append(event)

    def of_kind(self, kind: str) -> list[tuple[dict, dict]]:
        """(event, its trace) for every event of ``kind``."""
        return [(event, self.by_id[event["trace_id"]]) for event in self.feedback if event["kind"] == kind]


def correct(trace: dict) -> bool:
    return trace["metadata"]["sim"]["frontier_correct"]


def write_labeled(path: Path, rows_per_label: int = 10, labels: list[str] = LABELS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(rows_per_label * len(labels)):
            label = labels[i % len(labels)]
            writer.writerow([f"question {i} about my {label.replace('_', ' ')}", label])
    return path


# High rates so that 4000 traces measure each one; fixed seed, so tolerances are about the draw, not flakiness.
MESSY = {
    "days": 4, "traces_per_day": 1000, "seed": 11, "frontier_error_rate": 0.2, "human_review_rate": 0.5,
    "rushed_user_rate": 0.0, "reviewer_error_rate": 0.1, "thumbs_down_correct_rate": 0.05,
    "hallucination_false_flag_rate": 0.05, "edit_partial_rate": 0.3, "edit_wrong_rate": 0.2,
    "edit_correct_rate": 0.02, "repeat_rate": 0.2, "paraphrase_rate": 0.5, "multi_turn_rate": 0.2,
}


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> Run:
    return Run(SimulationConfig.from_mapping(MESSY), tmp_path_factory.mktemp("messy"))


@pytest.fixture(scope="module")
def tidy(tmp_path_factory) -> Run:
    return Run(SimulationConfig.from_mapping({**MESSY, **NO_MESS}), tmp_path_factory.mktemp("tidy"))


# ---- configuration --------------------------------------------------------------------------------


def test_defaults_are_the_messy_ones_and_no_mess_switches_every_one_off():
    default = SimulationConfig()
    mess_fields = set(NO_MESS)
    assert mess_fields <= set(SimulationConfig.model_fields)
    assert all(getattr(default, name) != value for name, value in NO_MESS.items() if name != "out_of_scope_labels")
    tidy = default.with_overrides(dict(NO_MESS))
    changed = {name for name in SimulationConfig.model_fields if getattr(tidy, name) != getattr(default, name)}
    assert changed == mess_fields - {"out_of_scope_labels"}


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"reviewer_error_rate": 1.2}, "reviewer_error_rate"),
        ({"frontier_error_concentration": -0.5}, "frontier_error_concentration"),
        ({"frontier_error_concentration": 4.0}, "frontier_error_concentration"),
        ({"repeat_rate": "often"}, "repeat_rate"),
        ({"multi_turn_rate": True}, "multi_turn_rate"),
        ({"edit_partial_rate": 0.7, "edit_wrong_rate": 0.5}, "edit_partial_rate + edit_wrong_rate"),
        ({"out_of_scope_labels": []}, "out_of_scope_labels"),
        ({"dataset": "dialogsum", "input_path": "x.jsonl", "out_of_scope_labels": ["a"]}, "out_of_scope_labels"),
    ],
)
def test_mess_config_errors_name_the_field(raw, named):
    with pytest.raises(ConfigError, match=named.replace("+", r"\+")):
        SimulationConfig.from_mapping(raw)


# ---- no mess: the first simulator's traffic -------------------------------------------------------


def test_no_mess_is_the_tidy_traffic(tidy):
    assert all(count == 0 for count in tidy.summary.mess.values()), tidy.summary.mess
    for event, trace in tidy.of_kind("edited"):
        assert event["edited_output"] == trace["metadata"]["gold"] != trace["output"]
    for kind in ("hallucination",):
        assert all(not correct(trace) for _, trace in tidy.of_kind(kind))
    assert all(event["value"] == 1.0 or not correct(trace) for event, trace in tidy.of_kind("thumbs"))
    for event, trace in tidy.of_kind("human_label"):  # reviewers always right
        assert event["label"] == trace["metadata"]["gold"]
        assert event["value"] == (1.0 if correct(trace) else 0.0)
    for trace in tidy.traces:
        assert len(trace["messages"]) == 2
        sim = trace["metadata"]["sim"]
        assert (sim["turns"], sim["repeat"], sim["review"] in (None, "right")) == (1, None, True)
    texts = collections.Counter(trace["messages"][-1]["content"] for trace in tidy.traces)
    assert max(texts.values()) <= 2  # 4000 draws without replacement from 23,700 queries (a few texts repeat in CLINC150)


# The tidy traffic's bytes with the keys this issue added to metadata.sim removed: exactly what the first
# simulator wrote for this configuration (checked against it when the mess was added).
TIDY_DIGEST = "95e740e2cee617d9ced49da4e19af0223157c49c2deb4b1a7ba70ed83db27710"


def _without_new_sim_keys(out: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(out.rglob("*.jsonl")):
        digest.update(str(path.relative_to(out)).encode())
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if "metadata" in record:
                sim = record["metadata"]["sim"]
                record["metadata"]["sim"] = {k: sim[k] for k in ("frontier_correct", "user_type", "seed")}
            digest.update(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode())
    return digest.hexdigest()


def test_no_mess_writes_what_the_first_simulator_wrote(tmp_path):
    config = SimulationConfig.from_mapping({"days": 2, "traces_per_day": 300, "seed": 4, "human_review_rate": 0.1,
                                            "frontier_error_rate": 0.2, **NO_MESS})
    simulate_landing(config, tmp_path)
    assert _without_new_sim_keys(tmp_path) == TIDY_DIGEST


# ---- each mess at about its rate ------------------------------------------------------------------


def test_reviewers_are_wrong_at_their_rate(messy):
    reviews = messy.of_kind("human_label")
    assert len(reviews) > 1500
    wrong = 0
    for event, trace in reviews:
        gold, output = trace["metadata"]["gold"], trace["output"]
        right = event["value"] == (1.0 if correct(trace) else 0.0)
        assert right == (trace["metadata"]["sim"]["review"] == "right")
        if right:
            assert event["label"] == gold
        elif correct(trace):  # a correct output judged bad: a plausible wrong label
            assert event["label"] != gold and event["value"] == 0.0
        else:  # a bad output passed: the output is the label
            assert event["label"] == output != gold and event["value"] == 1.0
        wrong += not right
    assert abs(wrong / len(reviews) - 0.1) < 0.025
    assert messy.summary.mess["reviewer_errors"] == wrong


def test_thumbs_down_and_hallucination_flags_hit_correct_outputs(messy):
    n_correct = sum(correct(trace) for trace in messy.traces)
    down = {e["trace_id"] for e, t in messy.of_kind("thumbs") if e["value"] == 0.0 and correct(t)}
    flagged = {e["trace_id"] for e, t in messy.of_kind("hallucination") if correct(t)}
    assert abs(len(down) / n_correct - 0.05) < 0.015
    assert abs(len(flagged) / n_correct - 0.05) < 0.015
    assert (messy.summary.mess["thumbs_down_on_correct"], messy.summary.mess["false_hallucination_flags"]) == (
        len(down), len(flagged))
    for trace_id in down:  # never both thumbs on one trace
        assert {e["value"] for e in messy.events[trace_id] if e["kind"] == "thumbs"} == {0.0}


def test_edits_are_sometimes_partial_or_wrong_and_never_silently_gold(messy):
    kinds = collections.Counter()
    for event, trace in messy.of_kind("edited"):
        gold, output, edited = trace["metadata"]["gold"], trace["output"], event["edited_output"]
        kind = trace["metadata"]["sim"]["edit_kind"]
        assert (edited == gold) == (kind == "gold")
        assert edited != output
        if correct(trace):
            assert kind == "wrong"  # a correct output edited into a wrong answer
            kinds["of_correct"] += 1
        else:
            kinds[kind] += 1
    edits_of_wrong = kinds["gold"] + kinds["partial"] + kinds["wrong"]
    assert edits_of_wrong > 250
    assert abs(kinds["partial"] / edits_of_wrong - 0.3) < 0.08
    assert abs(kinds["wrong"] / edits_of_wrong - 0.2) < 0.07
    n_correct = sum(correct(trace) for trace in messy.traces)
    assert abs(kinds["of_correct"] / n_correct - 0.02) < 0.008
    mess = messy.summary.mess
    assert (mess["partial_edits"], mess["wrong_edits"], mess["edits_of_correct"]) == (
        kinds["partial"], kinds["wrong"], kinds["of_correct"])


def test_popular_prompts_repeat_and_some_are_paraphrased(messy):
    repeats = [t for t in messy.traces if t["metadata"]["sim"]["repeat"] is not None]
    paraphrased = [t for t in repeats if t["metadata"]["sim"]["repeat"] == "paraphrase"]
    assert abs(len(repeats) / len(messy.traces) - 0.2) < 0.03
    assert abs(len(paraphrased) / len(repeats) - 0.5) < 0.07
    exact_texts = collections.Counter(t["messages"][-1]["content"] for t in repeats if t not in paraphrased)
    assert len(exact_texts) <= 40  # a small popular set (20 per pool)...
    assert exact_texts.most_common(1)[0][1] > 5 * sorted(exact_texts.values())[len(exact_texts) // 2]  # ...Zipf-like
    texts_of = collections.defaultdict(set)
    for rows in json.loads((bundled_clinc150_dir() / "data_full.json").read_text(encoding="utf-8")).values():
        for text, intent in rows:
            texts_of[OUT_OF_SCOPE if intent == "oos" else intent].add(text)
    unchanged = 0
    for t in paraphrased:  # lightly changed, gold unchanged
        text, originals = t["messages"][-1]["content"], texts_of[t["metadata"]["gold"]]
        unchanged += text in originals  # CLINC150 has "move my money" and "move my money please"
        assert difflib.get_close_matches(text, originals, n=1, cutoff=0.75), text
    assert unchanged < 0.05 * len(paraphrased)
    assert messy.summary.mess["repeats"] == len(repeats)


def test_multi_turn_calls_carry_the_previous_turn_of_the_session(messy):
    last_by_user: dict[str, dict] = {}
    multi = 0
    for trace in sorted(messy.traces, key=lambda t: t["timestamp"]):
        messages = trace["messages"]
        assert messages[-1]["role"] == "user"
        if len(messages) == 4:
            multi += 1
            previous = last_by_user[trace["user_id"]]
            assert messages[1]["content"] == previous["messages"][-1]["content"]
            assert messages[2] == {"role": "assistant", "content": previous["output"]}
            assert trace["session_id"] == previous["session_id"]
            assert trace["metadata"]["sim"]["turns"] == 2
        last_by_user[trace["user_id"]] = trace
    assert abs(multi / len(messy.traces) - 0.2) < 0.03
    assert messy.summary.mess["multi_turn"] == multi


# ---- frontier errors concentrated on hard inputs --------------------------------------------------


def _errors_per_example(tmp_path: Path, **overrides) -> dict[str, list[str]]:
    """text -> the outputs of its wrong answers, on 6000 calls over a 100-query labeled pool."""
    path = write_labeled(tmp_path / "labeled.csv")
    config = SimulationConfig.from_mapping({
        **NO_MESS, "dataset": "labeled", "input_path": str(path), "days": 6, "traces_per_day": 1000,
        "frontier_error_rate": 0.2, "seed": 3, **overrides})
    run = Run(config, tmp_path / "out")
    calls, errors = collections.Counter(), collections.defaultdict(list)
    for trace in run.traces:
        text = trace["messages"][-1]["content"]
        calls[text] += 1
        if not correct(trace):
            errors[text].append(trace["output"])
    assert min(calls.values()) == max(calls.values()) == 60
    return {text: errors.get(text, []) for text in calls}


def _hardest_fifth_share(errors: dict[str, list[str]]) -> float:
    counts = sorted((len(e) for e in errors.values()), reverse=True)
    return sum(counts[: len(counts) // 5]) / sum(counts)


def _modal_share(errors: dict[str, list[str]]) -> float:
    """Share of wrong answers equal to their example's most frequent wrong answer (examples failing 3+ times)."""
    often = [e for e in errors.values() if len(e) >= 3]
    return sum(collections.Counter(e).most_common(1)[0][1] for e in often) / sum(len(e) for e in often)


def test_frontier_errors_concentrate_on_some_examples_which_fail_the_same_way(tmp_path):
    uniform = _errors_per_example(tmp_path / "uniform")
    concentrated = _errors_per_example(tmp_path / "concentrated", frontier_error_concentration=1.0,
                                       frontier_error_consistency=0.8)
    total = sum(len(e) for e in concentrated.values()) / 6000
    assert abs(total - 0.2) < 0.03  # the traffic-weighted mean stays frontier_error_rate
    assert _hardest_fifth_share(uniform) < 0.35  # binomial noise only
    assert _hardest_fifth_share(concentrated) > 0.5
    # The same example fails the same way: its own wrong answer 80% of the time, vs near-label confusions.
    assert _modal_share(concentrated) > 0.8 > _modal_share(uniform) + 0.15


# ---- out-of-scope traffic for labeled data --------------------------------------------------------


def test_labeled_data_gets_out_of_scope_queries_from_held_out_labels(tmp_path):
    path = write_labeled(tmp_path / "labeled.csv")
    config = SimulationConfig(dataset="labeled", input_path=str(path), days=2, traces_per_day=1000,
                              out_of_scope_label_share=0.2, out_of_scope_rate=0.15, seed=5)
    run = Run(config, tmp_path / "out")
    held = run.summary.held_out_labels
    assert len(held) == 2 and set(held) <= set(LABELS)
    instruction = run.traces[0]["messages"][0]["content"]
    assert all(label not in instruction for label in held)
    assert all(label in instruction for label in LABELS if label not in held)
    assert f"answer {OUT_OF_SCOPE}" in instruction
    golds = collections.Counter(t["metadata"]["gold"] for t in run.traces)
    assert abs(golds[OUT_OF_SCOPE] / len(run.traces) - 0.15) < 0.03
    assert run.summary.out_of_scope == golds[OUT_OF_SCOPE]
    assert not set(held) & (set(golds) | {t["output"] for t in run.traces})
    for trace in run.traces:  # the held-out labels' own queries are the out-of-scope ones
        about = trace["messages"][-1]["content"]
        if trace["metadata"]["gold"] == OUT_OF_SCOPE and trace["metadata"]["sim"]["repeat"] != "paraphrase":
            assert any(label.replace("_", " ") in about for label in held)


def test_explicit_out_of_scope_labels(tmp_path):
    path = write_labeled(tmp_path / "labeled.csv")
    config = SimulationConfig(dataset="labeled", input_path=str(path), days=1, traces_per_day=300,
                              out_of_scope_labels=["weather", "balance"], seed=5)
    run = Run(config, tmp_path / "out")
    assert run.summary.held_out_labels == ["balance", "weather"]
    assert OUT_OF_SCOPE in {t["metadata"]["gold"] for t in run.traces}
    with pytest.raises(ConfigError, match="out_of_scope_labels.*sunshine"):
        simulate_landing(config.with_overrides({"out_of_scope_labels": ["sunshine"]}), tmp_path / "bad")
    with pytest.raises(ConfigError, match="fewer than two labels"):
        simulate_landing(config.with_overrides({"out_of_scope_labels": LABELS[1:]}), tmp_path / "bad")
    # clinc150 keeps its oos split and can hold intents out too
    clinc = Run(SimulationConfig(days=1, traces_per_day=200, out_of_scope_labels=["balance"], seed=2), tmp_path / "c")
    listed = clinc.traces[0]["messages"][0]["content"].split("intents: ")[1].split(". If none")[0].split(", ")
    assert "balance" not in listed and "bill_balance" in listed
    assert "balance" not in {t["metadata"]["gold"] for t in clinc.traces}


def test_without_held_out_labels_a_labeled_file_has_no_out_of_scope_traffic(tmp_path):
    path = write_labeled(tmp_path / "labeled.csv")
    run = Run(SimulationConfig(dataset="labeled", input_path=str(path), days=1, traces_per_day=300,
                               out_of_scope_label_share=0.0), tmp_path / "out")
    assert run.summary.held_out_labels == [] and run.summary.out_of_scope == 0
    assert OUT_OF_SCOPE not in run.traces[0]["messages"][0]["content"]


# ---- drift ---------------------------------------------------------------------------------------


def _daily_label_shares(tmp_path: Path, drift: float) -> list[dict[str, float]]:
    path = write_labeled(tmp_path / "labeled.csv")
    config = SimulationConfig.from_mapping({**NO_MESS, "dataset": "labeled", "input_path": str(path), "days": 8,
                                            "traces_per_day": 1000, "label_drift": drift, "seed": 6})
    out = tmp_path / "out"
    simulate_landing(config, out)
    days = collections.defaultdict(collections.Counter)
    for folder, trace in read_folder(out, "traces"):
        days[folder][trace["metadata"]["gold"]] += 1
    return [{label: day[label] / 1000 for label in LABELS} for _, day in sorted(days.items())]


def _distance(a: dict[str, float], b: dict[str, float]) -> float:
    return 0.5 * sum(abs(a[label] - b[label]) for label in LABELS)


def test_the_label_mix_drifts_over_the_days(tmp_path):
    still = _daily_label_shares(tmp_path / "still", 0.0)
    moving = _daily_label_shares(tmp_path / "moving", 0.6)
    uniform = dict.fromkeys(LABELS, 0.1)
    assert max(_distance(day, uniform) for day in still) < 0.03  # shuffled cycling over an even pool
    assert _distance(moving[0], moving[-1]) > 0.15
    # the drift is gradual: each day is nearer the previous day than the first is to the last
    assert max(_distance(a, b) for a, b in zip(moving, moving[1:])) < _distance(moving[0], moving[-1])


# ---- each task's half-way edits ------------------------------------------------------------------


def test_partial_edits_of_slots_and_summaries_are_half_way(tmp_path):
    common = {"frontier_error_rate": 0.7, "edit_partial_rate": 1.0, "edit_wrong_rate": 0.0, "rushed_user_rate": 0.0,
              "careful_accept_wrong_rate": 0.0, "repeat_rate": 0.0, "multi_turn_rate": 0.0, "seed": 4}
    slots = Run(SimulationConfig.from_mapping({**common, "dataset": "restaurant8k", "input_path": str(RESTAURANT8K),
                                               "days": 2, "traces_per_day": 200}), tmp_path / "slots")
    partial = 0
    for event, trace in slots.of_kind("edited"):
        gold, output = json.loads(trace["metadata"]["gold"]), json.loads(trace["output"])
        edited = json.loads(event["edited_output"])
        if trace["metadata"]["sim"]["edit_kind"] != "partial":
            continue
        partial += 1
        wrong_before = {k for k in set(gold) | set(output) if gold.get(k) != output.get(k)}
        wrong_after = {k for k in set(gold) | set(edited) if gold.get(k) != edited.get(k)}
        assert 0 < len(wrong_after) <= len(wrong_before)
        if len(wrong_after) == len(wrong_before):  # one wrong slot: its span fixed but clipped
            (key,) = wrong_after
            assert edited[key] in gold[key] and edited[key] != gold[key]
    assert partial > 20
    summaries = Run(SimulationConfig.from_mapping({**common, "dataset": "dialogsum", "input_path": str(DIALOGSUM),
                                                   "days": 1, "traces_per_day": 200}), tmp_path / "summaries")
    partial = 0
    for event, trace in summaries.of_kind("edited"):
        if trace["metadata"]["sim"]["edit_kind"] == "partial":
            partial += 1
            gold_words, edited_words = trace["metadata"]["gold"].split(), event["edited_output"].split()
            assert len(gold_words) / 2 <= len(edited_words) < len(gold_words)
            assert gold_words[: len(edited_words)] == edited_words
    assert partial > 20


# ---- one stream per behaviour ----------------------------------------------------------------------


def _calls(out: Path) -> list[tuple]:
    return [(t["trace_id"], t["timestamp"], t["user_id"], t["session_id"]) for _, t in read_folder(out, "traces")]


def test_turning_one_mess_off_leaves_the_other_draws_alone(tmp_path):
    base = {"days": 2, "traces_per_day": 400, "seed": 8, "human_review_rate": 0.3, "reviewer_error_rate": 0.2}
    simulate_landing(SimulationConfig.from_mapping(base), tmp_path / "messy")
    simulate_landing(SimulationConfig.from_mapping({**base, "reviewer_error_rate": 0.0}), tmp_path / "right")
    messy, right = snapshot(tmp_path / "messy"), snapshot(tmp_path / "right")
    # Reviewers right instead: the same traces (but for the review bookkeeping) and the same user feedback.
    for name in messy:
        strip = [json.loads(line) for line in messy[name].decode().splitlines()]
        other = [json.loads(line) for line in right[name].decode().splitlines()]
        if name.startswith("traces/"):
            for record in strip + other:
                record["metadata"]["sim"].pop("review")
        else:
            strip = [e for e in strip if e["kind"] != "human_label"]
            other = [e for e in other if e["kind"] != "human_label"]
        assert strip == other, name
    # No repeats, drift or conversations: calls at the same times from the same users with the same ids.
    simulate_landing(SimulationConfig.from_mapping({**base, "repeat_rate": 0.0, "label_drift": 0.0,
                                                    "multi_turn_rate": 0.0}), tmp_path / "plain")
    plain, messy_calls = _calls(tmp_path / "plain"), _calls(tmp_path / "messy")
    assert len(plain) == 800 and [c[:3] for c in plain] == [c[:3] for c in messy_calls]


def test_error_propensities_keep_the_traffic_weighted_rate_and_stay_below_one():
    rng = np.random.default_rng(0)
    raw = [np.exp(2.0 * rng.standard_normal(5000)), np.exp(2.0 * rng.standard_normal(300))]
    shares = (np.full(5000, 0.9 / 5000), np.full(300, 0.1 / 300))
    for rate in (0.01, 0.05, 0.3, 0.9):
        inside, outside = scaled_propensities(raw, shares, rate, uniform=False)
        assert abs(shares[0] @ inside + shares[1] @ outside - rate) < 1e-9
        assert max(inside.max(), outside.max()) <= 0.95 and inside.std() > 0
    flat = scaled_propensities(raw, shares, 0.05, uniform=True)
    assert all((p == 0.05).all() for p in flat)
    assert all((p == 1.0).all() for p in scaled_propensities(raw, shares, 1.0, uniform=False))
