"""Executing the asset graph in-process on the LOOP_HOME instance.

The CLI, the demo and the tests launch the same assets, checks and resources as the Dagster UI and
the schedules, through one function, :func:`execute`. It knows no stage order of its own: it takes
an asset selection, orders it by the asset graph, and launches one run per partition for each
generation of partitioned assets and one run for each generation of unpartitioned ones (a run
cannot mix the two). A blocking check that fails stops every later generation, as it would stop
the downstream steps of a single run.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import dagster as dg

from loop_pipeline.core.processes import process_alive
from loop_pipeline.instance import ensure_dagster_home
from loop_pipeline.settings import LoopSettings

# The full event log stays in the instance (and the UI); the terminal gets warnings only.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# INFO: a stage's own progress lines (the evaluation's generation, figures) reach the terminal.
VERBOSE = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    """Progress sink that drops messages."""


def open_instance(settings: LoopSettings | None = None) -> dg.DagsterInstance:
    """The LOOP_HOME instance (SQLite, or PostgreSQL from LOOP_PG_URL)."""
    settings = settings or LoopSettings()
    home = ensure_dagster_home(settings.paths.dagster_home, settings.pg_url)
    # Dagster's own child processes (the Pipes trainer) find the same instance.
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def run_failure(result: dg.ExecuteInProcessResult) -> str:
    """The first failed step's error, with its causes (a ConfigError names the field there)."""
    failure = next((e for e in result.all_events if e.is_step_failure), None)
    return failure.step_failure_data.error.to_string() if failure else "see the run's event log"


@dataclass
class StepRun:
    """One run of a plan: the assets it materialized, for one partition or none."""

    keys: list[dg.AssetKey]
    partition: str | None
    result: dg.ExecuteInProcessResult

    def metadata(self, key: str) -> dict[str, Any]:
        materialized = self.result.asset_materializations_for_node(key)
        return {k: v.value for k, v in materialized[0].metadata.items()} if materialized else {}

    def checks(self) -> dict[str, dict[str, Any]]:
        return {
            e.check_name: {"passed": e.passed, "why": e.description}
            for e in self.result.get_asset_check_evaluations()
        }


@dataclass
class Execution:
    steps: list[StepRun] = field(default_factory=list)
    # Blocking checks that failed: name -> why. Later generations were not run.
    blocked_by: dict[str, str] = field(default_factory=dict)

    def for_asset(self, key: str) -> list[StepRun]:
        asset = dg.AssetKey(key)
        return [step for step in self.steps if asset in step.keys]

    def last(self, key: str) -> StepRun:
        found = self.for_asset(key)
        if not found:
            raise RuntimeError(f"{key} was not materialized (blocked by {sorted(self.blocked_by)})")
        return found[-1]

    def checks(self) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        for step in self.steps:
            merged.update(step.checks())
        return merged


def plan(defs: dg.Definitions, selection: dg.AssetSelection) -> list[tuple[list[dg.AssetKey], bool]]:
    """The selected assets in generations (an asset comes after every selected asset it depends
    on); each generation split into its partitioned and unpartitioned assets."""
    graph = defs.resolve_asset_graph()
    selected = selection.resolve(graph)
    level: dict[dg.AssetKey, int] = {}
    for key in graph.toposorted_asset_keys:
        if key in selected:
            parents = [level[p] + 1 for p in graph.get(key).parent_keys if p in level]
            level[key] = max(parents, default=0)
    steps: list[tuple[list[dg.AssetKey], bool]] = []
    for generation in sorted(set(level.values())):
        keys = [k for k in graph.toposorted_asset_keys if level.get(k) == generation]
        for partitioned in (True, False):
            group = [k for k in keys if (graph.get(k).partitions_def is not None) == partitioned]
            if group:
                steps.append((group, partitioned))
    return steps


def _run_config(base: Mapping[str, Any], op_config: Mapping[str, Any], keys: Iterable[dg.AssetKey]) -> dict[str, Any]:
    """``base`` plus the op config of the assets in this run only (Dagster rejects the others)."""
    names = {key.path[-1] for key in keys}
    ops = {name: {"config": config} for name, config in op_config.items() if name in names and config}
    return {**base, **({"ops": ops} if ops else {})}


# Each run records the process that executes it, so a later command can tell a run whose process
# was killed (SIGKILL, a lost machine) from one still going: a dead run would otherwise hold its
# pool slot (the `gpu` pool has one) and block every later training or evaluation.
PID_TAG, HOST_TAG = "loop/pid", "loop/host"


def reap_dead_runs(instance: dg.DagsterInstance, say: Progress = _quiet) -> list[str]:
    """Mark failed the runs this host started whose process is gone, and free the pool slots
    (claimed or pending) that ended runs still hold; returns the runs marked failed."""
    from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

    host = socket.gethostname()
    reaped = []
    live = RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.STARTING], tags={HOST_TAG: host})
    for run in instance.get_runs(live):
        pid = run.tags.get(PID_TAG)
        if pid and pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            instance.report_run_failed(run, f"its process {pid} on {host} is gone (killed?): marked failed by a later run")
            reaped.append(run.run_id)
            say(f"run {run.run_id} of a killed process {pid} marked failed")
    storage = instance.event_log_storage
    for key in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(key)
        for step in [*info.claimed_slots, *info.pending_steps]:
            run = instance.get_run_by_id(step.run_id)
            if run is None or run.is_finished:
                storage.free_concurrency_slot_for_step(step.run_id, step.step_key)
    return reaped


def _storage_errors() -> tuple[type[BaseException], ...]:
    """What the instance's storage raises when its database cannot be reached (after Dagster's own retries)."""
    import sqlalchemy.exc

    errors: list[type[BaseException]] = [sqlalchemy.exc.OperationalError]
    try:
        from dagster_postgres.utils import DagsterPostgresException
    except ImportError:  # no PostgreSQL support installed: SQLite only
        return tuple(errors)
    return (*errors, DagsterPostgresException)


def _storage_description(instance: dg.DagsterInstance) -> str:
    """Where the instance keeps its runs, without credentials: ``PostgreSQL host:port/db`` or the storage's class."""
    from urllib.parse import urlsplit

    storage = instance.run_storage
    url = getattr(storage, "postgres_url", None)
    if url:
        parts = urlsplit(url)
        return f"PostgreSQL {parts.hostname}:{parts.port or 5432}{parts.path}"
    return type(storage).__name__


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _blocking_failures(graph, step: StepRun) -> dict[str, str]:
    failed = {}
    for evaluation in step.result.get_asset_check_evaluations():
        if not evaluation.passed and graph.get_check_spec(evaluation.asset_check_key).blocking:
            failed[evaluation.check_name] = evaluation.description or "failed"
    return failed


def execute(
    selection: dg.AssetSelection,
    *,
    partitions: Iterable[str] = (),
    op_config: Mapping[str, Mapping[str, Any]] | None = None,
    defs: dg.Definitions | None = None,
    instance: dg.DagsterInstance | None = None,
    logging: Mapping[str, Any] = QUIET,
    verbose: Iterable[str] = (),
    on_start: Callable[[list[dg.AssetKey], str | None], None] | None = None,
    on_step: Callable[[StepRun], None] | None = None,
) -> Execution:
    """Materialize ``selection`` (with its checks) on the instance, generation by generation.

    A failed step raises ``RuntimeError`` with its error; a failed blocking check stops the plan
    and is reported in ``Execution.blocked_by``. Runs that hold an asset named in ``verbose`` log at
    INFO to the terminal (the stage's own progress lines); ``on_start`` / ``on_step`` are called
    before and after each run.
    """
    from loop_pipeline.definitions import build_defs

    defs = defs or build_defs()
    instance = instance or open_instance()
    days = sorted(partitions)
    everything = [*defs.assets, *defs.asset_checks]
    graph = defs.resolve_asset_graph()
    execution = Execution()
    reap_dead_runs(instance)
    tags = {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    for keys, partitioned in plan(defs, selection):
        if partitioned and not days:
            raise RuntimeError(f"{', '.join(k.to_user_string() for k in keys)}: no partitions to run")
        loud = VERBOSE if any(k.path[-1] in set(verbose) for k in keys) else logging
        for day in days if partitioned else [None]:
            if on_start:
                on_start(keys, day)
            names = ", ".join(k.to_user_string() for k in keys) + (f" [{day}]" if day else "")
            try:
                result = dg.materialize(
                    everything,
                    selection=dg.AssetSelection.assets(*keys),
                    partition_key=day,
                    instance=instance,
                    resources=defs.resources,
                    run_config=_run_config(loud, op_config or {}, keys),
                    tags=tags,
                    raise_on_error=False,
                )
            except _storage_errors() as exc:
                # The run could not even be recorded as failed; the next `execute` marks it failed (its process is gone).
                raise RuntimeError(
                    f"{names}: the Dagster instance's storage ({_storage_description(instance)}) failed during the run: "
                    f"{_root_cause(exc)}. Run the same command again once it is reachable."
                ) from exc
            step = StepRun(keys, day, result)
            blocked = _blocking_failures(graph, step)
            if not result.success and not blocked:
                raise RuntimeError(f"{names} failed (run {result.run_id}): {run_failure(result)}")
            execution.steps.append(step)
            execution.blocked_by.update(blocked)
            if on_step:
                on_step(step)
        if execution.blocked_by:
            break
    return execution
