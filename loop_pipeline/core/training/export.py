"""Export: base + adapter merged into one plain model folder (what a server without peft loads)."""

from __future__ import annotations

from pathlib import Path

from loop_pipeline.core.models import load_base_model, load_tokenizer


def save_merged(base: str, adapter: Path, target: Path, dtype, merged_dtype: str) -> Path:
    """Merge ``adapter`` into ``base`` and save it, with the adapter's tokenizer, to ``target``;
    ``merged_dtype``: bfloat16 / float32, or ``same`` to keep the training dtype."""
    import torch
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_base_model(base, dtype), str(adapter)).merge_and_unload()
    if merged_dtype != "same":
        model = model.to(getattr(torch, merged_dtype))
    model.save_pretrained(target)
    load_tokenizer(str(adapter)).save_pretrained(target)
    return target
