"""Configurable mappings for foreign trace formats: which task type a call is, and what a score means.

Both are applied as vectorized polars expressions over columns every adapter fills the same way,
so the rules have one implementation whatever the source format:

- task type: ``_span_name``, ``_trace_name``, ``_tags`` (list of text), ``_prompt_name`` and one
  ``_meta:<key>`` column per ``metadata_key`` rule (the value of that metadata key, as text);
- feedback: ``_name`` (score / annotation / assessment name), ``_value_type`` (number | boolean |
  label | text), ``_raw_value`` (the value as text), ``_label`` (a categorical label or expectation),
  ``_kind_hint`` (what the format itself says, e.g. an MLflow expectation is a gold label) and the
  canonical ``source``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import polars as pl

from loop_pipeline.schemas.feedback import FEEDBACK_KINDS, FEEDBACK_SOURCES
from loop_pipeline.settings import ConfigError, reject_unknown_keys

TASK_MATCHES = ("span_name", "trace_name", "tag", "metadata_key", "prompt_name")
VALUE_TYPES = ("number", "boolean", "label", "text")
SKIP_KIND = "skip"


def _regex(section: str, pattern: Any) -> str:
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"{section}: pattern must be a non-empty regular expression, got {pattern!r}")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{section}: invalid regular expression {pattern!r}: {exc}") from exc
    return pattern


# ---------------------------------------------------------------------------------------------
# Task type


@dataclass(frozen=True)
class TaskTypeRule:
    match: str
    pattern: str | None = None
    key: str | None = None
    task_type: str | None = None


@dataclass(frozen=True)
class TaskTypeMapping:
    """First matching rule wins; ``default`` when none does (null leaves the task type empty)."""

    default: str | None = None
    rules: tuple[TaskTypeRule, ...] = (TaskTypeRule(match="metadata_key", key="task_type"),)

    @classmethod
    def from_mapping(cls, raw: Any) -> "TaskTypeMapping":
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ConfigError("ingest.task_type: expected a mapping with `default` and `rules`")
        reject_unknown_keys("ingest.task_type", raw, ("default", "rules"))
        default = raw.get("default")
        if default is not None and (not isinstance(default, str) or not default.strip()):
            raise ConfigError(f"ingest.task_type.default: a non-empty string or null, got {default!r}")
        rules_raw = raw.get("rules", [])
        if not isinstance(rules_raw, list):
            raise ConfigError("ingest.task_type.rules: expected a list of rules")
        rules = []
        for position, entry in enumerate(rules_raw):
            where = f"ingest.task_type.rules[{position}]"
            if not isinstance(entry, Mapping):
                raise ConfigError(f"{where}: expected a mapping")
            reject_unknown_keys(where, entry, ("match", "pattern", "key", "task_type"))
            match = entry.get("match")
            if match not in TASK_MATCHES:
                raise ConfigError(f"{where}.match: one of {', '.join(TASK_MATCHES)}, got {match!r}")
            task_type = entry.get("task_type")
            if task_type is not None and (not isinstance(task_type, str) or not task_type.strip()):
                raise ConfigError(f"{where}.task_type: a non-empty string, got {task_type!r}")
            pattern = entry.get("pattern")
            key = entry.get("key")
            if match == "metadata_key":
                if not isinstance(key, str) or not key:
                    raise ConfigError(f"{where}.key: the metadata key to read, required for metadata_key")
                if pattern is not None:
                    pattern = _regex(where, pattern)
            else:
                if key is not None:
                    raise ConfigError(f"{where}.key: only for match: metadata_key")
                pattern = _regex(where, pattern)
                if task_type is None:
                    raise ConfigError(f"{where}.task_type: required for match: {match}")
            rules.append(TaskTypeRule(match=match, pattern=pattern, key=key, task_type=task_type))
        return cls(default=default, rules=tuple(rules))

    @property
    def metadata_keys(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(rule.key for rule in self.rules if rule.key))


def meta_column(key: str) -> str:
    return f"_meta:{key}"


def apply_task_type(frame: pl.DataFrame, mapping: TaskTypeMapping) -> pl.DataFrame:
    """Fill ``task_type`` where it is null from the rules, then the default."""
    candidates: list[pl.Expr] = []
    for rule in mapping.rules:
        flags = "(?i)"
        if rule.match == "metadata_key":
            value = pl.col(meta_column(rule.key or ""))
            hit = value.is_not_null() & (value.str.strip_chars() != "")
            if rule.pattern:
                hit = hit & value.str.contains(flags + rule.pattern)
            result = pl.lit(rule.task_type) if rule.task_type else value.str.strip_chars()
        elif rule.match == "tag":
            hit = pl.col("_tags").list.eval(pl.element().str.contains(flags + (rule.pattern or ""))).list.any().fill_null(False)
            result = pl.lit(rule.task_type)
        else:
            column = {"span_name": "_span_name", "trace_name": "_trace_name", "prompt_name": "_prompt_name"}[rule.match]
            hit = pl.col(column).str.contains(flags + (rule.pattern or "")).fill_null(False)
            result = pl.lit(rule.task_type)
        candidates.append(pl.when(hit).then(result))
    chosen = pl.coalesce([pl.col("task_type"), *candidates, pl.lit(mapping.default, dtype=pl.String)])
    return frame.with_columns(chosen.cast(pl.String).alias("task_type"))


# ---------------------------------------------------------------------------------------------
# Feedback


@dataclass(frozen=True)
class FeedbackRule:
    kind: str
    name: str | None = None
    source: str | None = None
    value_type: str | None = None
    invert: bool = False
    set_source: str | None = None


_DEFAULT_RULES = (
    FeedbackRule(kind="hallucination", name=r"hallucinat"),
    FeedbackRule(kind="judge_score", name=r"toxic|harm|unsafe", invert=True),
    FeedbackRule(kind="thumbs", name=r"thumb|user_feedback|^feedback$|helpful|\blike", set_source="user"),
    FeedbackRule(kind=SKIP_KIND, value_type="text"),
)
_DEFAULT_BY_SOURCE = (("user", "thumbs"), ("human_reviewer", "human_label"), ("code", "judge_score"), ("llm", "judge_score"))
_DEFAULT_LABELS = (
    ("positive", ("yes", "true", "pass", "passed", "correct", "good", "relevant", "accepted", "thumbs_up", "up", "1")),
    ("negative", ("no", "false", "fail", "failed", "incorrect", "bad", "not_relevant", "irrelevant", "rejected", "thumbs_down", "down", "0")),
)
_DEFAULT_HALLUCINATION_LABELS = (
    ("positive", ("hallucinated", "hallucination", "yes", "true", "unsupported", "1")),
    ("negative", ("factual", "faithful", "grounded", "supported", "no", "false", "0")),
)


def _label_table(section: str, raw: Any, default: tuple) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if raw is None:
        return default
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{section}: expected a mapping with `positive` and `negative` lists")
    reject_unknown_keys(section, raw, ("positive", "negative"))
    table = []
    for side in ("positive", "negative"):
        values = raw.get(side, [])
        if not isinstance(values, list) or not all(isinstance(v, (str, int, bool)) for v in values):
            raise ConfigError(f"{section}.{side}: expected a list of labels")
        table.append((side, tuple(str(v).strip().lower() for v in values)))
    return tuple(table)


@dataclass(frozen=True)
class FeedbackMapping:
    """Scores, annotations and assessments to canonical feedback kinds.

    Rules are tried in order (``name`` a case-insensitive regex on the score name, ``source`` the
    canonical source, ``value_type`` number | boolean | label | text); the first match gives the
    kind (``skip`` drops the event, counted as skipped), ``invert`` turns a score where higher is
    worse into 1 - score, ``set_source`` overrides who gave it. Without a matching rule the
    format's own hint decides (an MLflow expectation is a gold label), else ``by_source``.
    Categorical labels become values through ``labels`` (``hallucination_labels`` for the
    hallucination kind, where "yes" means hallucinated).
    """

    rules: tuple[FeedbackRule, ...] = _DEFAULT_RULES
    by_source: tuple[tuple[str, str], ...] = _DEFAULT_BY_SOURCE
    labels: tuple[tuple[str, tuple[str, ...]], ...] = _DEFAULT_LABELS
    hallucination_labels: tuple[tuple[str, tuple[str, ...]], ...] = _DEFAULT_HALLUCINATION_LABELS

    @classmethod
    def from_mapping(cls, raw: Any) -> "FeedbackMapping":
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ConfigError("ingest.feedback: expected a mapping")
        reject_unknown_keys("ingest.feedback", raw, ("rules", "by_source", "labels", "hallucination_labels"))
        kinds = set(FEEDBACK_KINDS) | {SKIP_KIND}
        rules = _DEFAULT_RULES
        if "rules" in raw:
            if not isinstance(raw["rules"], list):
                raise ConfigError("ingest.feedback.rules: expected a list of rules")
            parsed = []
            for position, entry in enumerate(raw["rules"]):
                where = f"ingest.feedback.rules[{position}]"
                if not isinstance(entry, Mapping):
                    raise ConfigError(f"{where}: expected a mapping")
                reject_unknown_keys(where, entry, ("kind", "name", "source", "value_type", "invert", "set_source"))
                kind = entry.get("kind")
                if kind not in kinds:
                    raise ConfigError(f"{where}.kind: one of {', '.join(sorted(kinds))}, got {kind!r}")
                for key, allowed in (("source", FEEDBACK_SOURCES), ("set_source", FEEDBACK_SOURCES), ("value_type", VALUE_TYPES)):
                    if entry.get(key) is not None and entry[key] not in allowed:
                        raise ConfigError(f"{where}.{key}: one of {', '.join(allowed)}, got {entry[key]!r}")
                if not isinstance(entry.get("invert", False), bool):
                    raise ConfigError(f"{where}.invert: true or false")
                name = _regex(f"{where}.name", entry["name"]) if entry.get("name") is not None else None
                if name is None and entry.get("source") is None and entry.get("value_type") is None:
                    raise ConfigError(f"{where}: needs at least one of name, source, value_type to match on")
                parsed.append(
                    FeedbackRule(
                        kind=kind,
                        name=name,
                        source=entry.get("source"),
                        value_type=entry.get("value_type"),
                        invert=bool(entry.get("invert", False)),
                        set_source=entry.get("set_source"),
                    )
                )
            rules = tuple(parsed)
        by_source = _DEFAULT_BY_SOURCE
        if "by_source" in raw:
            entry = raw["by_source"]
            if not isinstance(entry, Mapping):
                raise ConfigError("ingest.feedback.by_source: expected a mapping of source -> kind")
            reject_unknown_keys("ingest.feedback.by_source", entry, FEEDBACK_SOURCES)
            for source, kind in entry.items():
                if kind not in kinds:
                    raise ConfigError(f"ingest.feedback.by_source.{source}: one of {', '.join(sorted(kinds))}, got {kind!r}")
            by_source = tuple((s, entry.get(s, dict(_DEFAULT_BY_SOURCE)[s])) for s in FEEDBACK_SOURCES)
        return cls(
            rules=rules,
            by_source=by_source,
            labels=_label_table("ingest.feedback.labels", raw.get("labels"), _DEFAULT_LABELS),
            hallucination_labels=_label_table(
                "ingest.feedback.hallucination_labels", raw.get("hallucination_labels"), _DEFAULT_HALLUCINATION_LABELS
            ),
        )


def _label_value(label: pl.Expr, table: tuple[tuple[str, tuple[str, ...]], ...]) -> pl.Expr:
    lowered = label.str.strip_chars().str.to_lowercase()
    sides = dict(table)
    return (
        pl.when(lowered.is_in(list(sides.get("positive", ()))))
        .then(pl.lit("1"))
        .when(lowered.is_in(list(sides.get("negative", ()))))
        .then(pl.lit("0"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )


def apply_feedback_mapping(frame: pl.DataFrame, mapping: FeedbackMapping) -> pl.DataFrame:
    """Set ``kind``, ``value`` (text), ``label`` and ``source`` from the raw score columns.

    Rows already carrying a ``_reason`` keep their text fields as far as they go; their kind is
    still computed so the quarantine row says what it would have been.
    """
    name = pl.col("_name").fill_null("")
    source = pl.col("source")
    kind = pl.lit(None, dtype=pl.String)
    invert = pl.lit(False)
    set_source = pl.lit(None, dtype=pl.String)
    matchers = []
    for rule in mapping.rules:
        hit = pl.lit(True)
        if rule.name is not None:
            hit = hit & name.str.contains("(?i)" + rule.name)
        if rule.source is not None:
            hit = hit & (source == rule.source)
        if rule.value_type is not None:
            hit = hit & (pl.col("_value_type") == rule.value_type)
        matchers.append((hit.fill_null(False), rule))
    # Build from the last rule to the first so the first match wins.
    fallback_kind = pl.coalesce(
        pl.col("_kind_hint"),
        pl.col("source").replace_strict(dict(mapping.by_source), default=None, return_dtype=pl.String),
    )
    kind = fallback_kind
    for hit, rule in reversed(matchers):
        kind = pl.when(hit).then(pl.lit(rule.kind)).otherwise(kind)
        invert = pl.when(hit).then(pl.lit(rule.invert)).otherwise(invert)
        set_source = pl.when(hit).then(pl.lit(rule.set_source, dtype=pl.String)).otherwise(set_source)
    frame = frame.with_columns(kind.alias("kind"), invert.alias("_invert"), set_source.alias("_set_source"))
    value_type = pl.col("_value_type")
    raw_value = pl.col("_raw_value")
    label_value = (
        pl.when(pl.col("kind") == "hallucination")
        .then(_label_value(pl.col("_label"), mapping.hallucination_labels))
        .otherwise(_label_value(pl.col("_label"), mapping.labels))
    )
    value = (
        pl.when(value_type.is_in(["number", "boolean"]))
        .then(raw_value)
        .when(value_type == "label")
        .then(label_value)
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    numeric = pl.when(raw_value.str.to_lowercase() == "true").then(1.0).when(raw_value.str.to_lowercase() == "false").then(0.0).otherwise(
        raw_value.cast(pl.Float64, strict=False)
    )
    inverted = (pl.lit(1.0) - numeric).cast(pl.String)
    frame = frame.with_columns(
        pl.when(pl.col("_invert") & value_type.is_in(["number", "boolean"]) & numeric.is_not_null())
        .then(inverted)
        .when(pl.col("_invert") & (value_type == "label") & label_value.is_not_null())
        .then((pl.lit(1.0) - label_value.cast(pl.Float64)).cast(pl.String))
        .otherwise(value)
        .alias("value"),
        # A reviewer's label is a gold answer; for any other kind the label names the score.
        pl.when(pl.col("kind") == "human_label")
        .then(pl.col("_label"))
        .otherwise(pl.coalesce(pl.col("_label"), pl.col("_name")))
        .alias("label"),
        pl.coalesce(pl.col("_set_source"), pl.col("source")).alias("source"),
    )
    return frame.drop("_invert", "_set_source")
