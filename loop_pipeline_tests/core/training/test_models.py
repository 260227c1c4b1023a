"""core/models.py: the prompt transform, and base models by packaged name (converted once, cached)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loop_pipeline.config import ConfigError
from loop_pipeline.core import models
from loop_pipeline.core.models import prepare_prompt, resolve_base_model


def test_prepare_prompt_drops_only_system_turns():
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u", "extra": 1}]
    assert prepare_prompt(messages, "drop") == [{"role": "user", "content": "u"}]
    assert prepare_prompt(messages, "keep") == [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    # none: no system text at all, one empty system turn so a template adds no default of its own
    assert prepare_prompt(messages, "none") == [{"role": "system", "content": ""}, {"role": "user", "content": "u"}]
    with pytest.raises(ValueError, match="system_prompt must be one of"):
        prepare_prompt(messages, "Drop")


def test_packaged_model_without_its_package_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(
        models.PACKAGED_MODELS, "missing-model", models.PackagedGguf("no_such_package_xyz", "m.gguf", "pip install it")
    )
    with pytest.raises(ConfigError, match="package no_such_package_xyz is not installed; pip install it"):
        resolve_base_model("missing-model", tmp_path)
    assert resolve_base_model(str(tmp_path), tmp_path) == str(tmp_path)  # a folder is used as given
    assert resolve_base_model(str(tmp_path), None) == str(tmp_path)  # and needs no cache


def test_a_packaged_model_needs_a_cache_folder():
    with pytest.raises(ConfigError, match="model.base 'smollm2-135m-instruct': a packaged model needs a cache folder"):
        resolve_base_model("smollm2-135m-instruct", None)


def test_smollm2_resolves_to_a_converted_cached_folder(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    folder = Path(resolve_base_model("smollm2-135m-instruct", tmp_path))
    assert folder == tmp_path / "smollm2-135m-instruct"
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "llama" and config.hidden_size == 576 and config.num_hidden_layers == 30
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert "<|im_start|>" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_base_model("smollm2-135m-instruct", tmp_path) == str(folder)  # cached: not converted again
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_auto_dtype_takes_bfloat16_only_on_a_cpu_that_computes_it_natively(tmp_path):
    from loop_pipeline.core.models import cpu_has_native_bf16

    avx2_only = tmp_path / "avx2"
    avx2_only.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx avx2 fma\n")
    sapphire = tmp_path / "amx"
    sapphire.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert cpu_has_native_bf16(str(avx2_only)) is False
    assert cpu_has_native_bf16(str(sapphire)) is True
    assert cpu_has_native_bf16(str(tmp_path / "missing")) is False  # not Linux: float32
