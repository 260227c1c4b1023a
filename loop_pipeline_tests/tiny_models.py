"""Tiny, fast stand-ins for real models: a byte-level BPE tokenizer trained in milliseconds and a
small ``LlamaForCausalLM``, saved to a folder and loaded by path like any model id.

Used by the trainer tests and by later tests (serving, evaluation) that need a real model folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tiny_model(
    folder: Path,
    corpus: Iterable[str],
    *,
    vocab_size: int = 300,
    hidden_size: int = 64,
    layers: int = 2,
    seed: int = 0,
    initializer_range: float = 0.3,
) -> Path:
    """Train a ChatML tokenizer on ``corpus``, build a random Llama model, save both to ``folder``.

    The chat template has no ``{% generation %}`` markers (like most real ones), so the trainer takes
    its prompt/completion path.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(list(corpus), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(folder)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        # Random weights at the usual 0.02 give near-uniform logits that LoRA cannot sharpen.
        initializer_range=initializer_range,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    return folder


def write_tiny_train_config(path: Path, model: Path, output_dir: Path, steps: int = 300, seed: int = 0) -> Path:
    """A train config that teaches a tiny model the toy intents (what lora_adapter trains with when
    LOOP_TRAIN_CONFIG names it; the asset fills data.version_dir and the run folder)."""
    import yaml

    raw = {
        "model": {"base": str(model), "dtype": "float32"},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "sft": {"max_steps": steps, "per_device_train_batch_size": 16, "learning_rate": 5e-3, "max_length": 64, "seed": seed,
                "logging_steps": 50},
        "negatives": {"stage": "none"},
        "data": {"version_dir": "latest", "system_prompt": "drop"},
        "export": {"merged": True, "merged_dtype": "float32"},
        "output_dir": str(output_dir),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path
