"""A run whose process was killed must not block later runs: `execute` marks it failed and frees
the pool slots ended runs still hold (the `gpu` pool has one slot)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

from loop_pipeline.execution import HOST_TAG, PID_TAG, open_instance, reap_dead_runs


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _started_run(instance: dg.DagsterInstance, pid: int, host: str) -> DagsterRun:
    run = DagsterRun(job_name="__ephemeral_asset_job__", status=DagsterRunStatus.STARTED, tags={PID_TAG: str(pid), HOST_TAG: host})
    return instance.add_run(run)


def test_a_killed_runs_slot_is_freed_and_the_run_marked_failed(loop_home):
    instance = open_instance()
    try:
        storage = instance.event_log_storage
        storage.set_concurrency_slots("gpu", 1)
        killed = _started_run(instance, _dead_pid(), socket.gethostname())
        alive = _started_run(instance, os.getppid(), socket.gethostname())  # a live process of this host
        elsewhere = _started_run(instance, _dead_pid(), "another-host")  # not ours to judge
        claim = storage.claim_concurrency_slot("gpu", killed.run_id, "lora_adapter")
        assert claim.is_claimed
        waiting = storage.claim_concurrency_slot("gpu", alive.run_id, "holdout_eval")
        assert not waiting.is_claimed  # one slot, held by the killed run

        assert reap_dead_runs(instance) == [killed.run_id]

        assert instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(alive.run_id).status == DagsterRunStatus.STARTED
        assert instance.get_run_by_id(elsewhere.run_id).status == DagsterRunStatus.STARTED
        info = storage.get_concurrency_info("gpu")
        assert [s.run_id for s in info.claimed_slots] == []
        assert storage.claim_concurrency_slot("gpu", alive.run_id, "holdout_eval").is_claimed
        # Nothing left to reap: a second pass changes nothing.
        assert reap_dead_runs(instance) == []
    finally:
        instance.dispose()
