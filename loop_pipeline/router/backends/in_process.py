"""The fine-tuned model in this process (transformers, CPU or CUDA), with dynamic micro-batching.

Loading, the prompt transform and confidence are the evaluation's own code
(``core.models.load_for_inference``, ``prepare_prompt``, ``generate_with_confidence``), so the
router's confidence on a prompt is the evaluation's. Concurrent requests wait at most
``batch_wait_ms`` (or until ``batch_max_size`` are queued) and are generated as one batch on a
single worker thread: the event loop never blocks on torch, and batches run one at a time.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from loop_pipeline.core.serving import ServingSpec
from loop_pipeline.router.backends.base import BackendError, Completion
from loop_pipeline.router.chat_request import ChatCall

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    messages: list[dict[str, str]]
    future: asyncio.Future = field(repr=False)


@dataclass(frozen=True)
class _Answer:
    text: str
    confidence: float
    output_tokens: int


class InProcessBackend:
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        spec: ServingSpec,
        *,
        batch_max_size: int = 16,
        batch_wait_ms: float = 5.0,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer  # used on the worker thread only
        # A Rust tokenizer used from two threads at once fails ("Already borrowed"): the event
        # loop counts input tokens with its own copy.
        self._counter = copy.deepcopy(tokenizer)
        self.spec = spec
        self.batch_max_size = batch_max_size
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.on_batch = on_batch or (lambda _size: None)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"local-{spec.label}")
        self._queue: asyncio.Queue[_Pending] | None = None
        self._filled: asyncio.Event | None = None
        self._batcher: asyncio.Task | None = None
        self.batches = 0  # generation batches run (the bench reads it)

    @classmethod
    def load(cls, model_dir: Path, spec: ServingSpec, *, device: str = "auto", **options: Any) -> "InProcessBackend":
        """Blocking (seconds): call it from a worker thread."""
        from loop_pipeline.core.models import load_for_inference

        model, tokenizer = load_for_inference(str(model_dir), dtype=spec.dtype)
        if device != "auto":
            model = model.to(device)
        return cls(model, tokenizer, spec, **options)

    # ---------------------------------------------------------------------------------------

    def _prompt(self, messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
        from loop_pipeline.core.models import prepare_prompt

        return prepare_prompt(messages, self.spec.system_prompt)

    def count_input_tokens(self, messages: Sequence[Mapping[str, str]]) -> int | None:
        text = self._counter.apply_chat_template(self._prompt(messages), tokenize=False, add_generation_prompt=True)
        return len(self._counter(text, add_special_tokens=False)["input_ids"])

    async def complete(self, call: ChatCall) -> Completion:
        started = time.perf_counter()
        if self._batcher is None:
            self._start()
        if self._batcher.done():
            raise BackendError("error", f"the batcher of {self.spec.label} stopped: {self._batcher!r}")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(call.messages, future))
        if self._queue.qsize() >= self.batch_max_size:
            self._filled.set()
        answer: _Answer = await future
        return Completion(
            text=answer.text,
            model=self.spec.label,
            seconds=time.perf_counter() - started,
            confidence=answer.confidence,
            output_tokens=answer.output_tokens,
        )

    def _start(self) -> None:
        self._queue = asyncio.Queue()
        self._filled = asyncio.Event()
        self._batcher = asyncio.get_running_loop().create_task(self._batch_loop(), name=f"batcher-{self.spec.label}")

    async def _gather(self) -> list[_Pending]:
        """The first waiting request, then whatever arrives within the wait (up to the batch size)."""
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.batch_wait_s
        while self._queue.qsize() < self.batch_max_size - 1:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            self._filled.clear()
            try:
                await asyncio.wait_for(self._filled.wait(), remaining)
            except TimeoutError:
                break
        while len(batch) < self.batch_max_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        # A caller that gave up (local timeout) no longer needs its answer.
        return [item for item in batch if not item.future.done()]

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            self.on_batch(len(batch))
            self.batches += 1
            try:
                answers = await loop.run_in_executor(self._executor, self._generate, [item.messages for item in batch])
            except Exception as exc:  # handed to every waiting request, which falls back to the frontier
                log.exception("local generation failed for a batch of %d", len(batch))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(BackendError("error", f"local generation failed: {type(exc).__name__}: {exc}"))
                continue
            for item, answer in zip(batch, answers):
                if not item.future.done():
                    item.future.set_result(answer)

    def _generate(self, conversations: list[list[dict[str, str]]]) -> list[_Answer]:
        from loop_pipeline.core.models import generate_with_confidence

        prompts = [self._prompt(messages) for messages in conversations]
        generations = generate_with_confidence(
            self.model, self.tokenizer, prompts, batch_size=len(prompts), max_new_tokens=self.spec.max_new_tokens
        )
        return [
            _Answer(text, float(confidence), len(self.tokenizer(text, add_special_tokens=False)["input_ids"]))
            for text, confidence in zip(generations.texts, generations.confidence)
        ]

    async def aclose(self) -> None:
        if self._batcher is not None:
            self._batcher.cancel()
            try:
                await self._batcher
            except asyncio.CancelledError:
                pass  # the cancellation asked for just above
        if self._queue is not None:
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if not item.future.done():
                    item.future.set_exception(BackendError("error", f"{self.spec.label} was unloaded"))
        self._executor.shutdown(wait=False)
