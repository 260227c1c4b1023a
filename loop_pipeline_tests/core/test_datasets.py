"""The datasets stage on simulated traffic: redaction, dedup, a frozen group holdout, versions,
trl-shaped datasets that Hugging Face `datasets` loads, MLflow inputs, and the expectation suites.

One simulated week (with secrets and PII planted into prompts, outputs, edits, review labels and
user ids) is ingested and scored once per module; each test builds the versions it needs.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import polars as pl
import pyarrow.parquet as pq
import pytest

from loop_pipeline.core import dedup, expectations, redaction
from loop_pipeline.core.datasets import (
    ASSIGNMENTS_FILE,
    DATASET_NAMES,
    DatasetConfig,
    build_dataset_version,
    read_assignments,
)
from loop_pipeline.core import scoring
from loop_pipeline.core.ingest import IngestConfig, discover, ingest, write_result
from loop_pipeline.core.ingest.writing import TRACES_TABLE
from loop_pipeline.core.tasks import TaskSpec, TasksConfig
from loop_pipeline.sim import SimulationConfig
from loop_pipeline.schemas.traces import MESSAGES_DTYPE
from loop_pipeline_tests.helpers import REPO_CONFIGS, repo_prices, simulate_landing

START = "2026-11-01"
SIMULATION = {"days": 7, "traces_per_day": 1000, "start_date": START, "human_review_rate": 0.1}
PLACEHOLDERS = ("[EMAIL]", "[PHONE]", "[CARD]", "[IBAN]", "[IP]", "[SECRET]")
DATASET_CONFIG = DatasetConfig.from_yaml(REPO_CONFIGS / "datasets.yaml")
REDACTION = redaction.RedactionConfig.from_yaml(REPO_CONFIGS / "redaction.yaml")
DEDUP = dedup.DedupConfig.from_yaml(REPO_CONFIGS / "dedup.yaml")
# What build_dataset_version takes besides the frames: the project's configs.
CONFIGS = {"config": DATASET_CONFIG, "redaction_config": REDACTION, "dedup_config": DEDUP}

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
# name -> (the secret, the sentence it is planted in, the placeholder it must become).
SECRETS: dict[str, tuple[str, str, str]] = {
    "email": ("jane.doe+loop@example-mail.com", "write to {} please", "[EMAIL]"),
    "phone": ("+44 20 7946 0958", "call me on {} today", "[PHONE]"),
    "phone_national": ("(415) 555-2671", "my number is {} ok", "[PHONE]"),
    "card": ("4111 1111 1111 1111", "charge card {} now", "[CARD]"),
    "card_dashed": ("5555-5555-5555-4444", "use the card {} instead", "[CARD]"),
    "iban": ("DE89 3704 0044 0532 0130 00", "wire it to {} please", "[IBAN]"),
    "iban_compact": ("GB82WEST12345698765432", "iban {} for refunds", "[IBAN]"),
    "ipv4": ("203.0.113.77", "my server is {} fyi", "[IP]"),
    "ipv6": ("2001:db8:85a3::8a2e:370:7334", "the host is {} fyi", "[IP]"),
    "openai": ("sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z_AbC-dEf", "my key is {} ok", "[SECRET]"),
    "aws_key_id": ("AKIAIOSFODNN7EXAMPLE", "aws id {} ok", "[SECRET]"),
    "aws_secret": ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key={} is set", "[SECRET]"),
    "github": ("ghp_1a2B3c4D5e6F7g8H9i0JkLmNoPqRsTuVwXyZ", "token {} for the repo", "[SECRET]"),
    "slack": ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "slack {} works", "[SECRET]"),
    "jwt": (JWT, "session {} expired", "[SECRET]"),
    "generic": ("q8Zr2XwLm5NvK1pT7sYc4HdJ9fGb3Ua6Ek0Oi2Wn", "password {} ok", "[SECRET]"),
}
# Every 10th user's id is an email address (common in production traces).
EMAIL_USER_EVERY = 10


def email_user(user_id: str) -> str:
    return f"{user_id}.buyer@customers-example.org"


@dataclass
class Planted:
    prompt: dict[str, str] = field(default_factory=dict)  # trace_id -> secret name
    output: dict[str, str] = field(default_factory=dict)
    edit: dict[str, str] = field(default_factory=dict)
    review: dict[str, str] = field(default_factory=dict)
    user_emails: set[str] = field(default_factory=set)


@dataclass
class World:
    root: Path
    ingested: Path
    scored: pl.DataFrame
    traces: pl.DataFrame
    thresholds: dict[str, scoring.KeepRule]
    days: list[str]
    planted: Planted


def _rewrite_jsonl(path: Path, change) -> None:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for index, record in enumerate(records):
        change(index, record)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def plant_secrets(landing: Path) -> Planted:
    """Rewrite the landing JSONL in place: a secret in every 10th prompt, every 10th output
    (offset 5), every edit and every negative review label; every 10th user id becomes an email."""
    planted = Planted()
    names = list(SECRETS)
    counter = iter(range(10**9))

    def sentence() -> tuple[str, str]:
        name = names[next(counter) % len(names)]
        secret, template, _ = SECRETS[name]
        return name, template.format(secret)

    def on_trace(index: int, record: dict[str, Any]) -> None:
        number = int(record["user_id"].rsplit("-", 1)[1])
        if number % EMAIL_USER_EVERY == 0:
            record["user_id"] = email_user(record["user_id"])
            planted.user_emails.add(record["user_id"])
        if index % 10 == 0:
            name, text = sentence()
            record["messages"][-1]["content"] += " " + text
            planted.prompt[record["trace_id"]] = name
        elif index % 10 == 5:
            name, text = sentence()
            record["output"] += " " + text
            planted.output[record["trace_id"]] = name

    def on_feedback(index: int, record: dict[str, Any]) -> None:
        if record["kind"] == "edited":
            name, text = sentence()
            record["edited_output"] += " " + text
            planted.edit[record["trace_id"]] = name
        elif record["kind"] == "human_label" and record["value"] == 0.0:
            name, text = sentence()
            record["label"] += " " + text
            planted.review[record["trace_id"]] = name

    for path in sorted((landing / "traces").rglob("*.jsonl")):
        _rewrite_jsonl(path, on_trace)
    for path in sorted((landing / "feedback").rglob("*.jsonl")):
        _rewrite_jsonl(path, on_feedback)
    return planted


def score_ingested(traces: pl.DataFrame, feedback: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, scoring.KeepRule]]:
    """The scoring stage in-process: scored traces and the keep rule per task type (its certified
    threshold, or the fallback), as training_datasets reads them from score_thresholds."""
    config = scoring.ScoringConfig.from_yaml(REPO_CONFIGS / "scoring.yaml")
    tasks = TasksConfig.from_yaml(REPO_CONFIGS / "tasks.yaml")
    scored = scoring.score_traffic(traces, feedback, config, tasks).scored
    return scored, scoring.keep_rules(scoring.sweep_thresholds(scored, config))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("datasets_world")
    landing = root / "landing"
    simulate_landing(SimulationConfig.from_mapping(SIMULATION), landing)
    planted = plant_secrets(landing)
    result = ingest(discover([str(landing)]), IngestConfig.from_yaml(REPO_CONFIGS / "ingest.yaml"), repo_prices())
    write_result(result, root / "ingested")
    # The same trace can land on two days; its score must not count it twice.
    traces = result.traces.unique("trace_id", keep="first", maintain_order=True)
    scored, thresholds = score_ingested(traces, result.feedback)
    days = traces.get_column("timestamp").dt.date().unique().sort().cast(pl.String).to_list()
    yield World(root, root / "ingested", scored, traces, thresholds, days, planted)


@pytest.fixture(scope="module")
def built(world) -> dict[str, Any]:
    """One version of the whole week, shared by the read-only tests."""
    return build_dataset_version(
        world.scored, world.traces, world.thresholds, world.root / "datasets", source_partitions=world.days, **CONFIGS
    )


def read_version(summary: dict[str, Any]) -> dict[str, pl.DataFrame]:
    return {name: pl.read_parquet(path) for name, path in summary["paths"].items()}


def last_content(column: str) -> pl.Expr:
    return pl.col(column).list.last().struct.field("content")


def last_user(column: str) -> pl.Expr:
    return (
        pl.col(column)
        .list.eval(pl.element().filter(pl.element().struct.field("role") == "user").struct.field("content"))
        .list.last()
    )


def redact(text: str) -> str:
    return redact_all([text])[0]


def redact_all(texts: list[str]) -> list[str]:
    series = pl.Series("text", texts, dtype=pl.String)
    return pl.select(redaction.redact_expr(pl.lit(series), REDACTION)).to_series().to_list()


def on_day(day_number: int) -> pl.Expr:
    return pl.col("timestamp").dt.date() <= dt.date.fromisoformat(START) + dt.timedelta(days=day_number - 1)


def train_ids(datasets: dict[str, pl.DataFrame]) -> set[str]:
    return set().union(*(set(datasets[n].get_column("trace_id")) for n in ("sft", "kto", "dpo")))


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings_in(item)


def forbidden_strings(planted: Planted) -> list[str]:
    """Each planted secret, its digits alone where it is a number, a middle fragment, and the
    email user ids."""
    found = []
    for secret, _, _ in SECRETS.values():
        found.append(secret)
        digits = "".join(ch for ch in secret if ch.isdigit())
        if len(digits) >= 9 and not any(ch.isalpha() for ch in secret):
            found.append(digits)
        if len(secret) >= 24:
            third = len(secret) // 3
            found.append(secret[third : 2 * third])
    found += sorted(planted.user_emails)
    found.append("customers-example.org")
    return found


# ---------------------------------------------------------------------------------------------
# 1. Seeded secrets and PII never reach a dataset file


def test_planted_secrets_are_each_detected_by_redaction():
    """Precondition for the leak test: each planted sentence redacts to its placeholder."""
    for name, (secret, template, placeholder) in SECRETS.items():
        redacted = redact(template.format(secret))
        assert secret not in redacted and placeholder in redacted, (name, redacted)


def test_planted_secrets_and_pii_never_appear_in_any_dataset_file(world, built):
    planted = world.planted
    assert len(planted.prompt) > 500 and len(planted.output) > 500
    assert planted.edit and planted.review and planted.user_emails
    forbidden = forbidden_strings(planted)
    root = world.root / "datasets"
    files = sorted(p for p in root.rglob("*") if p.is_file())
    parquet = [p for p in files if p.suffix == ".parquet"]
    # The four datasets and the stored holdout assignment; the card; no "latest" pointer.
    assert {p.name for p in parquet} == {f"{n}.parquet" for n in DATASET_NAMES} | {ASSIGNMENTS_FILE}
    assert {p.name for p in files} == {p.name for p in parquet} | {"README.md"}

    all_text: list[str] = []
    for path in files:
        raw = path.read_bytes()
        leaked = [s for s in forbidden if s.encode("utf-8") in raw]
        assert not leaked, (path.name, leaked)
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            # The same table without compression: a plain grep of its encoded pages.
            buffer = io.BytesIO()
            pq.write_table(table, buffer, compression="none")
            leaked = [s for s in forbidden if s.encode("utf-8") in buffer.getvalue()]
            assert not leaked, (path.name, "uncompressed", leaked)
            texts = [text for column in table.columns for text in strings_in(column.to_pylist())]
            polars_texts = list(strings_in(pl.read_parquet(path).to_dicts()))
            assert sorted(texts) == sorted(polars_texts)
        else:
            texts = [raw.decode("utf-8")]
        joined = "\n".join(texts)
        digits_only = "".join(ch for ch in joined if ch.isdigit() or ch == "\n")
        leaked = [s for s in forbidden if s in joined or (s.isdigit() and s in digits_only)]
        assert not leaked, (path.name, leaked)
        all_text += texts

    # The planted traffic did reach the datasets, as placeholders.
    everything = "\n".join(all_text)
    for placeholder in PLACEHOLDERS:
        assert everything.count(placeholder) >= 5, placeholder
    assert all(built["redacted"][p.strip("[]")] > 0 for p in PLACEHOLDERS)
    datasets = read_version(built)
    redacted_prompts = datasets["sft"].filter(pl.col("trace_id").is_in(list(planted.prompt)))
    assert redacted_prompts.height > 100
    # And the expectation that guards training agrees.
    outcome = expectations.no_sensitive_text(datasets, REDACTION)
    assert outcome.passed, outcome.description
    # It looked at every text field of every file: each row's prompt / messages, completions, pairs,
    # references and frontier outputs (ids and source labels are not text a user wrote).
    not_text = {"trace_id", "task_type", "group_key", "target_source", "reference_source"}
    text_fields = sum(
        frame.get_column(column).is_not_null().sum()
        for frame in datasets.values()
        for column, dtype in frame.schema.items()
        if column not in not_text and (dtype == pl.String or isinstance(dtype, pl.List))
    )
    assert outcome.details["texts_checked"] == text_fields > sum(frame.height for frame in datasets.values())


# ---------------------------------------------------------------------------------------------
# 2. Holdout overlap is zero, and a planted near-duplicate of a holdout prompt is excluded


def test_holdout_shares_no_trace_group_or_prompt_with_train(world, built):
    datasets = read_version(built)
    train, holdout = train_ids(datasets), set(datasets["holdout"].get_column("trace_id"))
    assert train and holdout and not train & holdout
    # The files hold every curated train example: what deduplication kept, less the near-duplicates
    # of holdout prompts; the holdout holds every trace of its groups (the traffic, not deduplicated).
    dedup_stats = built["dedup"]
    assert len(train) == dedup_stats["dedup_train"]["kept"] - dedup_stats["train_excluded_near_holdout"]

    # Groups (user_id): no user has traces on both sides.
    users = world.scored.select("trace_id", "user_id")
    train_users = set(users.filter(pl.col("trace_id").is_in(list(train))).get_column("user_id"))
    holdout_users = set(users.filter(pl.col("trace_id").is_in(list(holdout))).get_column("user_id"))
    assert train_users and holdout_users and not train_users & holdout_users
    assert len(holdout) == users.filter(pl.col("user_id").is_in(list(holdout_users))).height
    # Group keys: the holdout's keys are stored as holdout, and no key is on both sides.
    assignments = read_assignments(world.root / "datasets")
    assert assignments.get_column("group_key").is_unique().all()
    holdout_keys = set(datasets["holdout"].get_column("group_key"))
    stored_holdout = set(assignments.filter(pl.col("split") == "holdout").get_column("group_key"))
    assert holdout_keys <= stored_holdout
    assert assignments.height == world.scored.get_column("user_id").n_unique()

    # Prompts: no train prompt is an exact or near duplicate of a holdout prompt.
    config = DEDUP
    train_prompts = pl.concat(
        [
            datasets["sft"].select("trace_id", last_user("messages").alias("text")),
            datasets["kto"].select("trace_id", last_user("prompt").alias("text")),
            datasets["dpo"].select("trace_id", last_user("prompt").alias("text")),
        ]
    ).unique("trace_id", maintain_order=True)
    holdout_prompts = datasets["holdout"].select("trace_id", last_user("prompt").alias("text"))
    assert dedup.overlapping_ids(train_prompts, holdout_prompts, "trace_id", "text", config).height == 0
    outcome = expectations.holdout_disjoint(datasets, config)
    assert outcome.passed, outcome.description
    # Train rows near a holdout prompt were dropped, not moved.
    assert built["dedup"]["train_excluded_near_holdout"] > 0


def test_the_holdout_is_every_trace_of_its_groups_whatever_its_feedback(world, built):
    import hashlib

    holdout = read_version(built)["holdout"]
    stored = read_assignments(world.root / "datasets")
    holdout_keys = set(stored.filter(pl.col("split") == "holdout").get_column("group_key"))
    users = world.scored.select("trace_id", "user_id").iter_rows()
    expected = {t for t, user in users if "user_id:" + hashlib.sha256(user.encode()).hexdigest()[:16] in holdout_keys}
    assert set(holdout.get_column("trace_id")) == expected and holdout.height == len(expected)
    sources = dict(holdout.group_by("reference_source").len().iter_rows())
    assert set(sources) == {"review", "edit", "accepted_scored", "frontier_unverified"}, sources
    assert built["rows"]["holdout"] == holdout.height
    # Nothing vouches for an unverified row: its reference is the frontier's output as is.
    unverified = holdout.filter(pl.col("reference_source") == "frontier_unverified")
    assert (unverified.get_column("reference") == unverified.get_column("frontier_output")).all()


def test_a_near_duplicate_of_a_holdout_prompt_in_a_train_group_is_excluded(world, built, tmp_path):
    datasets = read_version(built)
    holdout = datasets["holdout"].with_columns(last_user("prompt").alias("text"))
    # The holdout prompt with the most words; its copy gains one word at the end.
    source = holdout.sort(pl.col("text").str.split(" ").list.len(), "trace_id", descending=[True, False]).row(0, named=True)
    near = source["text"] + " please"
    config = DEDUP
    probe = pl.DataFrame({"trace_id": ["copy"], "text": [near]})
    assert dedup.overlapping_ids(probe, holdout.select("trace_id", "text"), "trace_id", "text", config).height == 1
    assert pl.select(dedup.normalize_text(pl.lit(near))).item() != pl.select(dedup.normalize_text(pl.lit(source["text"]))).item()

    # A train-group trace whose output was kept as an sft target.
    sft = datasets["sft"].filter(pl.col("target_source") == "output")
    target = sft.get_column("trace_id").sort().to_list()[0]
    traces = world.traces.with_columns(
        pl.when(pl.col("trace_id") == target)
        .then(
            pl.col("messages").list.eval(
                pl.when(pl.element().struct.field("role") == "user")
                .then(pl.element().struct.with_fields(pl.lit(near).alias("content")))
                .otherwise(pl.element())
            )
        )
        .otherwise(pl.col("messages"))
        .alias("messages")
    )
    summary = build_dataset_version(world.scored, traces, world.thresholds, tmp_path / "datasets", source_partitions=world.days, **CONFIGS)
    after = read_version(summary)
    assert summary["version"] != built["version"]
    assert target not in train_ids(after)
    assert target not in set(after["holdout"].get_column("trace_id"))
    assert source["trace_id"] in set(after["holdout"].get_column("trace_id"))
    assert summary["dedup"]["train_excluded_near_holdout"] == built["dedup"]["train_excluded_near_holdout"] + 1
    # Only that trace changed: the rest of the train set is the same.
    assert train_ids(after) == train_ids(datasets) - {target}


# ---------------------------------------------------------------------------------------------
# 3. Same inputs, same version, nothing rewritten


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


def test_a_second_build_gives_the_same_version_and_rewrites_nothing(world, tmp_path):
    root = tmp_path / "datasets"
    first = build_dataset_version(world.scored, world.traces, world.thresholds, root, source_partitions=world.days, **CONFIGS)
    assert first["created"] is True and first["version"].startswith("ds-")
    folder = root / first["version"]
    before = snapshot(folder)
    assert set(before) == {"README.md", *(f"{n}.parquet" for n in DATASET_NAMES)}
    assignments = read_assignments(root)

    second = build_dataset_version(world.scored, world.traces, world.thresholds, root, source_partitions=world.days, **CONFIGS)
    assert second["version"] == first["version"] and second["created"] is False
    assert second["rows"] == first["rows"] and second["paths"] == first["paths"]
    assert snapshot(folder) == before
    assert read_assignments(root).equals(assignments)
    assert sorted(p.name for p in root.iterdir()) == sorted([ASSIGNMENTS_FILE, first["version"]])


def test_the_version_does_not_depend_on_the_order_of_the_input_rows(world, built, tmp_path):
    scored = world.scored.sample(fraction=1.0, shuffle=True, seed=1)
    traces = world.traces.sample(fraction=1.0, shuffle=True, seed=2)
    summary = build_dataset_version(scored, traces, world.thresholds, tmp_path / "datasets", source_partitions=world.days, **CONFIGS)
    assert summary["version"] == built["version"]
    assert summary["rows"] == built["rows"]


def test_the_version_does_not_depend_on_slices_chunks_or_scans(world, built, tmp_path, monkeypatch):
    from loop_pipeline.core.datasets import curate
    from loop_pipeline.core.dedup import lsh

    # Rows prepared (and redacted) 2,500 at a time, near-duplicate pairs verified 2,000 at a time,
    # from Parquet scans (as training_datasets reads them): the same version as in one go.
    monkeypatch.setattr(curate, "_SLICE_ROWS", 2500)
    monkeypatch.setattr(lsh, "_PAIRS_PER_CHUNK", 2000)
    world.scored.write_parquet(tmp_path / "scored.parquet")
    world.traces.write_parquet(tmp_path / "traces.parquet")
    scans = pl.scan_parquet(tmp_path / "scored.parquet"), pl.scan_parquet(tmp_path / "traces.parquet")
    summary = build_dataset_version(*scans, world.thresholds, tmp_path / "datasets", source_partitions=world.days, **CONFIGS)
    assert world.traces.height > 2 * 2500
    for key in ("version", "rows", "counts", "redacted", "dedup", "router", "rows_by_route"):
        assert summary[key] == built[key], key
    assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == sorted([ASSIGNMENTS_FILE, summary["version"]])


# ---------------------------------------------------------------------------------------------
# 4. New traffic, new version; the holdout only grows


def test_new_traffic_gives_a_new_version_whose_holdout_keeps_every_earlier_holdout_group(world, tmp_path):
    root = tmp_path / "datasets"
    early = world.scored.filter(on_day(4))
    first = build_dataset_version(early, world.traces.filter(on_day(4)), world.thresholds, root, source_partitions=world.days[:4], **CONFIGS)
    first_folder = snapshot(root / first["version"])
    first_assignments = read_assignments(root)
    first_holdout = set(read_version(first)["holdout"].get_column("group_key"))
    first_train_groups = set(first_assignments.filter(pl.col("split") == "train").get_column("group_key"))
    assert first_holdout and first_train_groups

    second = build_dataset_version(world.scored, world.traces, world.thresholds, root, source_partitions=world.days, **CONFIGS)
    assert second["version"] != first["version"] and second["created"] is True
    assert second["rows"]["sft"] > first["rows"]["sft"]
    assert sorted(p.name for p in root.iterdir()) == sorted([ASSIGNMENTS_FILE, first["version"], second["version"]])
    assert snapshot(root / first["version"]) == first_folder  # the old version stays as it was

    assignments = read_assignments(root)
    joined = first_assignments.join(assignments, on="group_key", how="left", suffix="_now")
    assert joined.get_column("split_now").null_count() == 0
    assert joined.filter(pl.col("split") != pl.col("split_now")).height == 0
    second_holdout = set(read_version(second)["holdout"].get_column("group_key"))
    assert first_holdout <= second_holdout
    assert first_holdout <= set(assignments.filter(pl.col("split") == "holdout").get_column("group_key"))
    assert not first_train_groups & second_holdout


def test_stored_assignments_win_over_a_changed_holdout_fraction(world, tmp_path):
    root = tmp_path / "datasets"
    first = build_dataset_version(
        world.scored.filter(on_day(4)), world.traces.filter(on_day(4)), world.thresholds, root, source_partitions=world.days[:4], **CONFIGS
    )
    first_assignments = read_assignments(root)

    assert DATASET_CONFIG.holdout_fraction == 0.1
    changed = {**CONFIGS, "config": DATASET_CONFIG.with_overrides({"holdout_fraction": 0.9})}

    # Days 5-7 come from new users (new groups); their traces join the old users' traces.
    late = ~on_day(4)
    renamed = pl.when(late).then(pl.col("user_id") + "-late").otherwise(pl.col("user_id")).alias("user_id")
    scored = world.scored.with_columns(renamed)
    traces = world.traces.with_columns(renamed)
    second = build_dataset_version(scored, traces, world.thresholds, root, source_partitions=world.days, **changed)
    assert second["version"] != first["version"]

    assignments = read_assignments(root)
    old = first_assignments.join(assignments, on="group_key", how="left", suffix="_now")
    assert old.filter(pl.col("split") != pl.col("split_now")).height == 0
    new = assignments.join(first_assignments, on="group_key", how="anti")
    assert new.height > 100
    old_share = (first_assignments.get_column("split") == "holdout").mean()
    new_share = (new.get_column("split") == "holdout").mean()
    assert old_share < 0.3 and new_share > 0.7, (old_share, new_share)


# ---------------------------------------------------------------------------------------------
# 5. DPO pairs for edits, KTO negatives for rejected / hallucinated outputs, positives for kept ones


def test_dpo_pairs_for_edits_and_kto_labels_for_specific_traces(world, built):
    datasets = read_version(built)
    scored = world.scored.filter(pl.col("trace_id").is_in(list(train_ids(datasets))))
    review_bad = pl.col("review_good").eq(False).fill_null(False)

    # An edited trace (not overruled by a review) with a planted secret in its edit.
    edited = scored.filter(pl.col("edited") & ~review_bad & pl.col("trace_id").is_in(list(world.planted.edit)))
    assert edited.height >= 5
    dpo = datasets["dpo"].join(edited.select("trace_id", "user_edit", "output"), on="trace_id", how="inner")
    assert dpo.height == edited.height
    edits, outputs = redact_all(dpo.get_column("user_edit").to_list()), redact_all(dpo.get_column("output").to_list())
    for row, edit, output in zip(dpo.iter_rows(named=True), edits, outputs):
        assert [m["role"] for m in row["chosen"]] == ["assistant"] and [m["role"] for m in row["rejected"]] == ["assistant"]
        assert row["chosen"][0]["content"] == edit != row["user_edit"]
        assert row["rejected"][0]["content"] == output
        assert row["prompt"][-1]["role"] == "user" and row["prompt"][0]["role"] == "system"
    # Every DPO row's chosen is its trace's edit or review label; rejected is the output.
    sources = datasets["sft"].select("trace_id", "target_source")
    assert set(datasets["dpo"].join(sources, on="trace_id").get_column("target_source")) <= {"edit", "review"}
    assert datasets["dpo"].height == datasets["dpo"].join(sources, on="trace_id").height

    kto = datasets["kto"]
    labels = kto.group_by("trace_id").agg(pl.col("label"))

    def labels_of(trace_id: str) -> list[bool]:
        return sorted(labels.filter(pl.col("trace_id") == trace_id).get_column("label").item())

    rejected = scored.filter(pl.col("rejected")).get_column("trace_id").sort().to_list()
    hallucinated = scored.filter(pl.col("hallucination") & ~pl.col("rejected")).get_column("trace_id").sort().to_list()
    assert rejected and hallucinated
    for trace_id in (rejected[0], hallucinated[0]):
        assert False in labels_of(trace_id)
        negative = kto.filter((pl.col("trace_id") == trace_id) & ~pl.col("label")).row(0, named=True)
        output = scored.filter(pl.col("trace_id") == trace_id).get_column("output").item()
        assert negative["completion"] == [{"role": "assistant", "content": redact(output)}]
    # Every rejected / hallucinated train trace is a KTO negative.
    negatives = set(kto.filter(~pl.col("label")).get_column("trace_id"))
    assert set(rejected) | set(hallucinated) <= negatives

    # Kept outputs: sft targets and KTO positives, never negatives.
    kept = datasets["sft"].filter(pl.col("target_source") == "output").join(
        scored.select("trace_id", "output", "vetoed", "p_good_signals"), on="trace_id"
    )
    assert kept.height > 1000
    assert not kept.get_column("vetoed").any()
    if world.thresholds["intent"] == "acceptance":  # no certified threshold: the fallback keeps accepted outputs
        assert kept.join(scored.select("trace_id", "accepted"), on="trace_id").get_column("accepted").all()
    else:
        assert kept.get_column("p_good_signals").min() >= world.thresholds["intent"] - 1e-9
    sample = kept.sort("trace_id").head(20)
    for row, output in zip(sample.iter_rows(named=True), redact_all(sample.get_column("output").to_list())):
        assert labels_of(row["trace_id"]) == [True]
        positive = kto.filter(pl.col("trace_id") == row["trace_id"]).row(0, named=True)
        assert positive["completion"] == [{"role": "assistant", "content": output}]
        assert row["messages"][-1] == {"role": "assistant", "content": output}
    assert not set(kept.get_column("trace_id")) & negatives


# ---------------------------------------------------------------------------------------------
# 6. Hugging Face datasets loads every file, and the card's configs


def test_datasets_load_with_hugging_face_datasets(built, tmp_path):
    import os

    import datasets as hf

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    cache = str(tmp_path / "hf_cache")

    def shape(feature: Any) -> Any:
        """Features with Arrow's large variants folded in (polars writes large_string / large_list)."""
        if isinstance(feature, (hf.List, hf.LargeList)):
            return ["list", shape(feature.feature)]
        if isinstance(feature, dict):
            return {key: shape(value) for key, value in feature.items()}
        assert isinstance(feature, hf.Value), feature
        return feature.dtype.removeprefix("large_")

    messages = ["list", {"role": "string", "content": "string"}]
    expected = {
        "sft": {"trace_id": "string", "task_type": "string", "messages": messages, "target_source": "string"},
        "kto": {"trace_id": "string", "task_type": "string", "prompt": messages, "completion": messages, "label": "bool"},
        "dpo": {"trace_id": "string", "task_type": "string", "prompt": messages, "chosen": messages, "rejected": messages},
    }
    for name, features in expected.items():
        path = built["paths"][name]
        by_builder = hf.load_dataset("parquet", data_files={"train": path}, cache_dir=cache)["train"]
        by_card = hf.load_dataset(str(Path(path).parent), name, cache_dir=cache)["train"]
        from_file = hf.Dataset.from_parquet(path, cache_dir=cache)
        for loaded in (by_builder, by_card, from_file):
            assert loaded.num_rows == built["rows"][name]
            assert shape(dict(loaded.features)) == features, name
            assert list(loaded.features) == list(features), name
    holdout = hf.load_dataset(str(Path(built["paths"]["holdout"]).parent), "holdout", cache_dir=cache)["train"]
    assert holdout.num_rows == built["rows"]["holdout"]
    assert {"prompt", "reference", "reference_source", "frontier_output", "sim_gold", "group_key"} <= set(holdout.column_names)
    assert "gold" not in holdout.column_names

    sft = hf.load_dataset(str(Path(built["paths"]["sft"]).parent), "sft", cache_dir=cache)["train"]
    row = sft[0]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert all(set(m) == {"role", "content"} and m["content"] for m in row["messages"])
    kto = hf.load_dataset(str(Path(built["paths"]["kto"]).parent), "kto", cache_dir=cache)["train"]
    assert set(kto.unique("label")) == {True, False}


# ---------------------------------------------------------------------------------------------
# 8. One MLflow run per version, with the datasets as inputs


def test_a_version_is_one_mlflow_run_with_dataset_inputs(world, tmp_path):
    from mlflow.tracking import MlflowClient

    from loop_pipeline.core.tracking import TrackingTarget

    tracking = TrackingTarget(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "artifacts").as_uri())
    root = tmp_path / "datasets"
    scored, traces = world.scored.filter(on_day(2)), world.traces.filter(on_day(2))
    first = build_dataset_version(scored, traces, world.thresholds, root, source_partitions=world.days[:2], tracking=tracking, **CONFIGS)
    version, run_id = first["version"], first["mlflow_run_id"]
    assert run_id

    client = MlflowClient(tracking_uri=tracking.tracking_uri)
    experiment = client.get_experiment_by_name("loop-datasets")
    assert experiment is not None
    run = client.get_run(run_id)
    assert run.info.experiment_id == experiment.experiment_id and run.info.status == "FINISHED"
    assert run.data.tags["loop.dataset_version"] == version
    inputs = {
        d.dataset.name: {t.key: t.value for t in d.tags}.get("mlflow.data.context") for d in run.inputs.dataset_inputs
    }
    assert inputs == {f"{name}@{version}": name for name in DATASET_NAMES}
    assert {name: int(run.data.metrics[f"rows_{name}"]) for name in DATASET_NAMES} == first["rows"]
    assert "README.md" in [a.path for a in client.list_artifacts(run_id)]

    second = build_dataset_version(scored, traces, world.thresholds, root, source_partitions=world.days[:2], tracking=tracking, **CONFIGS)
    assert second["version"] == version and second["created"] is False
    assert second["mlflow_run_id"] == run_id
    assert len(client.search_runs([experiment.experiment_id], max_results=100)) == 1


# ---------------------------------------------------------------------------------------------
# 10. Lineage: every example keeps a trace_id of an ingested trace


def test_every_row_keeps_the_trace_id_of_an_ingested_trace(world, built):
    ingested = pl.concat([pl.read_parquet(p) for p in sorted((world.ingested / TRACES_TABLE).rglob("*.parquet"))])
    known = set(ingested.get_column("trace_id"))
    datasets = read_version(built)
    for name, frame in datasets.items():
        assert frame.height > 0 and frame.get_column("trace_id").null_count() == 0, name
        assert set(frame.get_column("trace_id")) <= known, name
        if name != "kto":
            assert frame.get_column("trace_id").is_unique().all(), name
    # KTO: at most one positive and one negative per trace.
    assert datasets["kto"].group_by("trace_id", "label").len().get_column("len").max() == 1
    # The card lists the counts per dataset and task type.
    card = (Path(built["paths"]["sft"]).parent / "README.md").read_text()
    for name in DATASET_NAMES:
        assert f"| {name} | {built['counts'][name]['intent']} | {built['rows'][name]} |" in card
        assert f"- config_name: {name}\n  data_files: {name}.parquet" in card


# ---------------------------------------------------------------------------------------------
# 7. The five expectation suites, passing and failing, on small frames


def messages(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in turns]


def small_datasets(
    sft: list[tuple[str, str, str, str]],
    holdout: list[tuple[str, str, str, str | None]] = (),
    kto: list[tuple[str, str, str, str, bool]] = (),
) -> dict[str, pl.DataFrame]:
    """sft: (trace_id, task_type, prompt, target); holdout: (trace_id, task_type, prompt, reference);
    kto: (trace_id, task_type, prompt, completion, label)."""
    system = ("system", "Classify the intent.")
    frames = {
        "sft": pl.DataFrame(
            {
                "trace_id": [r[0] for r in sft],
                "task_type": [r[1] for r in sft],
                "messages": [messages(system, ("user", r[2]), ("assistant", r[3])) for r in sft],
                "target_source": ["output"] * len(sft),
            },
            schema_overrides={"messages": MESSAGES_DTYPE},
        ),
        "kto": pl.DataFrame(
            {
                "trace_id": [r[0] for r in kto],
                "task_type": [r[1] for r in kto],
                "prompt": [messages(system, ("user", r[2])) for r in kto],
                "completion": [messages(("assistant", r[3])) for r in kto],
                "label": [r[4] for r in kto],
            },
            schema_overrides={"prompt": MESSAGES_DTYPE, "completion": MESSAGES_DTYPE, "label": pl.Boolean},
        ),
        "dpo": pl.DataFrame(
            {"trace_id": [], "task_type": [], "prompt": [], "chosen": [], "rejected": []},
            schema={"trace_id": pl.String, "task_type": pl.String, "prompt": MESSAGES_DTYPE, "chosen": MESSAGES_DTYPE, "rejected": MESSAGES_DTYPE},
        ),
        "holdout": pl.DataFrame(
            {
                "trace_id": [r[0] for r in holdout],
                "task_type": [r[1] for r in holdout],
                "group_key": [f"user_id:h{i}" for i, _ in enumerate(holdout)],
                "prompt": [messages(system, ("user", r[2])) for r in holdout],
                "reference": [r[3] for r in holdout],
                "reference_source": ["accepted_scored"] * len(holdout),
                "frontier_output": [r[3] for r in holdout],
                "sim_gold": [r[3] for r in holdout],
            },
            schema_overrides={"prompt": MESSAGES_DTYPE, "reference": pl.String, "frontier_output": pl.String, "sim_gold": pl.String},
        ),
    }
    return frames


BALANCED = [
    ("t1", "intent", "what is my account balance", "balance"),
    ("t2", "intent", "freeze my card right now", "freeze_account"),
    ("t3", "intent", "book a table for two tonight", "restaurant_reservation"),
    ("t4", "summarization", "summarize the meeting notes from monday", "the team agreed on the plan"),
    ("t5", "summarization", "summarize the call with the landlord", "rent goes up in june"),
]
HOLDOUT = [("h1", "intent", "set an alarm for seven in the morning", "alarm")]


def test_min_rows_per_task_passes_and_fails():
    datasets = small_datasets(BALANCED, HOLDOUT)
    passing = expectations.min_rows_per_task(datasets, DatasetConfig(min_rows_per_task=2))
    assert passing.passed and passing.details["rows_by_task"] == {"intent": 3, "summarization": 2}
    failing = expectations.min_rows_per_task(datasets, DatasetConfig(min_rows_per_task=3))
    assert not failing.passed and "summarization" in failing.description and "intent" not in failing.description
    empty = expectations.min_rows_per_task(small_datasets([], HOLDOUT), DatasetConfig(min_rows_per_task=0))
    assert not empty.passed and "empty" in empty.description


def test_no_sensitive_text_passes_and_fails():
    config = REDACTION
    clean = small_datasets(BALANCED, HOLDOUT, kto=[("t1", "intent", "what is my account balance", "balance", True)])
    passing = expectations.no_sensitive_text(clean, config)
    assert passing.passed and passing.details["sensitive"] == 0
    # Placeholders are not sensitive themselves.
    redacted = small_datasets(BALANCED, HOLDOUT, kto=[("k1", "intent", "mail [EMAIL] card [CARD]", "[SECRET]", False)])
    assert expectations.no_sensitive_text(redacted, config).passed
    for planted in ("mail jane.doe@example.com", f"token {SECRETS['github'][0]}", "card 4111 1111 1111 1111"):
        leaky = small_datasets(BALANCED, HOLDOUT, kto=[("k1", "intent", "hello", planted, False)])
        failing = expectations.no_sensitive_text(leaky, config)
        assert not failing.passed and failing.details["sensitive"] == 1, planted
        json.dumps(failing.details)  # check metadata is JSON
        assert "k1" in json.dumps(failing.details["examples"]), failing.details
    in_holdout = small_datasets(BALANCED, [("h1", "intent", "my ip is 203.0.113.77", "alarm")])
    assert not expectations.no_sensitive_text(in_holdout, config).passed


def test_holdout_disjoint_passes_and_fails():
    config = DEDUP
    assert expectations.holdout_disjoint(small_datasets(BALANCED, HOLDOUT), config).passed
    exact = small_datasets(BALANCED, [("h1", "intent", "What is my ACCOUNT balance?", "balance")])
    failing = expectations.holdout_disjoint(exact, config)
    assert not failing.passed and failing.details["overlapping"] == ["t1"]
    long_prompt = "please book a table for two people at the italian place near the station tonight at eight"
    near = small_datasets(
        [*BALANCED, ("t6", "intent", long_prompt, "restaurant_reservation")],
        [("h1", "intent", long_prompt + " thanks", "restaurant_reservation")],
    )
    failing = expectations.holdout_disjoint(near, config)
    assert not failing.passed and failing.details["overlapping"] == ["t6"]
    # A train prompt seen only in kto counts too.
    kto_only = small_datasets(BALANCED, HOLDOUT, kto=[("k9", "intent", "set an alarm for seven in the morning", "alarm", False)])
    assert expectations.holdout_disjoint(kto_only, config).details["overlapping"] == ["k9"]


def test_label_shares_within_bounds_passes_and_fails():
    tasks = TasksConfig(
        tasks={
            "intent": TaskSpec(name="intent", kind="classification"),
            "summarization": TaskSpec(name="summarization", kind="summarization"),
        }
    )
    config = DatasetConfig(max_label_share=0.5)
    assert expectations.label_shares_within_bounds(small_datasets(BALANCED, HOLDOUT), tasks, config).passed
    skewed = [*BALANCED, ("t7", "intent", "what's in my checking account", "balance"), ("t8", "intent", "how much money do i have", "balance")]
    failing = expectations.label_shares_within_bounds(small_datasets(skewed, HOLDOUT), tasks, config)
    assert not failing.passed and "intent/balance" in failing.description
    assert failing.details["top_shares"]["intent/balance"] == 0.6
    assert expectations.label_shares_within_bounds(small_datasets(skewed, HOLDOUT), tasks, DatasetConfig(max_label_share=0.6)).passed
    # Non-classification tasks are not label-balanced: one summary repeated is fine. (With no
    # classification rows at all the check fails: loop_pipeline_tests/core/test_expectations.py.)
    summaries = [(f"s{i}", "summarization", f"summarize call {i}", "same summary") for i in range(4)]
    assert expectations.label_shares_within_bounds(small_datasets([*BALANCED, *summaries], HOLDOUT), tasks, config).passed


def test_no_empty_targets_passes_and_fails():
    assert expectations.no_empty_targets(small_datasets(BALANCED, HOLDOUT)).passed
    blank_sft = small_datasets([*BALANCED, ("t9", "intent", "cancel my order", "   ")], HOLDOUT)
    failing = expectations.no_empty_targets(blank_sft)
    assert not failing.passed and failing.details["empty"] == 1 and "t9" in json.dumps(failing.details["examples"])
    null_reference = small_datasets(BALANCED, [("h1", "intent", "set an alarm", None)])
    failing = expectations.no_empty_targets(null_reference)
    assert not failing.passed and "h1" in json.dumps(failing.details["examples"])


def test_group_keys_are_pseudonyms_of_the_user_or_session_id(world):
    from loop_pipeline.core.datasets import curate_examples

    for group_by in ("user_id", "session_id"):
        curation = curate_examples(
            world.scored.filter(on_day(1)),
            world.traces,
            world.thresholds,
            previous_assignments=None,
            config=DATASET_CONFIG.with_overrides({"group_by": group_by}),
            redaction_config=REDACTION,
            dedup_config=DEDUP,
        )
        examples = curation.examples
        if group_by == "session_id":
            examples = examples.join(world.traces.select("trace_id", pl.col("session_id").alias("_session")), on="trace_id")
            ids = examples.get_column("_session")
        else:
            ids = examples.get_column("user_id")
        keys = examples.get_column("group_key")
        assert keys.str.starts_with(f"{group_by}:").all()
        # One key per id, and the same id always gets the same key; the id itself is not in it.
        pairs = pl.DataFrame({"id": ids, "key": keys}).unique()
        assert pairs.height == ids.n_unique() == keys.n_unique()
        assert not any(raw in key for raw, key in pairs.iter_rows())
        assert set(keys) <= set(curation.assignments.get_column("group_key"))
