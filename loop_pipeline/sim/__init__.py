"""Turn a labeled dataset into realistic production traffic: native JSONL traces and feedback events.

Anyone can run the whole loop without production data: :func:`simulate` plays a frontier model
answering real user utterances (CLINC150 intents, a labeled CSV/JSONL, restaurant8k slots, dialogsum
summaries), makes it wrong at a configured rate with realistic confusions, and plays users and
reviewers reacting to the answers: accepting, editing, rejecting, regenerating, thumbs, copies,
hallucination flags from checks and judges, and human review labels that arrive days later.

The gold answer is written only to ``metadata.gold`` of a trace (never into its messages), with the
simulator's own bookkeeping under ``metadata.sim``. Costs are not written: ingest computes them from
configs/prices.yaml. Everything is decided by one seed: the same configuration writes byte-identical
files; files of a previous run for days this run does not produce are left alone.

Modules: ``config`` (SimulationConfig), ``datasets`` (reading the sources), ``task_models`` (the
frontier's outputs per task), ``users`` (people and judges reacting), ``writer`` (landing files),
``run`` (the day-by-day loop). Pure logic: numpy, polars and the standard library; no dagster, no
torch, no environment variables.
"""

from loop_pipeline.sim.config import DEFAULT_TASK_TYPES, SimulationConfig
from loop_pipeline.sim.datasets import bundled_clinc150_dir
from loop_pipeline.sim.run import SimulationSummary, simulate
from loop_pipeline.sim.task_models import OUT_OF_SCOPE

__all__ = [
    "DEFAULT_TASK_TYPES",
    "OUT_OF_SCOPE",
    "SimulationConfig",
    "SimulationSummary",
    "bundled_clinc150_dir",
    "simulate",
]
