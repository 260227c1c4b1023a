"""Turn a labeled dataset into realistic production traffic: native JSONL traces and feedback events.

Anyone can run the whole loop without production data: :func:`simulate` plays a frontier model
answering real user utterances (CLINC150 intents, a labeled CSV/JSONL, restaurant8k slots, dialogsum
summaries), makes it wrong at a configured rate with realistic confusions, and plays users and
reviewers reacting to the answers: accepting, editing, rejecting, regenerating, thumbs, copies,
hallucination flags from checks and judges, and human review labels that arrive days later.

By default the traffic is as messy as production (configs/simulate.yaml documents every rate):

- frontier errors concentrate on hard, confusable inputs, and the same prompt tends to fail the same
  way (each example has its own error propensity and its own recurring wrong answer);
- reviewers are sometimes wrong; thumbs-down and hallucination flags also hit correct outputs;
  edits sometimes fix an output only part of the way or write another wrong answer, and a few
  correct outputs are edited into wrong ones;
- labels can be held out as unknown intents, giving any labeled dataset out-of-scope traffic;
- popular prompts are sent again, some lightly retyped; the label mix drifts over the days; a share
  of calls continue the user's conversation ([system, user, assistant, user] messages).

``NO_MESS`` switches all of it off: the tidy traffic of the first simulator, the same files apart
from the extra ``metadata.sim`` keys.

The gold answer is written only to ``metadata.gold`` of a trace (never into its messages), with the
simulator's own bookkeeping under ``metadata.sim`` (frontier_correct, user_type, seed, turns, repeat,
edit_kind, review). Costs are not written: ingest computes them from configs/prices.yaml. Everything
is decided by one seed, with one random stream per behaviour (``streams``), so turning one rate off
leaves the others' draws alone; the same configuration writes byte-identical files; files of a
previous run for days this run does not produce are left alone.

Modules: ``config`` (SimulationConfig), ``datasets`` (reading the sources), ``task_models`` (the
frontier's outputs per task), ``hardness`` (which calls it gets wrong, and how), ``traffic`` (which
example each call sends), ``users`` (people and judges reacting), ``mess`` (their imperfections),
``writer`` (landing files), ``summary`` (what was written), ``run`` (the day-by-day loop). Pure
logic: numpy, polars and the standard library; no dagster, no torch, no environment variables.
"""

from loop_pipeline.sim.config import DEFAULT_TASK_TYPES, NO_MESS, SimulationConfig
from loop_pipeline.sim.datasets import bundled_clinc150_dir
from loop_pipeline.sim.run import SimulationSummary, simulate
from loop_pipeline.sim.task_models import OUT_OF_SCOPE

__all__ = [
    "DEFAULT_TASK_TYPES",
    "NO_MESS",
    "OUT_OF_SCOPE",
    "SimulationConfig",
    "SimulationSummary",
    "bundled_clinc150_dir",
    "simulate",
]
