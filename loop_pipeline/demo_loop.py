"""The demo's second half: the loop closed on 127.0.0.1.

After round one has promoted a champion: a fresh day is simulated (one day past the landing's, into
a scratch folder, never ingested as such); the router serves the champion with a frontier stand-in
that replays the simulator's frontier answers; the day's requests go through the router with the
``openai`` client while the simulated users send feedback through ``/v1/feedback``; the router's
traces and feedback are ingested; round two re-scores, re-versions, fine-tunes, evaluates and
promotes on all of it; the same day is replayed through the new champion to measure it; ``loop
report`` compares the two rounds.
"""

from __future__ import annotations

import datetime as dt
import shutil
from typing import Any

from loop_pipeline.demo import DemoReporter, StepClock
from loop_pipeline.demo_replay import LiveLoop, ReplayOutcome, day_requests, replay_day, write_gold
from loop_pipeline.execution import Progress, _quiet, execute
from loop_pipeline.runs import (
    DATASETS,
    EVALUATION,
    INGEST,
    REGISTRATION,
    SCORING,
    TRAINING,
    build_stage_defs,
    ingest_summary,
    landing_days,
)
from loop_pipeline.settings import LoopSettings

FRESH_DAY_DIR = "sim-fresh-day"  # under LOOP_HOME: the simulated day that is replayed, not landing


def fresh_day(settings: LoopSettings, overrides: dict[str, Any], say: Progress):
    """The simulation one day longer, into a scratch folder; its last day's calls are the fresh day."""
    from loop_pipeline.core.costs import PriceTable
    from loop_pipeline.sim import SimulationConfig, simulate

    config = settings.load(SimulationConfig, {**overrides, "days": overrides["days"] + 1})
    folder = settings.paths.home / FRESH_DAY_DIR
    shutil.rmtree(folder, ignore_errors=True)
    simulate(config, folder, prices=settings.load(PriceTable), progress=_quiet)
    day = (config.start + dt.timedelta(days=overrides["days"])).isoformat()
    requests = day_requests(folder / "traces" / day / "traces.jsonl")
    out_of_scope = sum(not r.in_scope for r in requests)
    say(f"  fresh day {day}: {len(requests)} calls ({out_of_scope} out of scope), the simulator's frontier answers in the stand-in")
    return config, requests


def _say_replay(outcome: ReplayOutcome, say: Progress, label: str) -> dict[str, Any]:
    figures = outcome.figures()
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    say(
        f"  {label}: {figures['requests']} requests in {outcome.seconds:.1f} s, {figures['served_locally']} served locally; "
        f"against the simulator's gold: coverage {pct(figures['sim_coverage_in_scope'])} of in-scope, "
        f"local answers right {pct(figures['sim_local_accuracy'])}, out-of-scope escalated {pct(figures['sim_out_of_scope_escalated'])}, "
        f"routed accuracy {pct(figures['sim_routed_accuracy'])} vs all-frontier {pct(figures['sim_all_frontier_accuracy'])}; "
        f"{figures['feedback_sent']} feedback records sent"
    )
    if outcome.errors:
        raise RuntimeError(f"{label}: {len(outcome.errors)} requests failed, first: {outcome.errors[0]}")
    return figures


def _replay(live: LiveLoop, requests, sim_config, seed: int, settings: LoopSettings, say: Progress, label: str) -> dict[str, Any]:
    url = live.start_router()
    try:
        outcome = replay_day(url, requests, sim_config, seed, say)
    finally:
        live.stop_router()  # flushes the router's traces and feedback into closed segments
    write_gold(settings.paths.warehouse, outcome)
    return _say_replay(outcome, say, label)


def _ingest_new_days(settings: LoopSettings, say: Progress) -> list[str]:
    """Ingest the landing days the router wrote into (ingest is idempotent: a day is rewritten whole)."""
    defs = build_stage_defs(settings)
    storage = defs.resources["storage"]
    ingested = set(storage.table_partitions("raw_traces"))
    landed = set(landing_days(defs))
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    days = sorted((landed - ingested) | ({today} & landed))
    reporter = DemoReporter(defs, say, len(days), 0, StepClock(_quiet), done=("ingest",))
    ingest_summary(execute(INGEST, partitions=days, defs=defs, on_step=reporter), reporter)
    return days


def _round_two(settings: LoopSettings, op_config: dict[str, Any], clock: StepClock, say: Progress) -> dict[str, Any]:
    clock.start("round 2: ingest")
    days = _ingest_new_days(settings, say)
    defs = build_stage_defs(settings)
    every_day = defs.resources["storage"].table_partitions("raw_traces")
    reporter = DemoReporter(defs, say, len(every_day), 0, clock, done=("simulation", "ingest"), prefix="round 2: ")
    execution = execute(SCORING | DATASETS | TRAINING | EVALUATION | REGISTRATION, partitions=every_day, op_config=op_config,
                        defs=defs, verbose={"holdout_eval"}, on_start=reporter.start, on_step=reporter)
    clock.stop()
    promoted = bool(execution.for_asset("registered_model"))
    if not promoted:
        say("round 2: not promoted: the gate refused the candidate; round one's champion keeps serving")
    return {"ingested_router_days": days, "promoted": promoted, "blocked_by": execution.blocked_by}


def close_the_loop(
    settings: LoopSettings, overrides: dict[str, Any], op_config: dict[str, Any], clock: StepClock, steps: int, say: Progress
) -> dict[str, Any]:
    from loop_pipeline.defs.report.run import materialize_report

    say(f"[7/{steps}] the router on 127.0.0.1: a fresh day replayed through it (openai client), the users' feedback through /v1/feedback")
    clock.start("router + replay (round 1)")
    sim_config, requests = fresh_day(settings, overrides, say)
    live = LiveLoop(requests, sim_config.frontier_model, say)
    try:
        first = _replay(live, requests, sim_config, overrides["seed"], settings, say, "round 1 champion")
        clock.stop()
        say(f"[8/{steps}] round 2: the router's traffic ingested, then scoring, datasets, training, evaluation, registration on every day")
        second_round = _round_two(settings, op_config, clock, say)
        say(f"[9/{steps}] the same day replayed through the router's champion after round 2 (measurement)")
        clock.start("router + replay (round 2)")
        second = _replay(live, requests, sim_config, overrides["seed"] + 1, settings, say, "round 2 champion")
        _ingest_new_days(settings, say)
        clock.stop()
    finally:
        live.stop()
    say(f"[10/{steps}] loop report")
    with clock.step("report"):
        report = materialize_report(say, frontier_model=sim_config.frontier_model)
    return {"replays": {"round_1": first, "round_2": second}, "round_2": second_round, "report": report}
