"""Scoring stage: feedback signals per trace, a calibrated quality model, p_good, thresholds."""

import base64
import datetime as dt
import warnings

import dagster as dg

from loop_pipeline.config import ConfigError
from loop_pipeline.core import scoring
from loop_pipeline.core.tasks import TasksConfig
from loop_pipeline.core.thresholds import sweep_and_log
from loop_pipeline.defs.ingest.assets import FEEDBACK_EVENTS, RAW_TRACES
from loop_pipeline.defs.partitions import daily_partitions
from loop_pipeline.resources import LoopConfigs, LoopStorage, MlflowTracking
from loop_pipeline.schemas import FeedbackSchema, empty_frame

SCORING_GROUP = "scoring"
TRACE_SIGNALS = dg.AssetKey("trace_signals")
QUALITY_MODEL = dg.AssetKey("quality_model")
SCORED_TRACES = dg.AssetKey("scored_traces")
SCORE_THRESHOLDS = dg.AssetKey("score_thresholds")
SIGNAL_COUNTS = ("accepted", "edited", "rejected", "regenerated", "hallucination", "no_action", "heuristic_failed", "reviewed")
# Future feedback partitions do not exist yet; the (beta) flag says that is expected.
warnings.filterwarnings("ignore", message="Parameter `allow_nonexistent_upstream_partitions`")
# Recompute when an upstream partition changes: late feedback re-scores the traces it is about.
_EAGER = dg.AutomationCondition.eager()


def late_feedback_eager(lookback_days: int) -> dg.AutomationCondition:
    """Dagster's ``eager()`` over every day late feedback can still change, not only the newest
    (which is all ``eager()`` looks at): feedback landing on day D + k (k <= lookback) re-scores D."""
    AC = dg.AutomationCondition
    return (
        AC.in_latest_time_window(dt.timedelta(days=lookback_days + 1))
        & (AC.newly_missing() | AC.any_deps_updated()).since_last_handled()
        & ~AC.any_deps_missing()
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
    ).with_label(f"eager over the last {lookback_days + 1} days")


class MlflowLoggingConfig(dg.Config):
    """Run config of the assets that log to MLflow (``--no-mlflow`` on the CLI turns it off)."""

    log_to_mlflow: bool = True


def feedback_days(day: str, lookback: int) -> list[str]:
    start = dt.date.fromisoformat(day)
    return [(start + dt.timedelta(days=offset)).isoformat() for offset in range(lookback + 1)]


def build_trace_signals(lookback_days: int) -> dg.AssetsDefinition:
    """``trace_signals`` whose feedback dependency spans the trace's day and ``lookback_days``
    after it: the lookback is part of the asset graph, so it is fixed when definitions are built."""

    @dg.asset(
        key=TRACE_SIGNALS,
        partitions_def=daily_partitions,
        group_name=SCORING_GROUP,
        deps=[
            dg.AssetDep(RAW_TRACES),
            dg.AssetDep(
                FEEDBACK_EVENTS,
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=0, end_offset=lookback_days, allow_nonexistent_upstream_partitions=True
                ),
            ),
        ],
        automation_condition=late_feedback_eager(lookback_days),
        kinds={"polars", "parquet"},
        description="One row per trace of the day: user actions, flags, judge score, heuristics and the "
        f"human review outcome, from feedback that landed up to {lookback_days} days later.",
    )
    def trace_signals(context: dg.AssetExecutionContext, storage: LoopStorage, configs: LoopConfigs) -> dg.MaterializeResult:
        day = context.partition_key
        config, tasks = configs.load(scoring.ScoringConfig), configs.load(TasksConfig)
        if config.feedback_lookback_days != lookback_days:
            # Reading other days than the graph declares would leave late feedback unscheduled.
            raise ConfigError(
                f"{configs.path(scoring.ScoringConfig)}: feedback_lookback_days is {config.feedback_lookback_days} "
                f"for this run but the asset graph was built with {lookback_days}: change the file and reload "
                "the definitions instead of overriding it per run"
            )
        traces = storage.read_table(RAW_TRACES.path[-1], day)
        days = [d for d in feedback_days(day, lookback_days) if storage.table_path(FEEDBACK_EVENTS.path[-1], d).is_file()]
        feedback = storage.read_partitions(FEEDBACK_EVENTS.path[-1], days) if days else empty_frame(FeedbackSchema)
        signals = scoring.trace_signals(traces, feedback, config, tasks)
        path = storage.write_table(TRACE_SIGNALS.path[-1], day, signals)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": signals.height,
                "path": dg.MetadataValue.path(str(path)),
                "feedback_partitions": dg.MetadataValue.json(days),
                "signal_counts": dg.MetadataValue.json({name: int(signals.get_column(name).sum()) for name in SIGNAL_COUNTS}),
                **configs.metadata(config, tasks),
            }
        )

    return trace_signals


@dg.asset(
    key=QUALITY_MODEL,
    group_name=SCORING_GROUP,
    deps=[TRACE_SIGNALS, RAW_TRACES, FEEDBACK_EVENTS],
    automation_condition=_EAGER,
    kinds={"scikit-learn"},
    description="The configured signal logit calibrated against every human-reviewed trace "
    "(configs/scoring.yaml: platt | isotonic), with held-out Brier score and ECE; also reports "
    "feedback whose trace_id matches no trace.",
)
def quality_model(context: dg.AssetExecutionContext, storage: LoopStorage, configs: LoopConfigs) -> dg.MaterializeResult:
    config = configs.load(scoring.ScoringConfig)
    signals = storage.read_partitions(TRACE_SIGNALS.path[-1])
    model = scoring.fit_quality_model(signals, config)
    if model.method == "none":
        context.log.warning(model.note)
    orphans = scoring.orphan_feedback(storage.read_partitions(RAW_TRACES.path[-1]), storage.read_partitions(FEEDBACK_EVENTS.path[-1]))
    storage.write_table("orphan_feedback", "all", orphans)
    path = storage.write_document(QUALITY_MODEL.path[-1], model.to_dict())
    metrics = {k: (round(v, 5) if v is not None else None) for k, v in model.metrics.items()}
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "method": model.method,
            "weights_version": model.weights_version,
            "n_reviewed": model.n_reviewed,
            "n_reviewed_bad": model.n_reviewed_bad,
            "metrics": dg.MetadataValue.json(metrics),
            "note": model.note,
            "orphan_feedback_events": orphans.height,
            **configs.metadata(config),
        }
    )


@dg.asset(
    key=SCORED_TRACES,
    partitions_def=daily_partitions,
    group_name=SCORING_GROUP,
    deps=[TRACE_SIGNALS, QUALITY_MODEL],
    kinds={"polars", "parquet"},
    description="trace_signals with p_good (calibrated; the human review outcome where there is "
    "one), p_good_signals (signals only) and vetoed (explicit negative feedback).",
)
def scored_traces(context: dg.AssetExecutionContext, storage: LoopStorage, configs: LoopConfigs) -> dg.MaterializeResult:
    day = context.partition_key
    config = configs.load(scoring.ScoringConfig)
    model = scoring.QualityModel.from_dict(storage.read_document(QUALITY_MODEL.path[-1]))
    scored = scoring.score_traces(storage.read_table(TRACE_SIGNALS.path[-1], day), model, config)
    path = storage.write_table(SCORED_TRACES.path[-1], day, scored)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": scored.height,
            "path": dg.MetadataValue.path(str(path)),
            "p_good_by_task_type": dg.MetadataValue.json(scoring.score_distribution(scored)),
            "vetoed": int(scored.get_column("vetoed").sum()),
            "calibration": model.method,
            **configs.metadata(config),
        }
    )


@dg.asset(
    key=SCORE_THRESHOLDS,
    group_name=SCORING_GROUP,
    deps=[SCORED_TRACES],
    automation_condition=_EAGER,
    kinds={"mlflow"},
    description="Per task type, a p_good threshold selected on one part of the human-reviewed traces "
    "and certified on the other (the kept set's precision from the calibrated scores of all its traces, "
    "with a bootstrap lower bound at the target); a task type without one keeps outputs by the configured "
    "fallback (rule: score | acceptance | none); every candidate is an MLflow run.",
)
def score_thresholds(
    context: dg.AssetExecutionContext,
    config: MlflowLoggingConfig,
    storage: LoopStorage,
    mlflow: MlflowTracking,
    configs: LoopConfigs,
) -> dg.MaterializeResult:
    scoring_config = configs.load(scoring.ScoringConfig)
    model = scoring.QualityModel.from_dict(storage.read_document(QUALITY_MODEL.path[-1]))
    scored = storage.read_partitions(SCORED_TRACES.path[-1])
    tracking = mlflow.target() if config.log_to_mlflow else None
    # Beside the document, so `loop thresholds sweep --plot` can copy it.
    plot = storage.document_path(SCORE_THRESHOLDS.path[-1]).with_suffix(".png")
    result = sweep_and_log(scored, model, scoring_config, tracking, plot_path=plot, progress=context.log.info)
    # What `loop thresholds sweep` has always reported: feedback about no known trace.
    result["orphan_feedback_events"] = storage.read_table("orphan_feedback", "all").height
    path = storage.write_document(SCORE_THRESHOLDS.path[-1], result)
    image = base64.b64encode(plot.read_bytes()).decode("ascii")
    logged = result.get("mlflow")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "thresholds": dg.MetadataValue.json(result["thresholds"]),
            "rules": dg.MetadataValue.json({task: entry["rule"] for task, entry in result["thresholds"].items()}),
            "comparison": dg.MetadataValue.json(result["comparison"] or {}),
            "calibration": dg.MetadataValue.json(result["calibration"]),
            "precision_vs_volume": dg.MetadataValue.md(f"![precision vs volume](data:image/png;base64,{image})"),
            **(
                {
                    "mlflow_parent_run_id": logged["parent_run_id"],
                    "mlflow_experiment": logged["experiment"],
                    "candidate_runs": logged["candidate_runs"],
                }
                if logged
                else {}
            ),
            **configs.metadata(scoring_config),
        }
    )
