"""Typed configuration files: every YAML under ``configs/`` is a pydantic model of this kind.

A model is strict (``extra="forbid"``) and immutable; :meth:`ConfigModel.from_yaml` turns
pydantic's error locations into one line that names the file, the field and what is allowed::

    configs/train/tiny.yaml: lora.r: Input should be greater than 0 (got -1)

This module reads no environment variable and knows no default location: entry points (the CLI,
Dagster resources, the router app) decide which file to load, through :mod:`loop_pipeline.settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound="ConfigModel")


class ConfigError(ValueError):
    """A configuration file or value is missing or invalid; the message names it."""


def _location(loc: tuple[Any, ...]) -> str:
    parts = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts) or "(top level)"


def describe_validation_error(source: str, exc: ValidationError) -> str:
    """``<source>: <field>: <message> (got <value>)``, several errors joined by ``; `` on one line."""
    problems = []
    for error in exc.errors(include_url=False):
        message = error["msg"]
        if error["type"] not in ("missing", "extra_forbidden") and "input" in error:
            shown = repr(error["input"])
            message += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
        elif error["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(f"{_location(error['loc'])}: {message}")
    if len(problems) > 5:  # one readable line: the first few, then how many more
        problems = [*problems[:5], f"and {len(problems) - 5} more"]
    return f"{source}: " + "; ".join(problems)


def read_yaml_mapping(path: Path | str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is ``{}``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
    return loaded


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` on top of ``base``; nested mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class ConfigModel(BaseModel):
    """Base of every configuration model. ``FILE`` is its name under the config folder
    (``scoring`` -> ``configs/scoring.yaml``); sections nested in a file leave it empty."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    FILE: ClassVar[str] = ""

    @classmethod
    def from_mapping(cls: type[M], raw: Mapping[str, Any] | None, source: str | None = None) -> M:
        if raw is not None and not isinstance(raw, Mapping):
            raise ConfigError(f"{source or cls.FILE or cls.__name__}: expected a mapping, got {type(raw).__name__}")
        try:
            return cls.model_validate(dict(raw or {}))
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(source or cls.FILE or cls.__name__, exc)) from None

    @classmethod
    def from_yaml(cls: type[M], path: Path | str, overrides: Mapping[str, Any] | None = None) -> M:
        raw = read_yaml_mapping(path)
        return cls.from_mapping(deep_merge(raw, overrides or {}), source=str(path))

    def with_overrides(self: M, overrides: Mapping[str, Any] | None, source: str | None = None) -> M:
        """A copy with ``overrides`` merged in and validated again."""
        if not overrides:
            return self
        return type(self).from_mapping(deep_merge(self.model_dump(mode="python", by_alias=True), overrides), source=source)
