"""The IO manager that carries typed stage results (pydantic models) between assets."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
from pydantic import BaseModel

from loop_pipeline.core.contracts import stage_result_path
from loop_pipeline.core.storage import write_json_atomic


class StageResultIOManager(dg.ConfigurableIOManager):
    """Writes an asset's pydantic result as ``<results_dir>/<asset>.json`` (atomically) and loads
    it back as the type the downstream asset's parameter declares."""

    results_dir: str

    def _path(self, key: dg.AssetKey) -> Path:
        return stage_result_path(self.results_dir, "__".join(key.path))

    def handle_output(self, context: dg.OutputContext, obj: BaseModel) -> None:
        if not isinstance(obj, BaseModel):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a pydantic result, got {type(obj).__name__}")
        write_json_atomic(self._path(context.asset_key), obj.model_dump(mode="json"))

    def load_input(self, context: dg.InputContext) -> BaseModel:
        path = self._path(context.asset_key)
        if not path.is_file():
            raise FileNotFoundError(
                f"{context.asset_key.to_user_string()} has not been materialized on this LOOP_HOME ({path} is missing)"
            )
        expected = context.dagster_type.typing_type
        payload = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(expected, type) and issubclass(expected, BaseModel):
            return expected.model_validate(payload)
        raise TypeError(f"{context.asset_key.to_user_string()}: the input needs a pydantic type annotation, got {expected!r}")
