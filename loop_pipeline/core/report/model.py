"""The loop's economics per retrain round, as typed values (``loop report``, asset ``loop_report``).

A round is one ``holdout_eval`` materialization: a candidate evaluated on the frozen holdout of the
dataset version it trained on, then promoted or refused. Its live figures come from the router's
own traces of the requests its champion served; its simulated-gold figures from the demo's replay
file (simulated traffic only). docs/metrics.md says what each figure is measured against.
"""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

# The demo's replay file, $LOOP_HOME/warehouse/replay/<day>.parquet: one row per replayed request.
# trace_id: the router's trace id; sim_gold: the simulator's gold answer (OUT_OF_SCOPE_GOLD for an
# out-of-scope request); in_scope: whether the simulator drew it from the task's own labels.
REPLAY_TABLE = "replay"
REPLAY_COLUMNS = ("trace_id", "task_type", "sim_gold", "in_scope")
OUT_OF_SCOPE_GOLD = "out_of_scope"
# A label mix whose total-variation distance from the previous round's is above this has drifted.
LABEL_DRIFT_TVD = 0.15


class ReportValue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoundRecord(ReportValue):
    """What the Dagster instance recorded about one round (holdout_eval, its checks, its dataset
    version's training_datasets materialization and sft rows, registered_model)."""

    round: int  # 1-based, in the order the evaluations were recorded
    evaluated_at: str  # ISO time of the holdout_eval materialization
    run_id: str
    dataset_version: str
    candidate: str
    target_agreement: Optional[float] = None  # config/evaluation target_agreement of that run
    holdout_coverage: Optional[float] = None  # test half, in-scope rows served, all task types
    holdout_out_of_scope_escalated: Optional[float] = None  # test half, out-of-scope rows not served
    holdout_served_agreement: dict[str, Optional[float]] = Field(default_factory=dict)  # per task type
    holdout_cost_ratio: Optional[float] = None  # blended, micro-batched (the evaluation's estimate)
    promoted: bool = False  # the gate passed
    champion_version: Optional[str] = None  # the registry version this round's candidate became
    failed_checks: dict[str, str] = Field(default_factory=dict)  # check name -> why (blocking checks)
    sft_rows: Optional[int] = None  # training examples of the dataset version
    sft_rows_by_task: dict[str, int] = Field(default_factory=dict)
    label_counts: dict[str, dict[str, int]] = Field(default_factory=dict)  # classification task -> label -> sft rows


class LiveFigures(ReportValue):
    """The router's traces of one champion version (None: no champion was loaded)."""

    champion_version: Optional[str]
    requests: int
    served_locally: int
    local_share: Optional[float]
    by_route: dict[str, int]
    shadowed: int  # locally served requests with a shadow verdict
    shadow_agreement: Optional[float]  # mean shadow_agrees over them
    costed: int  # requests in both cost sums
    routed_cost_usd: float  # local + frontier calls as routed (shadow calls excluded)
    all_frontier_cost_usd: float  # every costed request sent to the frontier
    frontier_cost_estimated: int  # of those, local requests without a shadow: priced from prices.yaml
    shadow_cost_usd: float  # the measurement's own cost, not in the ratio
    blended_cost_ratio: Optional[float]
    first_request: Optional[str] = None
    last_request: Optional[str] = None


class GoldFigures(ReportValue):
    """Simulated gold: the router's traces joined to the replay file by trace_id."""

    matched: int
    in_scope: int
    out_of_scope: int
    coverage: Optional[float]  # in-scope requests served locally
    local_n: int
    local_agreement: Optional[float]  # locally served requests agreeing with gold
    out_of_scope_escalated: Optional[float]  # out-of-scope requests not served locally
    routed_accuracy: Optional[float]  # what the client got, against gold, all matched requests


class Flag(ReportValue):
    """A later round that serves less traffic at the same (or a higher) target agreement."""

    round: int
    previous_round: int
    what: list[str]  # which figure dropped, from what to what
    reasons: list[str]  # every cause the report could find


class RoundReport(ReportValue):
    record: RoundRecord
    live: Optional[LiveFigures] = None
    gold: Optional[GoldFigures] = None


class LoopReport(ReportValue):
    rounds: list[RoundReport]
    # Router traffic no round accounts for: served with no champion, or by a version no round registered.
    unattributed: list[LiveFigures] = Field(default_factory=list)
    unattributed_gold: dict[str, GoldFigures] = Field(default_factory=dict)  # by champion version ("none")
    flags: list[Flag] = Field(default_factory=list)
    frontier_model: Optional[str] = None  # what estimated frontier costs were priced at
    label_drift_tvd: float = LABEL_DRIFT_TVD
