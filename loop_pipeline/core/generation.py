"""Batched greedy generation with a confidence per answer (used by evaluation and serving).

Needs only torch / transformers / peft (imported inside the functions) and numpy, so the GPU check
script runs it on a machine without the rest of the stack.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np


@dataclass
class Generations:
    texts: list[str]
    confidence: np.ndarray  # product of the answer's token probabilities (end of turn included)
    seconds: float

    @property
    def requests_per_s(self) -> float:
        return len(self.texts) / self.seconds if self.seconds > 0 else 0.0


def load_for_inference(model_path: str, adapter: str | None = None, dtype: str = "auto"):
    """A model folder (merged, or a base with ``adapter`` merged in memory) and its tokenizer."""
    from loop_pipeline.core.training import load_base_model, load_tokenizer, resolve_dtype

    tokenizer = load_tokenizer(adapter if adapter and Path(adapter, "tokenizer_config.json").is_file() else model_path)
    tokenizer.padding_side = "left"
    model = load_base_model(model_path, resolve_dtype(dtype))
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    return model, tokenizer


def generate_with_confidence(
    model,
    tokenizer,
    prompts: Sequence[Sequence[Mapping[str, str]]],
    *,
    batch_size: int = 32,
    max_new_tokens: int = 24,
    progress: Callable[[str], None] | None = None,
) -> Generations:
    import torch

    say = progress or (lambda _: None)
    texts = [tokenizer.apply_chat_template([dict(m) for m in p], tokenize=False, add_generation_prompt=True) for p in prompts]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together: less padding
    eos = tokenizer.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    answers: list[str] = [""] * len(texts)
    confidence = np.zeros(len(texts))
    started = time.perf_counter()
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch = tokenizer([texts[i] for i in index], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=list(eos_ids),
            )
            logprobs = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True).float().cpu().numpy()
        generated = out.sequences[:, batch["input_ids"].shape[1] :].cpu().numpy()
        for row, i in enumerate(index):
            tokens = generated[row]
            ends = [k for k, t in enumerate(tokens) if int(t) in eos_ids]
            stop = ends[0] if ends else len(tokens)
            # Probability of the answer and of stopping there; no end of turn = the answer ran on.
            confidence[i] = float(np.exp(logprobs[row, : min(stop + 1, len(tokens))].sum())) if ends else 0.0
            answers[i] = tokenizer.decode(tokens[:stop], skip_special_tokens=True).strip()
        done = min(start + batch_size, len(order))
        if done == len(order) or (start // batch_size) % 5 == 0:
            elapsed = time.perf_counter() - started
            say(f"  generated {done}/{len(order)} ({done / elapsed:.1f} requests/s)")
    return Generations(answers, confidence, time.perf_counter() - started)


