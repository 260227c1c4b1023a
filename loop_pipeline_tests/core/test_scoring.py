"""Scoring core: signals from (late) feedback, calibrated p_good, Wilson thresholds, MLflow sweep runs.

Frames are built with the canonical schemas (TraceSchema / FeedbackSchema) or come from the native
ingest of simulated CLINC150 traffic; MLflow runs go to real SQLite and PostgreSQL backend stores.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import re

import numpy as np
import polars as pl
import pytest

from loop_pipeline.core import scoring
from loop_pipeline.core.ingest import IngestConfig, discover, ingest
from loop_pipeline.config import ConfigError
from loop_pipeline.core.tasks import TasksConfig
from loop_pipeline.sim import SimulationConfig
from loop_pipeline.settings import LoopSettings
from loop_pipeline.core.thresholds import sweep_and_log
from loop_pipeline.core.tracking import TrackingTarget
from loop_pipeline.schemas import FeedbackSchema, TraceSchema, empty_frame
from loop_pipeline_tests.helpers import REPO_CONFIGS, repo_prices, simulate_landing

UTC = dt.timezone.utc
DAY = dt.datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
TRACE_DTYPES = empty_frame(TraceSchema).schema
FEEDBACK_DTYPES = empty_frame(FeedbackSchema).schema
CONFIG = scoring.ScoringConfig.from_yaml(REPO_CONFIGS / "scoring.yaml")
TASKS = TasksConfig.from_yaml(REPO_CONFIGS / "tasks.yaml")
WEIGHTS = CONFIG.weights.model_dump()  # the documented directions, read from the YAML itself
UNCALIBRATED = scoring.QualityModel(weights_version=CONFIG.weights_version, method="none")
_feedback_ids = itertools.count(1)


# ---------------------------------------------------------------------------------------------
# Builders


def make_traces(*rows: dict) -> pl.DataFrame:
    """Canonical traces; each row needs trace_id, may set output, gold, timestamp, task_type."""
    records = []
    for index, row in enumerate(rows, start=1):
        metadata = {"gold": row["gold"]} if row.get("gold") is not None else {}
        records.append(
            {
                "trace_id": row["trace_id"],
                "timestamp": row.get("timestamp", DAY),
                "task_type": row.get("task_type", "intent"),
                "app": "support-bot",
                "model": "gpt-4o-2024-08-06",
                "provider": "openai",
                "messages": [{"role": "user", "content": "what is my balance"}],
                "output": row.get("output", "balance"),
                "input_tokens": 12,
                "output_tokens": 1,
                "cost_usd": 0.0001,
                "cost_source": "computed",
                "latency_ms": 400.0,
                "user_id": "user-0001",
                "session_id": "s-1",
                "prompt_version": "p1",
                "metadata": json.dumps(metadata),
                "source_format": "native_jsonl",
                "source_file": "traces/2026-11-01/traces.jsonl",
                "source_record": index,
            }
        )
    return TraceSchema.validate(pl.DataFrame(records, schema=TRACE_DTYPES))


def event(trace_id: str, kind: str, *, days: float = 0.1, value=None, label=None, edited_output=None, source="user") -> dict:
    return {
        "feedback_id": f"fb-{next(_feedback_ids)}",
        "trace_id": trace_id,
        "timestamp": DAY + dt.timedelta(days=days),
        "kind": kind,
        "value": value,
        "label": label,
        "edited_output": edited_output,
        "source": source,
        "annotator_id": "someone",
        "source_format": "native_jsonl",
        "source_file": "feedback/2026-11-01/feedback.jsonl",
        "source_record": 1,
    }


def make_feedback(*events: dict) -> pl.DataFrame:
    return FeedbackSchema.validate(pl.DataFrame(list(events), schema=FEEDBACK_DTYPES))


def score(traces: pl.DataFrame, feedback: pl.DataFrame, model=UNCALIBRATED, config=CONFIG) -> pl.DataFrame:
    signals = scoring.trace_signals(traces, feedback, config, TASKS)
    return scoring.score_traces(signals, model, config)


def row(frame: pl.DataFrame, trace_id: str) -> dict:
    found = frame.filter(pl.col("trace_id") == trace_id)
    assert found.height == 1, f"{trace_id}: {found.height} rows"
    return found.row(0, named=True)


def normalized(expr: pl.Expr) -> pl.Expr:
    return expr.str.strip_chars().str.to_lowercase()


# ---------------------------------------------------------------------------------------------
# Simulated CLINC150 traffic (default configuration: 7 days x 1000 calls, seed 0), once per module


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    landing = tmp_path_factory.mktemp("simulated") / "landing"
    simulate_landing(LoopSettings().load(SimulationConfig, {}), landing)
    result = ingest(discover([str(landing)]), IngestConfig.from_yaml(REPO_CONFIGS / "ingest.yaml"), repo_prices())
    signals = scoring.trace_signals(result.traces, result.feedback, CONFIG, TASKS)
    model = scoring.fit_quality_model(signals, CONFIG)
    scored = scoring.score_traces(signals, model, CONFIG)
    return {"traces": result.traces, "feedback": result.feedback, "signals": signals, "model": model, "scored": scored}


# ---------------------------------------------------------------------------------------------
# 2. Each signal moves the score in its documented direction

# signal -> (trace "with" the signal, trace "without"): (output, feedback events) of each.
# The pair differs in that signal only (a user action also ends "no action", whose weight is 0).
DIRECTION_CASES = {
    "accepted": (("balance", [("accepted", {})]), ("balance", [])),
    "copied": (("balance", [("copied", {})]), ("balance", [])),
    "thumbs_up": (("balance", [("thumbs", {"value": 1.0})]), ("balance", [])),
    "thumbs_down": (("balance", [("thumbs", {"value": 0.0})]), ("balance", [])),
    "edited": (("balance", [("edited", {"edited_output": "bill_balance"})]), ("balance", [])),
    # More similarity: a one-letter edit against a rewrite of the whole output.
    "edit_similarity": (
        ("transfer_money", [("edited", {"edited_output": "transfer_monies"})]),
        ("transfer_money", [("edited", {"edited_output": "lost_luggage"})]),
    ),
    "rejected": (("balance", [("rejected", {})]), ("balance", [])),
    "regenerated": (("balance", [("regenerated", {})]), ("balance", [])),
    "hallucination": (("balance", [("hallucination", {"value": 1.0, "source": "code"})]), ("balance", [])),
    # More judge score: 0.9 against 0.1 (and both against no judge at all, below).
    "judge_score": (
        ("balance", [("judge_score", {"value": 0.9, "source": "llm"})]),
        ("balance", [("judge_score", {"value": 0.1, "source": "llm"})]),
    ),
    "heuristic_failed": (("I'm sorry, I can't help with that.", []), ("balance", [])),
}


def _pair(signal: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    (with_output, with_events), (without_output, without_events) = DIRECTION_CASES[signal]
    traces = make_traces(
        {"trace_id": "with", "output": with_output},
        {"trace_id": "without", "output": without_output},
        {"trace_id": "silent"},
    )
    events = [event("with", kind, **kw) for kind, kw in with_events]
    events += [event("without", kind, **kw) for kind, kw in without_events]
    return traces, make_feedback(*events) if events else empty_frame(FeedbackSchema)


def test_direction_cases_cover_every_signal():
    assert set(DIRECTION_CASES) | {"no_action"} == set(scoring.SIGNALS)
    assert set(WEIGHTS) == set(scoring.SIGNALS)


@pytest.mark.parametrize("signal", [s for s in scoring.SIGNALS if s != "no_action"])
@pytest.mark.parametrize("calibrated", [False, True], ids=["uncalibrated", "platt"])
def test_each_signal_moves_the_score_in_the_documented_direction(signal, calibrated, simulated):
    model = simulated["model"] if calibrated else UNCALIBRATED
    if calibrated:
        assert model.method == "platt" and model.platt[0] > 0
    traces, feedback = _pair(signal)
    scored = score(traces, feedback, model)
    with_row, without_row = row(scored, "with"), row(scored, "without")

    # The events really produced the signal.
    if signal in ("edit_similarity", "judge_score"):
        assert with_row[signal] > without_row[signal]
    else:
        assert with_row[signal] is True and without_row[signal] is False

    weight = WEIGHTS[signal]
    assert weight != 0
    if weight > 0:
        assert with_row["logit"] > without_row["logit"]
        assert with_row["p_good_signals"] > without_row["p_good_signals"]
    else:
        assert with_row["logit"] < without_row["logit"]
        assert with_row["p_good_signals"] < without_row["p_good_signals"]
    # Signals never touch the human review path.
    assert with_row["p_good"] == with_row["p_good_signals"] and with_row["review_good"] is None


def test_judge_score_without_a_judge_sits_between_high_and_low_judges():
    traces = make_traces({"trace_id": "high"}, {"trace_id": "none"}, {"trace_id": "low"})
    feedback = make_feedback(
        event("high", "judge_score", value=0.9, source="llm"), event("low", "judge_score", value=0.1, source="llm")
    )
    scored = score(traces, feedback)
    p = {t: row(scored, t)["p_good_signals"] for t in ("high", "none", "low")}
    assert p["high"] > p["none"] > p["low"]
    assert row(scored, "none")["judge_score"] is None


def test_no_action_weighs_nothing():
    assert WEIGHTS["no_action"] == 0
    traces = make_traces({"trace_id": "silent"}, {"trace_id": "accepted"})
    signals = scoring.trace_signals(traces, make_feedback(event("accepted", "accepted")), CONFIG, TASKS)
    assert row(signals, "silent")["no_action"] is True and row(signals, "accepted")["no_action"] is False
    # The same silent trace with the flag cleared scores the same.
    silent = signals.filter(pl.col("trace_id") == "silent")
    both = pl.concat([silent, silent.with_columns(pl.lit("flipped").alias("trace_id"), pl.lit(False).alias("no_action"))])
    scored = scoring.score_traces(both, UNCALIBRATED, CONFIG)
    assert row(scored, "silent")["logit"] == row(scored, "flipped")["logit"]
    assert row(scored, "silent")["p_good_signals"] == row(scored, "flipped")["p_good_signals"]
    # Accepting moves the logit by the accepted weight alone: ending "no action" adds nothing.
    full = scoring.score_traces(signals, UNCALIBRATED, CONFIG)
    delta = row(full, "accepted")["logit"] - row(full, "silent")["logit"]
    assert delta == pytest.approx(WEIGHTS["accepted"])


def test_veto_signals_mark_the_trace_vetoed_and_silence_does_not():
    traces = make_traces(*({"trace_id": s} for s in ("edited", "rejected", "regenerated", "thumbs_down", "hallucination", "silent", "accepted")))
    feedback = make_feedback(
        event("edited", "edited", edited_output="bill_balance"),
        event("rejected", "rejected"),
        event("regenerated", "regenerated"),
        event("thumbs_down", "thumbs", value=0.0),
        event("hallucination", "hallucination", value=0.9, source="llm"),
        event("accepted", "accepted"),
    )
    vetoed = dict(score(traces, feedback).select("trace_id", "vetoed").iter_rows())
    assert vetoed == {
        "edited": True,
        "rejected": True,
        "regenerated": True,
        "thumbs_down": True,
        "hallucination": True,
        "silent": False,
        "accepted": False,
    }


def test_heuristics_name_why_an_output_fails():
    traces = make_traces(
        {"trace_id": "empty", "output": "  "},
        {"trace_id": "refusal", "output": "As an AI, I cannot decide."},
        {"trace_id": "ok", "output": "balance"},
        {"trace_id": "escalation", "output": "out_of_scope"},
        {"trace_id": "bad-json", "task_type": "slot_extraction", "output": "people: 4"},
        {"trace_id": "json", "task_type": "slot_extraction", "output": '{"people": "4"}'},
        {"trace_id": "short", "task_type": "summarization", "output": "Too short."},
    )
    signals = scoring.trace_signals(traces, empty_frame(FeedbackSchema), CONFIG, TASKS)
    assert dict(signals.select("trace_id", "heuristic").iter_rows()) == {
        "empty": "empty_output",
        "refusal": "refusal",
        "ok": None,
        "escalation": None,
        "bad-json": "invalid_json",
        "json": None,
        "short": "too_short",
    }
    assert signals.get_column("heuristic_failed").to_list() == [True, True, False, False, True, False, True]


def test_human_review_overrides_p_good_but_not_p_good_signals():
    traces = make_traces(
        {"trace_id": "accepted-reviewed-bad"},
        {"trace_id": "accepted"},
        {"trace_id": "rejected-reviewed-good"},
        {"trace_id": "rejected"},
        {"trace_id": "label-mismatch"},
        {"trace_id": "silent"},
    )
    feedback = make_feedback(
        event("accepted-reviewed-bad", "accepted"),
        event("accepted-reviewed-bad", "human_label", days=2, value=0.0, label="bill_balance", source="human_reviewer"),
        event("accepted", "accepted"),
        event("rejected-reviewed-good", "rejected"),
        # No value: the label decides, compared like the output (case and spaces ignored).
        event("rejected-reviewed-good", "human_label", days=2, label=" Balance ", source="human_reviewer"),
        event("rejected", "rejected"),
        event("label-mismatch", "human_label", days=1, label="bill_balance", source="human_reviewer"),
    )
    scored = score(traces, feedback)
    bad, accepted = row(scored, "accepted-reviewed-bad"), row(scored, "accepted")
    good, rejected = row(scored, "rejected-reviewed-good"), row(scored, "rejected")
    assert bad["reviewed"] and bad["review_good"] is False and bad["p_good"] == 0.0
    assert bad["p_good_signals"] == accepted["p_good_signals"] > 0.5
    assert good["reviewed"] and good["review_good"] is True and good["p_good"] == 1.0
    assert good["p_good_signals"] == rejected["p_good_signals"] < 0.5
    assert accepted["p_good"] == accepted["p_good_signals"] and accepted["reviewed"] is False
    mismatch = row(scored, "label-mismatch")
    assert mismatch["review_good"] is False and mismatch["p_good"] == 0.0
    # A review is not a user action: the trace still scores like silence on its signals.
    assert mismatch["no_action"] is True and mismatch["p_good_signals"] == row(scored, "silent")["p_good_signals"]


def test_gold_in_metadata_never_changes_a_score():
    events = lambda t: [event(t, "accepted"), event(t, "judge_score", value=0.7, source="llm")]  # noqa: E731
    variants = {"right": "balance", "wrong": "bill_balance", "absent": None}
    frames = {}
    for name, gold in variants.items():
        traces = make_traces({"trace_id": "a", "gold": gold}, {"trace_id": "b", "output": "", "gold": gold})
        feedback = make_feedback(*events("a"), event("b", "rejected"))
        frames[name] = score(traces, feedback).sort("trace_id")
    columns = ["trace_id", "logit", "p_good_signals", "p_good", "vetoed", "heuristic", *scoring.SIGNALS]
    assert frames["right"].get_column("sim_gold").to_list() == ["balance", "balance"]
    assert frames["absent"].get_column("sim_gold").to_list() == [None, None]
    assert frames["right"].select(columns).equals(frames["wrong"].select(columns))
    assert frames["right"].select(columns).equals(frames["absent"].select(columns))


def test_gold_never_changes_the_calibrated_scores_of_simulated_traffic(simulated):
    def swap_gold(metadata: str) -> str:
        parsed = json.loads(metadata)
        parsed["gold"] = "not_a_label"
        return json.dumps(parsed)

    traces = simulated["traces"].with_columns(pl.col("metadata").map_elements(swap_gold, return_dtype=pl.String))
    signals = scoring.trace_signals(traces, simulated["feedback"], CONFIG, TASKS)
    model = scoring.fit_quality_model(signals, CONFIG)
    scored = scoring.score_traces(signals, model, CONFIG)
    assert set(scored.get_column("sim_gold").unique().to_list()) == {"not_a_label"}
    assert model.platt == simulated["model"].platt
    assert model.metrics == simulated["model"].metrics
    columns = ["trace_id", "p_good_signals", "p_good", "vetoed"]
    assert scored.select(columns).equals(simulated["scored"].select(columns))
    # Gold only changes what is measured against it.
    thresholds = scoring.chosen_thresholds(scoring.sweep_thresholds(simulated["scored"], CONFIG))
    assert scoring.chosen_thresholds(scoring.sweep_thresholds(scored, CONFIG)) == thresholds
    assert scoring.compare_filters(scored, thresholds)["none"]["true_error_rate"] == 1.0


# ---------------------------------------------------------------------------------------------
# 1. Late feedback (core): counted within feedback_lookback_days calendar days, not after


def test_feedback_counts_within_the_lookback_and_not_after():
    late_trace = DAY.replace(hour=23, minute=30)
    traces = make_traces(
        {"trace_id": "in-time", "timestamp": late_trace},
        {"trace_id": "too-late", "timestamp": late_trace},
        {"trace_id": "silent", "timestamp": late_trace},
    )
    lookback = CONFIG.feedback_lookback_days
    last_day = (late_trace + dt.timedelta(days=lookback)).replace(hour=23, minute=59)
    feedback = make_feedback(
        {**event("in-time", "rejected"), "timestamp": last_day},
        {**event("too-late", "rejected"), "timestamp": last_day + dt.timedelta(minutes=2)},  # the next day
    )
    scored = score(traces, feedback)
    in_time, too_late, silent = (row(scored, t) for t in ("in-time", "too-late", "silent"))
    assert in_time["rejected"] and in_time["feedback_events"] == 1
    assert in_time["p_good_signals"] < silent["p_good_signals"]
    assert not too_late["rejected"] and too_late["feedback_events"] == 0
    assert too_late["p_good_signals"] == silent["p_good_signals"]

    # A longer lookback takes it into account.
    longer = CONFIG.with_overrides({"feedback_lookback_days": lookback + 1})
    assert row(score(traces, feedback, config=longer), "too-late")["rejected"] is True


def test_late_feedback_lowers_the_score_of_a_trace_it_is_about():
    traces = make_traces({"trace_id": "t"}, {"trace_id": "other"})
    early = [event("t", "accepted"), event("other", "accepted")]
    before = score(traces, make_feedback(*early))
    after = score(traces, make_feedback(*early, event("t", "hallucination", days=2, value=1.0, source="llm")))
    assert row(after, "t")["p_good"] < row(before, "t")["p_good"]
    assert row(after, "t")["hallucination"] and row(after, "t")["vetoed"] and row(after, "t")["feedback_events"] == 2
    assert row(after, "other") == row(before, "other")


# ---------------------------------------------------------------------------------------------
# 7. Orphan feedback


def test_orphan_feedback_is_reported_and_nothing_is_dropped():
    traces = make_traces({"trace_id": "known"})
    feedback = make_feedback(
        event("known", "accepted"), event("ghost", "rejected"), event("ghost", "human_label", value=0.0, source="human_reviewer")
    )
    orphans = scoring.orphan_feedback(traces, feedback)
    assert orphans.get_column("trace_id").to_list() == ["ghost", "ghost"]
    assert orphans.columns == feedback.columns
    assert feedback.height == 3  # the input is not modified
    signals = scoring.trace_signals(traces, feedback, CONFIG, TASKS)
    assert signals.get_column("trace_id").to_list() == ["known"]
    assert row(signals, "known")["feedback_events"] == 1 and not row(signals, "known")["reviewed"]


def test_orphans_of_simulated_traffic_with_one_unknown_trace(simulated):
    traces = simulated["traces"]
    ghost = simulated["feedback"].head(3).with_columns(
        pl.lit("no-such-trace").alias("trace_id"), (pl.col("feedback_id") + "-ghost").alias("feedback_id")
    )
    feedback = pl.concat([simulated["feedback"], ghost])
    assert scoring.orphan_feedback(traces, simulated["feedback"]).height == 0
    assert scoring.orphan_feedback(traces, feedback).get_column("feedback_id").to_list() == ghost.get_column("feedback_id").to_list()


# ---------------------------------------------------------------------------------------------
# 3. Thresholds on synthetic data with known quality


def wilson_by_hand(k: int, n: int, z: float) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_wilson_interval_matches_hand_computed_values():
    # 8 of 10 at 95%: the textbook Wilson interval is [0.4902, 0.9433].
    low, high = scoring.wilson_interval(8, 10, 0.95)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    # 90% two-sided: z = 1.6449
    assert scoring.wilson_interval(95, 100, 0.90) == pytest.approx(wilson_by_hand(95, 100, 1.6448536), abs=1e-7)
    assert scoring.wilson_interval(0, 0, 0.9) == (0.0, 1.0)
    low, high = scoring.wilson_interval(0, 7, 0.9)
    assert low == 0.0 and 0.0 < high < 1.0
    low, high = scoring.wilson_interval(7, 7, 0.9)
    assert high == pytest.approx(1.0) and 0.0 < low < 1.0
    narrow, wide = scoring.wilson_interval(40, 50, 0.8), scoring.wilson_interval(40, 50, 0.99)
    assert wide[0] < narrow[0] < 0.8 < narrow[1] < wide[1]
    # More data, same rate: a tighter interval.
    assert scoring.wilson_interval(400, 500, 0.9)[0] > scoring.wilson_interval(40, 50, 0.9)[0]


def known_quality_frame(rng: np.random.Generator, review_rate: float, n: int = 10_000) -> tuple[pl.DataFrame, np.ndarray]:
    """Two task types whose true P(good) is a known function of the score s = sigmoid(logit): s
    (intent: Platt is exactly right) and s**3 (hard: Platt is only close). 3% of traces are vetoed.
    Returns the scored frame and the true outcomes."""
    frames, outcomes = [], []
    for task_type, power in (("intent", 1), ("hard", 3)):
        s = rng.uniform(0.8, 1.0, n)
        good = rng.random(n) < s**power
        vetoed = rng.random(n) < 0.03
        reviewed = rng.random(n) < review_rate
        frames.append(
            pl.DataFrame(
                {
                    "trace_id": [f"{task_type}-{i}" for i in range(n)],
                    "task_type": task_type,
                    "output": "x",
                    "sim_gold": np.where(good, "x", "y"),
                    "logit": np.log(s / (1 - s)),
                    "p_good_signals": s,
                    "vetoed": vetoed,
                    "accepted": rng.random(n) < 0.7,
                    "reviewed": reviewed,
                    "_good": good,
                }
            ).with_columns(pl.when(pl.col("reviewed")).then(pl.col("_good")).alias("review_good")).drop("_good")
        )
        outcomes.append(good)
    return pl.concat(frames), np.concatenate(outcomes)


def test_threshold_is_selected_on_one_side_certified_on_the_other_and_meets_the_target():
    # A draw where both task types certify: certification is not certain (about 2 draws in 3
    # here); how often a certified threshold holds is test_scoring_certify's many-draws test.
    config = CONFIG
    target = config.precision_target
    scored, good = known_quality_frame(np.random.default_rng(7), review_rate=0.2)
    sweep = scoring.sweep_thresholds(scored, config)
    assert set(sweep) == {"hard", "intent"}
    chosen = {}
    for task_type, entry in sweep.items():
        candidates = entry["candidates"]
        thresholds = [c["threshold"] for c in candidates]
        assert thresholds == sorted(thresholds) and len(thresholds) == config.max_candidate_thresholds
        pick = entry["chosen"]
        assert pick is not None, entry["reason"]
        assert entry["rule"] == "score" and entry["reason"] is None and pick is entry["selected"]
        # Selected on its side at the stricter bound, certified by the other side's own bound.
        assert pick["selection_low"] >= target and pick["estimated_low"] >= target
        assert pick["estimated_low"] <= pick["estimated_precision"] <= pick["estimated_high"]
        index = thresholds.index(pick["threshold"])
        # The loosest the selection side accepts: every looser candidate misses there.
        assert index > 0 and all(c["selection_low"] < target for c in candidates[:index])

        task = scored.with_columns(pl.Series("good", good)).filter(pl.col("task_type") == task_type)
        kept = task.filter(~pl.col("vetoed") & (pl.col("p_good_signals") >= pick["threshold"]))
        assert pick["kept"] == kept.height and kept.height > 0
        # The Wilson figures on every reviewed trace kept are still there, for a reader to check.
        reviewed_kept = kept.filter(pl.col("review_good").is_not_null())
        assert pick["reviewed_kept"] == reviewed_kept.height
        assert pick["precision"] == pytest.approx(reviewed_kept.get_column("review_good").mean())
        true_precision = kept.get_column("good").mean()
        assert pick["true_precision"] == pytest.approx(true_precision)
        assert true_precision >= target - 0.01
        # The known quality function agrees: mean of s**power over the kept scores.
        power = 1 if task_type == "intent" else 3
        assert float((kept.get_column("p_good_signals") ** power).mean()) >= target - 0.01
        chosen[task_type] = pick["threshold"]
        # The two sides share no review and hold them all.
        sides = entry["sides"]
        assert sides["selection"]["reviewed"] + sides["certification"]["reviewed"] == entry["reviewed"] == task.get_column("reviewed").sum()
    # The harder task needs a stricter threshold.
    assert chosen["hard"] > chosen["intent"]
    assert scoring.keep_rules(sweep) == chosen == scoring.chosen_thresholds(sweep)
    summary = scoring.summarize_sweep(sweep)
    for task_type, entry in summary.items():
        assert entry["rule"] == "score" and entry["threshold"] == chosen[task_type] and entry["reason"] is None
        assert entry["precision_interval"][0] >= target and entry["kept"] == sweep[task_type]["chosen"]["kept"]
        sides = entry["selection"], entry["certification"]
        line = scoring.describe_threshold(task_type, entry)
        assert line.startswith(f"{task_type}: threshold {chosen[task_type]:.3f} keeps {entry['kept']} of")
        assert f"selected on {sides[0]['reviewed']} reviews ({sides[0]['bad']} bad), certified on {sides[1]['reviewed']}" in line

    mask = scoring.keep_mask(scored, chosen)
    assert scored.filter(mask).height == sum(sweep[t]["chosen"]["kept"] for t in chosen)
    assert scored.filter(mask & pl.col("vetoed")).height == 0


def few_reviews_frame() -> pl.DataFrame:
    scored, _ = known_quality_frame(np.random.default_rng(5), review_rate=0.0, n=2_000)
    # 8 reviewed traces of intent, all good; none of hard.
    return scored.with_row_index("_i").with_columns(
        pl.when(pl.col("_i") < 8).then(pl.lit(True)).otherwise(None).alias("review_good")
    ).drop("_i")


def test_too_few_reviews_certify_no_threshold_say_why_and_fall_back_to_acceptance():
    few = few_reviews_frame()
    sweep = scoring.sweep_thresholds(few, CONFIG)
    assert sweep["intent"]["reviewed"] == 8 and sweep["hard"]["reviewed"] == 0
    for task_type, entry in sweep.items():
        assert entry["chosen"] is None and entry["selected"] is None
        assert entry["rule"] == "acceptance" == CONFIG.fallback
        assert "too few reviews" in entry["reason"] and f">= {CONFIG.min_reviewed_per_side} reviewed" in entry["reason"]
        # No model-based figures without enough reviews; the Wilson ones stay.
        assert all("estimated_low" not in c for c in entry["candidates"])
    assert all(c["precision"] is None and (c["precision_low"], c["precision_high"]) == (0.0, 1.0) for c in sweep["hard"]["candidates"])
    summary = scoring.summarize_sweep(sweep)
    accepted = few.filter(pl.col("accepted") & ~pl.col("vetoed"))
    for task_type, entry in summary.items():
        assert entry["threshold"] is None and entry["rule"] == "acceptance" and entry["fallback"] == "acceptance"
        assert entry["kept"] == accepted.filter(pl.col("task_type") == task_type).height > 0
        line = scoring.describe_threshold(task_type, entry)
        assert "NO CERTIFIED THRESHOLD" in line and "FALLS BACK TO ACCEPTANCE" in line and entry["reason"] in line
    assert scoring.chosen_thresholds(sweep) == {"hard": None, "intent": None}
    # A task type without a threshold no longer keeps nothing: it keeps accepted, non-vetoed outputs.
    rules = scoring.keep_rules(summary)
    assert rules == {"hard": "acceptance", "intent": "acceptance"} == scoring.keep_rules(sweep)
    kept = few.filter(scoring.keep_mask(few, rules))
    assert kept.get_column("trace_id").sort().to_list() == accepted.get_column("trace_id").sort().to_list()

    # fallback: none keeps nothing, as before, and says so.
    strict = CONFIG.with_overrides({"fallback": "none"})
    summary = scoring.summarize_sweep(scoring.sweep_thresholds(few, strict))
    assert {entry["rule"] for entry in summary.values()} == {"none"}
    assert all(entry["kept"] == 0 for entry in summary.values())
    assert scoring.keep_rules(summary) == {"hard": None, "intent": None}
    assert few.filter(scoring.keep_mask(few, scoring.keep_rules(summary))).height == 0
    assert "KEEPS NOTHING" in scoring.describe_threshold("intent", summary["intent"])


def test_keep_mask_takes_a_threshold_acceptance_or_none_per_task_type():
    scored = pl.DataFrame(
        {
            "task_type": ["a", "a", "a", "b", "b", "c"],
            "p_good_signals": [0.99, 0.5, 0.99, 0.99, 0.2, 0.99],
            "accepted": [False, True, True, True, False, True],
            "vetoed": [False, False, True, False, False, False],
        }
    ).with_row_index("i")
    kept = scored.filter(scoring.keep_mask(scored, {"a": 0.9, "b": "acceptance", "c": None})).get_column("i").to_list()
    # a: score >= 0.9 and not vetoed; b: accepted; c: nothing; a task type not named: nothing.
    assert kept == [0, 3]
    assert scored.filter(scoring.keep_mask(scored, {"a": "acceptance"})).get_column("i").to_list() == [1]
    # A document written before rules existed: its threshold is the rule.
    assert scoring.keep_rule({"threshold": 0.8}) == 0.8 and scoring.keep_rule({"threshold": None}) is None


def test_candidate_thresholds_keep_every_trace_at_their_own_score():
    # Scores whose 6-decimal rounding goes up: a threshold above its own score would keep none of
    # the traces at that score, and that kept set would never be a candidate.
    p = [0.1234567, 0.5, 0.8888888, 0.9975955, 0.9999996]
    scored = pl.DataFrame(
        {
            "trace_id": [f"t{i}" for i in range(len(p))],
            "task_type": "intent",
            "output": "x",
            "sim_gold": "x",
            "p_good_signals": p,
            "logit": [math.log(v / (1 - v)) for v in p],
            "vetoed": False,
            "accepted": True,
            "review_good": [True, True, True, True, True],
        }
    )
    candidates = scoring.sweep_thresholds(scored, CONFIG)["intent"]["candidates"]
    assert [c["kept"] for c in candidates] == [5, 4, 3, 2, 1]
    assert all(c["threshold"] <= value for c, value in zip(candidates, p))


def test_candidates_of_simulated_traffic_are_its_distinct_scores(simulated):
    scored = simulated["scored"]
    levels = sorted(set(scored.filter(~pl.col("vetoed")).get_column("p_good_signals").to_list()))
    assert len(levels) < CONFIG.max_candidate_thresholds  # no thinning here
    candidates = scoring.sweep_thresholds(scored, CONFIG)["intent"]["candidates"]
    expected = [scored.filter(~pl.col("vetoed") & (pl.col("p_good_signals") >= v)).height for v in levels]
    assert [c["kept"] for c in candidates] == expected
    assert len(set(expected)) == len(expected)


# ---------------------------------------------------------------------------------------------
# 5. Calibration


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_beats_the_raw_logit_on_held_out_traces(simulated, method):
    config = CONFIG.with_overrides({"calibration": method})
    signals = simulated["signals"]
    model = scoring.fit_quality_model(signals, config) if method != "platt" else simulated["model"]
    reviewed = signals.filter(pl.col("review_good").is_not_null())
    assert model.method == method
    assert model.n_reviewed == reviewed.height >= config.min_reviewed
    assert model.n_reviewed_bad == reviewed.filter(~pl.col("review_good")).height > 0
    metrics = model.metrics
    assert metrics["brier_held_out"] < metrics["brier_uncalibrated"]
    assert 0.0 <= metrics["ece_held_out"] <= 1.0 and 0.0 <= metrics["ece_uncalibrated"] <= 1.0
    assert f"{model.n_reviewed} reviewed traces" in model.note
    # Calibration keeps the order of the logit.
    grid = np.linspace(-8, 4, 50)
    assert np.all(np.diff(model.predict(grid)) >= 0)
    restored = scoring.QualityModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert np.array_equal(restored.predict(grid), model.predict(grid))


def test_too_few_reviewed_traces_stay_uncalibrated_and_say_why(simulated):
    signals = simulated["signals"].with_row_index("_i")
    reviewed_ids = signals.filter(pl.col("reviewed")).get_column("_i").to_list()[:10]
    few = signals.with_columns(
        pl.col("_i").is_in(reviewed_ids).alias("reviewed"),
        pl.when(pl.col("_i").is_in(reviewed_ids)).then(pl.col("review_good")).alias("review_good"),
    ).drop("_i")
    model = scoring.fit_quality_model(few, CONFIG)
    assert model.method == "none" and model.n_reviewed == 10
    assert "uncalibrated" in model.note and "10 reviewed" in model.note and f"need >= {CONFIG.min_reviewed}" in model.note
    assert model.metrics["brier_uncalibrated"] is not None and "brier_held_out" not in model.metrics
    scored = scoring.score_traces(few, model, CONFIG)
    logit = scored.get_column("logit").to_numpy()
    assert np.allclose(scored.get_column("p_good_signals").to_numpy(), 1 / (1 + np.exp(-logit)))
    # Every output of the sweep says the score is uncalibrated.
    result = sweep_and_log(scored, model, CONFIG, tracking=None)
    assert result["calibration"]["method"] == "none" and result["calibration"]["note"] == model.note
    assert "mlflow" not in result

    # Plenty of reviews but a single outcome: no calibration either.
    all_good = simulated["signals"].with_columns(
        pl.when(pl.col("reviewed")).then(pl.lit(True)).alias("review_good")
    )
    one_sided = scoring.fit_quality_model(all_good, CONFIG)
    assert one_sided.method == "none" and "(0 bad)" in one_sided.note


# ---------------------------------------------------------------------------------------------
# 6. The headline, on the default simulation (seed 0)


def test_filters_compare_at_equal_kept_volume_on_simulated_traffic(simulated):
    scored = simulated["scored"]
    result = sweep_and_log(scored, simulated["model"], CONFIG, tracking=None)
    comparison = result["comparison"]
    assert set(comparison) == {"none", "acceptance", "fused", "fused_at_acceptance_volume", "fused_at_95pct_acceptance_volume"}
    wrong = normalized(pl.col("output")) != normalized(pl.col("sim_gold"))

    def error_rate(frame: pl.DataFrame) -> float:
        return frame.select(wrong.mean()).item()

    # Acceptance is what users accepted, nothing else (the filter a team has without the loop); the
    # acceptance fallback also drops vetoed outputs, as every keep rule does.
    accepted = scored.filter(pl.col("accepted"))
    assert comparison["none"]["kept"] == scored.height
    assert comparison["none"]["true_error_rate"] == pytest.approx(error_rate(scored))
    assert comparison["acceptance"]["kept"] == accepted.height
    assert comparison["acceptance"]["true_error_rate"] == pytest.approx(error_rate(accepted))
    assert comparison["acceptance"]["true_error_rate"] < comparison["none"]["true_error_rate"]
    # Equal volume: the N (and ceil(95% of N)) non-vetoed traces with the best scores.
    candidates = scored.filter(~pl.col("vetoed")).sort("p_good_signals", descending=True, maintain_order=True)
    for name, volume in (
        ("fused_at_acceptance_volume", accepted.height),
        ("fused_at_95pct_acceptance_volume", math.ceil(0.95 * accepted.height)),
    ):
        top, rest = candidates.head(volume), candidates.slice(volume)
        assert comparison[name]["kept"] == volume
        assert top.get_column("p_good_signals").min() >= rest.get_column("p_good_signals").max()
        assert comparison[name]["true_error_rate"] == pytest.approx(error_rate(top))

    entry = result["thresholds"]["intent"]
    assert result["fallback"] == CONFIG.fallback == entry["fallback"]
    if entry["rule"] == "score":
        kept = scored.filter(~pl.col("vetoed") & (pl.col("p_good_signals") >= entry["threshold"]))
        assert kept.height == entry["kept"] == comparison["fused"]["kept"]
        low, high = entry["precision_interval"]
        assert CONFIG.precision_target <= low <= entry["estimated_precision"] <= high
        assert entry["true_precision"] == pytest.approx(1 - comparison["fused"]["true_error_rate"])
    else:  # the fallback, exactly: the fused filter is acceptance for this task type
        assert entry["rule"] == "acceptance" and entry["threshold"] is None and entry["reason"]
        kept = accepted.filter(~pl.col("vetoed"))
        assert comparison["fused"]["kept"] == entry["kept"] == kept.height
        assert comparison["fused"]["true_error_rate"] == pytest.approx(error_rate(kept))


# ---------------------------------------------------------------------------------------------
# 4. One MLflow run per candidate threshold, on SQLite and on PostgreSQL


def assert_one_run_per_candidate(tracking_uri: str, artifact_root: str, simulated, tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    result = sweep_and_log(simulated["scored"], simulated["model"], CONFIG, TrackingTarget(tracking_uri, artifact_root))
    sweep = scoring.sweep_thresholds(simulated["scored"], CONFIG)
    logged = result["mlflow"]
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(CONFIG.mlflow_experiment)
    assert experiment.experiment_id == logged["experiment_id"]
    assert experiment.artifact_location.startswith(artifact_root)

    runs = client.search_runs([experiment.experiment_id], "tags.`loop.kind` = 'threshold_candidate'", max_results=1000)
    n_candidates = sum(len(entry["candidates"]) for entry in sweep.values())
    assert len(runs) == n_candidates == result["candidates"] == logged["candidate_runs"] > 1
    by_threshold = {(e, c["threshold"]): c for e, entry in sweep.items() for c in entry["candidates"]}
    for run in runs:
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        assert {"threshold", "task_type", "weights_version"} <= set(params)
        assert params["weights_version"] == CONFIG.weights_version
        assert tags["mlflow.parentRunId"] == logged["parent_run_id"]
        assert run.info.status == "FINISHED"
        candidate = next(c for (task, t), c in by_threshold.items() if task == params["task_type"] and str(round(t, 6)) == params["threshold"])
        assert {"kept", "precision_low", "precision_high", "recall"} <= set(metrics)
        assert ("precision" in metrics) == (candidate["reviewed_kept"] > 0)
        assert metrics["kept"] == candidate["kept"] and metrics["precision_low"] == pytest.approx(candidate["precision_low"])
    for task_type, entry in sweep.items():
        chosen = [r for r in runs if r.data.params["task_type"] == task_type and r.data.tags["loop.chosen"] == "true"]
        if entry["chosen"] is None:
            assert chosen == []
        else:
            assert len(chosen) == 1
            assert chosen[0].data.params["threshold"] == str(round(entry["chosen"]["threshold"], 6))
        selected = [r for r in runs if r.data.params["task_type"] == task_type and r.data.tags["loop.selected"] == "true"]
        assert len(selected) == (entry["selected"] is not None)

    parent = client.get_run(logged["parent_run_id"])
    assert parent.data.tags["loop.kind"] == "threshold_sweep"
    assert parent.data.metrics["n_reviewed"] == simulated["model"].n_reviewed
    # Each decision's rule and how many reviews (and bad ones) each side had.
    for task_type, entry in result["thresholds"].items():
        assert parent.data.tags[f"loop.rule.{task_type}"] == entry["rule"]
        for side in ("selection", "certification"):
            for count in ("reviewed", "bad"):
                assert parent.data.metrics[f"{task_type}.{side}_{count}"] == entry[side][count]
    assert parent.data.params["fallback"] == CONFIG.fallback
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"precision_vs_volume.png", "threshold_summary.json"} <= artifacts
    png = client.download_artifacts(parent.info.run_id, "precision_vs_volume.png", str(tmp_path))
    with open(png, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    everything = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len(everything) == n_candidates + 1


def test_mlflow_holds_one_run_per_threshold_on_sqlite(simulated, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert_one_run_per_candidate(uri, (tmp_path / "artifacts").as_uri(), simulated, tmp_path)


@pytest.mark.postgres
def test_mlflow_holds_one_run_per_threshold_on_postgres(simulated, tmp_path, postgres_url):
    assert_one_run_per_candidate(postgres_url, (tmp_path / "artifacts").as_uri(), simulated, tmp_path)


# ---------------------------------------------------------------------------------------------
# 8. configs/scoring.yaml: a bad value is one line naming the file, the field and what is allowed


def scoring_yaml_with(tmp_path, old: str, new: str):
    text = (REPO_CONFIGS / "scoring.yaml").read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "scoring.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("calibration: platt", "calibration: logistic", r"calibration: Input should be 'platt', 'isotonic' or 'none' \(got 'logistic'\)"),
        ("precision_target: 0.90", "precision_target: 1.5", r"precision_target: Input should be less than 1 \(got 1.5\)"),
        ("feedback_lookback_days: 3", "feedback_lookback_days: -1", r"feedback_lookback_days: Input should be greater than or equal to 0"),
        ("min_reviewed: 20", "min_reviewed: 2.5", r"min_reviewed: Input should be a valid integer"),
        ("judge_score_range: [0.0, 1.0]", "judge_score_range: [1.0, 0.0]", r"judge_score_range: Value error, \[low, high\] needs high > low"),
        ("veto_signals: [edited,", "veto_signals: [no_action,", r"veto_signals\[0\]: Input should be 'accepted', .* or 'heuristic_failed' \(got 'no_action'\)"),
        ("  copied: 0.5 ", "  copy: 0.5 ", r"weights.copied: Field required; weights.copy: unknown key"),
        ("  rejected: -3.0", "  rejected: a lot", r"weights.rejected: Input should be a valid number"),
        ("mlflow_experiment:", "mlflow_experiments:", r"mlflow_experiments: unknown key"),
    ],
)
def test_a_bad_scoring_yaml_fails_with_one_line_naming_file_and_field(tmp_path, old, new, message):
    path = scoring_yaml_with(tmp_path, old, new)
    with pytest.raises(ConfigError) as failure:
        scoring.ScoringConfig.from_yaml(path)
    text = str(failure.value)
    assert "\n" not in text and text.startswith(f"{path}: ")
    assert re.search(message, text), text


def test_weights_are_exactly_the_signals():
    assert scoring.SIGNALS == tuple(scoring.SignalWeights.model_fields)
    assert set(WEIGHTS) == set(scoring.SIGNALS)
    assert CONFIG.weight("rejected") == WEIGHTS["rejected"] < 0
    # Overrides go through the same validation as the file.
    assert CONFIG.with_overrides({"weights": {"accepted": 2}}).weight("accepted") == 2.0
    with pytest.raises(ConfigError, match="weights.sarcasm: unknown key"):
        CONFIG.with_overrides({"weights": {"sarcasm": 1.0}})
