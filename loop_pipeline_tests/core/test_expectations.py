"""Dataset expectations never pass with nothing to check: an empty input fails with a reason, and
the label-share check fails when configured classification tasks have no sft rows (it is not
applicable, and says so, only when tasks.yaml configures no classification task)."""

from __future__ import annotations

import polars as pl

from loop_pipeline.core import dedup, expectations, redaction
from loop_pipeline.core.datasets import DatasetConfig
from loop_pipeline.core.tasks import TaskSpec, TasksConfig
from loop_pipeline.schemas.traces import MESSAGES_DTYPE
from loop_pipeline_tests.helpers import REPO_CONFIGS

REDACTION = redaction.RedactionConfig.from_yaml(REPO_CONFIGS / "redaction.yaml")
DEDUP = dedup.DedupConfig.from_yaml(REPO_CONFIGS / "dedup.yaml")
TASKS = TasksConfig(
    tasks={
        "intent": TaskSpec(name="intent", kind="classification"),
        "classification": TaskSpec(name="classification", kind="classification"),
        "summarization": TaskSpec(name="summarization", kind="summarization"),
    }
)
SHARES = DatasetConfig(max_label_share=0.5)


def _turns(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in turns]


def datasets(sft: list[tuple[str, str, str, str]], holdout: list[tuple[str, str, str, str]]) -> dict[str, pl.DataFrame]:
    """sft and holdout rows: (trace_id, task_type, prompt, target / reference); kto and dpo empty."""
    empty_pairs = {"trace_id": pl.String, "task_type": pl.String, "prompt": MESSAGES_DTYPE}
    return {
        "sft": pl.DataFrame(
            {
                "trace_id": [r[0] for r in sft],
                "task_type": [r[1] for r in sft],
                "messages": [_turns(("user", r[2]), ("assistant", r[3])) for r in sft],
                "target_source": ["review"] * len(sft),
            },
            schema_overrides={"messages": MESSAGES_DTYPE, "trace_id": pl.String, "task_type": pl.String, "target_source": pl.String},
        ),
        "kto": pl.DataFrame(schema={**empty_pairs, "completion": MESSAGES_DTYPE, "label": pl.Boolean}),
        "dpo": pl.DataFrame(schema={**empty_pairs, "chosen": MESSAGES_DTYPE, "rejected": MESSAGES_DTYPE}),
        "holdout": pl.DataFrame(
            {
                "trace_id": [r[0] for r in holdout],
                "task_type": [r[1] for r in holdout],
                "prompt": [_turns(("user", r[2])) for r in holdout],
                "reference": [r[3] for r in holdout],
                "reference_source": ["frontier_unverified"] * len(holdout),
                "frontier_output": [r[3] for r in holdout],
                "sim_gold": [None] * len(holdout),
            },
            schema_overrides={
                "prompt": MESSAGES_DTYPE, "trace_id": pl.String, "task_type": pl.String, "reference": pl.String,
                "reference_source": pl.String, "frontier_output": pl.String, "sim_gold": pl.String,
            },
        ),
    }


INTENTS = [
    ("t1", "intent", "what is my account balance", "balance"),
    ("t2", "intent", "freeze my card right now", "freeze_account"),
    ("t3", "intent", "book a table for two tonight", "restaurant_reservation"),
]
SUMMARIES = [(f"s{i}", "summarization", f"summarize the call number {i}", "the same summary") for i in range(4)]
HOLDOUT = [("h1", "intent", "set an alarm for seven in the morning", "alarm")]


def test_label_shares_checks_the_classification_tasks_that_have_sft_rows():
    passing = expectations.label_shares_within_bounds(datasets([*INTENTS, *SUMMARIES], HOLDOUT), TASKS, SHARES)
    assert passing.passed, passing.description
    # `classification` is configured but absent from this traffic: listed, not a failure.
    assert passing.details["checked_task_types"] == ["intent"] and passing.details["absent_task_types"] == ["classification"]
    skewed = [*INTENTS, ("t4", "intent", "how much money do i have", "balance"), ("t5", "intent", "checking account total", "balance")]
    failing = expectations.label_shares_within_bounds(datasets(skewed, HOLDOUT), TASKS, SHARES)
    assert not failing.passed and "intent/balance" in failing.description


def test_label_shares_with_no_classification_rows_fails_instead_of_passing():
    summaries_only = expectations.label_shares_within_bounds(datasets(SUMMARIES, [("h1", "summarization", "sum up", "ok")]), TASKS, SHARES)
    assert not summaries_only.passed
    assert summaries_only.description.startswith("no sft row of any classification task type configured in tasks.yaml (classification, intent)")
    # Intent traffic in the holdout, none in training, while another classification task trained.
    with_other = datasets([("c1", "classification", "is this spam", "spam"), ("c2", "classification", "hello", "ham"), *SUMMARIES], HOLDOUT)
    half = expectations.label_shares_within_bounds(with_other, TASKS, SHARES)
    assert not half.passed and half.description == "classification task types with holdout traffic but no sft rows: intent"
    assert half.details["no_sft_rows"] == ["intent"]


def test_label_shares_is_not_applicable_only_without_classification_tasks_configured():
    no_classification = TasksConfig(tasks={"summarization": TaskSpec(name="summarization", kind="summarization")})
    outcome = expectations.label_shares_within_bounds(datasets(SUMMARIES, HOLDOUT), no_classification, SHARES)
    assert outcome.passed and outcome.description == "not applicable: tasks.yaml configures no classification task type"
    assert outcome.details == {"applicable": False}


def test_expectations_with_nothing_to_check_fail():
    nothing = datasets([], [])
    sensitive = expectations.no_sensitive_text(nothing, REDACTION)
    assert not sensitive.passed and sensitive.description == "no text field in any dataset: nothing to check for PII or secrets"
    no_holdout = expectations.holdout_disjoint(datasets(INTENTS, []), DEDUP)
    assert not no_holdout.passed and no_holdout.description == "the holdout has no prompts: nothing to check for overlap"
    no_train = expectations.holdout_disjoint(datasets([], HOLDOUT), DEDUP)
    assert not no_train.passed and no_train.description == "the training set has no prompts: nothing to check for overlap"
    targets = expectations.no_empty_targets(nothing)
    assert not targets.passed and targets.description == "no sft target and no holdout reference: nothing to check"
    rows = expectations.min_rows_per_task(nothing, DatasetConfig(min_rows_per_task=1))
    assert not rows.passed and rows.description == "the sft dataset is empty"
    # The same checks pass on real rows.
    some = datasets(INTENTS, HOLDOUT)
    assert expectations.no_sensitive_text(some, REDACTION).passed and expectations.holdout_disjoint(some, DEDUP).passed
    assert expectations.no_empty_targets(some).passed
