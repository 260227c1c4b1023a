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
from typing import Annotated, Literal, Optional

import polars as pl
from pydantic import AfterValidator, Field, StrictBool, field_validator, model_validator

from loop_pipeline.config import ConfigModel
from loop_pipeline.schemas.feedback import FEEDBACK_KINDS, FEEDBACK_SOURCES

SKIP_KIND = "skip"
TaskMatch = Literal["span_name", "trace_name", "tag", "metadata_key", "prompt_name"]
ValueType = Literal["number", "boolean", "label", "text"]
FeedbackSource = Literal[FEEDBACK_SOURCES]  # type: ignore[valid-type]
FeedbackKindOrSkip = Literal[(*FEEDBACK_KINDS, SKIP_KIND)]  # type: ignore[valid-type]
# Not blank: a task type or a key must say something.
Name = Annotated[str, Field(pattern=r"\S")]


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    return pattern


Regex = Annotated[str, Field(min_length=1), AfterValidator(_compiles)]


# ---------------------------------------------------------------------------------------------
# Task type


class TaskTypeRule(ConfigModel):
    """``match: metadata_key`` reads ``key`` (its value is the task type unless ``task_type`` is
    given; ``pattern`` optional); the other matches need a ``pattern`` and a ``task_type``."""

    match: TaskMatch
    pattern: Optional[Regex] = None
    key: Optional[Name] = None
    task_type: Optional[Name] = None

    @model_validator(mode="after")
    def _fields_for_match(self) -> "TaskTypeRule":
        if self.match == "metadata_key":
            if self.key is None:
                raise ValueError("key: the metadata key to read, required for match: metadata_key")
            return self
        if self.key is not None:
            raise ValueError("key: only for match: metadata_key")
        if self.pattern is None:
            raise ValueError(f"pattern: required for match: {self.match}")
        if self.task_type is None:
            raise ValueError(f"task_type: required for match: {self.match}")
        return self


class TaskTypeMapping(ConfigModel):
    """First matching rule wins; ``default`` when none does (null leaves the task type empty)."""

    default: Optional[Name] = None
    rules: tuple[TaskTypeRule, ...] = (TaskTypeRule(match="metadata_key", key="task_type"),)

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


class FeedbackRule(ConfigModel):
    kind: FeedbackKindOrSkip
    name: Optional[Regex] = None  # case-insensitive, on the score name
    source: Optional[FeedbackSource] = None
    value_type: Optional[ValueType] = None
    invert: StrictBool = False
    set_source: Optional[FeedbackSource] = None

    @model_validator(mode="after")
    def _matches_something(self) -> "FeedbackRule":
        if self.name is None and self.source is None and self.value_type is None:
            raise ValueError("needs at least one of name, source, value_type to match on")
        return self


class FeedbackBySource(ConfigModel):
    """The kind of a score that no rule matched and the format gives no hint for, by its source."""

    user: FeedbackKindOrSkip = "thumbs"
    human_reviewer: FeedbackKindOrSkip = "human_label"
    code: FeedbackKindOrSkip = "judge_score"
    llm: FeedbackKindOrSkip = "judge_score"


class LabelTable(ConfigModel):
    """Categorical labels that mean 1 (``positive``) or 0 (``negative``), compared lowercased."""

    positive: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()

    @field_validator("positive", "negative", mode="before")
    @classmethod
    def _normalized(cls, value):
        # YAML reads yes / 1 unquoted as a boolean / number: they are labels all the same.
        if isinstance(value, (list, tuple)):
            return tuple(str(v).strip().lower() if isinstance(v, (str, int, bool)) else v for v in value)
        return value


_DEFAULT_RULES = (
    FeedbackRule(kind="hallucination", name=r"hallucinat"),
    FeedbackRule(kind="judge_score", name=r"toxic|harm|unsafe", invert=True),
    FeedbackRule(kind="thumbs", name=r"thumb|user_feedback|^feedback$|helpful|\blike", set_source="user"),
    FeedbackRule(kind=SKIP_KIND, value_type="text"),
)
_DEFAULT_LABELS = LabelTable(
    positive=("yes", "true", "pass", "passed", "correct", "good", "relevant", "accepted", "thumbs_up", "up", "1"),
    negative=("no", "false", "fail", "failed", "incorrect", "bad", "not_relevant", "irrelevant", "rejected", "thumbs_down", "down", "0"),
)
_DEFAULT_HALLUCINATION_LABELS = LabelTable(
    positive=("hallucinated", "hallucination", "yes", "true", "unsupported", "1"),
    negative=("factual", "faithful", "grounded", "supported", "no", "false", "0"),
)


class FeedbackMapping(ConfigModel):
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
    by_source: FeedbackBySource = FeedbackBySource()
    labels: LabelTable = _DEFAULT_LABELS
    hallucination_labels: LabelTable = _DEFAULT_HALLUCINATION_LABELS


def _label_value(label: pl.Expr, table: LabelTable) -> pl.Expr:
    lowered = label.str.strip_chars().str.to_lowercase()
    return (
        pl.when(lowered.is_in(list(table.positive)))
        .then(pl.lit("1"))
        .when(lowered.is_in(list(table.negative)))
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
        pl.col("source").replace_strict(mapping.by_source.model_dump(), default=None, return_dtype=pl.String),
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
