"""``RouterSettings``: what ``loop serve`` and ``create_app`` run with.

Precedence, highest first: keyword overrides (the CLI's ``--host`` / ``--port``, tests), the
environment (``LOOP_ROUTER_*``; API key hashes also from ``LOOP_ROUTER_API_KEYS``, comma-separated),
``configs/router.yaml`` (or the file passed to :meth:`RouterSettings.load`), the defaults here.
Fields left ``None`` fall back to the project's ``LoopSettings`` (``LOOP_HOME`` and friends) when the
app starts, through the ``resolved_*`` methods.
"""

from __future__ import annotations

import contextvars
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from loop_pipeline.config import ConfigError, describe_validation_error, read_yaml_mapping

ROUTER_CONFIG_FILE = "router"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# The YAML values of the file being loaded, seen by _YamlValues while __init__ collects sources.
_YAML_VALUES: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("router_yaml_values", default={})


class _YamlValues(PydanticBaseSettingsSource):
    """The router YAML's values, below the environment in precedence."""

    def get_field_value(self, field, field_name):  # pragma: no cover - __call__ is used instead
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_YAML_VALUES.get())


def _describe(source: str, exc: ValidationError) -> str:
    """The usual one-line error, except that a bad API key entry is never echoed (it may be a key)."""
    for error in exc.errors(include_url=False):
        if error["loc"][:1] == ("api_keys_sha256",):
            return f"{source}: api_keys_sha256: {error['msg']}"
    return describe_validation_error(source, exc)


class RouterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOOP_ROUTER_", extra="forbid", frozen=True, populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # The registered model and alias to serve (configs/evaluation.yaml's model_name).
    model_name: str = "loop-candidate"
    champion_alias: str = "champion"
    # None: LoopSettings().tracking() (LOOP_MLFLOW_* or SQLite under LOOP_HOME).
    tracking_uri: Optional[str] = None
    artifact_root: Optional[str] = None
    model_cache_dir: Optional[Path] = None  # None: $LOOP_HOME/models/serving
    load_champion: bool = True  # false: everything goes to the frontier (no model, no registry)
    local_backend: Literal["in_process", "openai"] = "in_process"
    # The openai backend: an OpenAI-compatible URL serving the fine-tuned model (vLLM, TGI, Ollama).
    local_base_url: Optional[str] = None
    local_model: Optional[str] = None  # the model name that server knows it by (default: model_name)
    local_api_key_env: Optional[str] = None  # name of the env variable holding its key, if any
    frontier_base_url: str
    frontier_model: str
    frontier_api_key_env: str = "LOOP_FRONTIER_API_KEY"  # the variable's name; the key never reaches config
    # sha256 hex of accepted Bearer keys; empty: auth is off (said loudly at start).
    api_keys_sha256: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("api_keys_sha256", "LOOP_ROUTER_API_KEYS", "LOOP_ROUTER_API_KEYS_SHA256"),
    )
    shadow_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    local_timeout_s: float = Field(default=10.0, gt=0)
    frontier_timeout_s: float = Field(default=60.0, gt=0)
    max_body_bytes: int = Field(default=1_000_000, gt=0)
    batch_max_size: int = Field(default=16, ge=1)
    batch_wait_ms: float = Field(default=5.0, ge=0)
    poll_interval_s: float = Field(default=30.0, gt=0)
    landing_dir: Optional[Path] = None  # None: $LOOP_HOME/landing
    segment_max_records: int = Field(default=1000, ge=1)
    segment_max_seconds: float = Field(default=60.0, gt=0)
    queue_size: int = Field(default=10000, ge=1)
    prices_path: Optional[Path] = None  # None: the configs folder's prices.yaml
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # Freeze the live heap out of the cyclic GC after start and after each champion swap (router/heap.py):
    # a full collection otherwise pauses every request in flight. Process-wide: off where the
    # process runs more than the router (tests).
    gc_freeze: bool = True

    @field_validator("api_keys_sha256", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("api_keys_sha256")
    @classmethod
    def _hex_digests(cls, value: list[str]) -> list[str]:
        digests = [v.strip().lower() for v in value]
        bad = [i for i, d in enumerate(digests) if not _SHA256_HEX.match(d)]
        if bad:
            # Never echo the value: someone may have put a raw key here instead of its hash.
            raise ValueError(f"entries {bad} are not sha256 hex digests (64 hex characters); store sha256(key), not the key")
        return digests

    @model_validator(mode="after")
    def _openai_backend_needs_url(self) -> "RouterSettings":
        if self.load_champion and self.local_backend == "openai" and not self.local_base_url:
            raise ValueError("local_backend openai needs local_base_url (the server of the fine-tuned model)")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return (init_settings, env_settings, _YamlValues(settings_cls))

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> "RouterSettings":
        """Settings from ``path`` (None: ``<config dir>/router.yaml`` when it exists), the
        environment and ``overrides``. A bad value raises :class:`ConfigError` naming its source."""
        if path is None:
            from loop_pipeline.settings import LoopSettings

            default = LoopSettings().config_path(ROUTER_CONFIG_FILE)
            path = default if default.is_file() else None
        values = read_yaml_mapping(path) if path is not None else {}
        token = _YAML_VALUES.set(values)
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            source = str(path) if path is not None else "router settings (LOOP_ROUTER_*)"
            raise ConfigError(_describe(source, exc)) from None
        finally:
            _YAML_VALUES.reset(token)

    @classmethod
    def from_yaml(cls, path: Path | str, overrides: dict[str, Any] | None = None) -> "RouterSettings":
        """What ``loop config check`` calls for configs/router.yaml (as for every ConfigModel)."""
        return cls.load(Path(path), **(overrides or {}))

    # ----------------------------------------------------------------------------------------
    # Defaults from the project's settings, resolved when the app starts

    def resolved_tracking(self):
        from loop_pipeline.core.tracking import TrackingTarget
        from loop_pipeline.settings import LoopSettings

        default = LoopSettings().tracking()
        return TrackingTarget(self.tracking_uri or default.tracking_uri, self.artifact_root or default.artifact_root)

    def resolved_model_cache_dir(self) -> Path:
        from loop_pipeline.settings import LoopSettings

        return (self.model_cache_dir or LoopSettings().paths.models / "serving").expanduser().resolve()

    def resolved_landing_dir(self) -> Path:
        if self.landing_dir is not None:
            return self.landing_dir.expanduser().resolve()
        from loop_pipeline.settings import LoopSettings

        loop = LoopSettings()
        if loop.landing_url and "://" in loop.landing_url and not loop.landing_url.startswith("file://"):
            raise ConfigError(
                f"LOOP_LANDING_URL={loop.landing_url!r} is not a local folder: the router writes segments locally; "
                "set landing_dir (LOOP_ROUTER_LANDING_DIR) and ship the closed segments there"
            )
        return Path(loop.landing.removeprefix("file://")).expanduser().resolve()

    def resolved_prices_path(self) -> Path:
        if self.prices_path is not None:
            return self.prices_path.expanduser().resolve()
        from loop_pipeline.settings import LoopSettings

        return LoopSettings().config_path("prices")
