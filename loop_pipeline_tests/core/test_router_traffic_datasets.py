"""The router's own traffic, used correctly (issue 14): a dataset version built from mixed router
traffic, through the real ingest, scoring and datasets path, and the evaluation's frontier figures
on its holdout.

Two simulated days (direct frontier traffic, with the reviews the quality model needs) land beside
router traffic written as the router writes it: ``router.records.trace_record`` of real
``Exchange`` objects (frontier-direct, served locally with each kind of feedback or none, shadowed,
escalated with the unserved local answer, fallen back), feedback in the router's native shape. Every
case is asked once by a train user and once by a holdout user (the stored group assignment says
which). Answers are named after their origin (``local_*``, ``unserved_*``, ``frontier_*``,
``shadow_*``, ``edit_*``, ``fix_*``) so the test can see where each one went.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import polars as pl
import pytest

from loop_pipeline.core import dedup, expectations, redaction, scoring
from loop_pipeline.core.datasets import (
    ASSIGNMENTS_FILE,
    CURATED_SOURCES,
    REFERENCE_SOURCES,
    DatasetConfig,
    build_dataset_version,
)
from loop_pipeline.core.evaluation import EvalConfig, evaluate_answers, frontier_cost
from loop_pipeline.core.evaluation.answers import CURATED_SOURCES as EVALUATION_CURATED_SOURCES
from loop_pipeline.core.ingest import IngestConfig, discover, ingest
from loop_pipeline.core.tasks import TasksConfig
from loop_pipeline.router.backends.base import Completion
from loop_pipeline.router.chat_request import ChatCall
from loop_pipeline.router.records import Exchange, Pricing, trace_record
from loop_pipeline.router.trace_writer import serialize
from loop_pipeline.sim import SimulationConfig
from loop_pipeline_tests.helpers import REPO_CONFIGS, repo_prices, simulate_landing
from loop_pipeline_tests.router.router_support import intent_spec

SIMULATION = {"days": 2, "traces_per_day": 600, "start_date": "2026-11-01", "human_review_rate": 0.3}
DAY = "2026-11-02"
FRONTIER_MODEL = "gpt-4o-mini"
CONFIGS = {
    "config": DatasetConfig.from_yaml(REPO_CONFIGS / "datasets.yaml"),
    "redaction_config": redaction.RedactionConfig.from_yaml(REPO_CONFIGS / "redaction.yaml"),
    "dedup_config": dedup.DedupConfig.from_yaml(REPO_CONFIGS / "dedup.yaml"),
}
TASKS = TasksConfig.from_yaml(REPO_CONFIGS / "tasks.yaml")
USERS = {"train": "router-user-train", "holdout": "router-user-holdout"}
SHADOW_EMAIL = "jane.doe@example.com"  # in one shadow answer: the frontier's answer is redacted too


@dataclass(frozen=True)
class Case:
    route: str  # local | frontier (escalated) | fallback | direct (the app called the frontier itself)
    feedback: tuple[tuple[str, float | None], ...] = ()  # (kind, value)
    shadowed: bool = False


CASES: dict[str, Case] = {
    "local_accepted": Case("local", (("accepted", None),)),
    "local_thumbs_up": Case("local", (("thumbs", 1.0),)),
    "local_edited": Case("local", (("edited", None),)),
    "local_review_right": Case("local", (("human_label", 1.0),)),
    "local_review_wrong": Case("local", (("human_label", 0.0),)),
    "local_no_feedback": Case("local"),
    "local_copied": Case("local", (("copied", None),)),  # copying is not an explicit positive signal
    "local_rejected": Case("local", (("rejected", None),)),
    "local_thumbs_down": Case("local", (("thumbs", 0.0),)),
    "local_shadowed": Case("local", shadowed=True),
    "local_shadowed_accepted": Case("local", (("accepted", None),), shadowed=True),
    "direct_no_feedback": Case("direct"),
    "escalated_no_feedback": Case("frontier"),
    "escalated_thumbs_down": Case("frontier", (("thumbs", 0.0),)),
    "fallback_no_feedback": Case("fallback"),
}
LOCAL_UNSHADOWED = {name for name, c in CASES.items() if c.route == "local" and not c.shadowed}
# Words no simulated prompt uses, eight per prompt and none shared: no two prompts are near duplicates.
WORDS = (
    "amber basil cedar delta ember fjord garnet harbor indigo juniper kelp lagoon mango nectar onyx pepper "
    "quartz raven saffron tundra umber velvet walnut xenon yarrow zephyr acorn bramble cobalt dune egret "
    "falcon glacier hazel iris jasper kiwi lotus maple nutmeg olive plum quince reed sage thistle umbra "
    "violet willow yucca zinnia alder birch clover daisy elm fern gorse heather ivy jade kale lilac moss "
    "nettle orchid poppy quill rose sorrel tansy ursine vetch wheat yew zest anise borage chive dill "
    "endive fennel ginger hyssop inkberry jicama kohlrabi lovage mint nori oregano parsley quinoa rue sumac "
    "tarragon ube vanilla wasabi yam zucchini apricot banana cherry damson elder fig grape huckleberry "
    "icaco jackfruit kumquat lime medlar nance orange papaya quandong raisin satsuma tangelo ugli voavanga "
    "watermelon ximenia yuzu zapote abalone barnacle cockle dory eel flounder grouper halibut"
).split()


def prompt(index: int) -> str:
    return "please sort out " + " ".join(WORDS[index * 8 : index * 8 + 8])


def answers(case: str, user: str) -> dict[str, str]:
    tag = f"{case}_{user.rsplit('-', 1)[1]}"
    shadow = f"shadow_{tag}" + (f" mail {SHADOW_EMAIL}" if case == "local_shadowed" else "")
    return {"local": f"local_{tag}", "unserved": f"unserved_{tag}", "frontier": f"frontier_{tag}", "shadow": shadow,
            "edit": f"edit_{tag}", "fix": f"fix_{tag}"}


def exchange(case: str, spec: Case, user: str, index: int, at: dt.datetime) -> Exchange:
    said = answers(case, user)
    call = ChatCall(
        body={}, messages=[{"role": "system", "content": "Classify the intent."}, {"role": "user", "content": prompt(index)}],
        stream=False, task_type="intent", app="bank-app", user_id=user, session_id=f"s-{user}-{case}", prompt_version="v1",
    )
    ex = Exchange(call=call, trace_id=f"rt-{case}-{user}", received_at=at, spec=intent_spec(version="3"), threshold=0.8)
    ex.route = "frontier" if spec.route == "direct" else spec.route
    if spec.route in ("local", "frontier"):  # the local model answered (served, or escalated unserved)
        text = said["local"] if spec.route == "local" else said["unserved"]
        ex.local = Completion(text=text, model="loop-candidate@v3", seconds=0.01, confidence=0.95 if spec.route == "local" else 0.4)
        ex.reason = "confident" if spec.route == "local" else "low_confidence"
    if spec.route == "fallback":
        ex.local_error, ex.reason = "timeout", "local_timeout"
    if spec.route != "local":
        ex.frontier = Completion(text=said["frontier"], model=FRONTIER_MODEL, seconds=0.3, input_tokens=40, output_tokens=6)
    if spec.shadowed:
        ex.shadow = Completion(text=said["shadow"], model=FRONTIER_MODEL, seconds=0.3, input_tokens=40, output_tokens=12)
        ex.shadow_agrees = False
    ex.finished = ex.started + 0.5
    return ex


def feedback_records(case: str, spec: Case, user: str, trace_id: str, at: dt.datetime) -> list[dict[str, Any]]:
    said = answers(case, user)
    out = []
    for n, (kind, value) in enumerate(spec.feedback):
        review = kind == "human_label"
        label = (said["local"] if value == 1.0 else said["fix"]) if review else None
        out.append({
            "feedback_id": f"fb-{trace_id}-{n}", "trace_id": trace_id, "timestamp": (at + dt.timedelta(minutes=5)).isoformat(),
            "kind": kind, "value": value, "label": label, "edited_output": said["edit"] if kind == "edited" else None,
            "source": "human_reviewer" if review else "user", "annotator_id": "rev-1" if review else None,
        })
    return out


def router_traffic() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Trace and feedback records as the router writes them, every case for both users."""
    pricing = Pricing(repo_prices())
    traces, feedback = [], []
    start = dt.datetime.fromisoformat(f"{DAY}T09:00:00+00:00")
    for u, user in enumerate(USERS.values()):
        for c, (case, spec) in enumerate(CASES.items()):
            at = start + dt.timedelta(minutes=len(CASES) * u + c)
            ex = exchange(case, spec, user, len(CASES) * u + c, at)
            record = trace_record(ex, pricing.split(ex), FRONTIER_MODEL)
            if spec.route == "direct":  # an app calling the frontier itself: no router metadata
                record.update(metadata={"app_request": case}, cost_usd=pricing.frontier(ex.frontier), provider="openai")
            traces.append(record)
            feedback += feedback_records(case, spec, user, ex.trace_id, at)
    return traces, feedback


def group_key(user: str) -> str:
    return "user_id:" + hashlib.sha256(user.encode()).hexdigest()[:16]


@dataclass
class World:
    root: Path
    traces: pl.DataFrame
    scored: pl.DataFrame
    records: dict[str, dict[str, Any]]  # trace_id -> the router's trace record


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(serialize(r) + "\n" for r in records), encoding="utf-8")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("router_traffic")
    landing = root / "landing"
    simulate_landing(SimulationConfig.from_mapping(SIMULATION), landing)
    traces, feedback = router_traffic()
    write_jsonl(landing / "traces" / DAY / "router-0001.jsonl", traces)
    write_jsonl(landing / "feedback" / DAY / "router-0001.jsonl", feedback)
    result = ingest(discover([str(landing)]), IngestConfig.from_yaml(REPO_CONFIGS / "ingest.yaml"), repo_prices())
    assert result.quarantine.height == 0, result.quarantine.head(5).to_dicts()
    ingested = result.traces.unique("trace_id", keep="first", maintain_order=True)
    assert set(ingested.get_column("trace_id")) >= {r["trace_id"] for r in traces}
    scored = scoring.score_traffic(ingested, result.feedback, scoring.ScoringConfig.from_yaml(REPO_CONFIGS / "scoring.yaml"), TASKS).scored
    yield World(root, ingested, scored, {r["trace_id"]: r for r in traces})


def build(world: World, name: str, thresholds: dict[str, scoring.KeepRule]) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
    """A version in its own folder, the two router users' groups assigned as stored beforehand."""
    root = world.root / name
    root.mkdir()
    pl.DataFrame({"group_key": [group_key(u) for u in USERS.values()], "split": list(USERS)}).write_parquet(root / ASSIGNMENTS_FILE)
    summary = build_dataset_version(world.scored, world.traces, thresholds, root, **CONFIGS)
    return summary, {n: pl.read_parquet(p) for n, p in summary["paths"].items()}


@pytest.fixture(scope="module")
def keep_all(world):
    """Every output the keep rule can trust (threshold 0: all non-vetoed outputs clear it): what is
    left out is left out by the router-traffic rules alone."""
    return build(world, "keep_all", {"intent": 0.0})


def tid(case: str, split: str) -> str:
    return f"rt-{case}-{USERS[split]}"


def content(column: str) -> pl.Expr:
    return pl.col(column).list.last().struct.field("content")


def router_rows(frame: pl.DataFrame, split: str) -> dict[str, dict[str, Any]]:
    ids = {tid(case, split): case for case in CASES}
    return {ids[r["trace_id"]]: r for r in frame.filter(pl.col("trace_id").is_in(list(ids))).iter_rows(named=True)}


def test_sft_takes_a_local_answer_only_with_an_explicit_positive_signal(keep_all):
    summary, datasets = keep_all
    sft = router_rows(datasets["sft"].with_columns(content("messages").alias("target")), "train")
    expected = {
        "local_accepted": ("output", "local"), "local_thumbs_up": ("output", "local"),
        "local_review_right": ("output", "local"), "local_shadowed_accepted": ("output", "local"),
        "local_edited": ("edit", "edit"), "local_review_wrong": ("review", "fix"),
        # Escalated and fallen-back requests are ordinary frontier traces: the frontier's answer.
        "direct_no_feedback": ("output", "frontier"), "escalated_no_feedback": ("output", "frontier"),
        "fallback_no_feedback": ("output", "frontier"),
    }
    assert {case: (row["target_source"], row["target"]) for case, row in sft.items()} == {
        case: (source, answers(case, USERS["train"])[which]) for case, (source, which) in expected.items()
    }
    # Kept by the score alone (no feedback, copied, shadowed): not in sft, and counted.
    assert summary["router"]["local_excluded_unverified"] == 3
    every_target = datasets["sft"].select(content("messages")).to_series().to_list()
    assert not [t for t in every_target if t.startswith("unserved_") or t.startswith("shadow_")]
    assert {route: summary["rows_by_route"]["sft"][route] for route in ("local", "frontier", "fallback")} == {"local": 6, "frontier": 1, "fallback": 1}


def test_local_negatives_enter_kto_and_dpo_with_the_local_answer_rejected(keep_all):
    _, datasets = keep_all
    kto = datasets["kto"].with_columns(content("completion").alias("text"))
    bad = {case: row["text"] for case, row in router_rows(kto.filter(~pl.col("label")), "train").items()}
    negatives = ("local_edited", "local_review_wrong", "local_rejected", "local_thumbs_down")
    assert bad == {
        **{case: answers(case, USERS["train"])["local"] for case in negatives},
        "escalated_thumbs_down": answers("escalated_thumbs_down", USERS["train"])["frontier"],
    }
    good = router_rows(kto.filter(pl.col("label")), "train")
    assert not {"local_no_feedback", "local_copied", "local_shadowed", "local_rejected", "local_thumbs_down"} & set(good)
    dpo = router_rows(datasets["dpo"].with_columns(content("chosen").alias("c"), content("rejected").alias("r")), "train")
    assert {case: (row["c"], row["r"]) for case, row in dpo.items()} == {
        "local_edited": (answers("local_edited", USERS["train"])["edit"], answers("local_edited", USERS["train"])["local"]),
        "local_review_wrong": (answers("local_review_wrong", USERS["train"])["fix"], answers("local_review_wrong", USERS["train"])["local"]),
    }


def test_the_holdout_never_takes_a_local_answer_for_a_frontier_answer(keep_all):
    summary, datasets = keep_all
    holdout = datasets["holdout"]
    rows = router_rows(holdout, "holdout")
    assert set(rows) == set(CASES)  # every request of the holdout user, whatever its feedback
    said = {case: answers(case, USERS["holdout"]) for case in CASES}
    redacted_shadow = said["local_shadowed"]["shadow"].replace(SHADOW_EMAIL, "[EMAIL]")
    expected = {
        "local_accepted": ("accepted_scored", said["local_accepted"]["local"], None),
        "local_thumbs_up": ("accepted_scored", said["local_thumbs_up"]["local"], None),
        "local_edited": ("edit", said["local_edited"]["edit"], None),
        "local_review_right": ("review", said["local_review_right"]["local"], None),
        "local_review_wrong": ("review", said["local_review_wrong"]["fix"], None),
        "local_no_feedback": ("local_unverified", None, None),
        "local_copied": ("local_unverified", None, None),
        "local_rejected": ("local_unverified", None, None),
        "local_thumbs_down": ("local_unverified", None, None),
        # Shadowed: the frontier's answer to the same request, redacted like any text.
        "local_shadowed": ("frontier_shadow", redacted_shadow, redacted_shadow),
        "local_shadowed_accepted": ("accepted_scored", said["local_shadowed_accepted"]["local"], said["local_shadowed_accepted"]["shadow"]),
        "direct_no_feedback": ("accepted_scored", said["direct_no_feedback"]["frontier"], said["direct_no_feedback"]["frontier"]),
        "escalated_no_feedback": ("accepted_scored", said["escalated_no_feedback"]["frontier"], said["escalated_no_feedback"]["frontier"]),
        "escalated_thumbs_down": ("frontier_unverified", said["escalated_thumbs_down"]["frontier"], said["escalated_thumbs_down"]["frontier"]),
        "fallback_no_feedback": ("accepted_scored", said["fallback_no_feedback"]["frontier"], said["fallback_no_feedback"]["frontier"]),
    }
    assert {case: (r["reference_source"], r["reference"], r["frontier_output"]) for case, r in rows.items()} == expected
    frontier_outputs = holdout.get_column("frontier_output").drop_nulls().to_list()
    assert not [f for f in frontier_outputs if f.startswith(("local_", "unserved_"))]
    assert set(holdout.get_column("reference_source")) <= set(REFERENCE_SOURCES)
    assert summary["rows_by_route"]["holdout"]["local"] == 11
    assert summary["router"]["shadow_agreement"]["intent"] == {"shadowed": 4, "agrees": 0, "agreement": 0.0}
    # The blocking expectations accept a local answer without a reference (traffic, not a target)
    # and find no PII in the shadows' answers.
    assert expectations.no_empty_targets(datasets).passed
    outcome = expectations.no_sensitive_text(datasets, CONFIGS["redaction_config"])
    assert outcome.passed, outcome.description


def test_under_the_scoring_stages_own_rules_unverified_local_answers_stay_out(world):
    config = scoring.ScoringConfig.from_yaml(REPO_CONFIGS / "scoring.yaml")
    rules = scoring.keep_rules(scoring.sweep_thresholds(world.scored, config))
    summary, datasets = build(world, "swept", rules)
    sft_ids = set(datasets["sft"].get_column("trace_id"))
    for case in ("local_no_feedback", "local_copied", "local_shadowed", "local_rejected", "local_thumbs_down"):
        assert tid(case, "train") not in sft_ids, case
    for case in ("local_edited", "local_review_wrong"):  # the correction is the target whatever the rule
        assert tid(case, "train") in sft_ids, case
    holdout = router_rows(datasets["holdout"], "holdout")
    assert {case for case, r in holdout.items() if r["frontier_output"] is None} == LOCAL_UNSHADOWED
    assert all(r["reference_source"] != "frontier_unverified" for case, r in holdout.items() if CASES[case].route == "local")
    # Simulated traffic never went through the router: every row is direct.
    sim_rows = datasets["sft"].filter(~pl.col("trace_id").str.starts_with("rt-")).height
    assert summary["rows_by_route"]["sft"]["direct"] == sim_rows + int(tid("direct_no_feedback", "train") in sft_ids)


def test_agreement_with_the_frontier_reads_only_rows_with_a_frontier_answer(keep_all):
    _, datasets = keep_all
    holdout = datasets["holdout"]
    frontier = holdout.get_column("frontier_output").to_list()
    # The candidate repeats the frontier's answer wherever there is one and says something else
    # where there is none: counting those rows would pull agreement below 1.
    said = [f if f is not None else "not_a_frontier_answer" for f in frontier]
    confidence = np.full(holdout.height, 0.99)
    missing = sum(f is None for f in frontier)
    assert missing == len(LOCAL_UNSHADOWED)
    assert EVALUATION_CURATED_SOURCES == CURATED_SOURCES
    for certify_against in ("reference", "frontier"):
        reports, per_example = evaluate_answers(holdout, said, confidence, TASKS, EvalConfig(certify_against=certify_against))
        report = reports["intent"]
        assert report.n == holdout.height and report.n_with_frontier == holdout.height - missing
        assert report.agreement_frontier == 1.0
        with_certification = holdout.get_column("reference" if certify_against == "reference" else "frontier_output").is_not_null().sum()
        assert report.n_certification == with_certification < holdout.height
        no_answer = per_example.filter(pl.col("frontier_output").is_null())
        assert no_answer.height == missing and no_answer.get_column("agrees_frontier").is_null().all()
        assert per_example.get_column("agrees").null_count() == holdout.height - with_certification
        if certify_against == "frontier":  # no confusion comes from a row without a frontier answer
            assert report.confusions == []
    # The curated reference: review, edit, accepted_scored only (not a shadow's or an unverified answer).
    assert report.n_with_reference == holdout.filter(pl.col("reference_source").is_in(CURATED_SOURCES)).height


def test_frontier_cost_reads_only_frontier_calls(world, keep_all):
    _, datasets = keep_all
    ids = datasets["holdout"].get_column("trace_id")
    cost = frontier_cost(world.traces, ids)
    pricing = Pricing(repo_prices())
    expected: list[float] = []
    for trace_id in ids.to_list():
        record = world.records.get(trace_id)
        if record is None:  # simulated: a direct frontier trace, its own cost
            expected.append(world.traces.filter(pl.col("trace_id") == trace_id).get_column("cost_usd").item())
        elif record["metadata"].get("route") is None:
            expected.append(record["cost_usd"])
        elif record["metadata"]["route"] == "local":
            if record["metadata"].get("shadow"):
                expected.append(record["metadata"]["cost_shadow_usd"])
        else:  # escalated or fallen back: the frontier call, not the local try the router also paid
            assert record["cost_usd"] > record["metadata"]["cost_frontier_usd"] > 0
            expected.append(record["metadata"]["cost_frontier_usd"])
    assert cost.skipped_no_frontier_answer == len(LOCAL_UNSHADOWED) and cost.skipped_no_cost == 0
    assert cost.rows == len(expected) == ids.len() - len(LOCAL_UNSHADOWED)
    assert cost.per_request == pytest.approx(float(np.mean(expected)))
    shadow_price = pricing.frontier(Completion(text="", model=FRONTIER_MODEL, seconds=0, input_tokens=40, output_tokens=12))
    assert world.records[tid("local_shadowed", "holdout")]["metadata"]["cost_shadow_usd"] == pytest.approx(shadow_price)
