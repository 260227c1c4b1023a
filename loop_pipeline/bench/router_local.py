"""Part two of ``loop bench router``: the router's in-process backend with SmolLM2-135M on this CPU.

The same CLINC150 questions go through ``InProcessBackend.complete`` twice: one request at a
time with batches of one (``batch_max_size=1``, no wait), then all of them concurrently with the
router's micro-batching (``batch_max_size`` / ``batch_wait_ms`` as in ``RouterSettings``). The
model is the packaged SmolLM2-135M-Instruct converted once under ``$LOOP_HOME/models``, loaded by
the evaluation's own code in the dtype the evaluation uses (configs/evaluation.yaml).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any, Callable

from loop_pipeline.core.serving import ServingSpec

BASE_MODEL = "smollm2-135m-instruct"
TARGET_SPEEDUP = 3.0


def _questions(count: int) -> list[str]:
    """CLINC150 questions of the demo's domains, the traffic the champion serves."""
    from loop_pipeline.sim import SimulationConfig
    from loop_pipeline.sim.datasets import build_task

    pool = build_task(SimulationConfig(domains=["banking", "credit_cards", "travel"])).pool
    return [pool[(i * 7919) % len(pool)].text for i in range(count)]


def _call(question: str) -> Any:
    from loop_pipeline.router.chat_request import ChatCall

    messages = [{"role": "user", "content": question}]
    body = {"model": "bench-local", "messages": messages}
    return ChatCall(body, messages, False, "intent", None, None, None, None)


async def _one_at_a_time(backend: Any, calls: list[Any]) -> tuple[float, list[str]]:
    await backend.complete(calls[0])  # warm-up, not timed
    started = time.perf_counter()
    texts = [(await backend.complete(call)).text for call in calls]
    return time.perf_counter() - started, texts


async def _concurrently(backend: Any, calls: list[Any], concurrency: int, warmed: Callable[[], None]) -> tuple[float, list[str]]:
    await backend.complete(calls[0])
    warmed()  # the warm-up's batch of one is not counted
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Any) -> str:
        async with gate:
            return (await backend.complete(call)).text

    started = time.perf_counter()
    texts = await asyncio.gather(*[one(call) for call in calls])
    return time.perf_counter() - started, list(texts)


def _measure(model: Any, tokenizer: Any, spec: ServingSpec, calls: list[Any], batch_max_size: int, batch_wait_ms: float, concurrency: int):
    from loop_pipeline.router.backends.in_process import InProcessBackend

    sizes: Counter = Counter()

    async def run() -> tuple[float, list[str], float, list[str]]:
        single = InProcessBackend(model, tokenizer, spec, batch_max_size=1, batch_wait_ms=0.0)
        try:
            single_s, single_texts = await _one_at_a_time(single, calls)
        finally:
            await single.aclose()
        batched = InProcessBackend(
            model, tokenizer, spec, batch_max_size=batch_max_size, batch_wait_ms=batch_wait_ms, on_batch=lambda n: sizes.update([n])
        )
        try:
            batched_s, batched_texts = await _concurrently(batched, calls, concurrency, sizes.clear)
        finally:
            await batched.aclose()
        return single_s, single_texts, batched_s, batched_texts

    return (*asyncio.run(run()), sizes)


def bench_local_batching(
    requests: int, say: Callable[[str], None], concurrency: int = 32, base_model: str = BASE_MODEL
) -> dict[str, Any]:
    """``base_model``: the packaged SmolLM2 (converted once), or any model folder (tests use a tiny one)."""
    import torch

    from loop_pipeline.core.evaluation.config import EvalConfig
    from loop_pipeline.core.models import load_for_inference, resolve_base_model
    from loop_pipeline.router.settings import RouterSettings
    from loop_pipeline.settings import LoopSettings

    loop = LoopSettings()
    evaluation = loop.load(EvalConfig)
    defaults = {name: RouterSettings.model_fields[name].default for name in ("batch_max_size", "batch_wait_ms")}
    model_dir = resolve_base_model(base_model, loop.paths.models, progress=say)
    say(f"{base_model} in process ({evaluation.dtype}, {torch.get_num_threads()} torch threads): {requests} requests "
        f"one at a time (batches of 1), then at concurrency {concurrency} with micro-batching "
        f"(up to {defaults['batch_max_size']}, wait {defaults['batch_wait_ms']:g} ms) ...")
    model, tokenizer = load_for_inference(model_dir, dtype=evaluation.dtype)
    spec = ServingSpec(
        model_name="bench-local", version="bench", base_model=base_model, dataset_version="none", system_prompt="drop",
        max_new_tokens=evaluation.max_new_tokens, dtype=evaluation.dtype, target_agreement=evaluation.target_agreement, tasks={},
    )
    calls = [_call(q) for q in _questions(requests)]
    single_s, single_texts, batched_s, batched_texts, sizes = _measure(
        model, tokenizer, spec, calls, defaults["batch_max_size"], defaults["batch_wait_ms"], concurrency
    )
    single_rps, batched_rps = requests / single_s, requests / batched_s
    return {
        "model": base_model,
        "dtype": evaluation.dtype,
        "torch_threads": torch.get_num_threads(),
        "requests": requests,
        "max_new_tokens": evaluation.max_new_tokens,
        "measured_against": "the same requests one at a time through the same backend with batch_max_size=1",
        "one_at_a_time_requests_per_s": round(single_rps, 2),
        "micro_batched_requests_per_s": round(batched_rps, 2),
        "concurrency": concurrency,
        "batch_max_size": defaults["batch_max_size"],
        "batch_wait_ms": defaults["batch_wait_ms"],
        "batch_sizes": {str(k): v for k, v in sorted(sizes.items())},
        "speedup": round(batched_rps / single_rps, 2),
        # Padding in a batch can change a greedy answer slightly; the share that stayed the same:
        "same_answer_share": round(sum(a == b for a, b in zip(single_texts, batched_texts)) / requests, 3),
        "target_speedup": TARGET_SPEEDUP,
        "target_met": batched_rps / single_rps >= TARGET_SPEEDUP,
    }


def say_local(result: dict[str, Any], say: Callable[[str], None]) -> None:
    say(f"  one at a time:  {result['one_at_a_time_requests_per_s']:.2f} requests/s")
    say(f"  micro-batched:  {result['micro_batched_requests_per_s']:.2f} requests/s (batch sizes {result['batch_sizes']})")
    say(f"  speedup {result['speedup']:.2f}x (target >= {TARGET_SPEEDUP:g}x); same answer in {result['same_answer_share']:.0%} of requests")
