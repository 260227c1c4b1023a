"""loop_pipeline: production LLM traffic in, a cheaper fine-tuned model out.

Importing the package turns off every phone-home path of the stack (Hugging Face hub, MLflow,
Great Expectations, Dagster) before any of those libraries is imported, so neither a user's run
nor the tests reach the network. A value the user set explicitly wins.
"""

import os

_OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DAGSTER_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
}
for _key, _value in _OFFLINE_ENV.items():
    os.environ.setdefault(_key, _value)

__version__ = "0.1.0"
