"""Training stage: the LoRA adapter, trained out of process through Dagster Pipes."""

import dagster as dg

from loop_pipeline.defs.training.assets import lora_adapter

defs = dg.Definitions(assets=[lora_adapter])
