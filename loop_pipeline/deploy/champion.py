"""``python -m loop_pipeline.deploy.champion``: the champion as folders an OpenAI-compatible server
(vLLM) loads; the init container of configs/deploy/vllm.yaml.

Merged weights (default): the version ``models:/<name>@<alias>`` points at is resolved into
``--cache-dir`` exactly as the router's in-process backend does (``core.serving_registry``) and
``--dest`` becomes a link to its merged model folder. ``--adapter``: ``--dest``/adapter holds the
LoRA adapter of the version's training run and ``--dest``/base its base model (a packaged name is
converted into ``--cache-dir``), for ``vllm serve <dest>/base --enable-lora --lora-modules
<name>=<dest>/adapter``. The last line printed is JSON: version, folders. The MLflow server comes
from LOOP_MLFLOW_TRACKING_URI (``LoopSettings``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ADAPTER_ARTIFACT = "adapter"  # core/training/reporting.py logs the adapter under this path


def _link(target: Path, link: Path) -> None:
    """``link`` -> ``target``, replacing an older link atomically (a restarted pod)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists() and not link.is_symlink():
        raise FileExistsError(f"{link} exists and is not a link: refusing to replace it")
    staging = link.parent / f".{link.name}.link-{os.getpid()}"
    if staging.is_symlink():
        staging.unlink()
    staging.symlink_to(target.resolve(), target_is_directory=True)
    os.replace(staging, link)


def pull_merged(tracking, model_name: str, alias: str, dest: Path, cache_dir: Path) -> dict:
    from loop_pipeline.core.serving_registry import resolve_champion

    resolved = resolve_champion(tracking, model_name, alias, cache_dir=cache_dir)
    _link(resolved.model_dir, dest)
    return {"model_name": model_name, "version": resolved.spec.version, "model": str(dest), "weights": str(resolved.model_dir)}


def pull_adapter(tracking, model_name: str, alias: str, dest: Path, cache_dir: Path) -> dict:
    import mlflow.artifacts

    from loop_pipeline.core.models import resolve_base_model
    from loop_pipeline.core.registry import RegistryError
    from loop_pipeline.core.serving_registry import champion_version, read_spec

    version = champion_version(tracking, model_name, alias)
    if version is None:
        raise RegistryError(f"no champion: {model_name!r} has no alias {alias!r}")
    spec = read_spec(tracking.client().get_model_version(model_name, version), model_name)
    if not spec.training_run_id:
        raise RegistryError(f"{model_name} v{version}: its serving spec names no training run, so no adapter can be found")
    holder = cache_dir / model_name / f"v{version}-adapter"
    adapter = holder / ADAPTER_ARTIFACT
    if not (adapter / "adapter_config.json").is_file():
        holder.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(
            run_id=spec.training_run_id, artifact_path=ADAPTER_ARTIFACT, dst_path=str(holder), tracking_uri=tracking.tracking_uri
        )
    base = Path(resolve_base_model(spec.base_model, cache_dir))
    if not base.is_dir():
        raise RegistryError(f"{model_name} v{version}: base model {spec.base_model!r} is no local folder (mount it, or use merged weights)")
    _link(adapter, dest / "adapter")
    _link(base, dest / "base")
    return {"model_name": model_name, "version": version, "adapter": str(dest / "adapter"), "base": str(dest / "base")}


def main(argv: list[str] | None = None) -> int:
    from loop_pipeline.config import ConfigError
    from loop_pipeline.core.registry import RegistryError
    from loop_pipeline.settings import LoopSettings

    parser = argparse.ArgumentParser(prog="python -m loop_pipeline.deploy.champion", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-name", default="loop-candidate", help="registered model (configs/evaluation.yaml model_name)")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--dest", type=Path, required=True, help="the link (merged) or folder (--adapter) the server loads")
    parser.add_argument("--cache-dir", type=Path, required=True, help="where versions are downloaded")
    parser.add_argument("--adapter", action="store_true", help="the LoRA adapter and its base instead of merged weights")
    args = parser.parse_args(argv)
    tracking = LoopSettings().tracking()
    pull = pull_adapter if args.adapter else pull_merged
    try:
        result = pull(tracking, args.model_name, args.alias, args.dest, args.cache_dir)
    except (RegistryError, ConfigError, FileExistsError) as exc:
        print(f"champion: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
