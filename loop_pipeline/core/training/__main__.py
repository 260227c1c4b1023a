"""``python -m loop_pipeline.core.training --config FILE | --pipes``: the trainer as a process.

An entry point, so the one place of this package that reads the environment: a standalone
``--config`` run fills what the YAML leaves to its caller (``data.version_dir: latest``,
``model.cache_dir``, the MLflow store) from ``LoopSettings``. Under ``--pipes`` the launching asset
has filled all of it already.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import json
import os
import sys
import threading
import time
from typing import Sequence

from loop_pipeline.config import ConfigError
from loop_pipeline.core.training.config import TrainConfig
from loop_pipeline.core.training.reporting import FanoutReporter, PipesReporter, StderrReporter
from loop_pipeline.core.training.result import PIPES_CONFIG_EXTRA, PIPES_RESULT_MESSAGE
from loop_pipeline.core.training.run import main


def stop_with_launcher(poll_s: float = 1.0, grace_s: float = 30.0) -> None:
    """Stop training when the process that launched this one dies (SIGKILL, a lost worker) instead
    of running on as an orphan that holds the CPU or GPU while a retry starts another trainer.

    The main thread gets a KeyboardInterrupt (the MLflow run is marked FAILED on its way out); one
    that does not get back to Python within ``grace_s`` exits. Nothing to watch when the parent is
    a container's init (a Kubernetes pod: the pod ends with its job)."""
    launcher = os.getppid()
    if launcher <= 1:
        return

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(poll_s)
        print(f"the process that launched this trainer ({launcher}) is gone: stopping the training", file=sys.stderr, flush=True)
        _thread.interrupt_main()
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def run_under_pipes() -> int:
    """Launched by the ``lora_adapter`` asset: config from the Pipes extras, progress to the
    Dagster event log, the result back as a Pipes custom message (the asset records it)."""
    from dagster_pipes import open_dagster_pipes

    stop_with_launcher()
    with open_dagster_pipes() as pipes:
        config = TrainConfig.from_mapping(pipes.get_extra(PIPES_CONFIG_EXTRA), source="train config (Pipes extras)")
        with contextlib.redirect_stdout(sys.stderr):
            result = main(config, FanoutReporter([StderrReporter(), PipesReporter(pipes)]))
        pipes.report_custom_message({PIPES_RESULT_MESSAGE: result.to_dict()})
    # No result line on stdout here: the launching run's own output ends with its JSON line.
    return 0


def run_from_file(path: str, max_steps: int | None = None) -> int:
    from loop_pipeline.settings import LoopSettings
    from loop_pipeline.training_entry import fill_run_defaults

    overrides = {"sft": {"max_steps": max_steps}} if max_steps is not None else None
    try:
        config = fill_run_defaults(TrainConfig.from_yaml(path, overrides), LoopSettings())
        # Trainer logs are printed to stdout: keep stdout for the one result line.
        with contextlib.redirect_stdout(sys.stderr):
            result = main(config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict()), flush=True)
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loop_pipeline.core.training",
        description="LoRA SFT (+ optional KTO/DPO) on a dataset version; prints the result as one JSON line.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="train config YAML (see configs/train/tiny.yaml)")
    source.add_argument("--pipes", action="store_true", help="launched by Dagster Pipes: the config comes in the extras")
    parser.add_argument("--max-steps", type=int, default=None, help="with --config: override sft.max_steps")
    args = parser.parse_args(argv)
    if args.pipes:
        if args.max_steps is not None:
            parser.error("--max-steps goes with --config (under --pipes the asset's run config sets it)")
        return run_under_pipes()
    return run_from_file(args.config, args.max_steps)


if __name__ == "__main__":
    raise SystemExit(cli())
