"""The configuration files a run uses, as a Dagster resource: visible and overridable in the
launchpad (``resources.configs.config.overrides``), and recorded on each materialization."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
from pydantic import Field

from loop_pipeline.config import ConfigError, ConfigModel
from loop_pipeline.config_files import FILE_MODELS

M = TypeVar("M", bound=ConfigModel)


class LoopConfigs(dg.ConfigurableResource):
    """``config_dir``: the folder of YAML files (``LOOP_CONFIG_DIR`` or the project's configs/).
    ``overrides``: per file, values merged over the YAML for this run, e.g.
    ``{"scoring": {"precision_target": 0.9}, "evaluation": {"max_examples": 200}}``."""

    config_dir: str
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per config file (scoring, datasets, ...): values merged over its YAML."
    )

    def path(self, model: type[ConfigModel]) -> Path:
        return Path(self.config_dir) / f"{model.FILE}.yaml"

    def load(self, model: type[M]) -> M:
        """The file's model with this run's overrides merged in; a bad value raises a ConfigError
        naming the file and the field."""
        if not model.FILE:
            raise TypeError(f"{model.__name__} is not a file-level config (no FILE)")
        unknown = sorted(set(self.overrides) - set(FILE_MODELS))
        if unknown:  # a misspelled file name would otherwise override nothing, silently
            raise ConfigError(f"resources.configs.overrides: unknown config file(s) {unknown}; known: {sorted(FILE_MODELS)}")
        return model.from_yaml(self.path(model), self.overrides.get(model.FILE))

    def metadata(self, *configs: ConfigModel) -> dict[str, Any]:
        """``config/<file>`` -> the effective values, for a materialization's metadata."""
        return {f"config/{c.FILE}": dg.MetadataValue.json(c.model_dump(mode="json", by_alias=True)) for c in configs}
