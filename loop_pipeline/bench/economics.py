"""`loop bench economics`: one round of the loop on simulated traffic, measured as one JSON line.

Simulate CLINC150 (or any labeled file) into a LOOP_HOME of the bench's own, then materialize
ingest, scoring, datasets, training, evaluation and registration as one plan (the demo's round
one, :func:`loop_pipeline.demo.run_round_one`), and report what the loop saves: per task type the
coverage certified at the agreement target on the frozen holdout's test half, the out-of-scope
queries escalated, the routed system's and the all-frontier system's accuracy against the
simulator's gold, the blended cost ratio, the training's time and tokens/s (and whether its steps
were capped), the evaluation's throughput and the holdout's size. Every figure comes from
simulated traffic; "gold" is the simulator's (docs/metrics.md).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from loop_pipeline.config import ConfigError
from loop_pipeline.execution import Progress, _quiet

DATASETS = ("clinc150", "labeled")
# What the bench's LOOP_HOME replaces: the stores that would otherwise take its data elsewhere.
# LOOP_CONFIG_DIR and the deployment settings (LOOP_TRAINER_DEPLOY, LOOP_EXECUTOR_DEPLOY) still apply.
HOME_SETTINGS = ("LOOP_HOME", "LOOP_LANDING_URL", "LOOP_PG_URL", "LOOP_MLFLOW_TRACKING_URI", "LOOP_MLFLOW_ARTIFACT_ROOT", "DAGSTER_HOME")
BENCH_STEPS = 6  # simulate, ingest, scoring, datasets, training, evaluation


@contextlib.contextmanager
def bench_home(home: Path) -> Iterator[None]:
    """LOOP_HOME set to ``home`` (and the settings that would move its stores elsewhere unset)
    while the bench runs; the environment as it was afterwards."""
    saved = {name: os.environ.get(name) for name in HOME_SETTINGS}
    for name in HOME_SETTINGS:
        os.environ.pop(name, None)
    os.environ["LOOP_HOME"] = str(home)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def source_overrides(dataset: str, input_path: str | None, text_column: str | None, label_column: str | None) -> dict[str, Any]:
    """The simulator's source fields for ``dataset`` (a ConfigError for options that do not apply)."""
    if dataset not in DATASETS:
        raise ConfigError(f"--dataset must be one of {', '.join(DATASETS)}, not {dataset!r}")
    if dataset == "labeled" and not input_path:
        raise ConfigError("--dataset labeled needs --input FILE (CSV, TSV, JSONL, JSON or Parquet with a text and a label column)")
    if dataset == "clinc150" and (text_column or label_column):
        raise ConfigError("--text-column / --label-column apply to --dataset labeled only")
    source: dict[str, Any] = {"dataset": dataset}
    if input_path:
        path = Path(input_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"--input {input_path}: no such file")
        source["input_path"] = str(path.resolve())
    if text_column:
        source["text_column"] = text_column
    if label_column:
        source["label_column"] = label_column
    return source


def prepare_home(home: Path | None) -> Path:
    """A fresh temporary folder, or ``home`` when it is new or empty: the figures must come from
    the bench's own traffic only."""
    if home is None:
        return Path(tempfile.mkdtemp(prefix="loop-bench-economics-")).resolve()
    home = home.expanduser().resolve()
    if home.exists() and (not home.is_dir() or any(home.iterdir())):
        raise ConfigError(f"--home {home}: must be a new or empty folder (the bench measures its own traffic only)")
    home.mkdir(parents=True, exist_ok=True)
    return home


def _load_train_config(name: str, config_dir: Path):
    """The train YAML's path and its validated contents (with placeholders for the data and the
    output folder, which the lora_adapter asset sets)."""
    from loop_pipeline.core.training import TrainConfig
    from loop_pipeline.defs.training.assets import train_config_path

    path = train_config_path(name, config_dir).resolve()
    overrides = {"data": {"version_dir": "latest", "sft": None, "kto": None, "dpo": None}, "output_dir": "set-by-lora_adapter"}
    return path, TrainConfig.from_yaml(path, overrides)


def training_figures(
    metadata: Mapping[str, Any], train_rows: int, cap: int | None, planned: Mapping[str, Any], step_wall_seconds: float | None
) -> dict[str, Any]:
    """lora_adapter's materialization figures as the bench reports them. ``capped``: ``--train-max-steps``
    set the step count (a quick CPU run), not the train config; ``config_steps``: what the config's
    ``planned`` sft section alone would have run (its max_steps, else its epochs over ``train_rows``)."""
    sft = metadata["config/train"]["sft"]
    per_step = sft["per_device_train_batch_size"] * sft["gradient_accumulation_steps"]
    epoch_steps = math.ceil(train_rows / per_step) if train_rows else 0
    steps = int(metadata["sft_steps"])
    return {
        "seconds": metadata["train_seconds"],  # optimizer steps only (SFT + any negatives stage)
        "step_wall_seconds": step_wall_seconds,  # the whole lora_adapter step: process start, model load, merge, MLflow
        "steps": steps,
        "negative_steps": metadata.get("negative_steps", 0),
        "batch_size": per_step,
        "train_rows": train_rows,
        "epochs": round(steps * per_step / train_rows, 3) if train_rows else None,
        "epoch_steps": epoch_steps,  # what one uninterrupted epoch over train_rows needs
        "capped": cap is not None,
        "max_steps": cap,
        "config_steps": config_steps(planned, epoch_steps),
        "tokens": metadata.get("tokens"),
        "tokens_per_s": metadata["tokens_per_s"],  # SFT tokens (prompt + completion, no padding) per second of SFT
        "seconds_per_step": metadata.get("seconds_per_step"),
        "initial_loss": metadata.get("initial_loss"),
        "final_loss": metadata.get("final_loss"),
        "device": metadata.get("device"),
        "dtype": metadata.get("dtype"),
        "peak_rss_mb": metadata.get("peak_rss_mb"),
        "peak_gpu_mb": metadata.get("peak_gpu_mb"),
    }


def config_steps(sft: Mapping[str, Any], epoch_steps: int) -> int:
    """The SFT steps a train config's ``sft`` section runs on its own: max_steps wins over epochs."""
    return int(sft["max_steps"] or math.ceil(epoch_steps * sft["num_train_epochs"]))


def task_figures(report) -> dict[str, dict[str, Any]]:
    """Per task type: what the holdout evaluation certified and measured (docs/metrics.md)."""
    return {
        name: {
            "coverage_at_target": t.coverage,
            "target_agreement": report.target_agreement,
            "certified_against": t.certified_against,
            "threshold": t.threshold,
            "served_agreement": t.served_agreement,
            "out_of_scope_escalated": t.out_of_scope_escalated,
            "out_of_scope_test_rows": t.out_of_scope_n,
            "routed_accuracy_vs_gold": t.sim_accuracy_routed,
            "all_frontier_accuracy_vs_gold": t.sim_accuracy_all_frontier,
            "holdout_rows": t.n,
            "calibration_rows": t.calibration_n,
            "test_rows": t.test_n,
        }
        for name, t in report.tasks.items()
    }


def _announce(say: Progress, home: Path, days: int, traces_per_day: int, simulation, train, train_path: Path,
              train_max_steps: int | None) -> None:
    """The bench's first lines: where it runs, the traffic, and whether training is capped."""
    from loop_pipeline.demo import describe_traffic

    say(f"bench economics: LOOP_HOME={home} (a folder of its own; your LOOP_HOME is not touched)")
    say(f"  traffic: {days} days x {traces_per_day} {describe_traffic(simulation)}, frontier error rate "
        f"{simulation.frontier_error_rate:.0%}; every figure below is measured on this simulated traffic, gold = the simulator's")
    planned = f"{train.sft.max_steps} steps" if train.sft.max_steps else f"{train.sft.num_train_epochs:g} epoch(s)"
    if train_max_steps:
        say(f"  training CAPPED at {train_max_steps} steps by --train-max-steps (the train config runs {planned})")
    else:
        say(f"  training as the train config says: {planned}")
    say(f"  train config: {train_path}")


def _summary(options: dict[str, Any], simulation, report, training: dict[str, Any], round_one, outcome, train_path: Path,
             home: Path, step_seconds: dict[str, float], started: float) -> dict[str, Any]:
    """The one JSON line (``options``: dataset, days, traces_per_day, seed as asked)."""
    return {
        "bench": "economics",
        "dataset": options["dataset"],
        "domains": (simulation.domains or "all") if options["dataset"] == "clinc150" else None,
        "input": simulation.input_path,  # None: the bundled CLINC150
        "simulated": True,
        "gold": "the simulator's",
        "frontier_error_rate": simulation.frontier_error_rate,
        "days": options["days"],
        "traces_per_day": options["traces_per_day"],
        "seed": options["seed"],
        "target_agreement": report.target_agreement,
        "tasks": task_figures(report),
        "coverage_at_target": report.coverage,
        "blended_cost_ratio": report.cost.blended_cost_ratio,
        "blended_cost_ratio_one_at_a_time": report.cost_one_at_a_time.blended_cost_ratio,
        "training": training,
        "train_steps_capped": training["capped"],
        "local_requests_per_s": report.requests_per_s,
        "local_requests_per_s_one_at_a_time": report.throughput.one_at_a_time_requests_per_s,
        "local_batch_size": report.throughput.batch_size,
        "local_device": report.throughput.device_kind,
        "holdout_rows": report.n,
        "sft_rows": training["train_rows"],
        "dataset_version": round_one.datasets["version"],
        "promoted": round_one.promoted,
        "gate_refused_because": outcome.decision.failing_reasons(),
        "train_config": str(train_path),
        "home": str(home),
        "step_seconds": step_seconds,
        "seconds": round(time.perf_counter() - started, 1),
    }


def run_economics(
    *,
    dataset: str = "clinc150",
    domains: tuple[str, ...] | None = None,
    input_path: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    days: int = 14,
    traces_per_day: int = 1000,
    seed: int = 0,
    frontier_error_rate: float | None = None,
    train_max_steps: int | None = None,
    train_config: str | None = None,
    home: Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """One round of the loop on simulated traffic in a LOOP_HOME of its own; returns the JSON line.

    ``domains``: clinc150 domains (None: all ten). ``frontier_error_rate`` None: configs/simulate.yaml's.
    ``train_config``: a name under configs/train/ or a YAML path (None: smollm2-clinc). A ConfigError
    for a bad option, file or column: before anything is simulated where it can be told then.
    """
    from loop_pipeline.core.evaluation import EvaluationOutcome
    from loop_pipeline.demo import StepClock, run_round_one, simulation_overrides
    from loop_pipeline.resources.trainer import DEFAULT_TRAIN_CONFIG
    from loop_pipeline.runs import read_result, training_summary
    from loop_pipeline.settings import LoopSettings
    from loop_pipeline.sim import SimulationConfig

    say = progress or _quiet
    started = time.perf_counter()
    if domains and dataset != "clinc150":
        raise ConfigError("--domains applies to --dataset clinc150 only")
    if train_max_steps is not None and train_max_steps < 1:
        raise ConfigError("--train-max-steps must be at least 1")
    source = source_overrides(dataset, input_path, text_column, label_column)
    settings = LoopSettings()
    # Validated before any folder is made: a bad simulator option or train config fails here.
    simulation = settings.load(SimulationConfig, simulation_overrides(days, traces_per_day, seed, domains, frontier_error_rate, source))
    train_path, train = _load_train_config(train_config or DEFAULT_TRAIN_CONFIG, settings.configs)
    temporary = home is None
    home = prepare_home(home)
    _announce(say, home, days, traces_per_day, simulation, train, train_path, train_max_steps)

    op_config = {"lora_adapter": {"train_config": str(train_path), **({"max_steps": train_max_steps} if train_max_steps else {})}}
    clock = StepClock(say)
    with bench_home(home):
        settings = LoopSettings()
        try:
            round_one = run_round_one(
                settings, say, clock, BENCH_STEPS, days=days, traces_per_day=traces_per_day, seed=seed, domains=domains,
                train=True, op_config=op_config, frontier_error_rate=frontier_error_rate, source=source,
            )
        except ConfigError:
            # The simulator refused its input (a column, a domain, the file's contents): nothing ran.
            if temporary:
                shutil.rmtree(home)
            raise
        outcome = read_result(round_one.defs, "holdout_eval", EvaluationOutcome)
        trained = training_summary(round_one.execution)

    report = outcome.report
    train_rows = int(round_one.datasets["rows"]["sft"])
    training = training_figures(trained, train_rows, train_max_steps, train.sft.model_dump(), clock.seconds.get("training"))
    say(
        f"training: {training['steps']} steps x {training['batch_size']} = {training['epochs']} epoch(s) of {train_rows} rows "
        f"(one epoch needs {training['epoch_steps']} steps; the train config alone runs {training['config_steps']}), "
        f"{training['seconds']:.1f} s, {training['tokens_per_s']:.0f} tokens/s"
        + (f"; CAPPED at {train_max_steps} steps by --train-max-steps" if training["capped"] else "")
    )
    return _summary(dict(dataset=dataset, days=days, traces_per_day=traces_per_day, seed=seed), simulation, report, training,
                    round_one, outcome, train_path, home, clock.seconds, started)


__all__ = ["run_economics"]
