"""The holdout is production traffic: every trace of the frozen holdout groups, each with a
reference and where it came from; train keeps only what teaches something (issue 13).

Hand-made scored traces (one of each feedback case, for a holdout user and a train user) go
through curate_examples and build_datasets with the repository's redaction and dedup configs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import polars as pl
import pytest

from loop_pipeline.core import dedup, redaction
from loop_pipeline.core.datasets import REFERENCE_SOURCES, DatasetConfig, build_datasets, curate_examples
from loop_pipeline.schemas.traces import MESSAGES_DTYPE
from loop_pipeline_tests.helpers import REPO_CONFIGS

REDACTION = redaction.RedactionConfig.from_yaml(REPO_CONFIGS / "redaction.yaml")
DEDUP = dedup.DedupConfig.from_yaml(REPO_CONFIGS / "dedup.yaml")
THRESHOLDS = {"intent": 0.9}

# case -> (the trace's scored fields, expected reference_source, expected reference ("output" = the
# trace's own output), kept in train?)
CASES: dict[str, tuple[dict[str, Any], str, str, bool]] = {
    "review_wrong": ({"review_good": False, "review_label": "card_declined", "reviewed": True}, "review", "card_declined", True),
    "review_right": ({"review_good": True, "review_label": "balance", "reviewed": True}, "review", "output", False),
    "edited": ({"edited": True, "user_edit": "transfer_money"}, "edit", "transfer_money", True),
    "kept_by_score": ({"p_good_signals": 0.97, "accepted": True}, "accepted_scored", "output", True),
    "no_feedback": ({}, "frontier_unverified", "output", False),
    # A reviewer said wrong without a label: nothing vouches for the output, and it is a KTO negative.
    "review_wrong_no_label": ({"review_good": False, "reviewed": True}, "frontier_unverified", "output", True),
    "vetoed_high_score": ({"p_good_signals": 0.99, "vetoed": True}, "frontier_unverified", "output", False),
}
PROMPTS = {
    "review_wrong": "why was my payment at the grocery store refused this morning",
    "review_right": "how much money is left in my checking account right now",
    "edited": "send two hundred dollars to my sister for her birthday gift",
    "kept_by_score": "please lock my debit card because my wallet went missing",
    "no_feedback": "what are the opening hours of the branch on main street",
    "review_wrong_no_label": "remind me what the interest rate on my savings is",
    "vetoed_high_score": "could you explain the fee that appeared on my statement",
}


def group_key(user: str) -> str:
    """A user's group key as stored (a pseudonym: sha256 of the id)."""
    return "user_id:" + hashlib.sha256(user.encode()).hexdigest()[:16]


def scored_row(trace_id: str, user: str, prompt: str, **fields: Any) -> dict[str, Any]:
    row = {
        "trace_id": trace_id, "task_type": "intent", "user_id": user, "output": "balance", "sim_gold": "balance",
        "p_good": 0.5, "p_good_signals": 0.5, "vetoed": False, "accepted": False, "reviewed": False,
        "review_good": None, "review_label": None, "edited": False, "user_edit": None,
        "rejected": False, "hallucination": False, "thumbs_up": False, "thumbs_down": False, "heuristic_failed": False,
        "_prompt": prompt,
    }
    row.update(fields)
    return row


def frames(rows: list[dict[str, Any]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    scored = pl.DataFrame(rows, schema_overrides={"review_good": pl.Boolean, "review_label": pl.String, "user_edit": pl.String})
    traces = pl.DataFrame(
        {
            "trace_id": [r["trace_id"] for r in rows],
            "timestamp": [dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=i) for i in range(len(rows))],
            "messages": [[{"role": "system", "content": "Classify."}, {"role": "user", "content": r["_prompt"]}] for r in rows],
            "session_id": [f"s-{r['trace_id']}" for r in rows],
            "prompt_version": ["v1"] * len(rows),
            "metadata": [None] * len(rows),  # no router route: direct frontier traces
        },
        schema_overrides={"messages": MESSAGES_DTYPE, "metadata": pl.String},
    )
    return scored.drop("_prompt"), traces


def every_case(user: str, prefix: str, prompt_suffix: str) -> list[dict[str, Any]]:
    return [scored_row(f"{prefix}-{case}", user, f"{PROMPTS[case]} {prompt_suffix}", **fields) for case, (fields, *_) in CASES.items()]


ASSIGNMENTS = pl.DataFrame({"group_key": [group_key("u-hold"), group_key("u-train")], "split": ["holdout", "train"]})


def curate(rows: list[dict[str, Any]], config: DatasetConfig | None = None):
    scored, traces = frames(rows)
    return curate_examples(scored, traces, THRESHOLDS, ASSIGNMENTS, config or DatasetConfig(), REDACTION, DEDUP)


@pytest.fixture(scope="module")
def built():
    # Train prompts differ from the holdout's (another suffix of several words) so no train row is a
    # near duplicate of a holdout prompt.
    rows = every_case("u-hold", "h", "thanks a lot") + every_case("u-train", "t", "for the account ending in my usual one")
    # The same prompt asked twice more by the holdout user: repeats are traffic, both stay.
    rows += [scored_row(f"h-again-{i}", "u-hold", f"{PROMPTS['no_feedback']} thanks a lot") for i in range(2)]
    curation = curate(rows)
    return curation, build_datasets(curation.examples)


def test_the_holdout_keeps_every_trace_of_its_groups_with_its_reference(built):
    curation, datasets = built
    holdout = datasets["holdout"]
    assert holdout.columns == [
        "trace_id", "timestamp", "task_type", "group_key", "prompt", "reference", "reference_source", "frontier_output", "sim_gold",
    ]
    assert set(holdout.get_column("group_key")) == {group_key("u-hold")}
    assert holdout.height == len(CASES) + 2
    by_id = {row["trace_id"]: row for row in holdout.iter_rows(named=True)}
    for case, (_, source, reference, _) in CASES.items():
        row = by_id[f"h-{case}"]
        expected = row["frontier_output"] if reference == "output" else reference
        assert (row["reference_source"], row["reference"]) == (source, expected), case
        assert row["frontier_output"] == "balance" and row["sim_gold"] == "balance"
    assert set(holdout.get_column("reference_source")) <= set(REFERENCE_SOURCES)
    # The same prompt three times: no deduplication within the holdout.
    repeated = holdout.filter(pl.col("prompt").list.last().struct.field("content") == f"{PROMPTS['no_feedback']} thanks a lot")
    assert repeated.height == 3
    assert curation.stats["holdout_reference_sources"] == {
        "accepted_scored": 1, "edit": 1, "frontier_unverified": 5, "review": 2,
    }


def test_train_keeps_only_traces_with_a_target_or_a_bad_output(built):
    _, datasets = built
    train_ids = set().union(*(set(datasets[n].get_column("trace_id")) for n in ("sft", "kto", "dpo")))
    expected = {f"t-{case}" for case, (*_, in_train) in CASES.items() if in_train}
    assert train_ids == expected
    # Train targets are unchanged: a review that says right is no sft target by itself.
    sources = dict(datasets["sft"].select("trace_id", "target_source").iter_rows())
    assert sources == {"t-review_wrong": "review", "t-edited": "edit", "t-kept_by_score": "output"}


def test_a_train_row_that_repeats_a_holdout_prompt_is_dropped_not_the_holdout_row():
    rows = every_case("u-hold", "h", "thanks a lot")
    rows.append(scored_row("t-copy", "u-train", f"{PROMPTS['kept_by_score']} thanks a lot", p_good_signals=0.97))
    rows.append(scored_row("t-own", "u-train", "book a table for four at the italian place tonight", p_good_signals=0.97))
    curation = curate(rows)
    examples = curation.examples
    assert set(examples.filter(pl.col("split") == "train").get_column("trace_id")) == {"t-own"}
    assert examples.filter(pl.col("split") == "holdout").height == len(CASES)
    assert curation.stats["train_excluded_near_holdout"] == 1


def test_review_labels_turned_off_are_not_a_reference_either():
    curation = curate(every_case("u-hold", "h", "thanks a lot"), DatasetConfig(include_review_labels=False))
    holdout = build_datasets(curation.examples)["holdout"]
    sources = dict(holdout.select("trace_id", "reference_source").iter_rows())
    assert "review" not in sources.values()
    assert sources["h-review_wrong"] == sources["h-review_right"] == "frontier_unverified"
    wrong = holdout.filter(pl.col("trace_id") == "h-review_wrong").row(0, named=True)
    assert wrong["reference"] == wrong["frontier_output"]


def test_the_holdout_reference_is_redacted():
    rows = every_case("u-hold", "h", "thanks a lot")
    rows[0]["review_label"] = "card_declined, mail jane.doe@example.com"
    holdout = build_datasets(curate(rows).examples)["holdout"]
    reference = holdout.filter(pl.col("trace_id") == "h-review_wrong").get_column("reference").item()
    assert reference == "card_declined, mail [EMAIL]"
