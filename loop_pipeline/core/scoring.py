"""Quality score: feedback signals per trace, fused into a calibrated ``p_good``; thresholds per task.

Steps, each a plain function so the CLI, the tests and the Dagster assets run the same code:

1. :func:`trace_signals` joins feedback to traces by ``trace_id`` (feedback may arrive days later)
   and derives one row of signals per trace, plus the human review outcome where there is one.
2. :func:`fit_quality_model` turns the configured logit into probabilities calibrated against the
   human-reviewed traces (Platt or isotonic), with held-out Brier score and ECE by cross-validation.
3. :func:`score_traces` adds ``p_good_signals`` (from signals only: what thresholds are judged on)
   and ``p_good`` (the review outcome where a human reviewed the trace).
4. :func:`sweep_thresholds` picks, per task type, the loosest threshold whose precision against
   human review has a Wilson lower bound at or above the target.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np
import polars as pl

from loop_pipeline.settings import ConfigError, load_config, reject_unknown_keys

SIGNALS = (
    "accepted",
    "copied",
    "thumbs_up",
    "thumbs_down",
    "edited",
    "edit_similarity",
    "rejected",
    "regenerated",
    "no_action",
    "hallucination",
    "judge_score",
    "heuristic_failed",
)
# The user actions whose absence is "no action".
_USER_ACTIONS = ("accepted", "copied", "thumbs_up", "thumbs_down", "edited", "rejected", "regenerated")
CALIBRATIONS = ("platt", "isotonic", "none")


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class ScoringConfig:
    weights_version: str = "v1"
    bias: float = 0.5
    weights: Mapping[str, float] = field(default_factory=dict)
    judge_score_range: tuple[float, float] = (0.0, 1.0)
    refusal_patterns: tuple[str, ...] = ()
    veto_signals: tuple[str, ...] = ("edited", "rejected", "regenerated", "hallucination", "thumbs_down", "heuristic_failed")
    feedback_lookback_days: int = 3
    calibration: str = "platt"
    min_reviewed: int = 20
    calibration_folds: int = 5
    precision_target: float = 0.95
    interval_confidence: float = 0.90
    max_candidate_thresholds: int = 40
    mlflow_experiment: str = "loop-thresholds"

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> "ScoringConfig":
        reject_unknown_keys("scoring", raw, cls.__dataclass_fields__)
        values = dict(raw)
        weights = dict(values.get("weights") or {})
        missing = set(SIGNALS) - set(weights)
        extra = set(weights) - set(SIGNALS)
        if missing or extra:
            raise ConfigError(
                f"scoring.weights: needs exactly the signals {list(SIGNALS)}"
                + (f"; missing {sorted(missing)}" if missing else "")
                + (f"; unknown {sorted(extra)}" if extra else "")
            )
        for name, weight in weights.items():
            if not isinstance(weight, (int, float)):
                raise ConfigError(f"scoring.weights.{name}: must be a number, got {weight!r}")
        values["weights"] = {k: float(v) for k, v in weights.items()}
        if "judge_score_range" in values:
            low, high = values["judge_score_range"]
            if not float(high) > float(low):
                raise ConfigError("scoring.judge_score_range: [low, high] with high > low")
            values["judge_score_range"] = (float(low), float(high))
        if "refusal_patterns" in values:
            values["refusal_patterns"] = tuple(values["refusal_patterns"] or ())
        if "veto_signals" in values:
            values["veto_signals"] = tuple(values["veto_signals"] or ())
            unknown_veto = set(values["veto_signals"]) - (set(SIGNALS) - {"edit_similarity", "judge_score", "no_action"})
            if unknown_veto:
                raise ConfigError(f"scoring.veto_signals: not boolean signals: {sorted(unknown_veto)}")
        config = cls(**values)
        if config.calibration not in CALIBRATIONS:
            raise ConfigError(f"scoring.calibration: one of {CALIBRATIONS}, got {config.calibration!r}")
        if not 0.0 < config.precision_target < 1.0:
            raise ConfigError(f"scoring.precision_target: in (0, 1), got {config.precision_target}")
        if not 0.0 < config.interval_confidence < 1.0:
            raise ConfigError(f"scoring.interval_confidence: in (0, 1), got {config.interval_confidence}")
        for name in ("feedback_lookback_days", "min_reviewed", "calibration_folds", "max_candidate_thresholds"):
            value = getattr(config, name)
            if not isinstance(value, int) or value < (0 if name == "feedback_lookback_days" else 2):
                raise ConfigError(f"scoring.{name}: must be an integer >= {0 if name == 'feedback_lookback_days' else 2}")
        return config

    @classmethod
    def load(cls) -> "ScoringConfig":
        return cls.from_mapping(load_config("scoring"))


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # classification | extraction | summarization | tagging | other
    labels: tuple[str, ...] = ()
    escalation_labels: tuple[str, ...] = ()
    min_words: int | None = None
    max_words: int | None = None


def load_tasks(raw: Mapping[str, Any] | None = None) -> dict[str, TaskSpec]:
    raw = load_config("tasks") if raw is None else raw
    tasks = raw.get("tasks")
    if not isinstance(tasks, Mapping):
        raise ConfigError("tasks.yaml: needs a `tasks` mapping of task type -> {kind, ...}")
    specs = {}
    for name, entry in tasks.items():
        entry = dict(entry or {})
        kind = entry.get("kind")
        if kind not in ("classification", "extraction", "summarization", "tagging", "other"):
            raise ConfigError(f"tasks.{name}.kind: classification | extraction | summarization | tagging | other")
        specs[str(name)] = TaskSpec(
            name=str(name),
            kind=kind,
            labels=tuple(str(x) for x in entry.get("labels") or ()),
            escalation_labels=tuple(str(x) for x in entry.get("escalation_labels") or ()),
            min_words=entry.get("min_words"),
            max_words=entry.get("max_words"),
        )
    return specs


# ---------------------------------------------------------------------------------------------
# Signals


def _normalized(expr: pl.Expr) -> pl.Expr:
    return expr.str.strip_chars().str.to_lowercase()


def heuristic_failures(traces: pl.DataFrame, tasks: Mapping[str, TaskSpec], config: ScoringConfig) -> pl.Expr:
    """Why an output fails its task's cheap checks (null when it passes)."""
    output = pl.col("output")
    rules: list[tuple[pl.Expr, str]] = [(output.str.strip_chars() == "", "empty_output")]
    if config.refusal_patterns:
        pattern = "(?i)" + "|".join(f"(?:{p})" for p in config.refusal_patterns)
        rules.append((output.str.contains(pattern), "refusal"))
    for spec in tasks.values():
        this_task = pl.col("task_type") == spec.name
        if spec.kind == "classification" and spec.labels:
            allowed = [label.lower() for label in (*spec.labels, *spec.escalation_labels)]
            rules.append((this_task & ~_normalized(output).is_in(allowed), "label_not_allowed"))
        if spec.kind == "extraction":
            is_object = output.str.json_path_match("$").str.starts_with("{").fill_null(False)
            rules.append((this_task & ~is_object, "invalid_json"))
        if spec.kind == "summarization":
            words = output.str.split(" ").list.len()
            if spec.min_words is not None:
                rules.append((this_task & (words < spec.min_words), "too_short"))
            if spec.max_words is not None:
                rules.append((this_task & (words > spec.max_words), "too_long"))
    chain = pl.when(rules[0][0]).then(pl.lit(rules[0][1]))
    for condition, name in rules[1:]:
        chain = chain.when(condition).then(pl.lit(name))
    return chain.otherwise(pl.lit(None, dtype=pl.String))


def trace_signals(
    traces: pl.DataFrame,
    feedback: pl.DataFrame,
    tasks: Mapping[str, TaskSpec] | None = None,
    config: ScoringConfig | None = None,
) -> pl.DataFrame:
    """One row per trace: its feedback signals, heuristics and human review outcome.

    Feedback later than ``feedback_lookback_days`` after its trace is not used; feedback whose
    trace is not among ``traces`` is left alone (see :func:`orphan_feedback`).
    """
    config = config or ScoringConfig.load()
    tasks = load_tasks() if tasks is None else tasks
    low, high = config.judge_score_range
    lookback = pl.duration(days=config.feedback_lookback_days)
    # Calendar days, like the partitions: feedback landing up to N days after the trace's day counts.
    events = (
        feedback.join(
            traces.select("trace_id", pl.col("timestamp").alias("_trace_at"), pl.col("output").alias("_output")),
            on="trace_id",
            how="inner",
        )
        .filter(pl.col("timestamp").dt.date() <= (pl.col("_trace_at") + lookback).dt.date())
        .sort("timestamp", "feedback_id")
    )
    user = pl.col("source") != "human_reviewer"
    kind = pl.col("kind")
    per_trace = events.group_by("trace_id").agg(
        (user & (kind == "accepted")).any().alias("accepted"),
        (user & (kind == "copied")).any().alias("copied"),
        (user & (kind == "thumbs") & (pl.col("value") >= 0.5)).any().alias("thumbs_up"),
        (user & (kind == "thumbs") & (pl.col("value") < 0.5)).any().alias("thumbs_down"),
        (user & (kind == "edited")).any().alias("edited"),
        pl.col("edited_output").filter(user & (kind == "edited")).last().alias("edited_output"),
        (user & (kind == "rejected")).any().alias("rejected"),
        (user & (kind == "regenerated")).any().alias("regenerated"),
        ((kind == "hallucination") & pl.col("value").fill_null(1.0).ge(0.5)).any().alias("hallucination"),
        ((pl.col("value").filter(kind == "judge_score") - low) / (high - low)).mean().alias("judge_score"),
        (kind == "human_label").any().alias("reviewed"),
        pl.col("value").filter(kind == "human_label").last().alias("_review_value"),
        pl.col("label").filter(kind == "human_label").last().alias("review_label"),
        pl.len().alias("feedback_events"),
        pl.col("timestamp").max().alias("last_feedback_at"),
    )
    gold = pl.col("metadata").str.json_path_match("$.gold")
    frame = traces.select(
        "trace_id",
        "timestamp",
        "task_type",
        "user_id",
        "output",
        # The simulator's gold answer: for measuring only, never an input to the score.
        gold.alias("sim_gold"),
    ).join(per_trace, on="trace_id", how="left", maintain_order="left")
    flags = [name for name in _USER_ACTIONS] + ["hallucination", "reviewed"]
    frame = frame.with_columns([pl.col(name).fill_null(False) for name in flags] + [pl.col("feedback_events").fill_null(0)])
    review_good = pl.when(pl.col("_review_value").is_not_null()).then(pl.col("_review_value") >= 0.5).otherwise(
        _normalized(pl.col("review_label")) == _normalized(pl.col("output"))
    )
    frame = frame.with_columns(
        ~pl.any_horizontal([pl.col(name) for name in _USER_ACTIONS]).alias("no_action"),
        pl.when(pl.col("reviewed")).then(review_good).alias("review_good"),
        heuristic_failures(traces, tasks, config).alias("heuristic"),
        _edit_similarity(frame).alias("edit_similarity"),
    ).with_columns(pl.col("heuristic").is_not_null().alias("heuristic_failed"))
    # The user's last edit stays: it is the example's target (and DPO's chosen answer) downstream.
    return frame.drop("_review_value").rename({"edited_output": "user_edit"})


def _edit_similarity(frame: pl.DataFrame) -> pl.Series:
    """1.0 for an edit identical to the output, towards 0.0 for a rewrite; null when not edited."""
    values: list[float | None] = [None] * frame.height
    edited = frame.select(pl.col("edited").fill_null(False) & pl.col("edited_output").is_not_null()).to_series()
    outputs = frame.get_column("output")
    edits = frame.get_column("edited_output")
    # Edits are a small share of traffic, and difflib on them costs less than a vector library.
    for index in edited.arg_true().to_list():
        values[index] = difflib.SequenceMatcher(None, outputs[index], edits[index], autojunk=False).ratio()
    return pl.Series("edit_similarity", values, dtype=pl.Float64)


def orphan_feedback(traces: pl.DataFrame, feedback: pl.DataFrame) -> pl.DataFrame:
    """Feedback events whose trace_id is not among the traces: kept, and reported."""
    return feedback.join(traces.select("trace_id"), on="trace_id", how="anti", maintain_order="left")


# ---------------------------------------------------------------------------------------------
# Fusion and calibration


def signal_logit(config: ScoringConfig) -> pl.Expr:
    """The configured logit: bias + sum of weight x signal (see configs/scoring.yaml)."""
    w = config.weights
    terms = [pl.lit(config.bias)]
    for name in SIGNALS:
        if name == "edit_similarity":
            terms.append(pl.col(name).fill_null(0.0) * w[name])
        elif name == "judge_score":
            terms.append((pl.col(name) - 0.5).fill_null(0.0) * w[name])
        else:
            terms.append(pl.col(name).cast(pl.Float64) * w[name])
    return pl.sum_horizontal(terms)


@dataclass
class QualityModel:
    """Maps the configured logit to a calibrated probability that the output is good."""

    weights_version: str
    method: str  # platt | isotonic | none
    platt: tuple[float, float] | None = None  # p = sigmoid(a * logit + b)
    isotonic_x: list[float] | None = None
    isotonic_y: list[float] | None = None
    n_reviewed: int = 0
    n_reviewed_bad: int = 0
    metrics: dict[str, float | None] = field(default_factory=dict)
    note: str = ""

    def predict(self, logit: np.ndarray) -> np.ndarray:
        logit = np.asarray(logit, dtype=float)
        if self.method == "platt" and self.platt is not None:
            a, b = self.platt
            return _sigmoid(a * logit + b)
        if self.method == "isotonic" and self.isotonic_x is not None:
            return np.interp(logit, self.isotonic_x, self.isotonic_y)
        return _sigmoid(logit)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "QualityModel":
        values = dict(raw)
        if values.get("platt") is not None:
            values["platt"] = tuple(values["platt"])
        return cls(**values)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _fit_calibrator(method: str, logit: np.ndarray, y: np.ndarray) -> QualityModel:
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    model = QualityModel(weights_version="", method=method)
    if method == "platt":
        fitted = LogisticRegression(C=1e4, max_iter=1000).fit(logit.reshape(-1, 1), y)
        model.platt = (float(fitted.coef_[0][0]), float(fitted.intercept_[0]))
        if model.platt[0] <= 0:
            # A non-positive slope would reverse every signal; keep the configured direction.
            model.platt = (1e-6, model.platt[1])
    elif method == "isotonic":
        fitted = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(logit, y)
        model.isotonic_x = [float(v) for v in fitted.X_thresholds_]
        model.isotonic_y = [float(v) for v in fitted.y_thresholds_]
    return model


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(total)


def fit_quality_model(signals: pl.DataFrame, config: ScoringConfig | None = None) -> QualityModel:
    """Calibrate the configured logit on human-reviewed traces; held-out metrics by k-fold CV."""
    config = config or ScoringConfig.load()
    reviewed = signals.filter(pl.col("reviewed") & pl.col("review_good").is_not_null())
    logit = reviewed.select(signal_logit(config)).to_series().to_numpy()
    y = reviewed.get_column("review_good").cast(pl.Int8).to_numpy()
    n, n_bad = len(y), int((y == 0).sum())
    uncalibrated = _sigmoid(logit)
    metrics: dict[str, float | None] = {
        "brier_uncalibrated": float(np.mean((uncalibrated - y) ** 2)) if n else None,
        "ece_uncalibrated": expected_calibration_error(uncalibrated, y) if n else None,
    }
    if config.calibration == "none" or n < config.min_reviewed or n_bad == 0 or n_bad == n:
        note = (
            "calibration disabled in configs/scoring.yaml"
            if config.calibration == "none"
            else f"uncalibrated: {n} reviewed traces ({n_bad} bad); need >= {config.min_reviewed} with both outcomes"
        )
        return QualityModel(config.weights_version, "none", n_reviewed=n, n_reviewed_bad=n_bad, metrics=metrics, note=note)

    # Held-out predictions: each reviewed trace is scored by a calibrator fit without it.
    folds = min(config.calibration_folds, n_bad, n - n_bad)
    held_out = np.empty(n)
    if folds >= 2:
        from sklearn.model_selection import StratifiedKFold

        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
        for train, test in splitter.split(logit.reshape(-1, 1), y):
            held_out[test] = _fit_calibrator(config.calibration, logit[train], y[train]).predict(logit[test])
        metrics["brier_held_out"] = float(np.mean((held_out - y) ** 2))
        metrics["ece_held_out"] = expected_calibration_error(held_out, y)
    else:
        metrics["brier_held_out"] = None
        metrics["ece_held_out"] = None
    model = _fit_calibrator(config.calibration, logit, y)
    model.weights_version = config.weights_version
    model.n_reviewed, model.n_reviewed_bad = n, n_bad
    model.metrics = metrics
    model.note = f"{config.calibration} calibration on {n} reviewed traces ({n_bad} bad), {folds}-fold held-out metrics"
    return model


def score_traces(signals: pl.DataFrame, model: QualityModel, config: ScoringConfig | None = None) -> pl.DataFrame:
    """Add ``logit``, ``p_good_signals`` (signals only), ``p_good`` (human review wins) and
    ``vetoed``: an output with an explicit negative signal is never kept as it is, whatever its
    score (an edit, not the output, is then the example; the output feeds the negative sets)."""
    config = config or ScoringConfig.load()
    logit = signals.select(signal_logit(config)).to_series().to_numpy()
    p_signals = pl.Series("p_good_signals", model.predict(logit), dtype=pl.Float64)
    veto = pl.any_horizontal([pl.col(name) for name in config.veto_signals]) if config.veto_signals else pl.lit(False)
    return signals.with_columns(pl.Series("logit", logit, dtype=pl.Float64), p_signals).with_columns(
        veto.alias("vetoed"),
        pl.when(pl.col("review_good").is_not_null())
        .then(pl.col("review_good").cast(pl.Float64))
        .otherwise(pl.col("p_good_signals"))
        .alias("p_good"),
        pl.lit(model.weights_version).alias("weights_version"),
    )


# ---------------------------------------------------------------------------------------------
# Thresholds


def wilson_interval(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """Two-sided Wilson score interval for a binomial proportion; (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import norm

    z = float(norm.ppf(1 - (1 - confidence) / 2))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def candidate_thresholds(p: np.ndarray, limit: int) -> list[float]:
    """Distinct score values (the only places where the kept set changes), thinned to ``limit``.

    Truncated (not rounded) to 6 decimals: a threshold rounded up above its own score would keep
    none of the traces at that score."""
    values = np.unique(np.floor(np.asarray(p, dtype=float) * 1e6) / 1e6)
    if len(values) > limit:
        values = np.unique(np.quantile(values, np.linspace(0, 1, limit)))
    return [float(v) for v in values]


def sweep_thresholds(scored: pl.DataFrame, config: ScoringConfig | None = None) -> dict[str, dict[str, Any]]:
    """Per task type: every candidate threshold with its kept volume and estimated precision, and
    the chosen one (the loosest whose Wilson lower bound reaches the target), or None."""
    config = config or ScoringConfig.load()
    results: dict[str, dict[str, Any]] = {}
    for task_type in sorted(scored.get_column("task_type").drop_nulls().unique().to_list()):
        task = scored.filter(pl.col("task_type") == task_type)
        # A vetoed trace is never kept: give it a score below every threshold.
        eligible = task.select(pl.when(~pl.col("vetoed")).then(pl.col("p_good_signals")).otherwise(-1.0)).to_series()
        p = eligible.to_numpy()
        is_reviewed = task.get_column("review_good").is_not_null().to_numpy()
        reviewed = task.filter(pl.col("review_good").is_not_null())
        p_rev = p[is_reviewed]
        good_rev = reviewed.get_column("review_good").to_numpy().astype(bool)
        has_gold = task.get_column("sim_gold").is_not_null().all()
        correct = (
            (task.select(_normalized(pl.col("output")) == _normalized(pl.col("sim_gold"))).to_series().to_numpy())
            if has_gold
            else None
        )
        candidates = []
        for threshold in candidate_thresholds(p[p >= 0], config.max_candidate_thresholds):
            kept_mask = p >= threshold - 1e-12
            rev_mask = p_rev >= threshold - 1e-12
            n_rev, n_good = int(rev_mask.sum()), int(good_rev[rev_mask].sum())
            low, high = wilson_interval(n_good, n_rev, config.interval_confidence)
            row = {
                "threshold": threshold,
                "kept": int(kept_mask.sum()),
                "kept_share": float(kept_mask.mean()) if len(p) else 0.0,
                "reviewed_kept": n_rev,
                "precision": n_good / n_rev if n_rev else None,
                "precision_low": low,
                "precision_high": high,
                "recall": n_good / int(good_rev.sum()) if good_rev.any() else None,
            }
            if correct is not None:
                row["true_precision"] = float(correct[kept_mask].mean()) if kept_mask.any() else None
            candidates.append(row)
        passing = [c for c in candidates if c["reviewed_kept"] and c["precision_low"] >= config.precision_target]
        chosen = min(passing, key=lambda c: c["threshold"]) if passing else None
        results[task_type] = {
            "traces": task.height,
            "reviewed": reviewed.height,
            "candidates": candidates,
            "chosen": chosen,
            "reason": None
            if chosen
            else (
                f"no threshold reaches a Wilson lower bound of {config.precision_target} "
                f"with {reviewed.height} reviewed traces: review more, or lower the target"
            ),
        }
    return results


def chosen_thresholds(sweep: Mapping[str, Mapping[str, Any]]) -> dict[str, float | None]:
    return {task: (entry["chosen"] or {}).get("threshold") for task, entry in sweep.items()}


def keep_mask(scored: pl.DataFrame, thresholds: Mapping[str, float | None]) -> pl.Expr:
    """Traces whose output is trusted: not vetoed, score at or above its task's threshold (a task
    without a threshold keeps nothing)."""
    expr = pl.lit(False)
    for task_type, threshold in thresholds.items():
        if threshold is not None:
            expr = expr | ((pl.col("task_type") == task_type) & (pl.col("p_good_signals") >= threshold - 1e-12))
    return expr & ~pl.col("vetoed")


def compare_filters(scored: pl.DataFrame, thresholds: Mapping[str, float | None]) -> dict[str, dict[str, Any]] | None:
    """Kept volume and true error rate (against the simulator's gold) of three filters:
    none, user acceptance only, and the fused score at the chosen thresholds."""
    if scored.height == 0 or scored.get_column("sim_gold").is_null().any():
        return None
    wrong = _normalized(pl.col("output")) != _normalized(pl.col("sim_gold"))
    filters = {"none": pl.lit(True), "acceptance": pl.col("accepted"), "fused": keep_mask(scored, thresholds)}
    out = {}
    for name, mask in filters.items():
        kept = scored.filter(mask)
        errors = kept.select(wrong.sum()).item() if kept.height else 0
        out[name] = {"kept": kept.height, "true_error_rate": errors / kept.height if kept.height else None}
    return out


def summarize_sweep(sweep: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task type: chosen threshold, kept count, estimated precision and its interval."""
    summary = {}
    for task_type, entry in sweep.items():
        chosen = entry["chosen"]
        summary[task_type] = {
            "threshold": chosen["threshold"] if chosen else None,
            "kept": chosen["kept"] if chosen else 0,
            "traces": entry["traces"],
            "reviewed": entry["reviewed"],
            "estimated_precision": chosen["precision"] if chosen else None,
            "precision_interval": [chosen["precision_low"], chosen["precision_high"]] if chosen else None,
            **({"true_precision": chosen.get("true_precision")} if chosen and "true_precision" in chosen else {}),
            **({} if chosen else {"reason": entry["reason"]}),
        }
    return summary


def describe_threshold(task_type: str, entry: Mapping[str, Any]) -> str:
    """One human line for a task type's entry of :func:`summarize_sweep`."""
    if entry["threshold"] is None:
        return f"{task_type}: no threshold ({entry['reason']})"
    low, high = entry["precision_interval"]
    return (
        f"{task_type}: threshold {entry['threshold']:.3f} keeps {entry['kept']} of {entry['traces']}, "
        f"estimated precision {entry['estimated_precision']:.3f} [{low:.3f}, {high:.3f}]"
    )


def score_distribution(scored: pl.DataFrame) -> dict[str, dict[str, float]]:
    """Per task type: count and quantiles of p_good (for Dagster metadata)."""
    out: dict[str, dict[str, float]] = {}
    for (task_type,), group in scored.group_by(["task_type"], maintain_order=True):
        p = group.get_column("p_good")
        out[str(task_type)] = {
            "count": group.height,
            "mean": round(float(p.mean()), 4),
            **{f"p{int(q * 100)}": round(float(p.quantile(q, "nearest")), 4) for q in (0.05, 0.25, 0.5, 0.75, 0.95)},
            "reviewed": int(group.get_column("reviewed").sum()),
        }
    return dict(sorted(out.items()))

