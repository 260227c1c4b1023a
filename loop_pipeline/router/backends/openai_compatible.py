"""Backends behind an OpenAI-compatible URL: the frontier model, and the fine-tuned model served by
vLLM (LoRA adapter), TGI or Ollama. One pooled ``httpx.AsyncClient`` per backend.

The frontier relays the client's request (its own model name swapped in) and its response as they
are; its stream passes through line by line. The local URL gets the transformed prompt, greedy
decoding and ``logprobs: true``: confidence is the product of the answer's token probabilities
(what such servers return covers the answer's tokens; the in-process backend also counts the end
of turn, as the evaluation does).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, AsyncIterator, Mapping, Sequence

import httpx

from loop_pipeline.core.serving import ServingSpec
from loop_pipeline.router.backends.base import BackendError, Completion
from loop_pipeline.router.chat_request import ChatCall


def _snippet(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


class OpenAICompatibleClient:
    def __init__(self, base_url: str, api_key: str | None, timeout_s: float, max_connections: int = 512):
        self.url = base_url.rstrip("/") + "/chat/completions"
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def post(self, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            raise BackendError("timeout", f"no answer from {self.url} in time ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise BackendError("unreachable", f"{self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise _status_error(response.status_code, response.text, self.url)
        try:
            data = response.json()
        except ValueError:
            raise BackendError("invalid_response", f"{self.url} answered with non-JSON: {_snippet(response.text)}") from None
        if not isinstance(data, dict) or not data.get("choices"):
            raise BackendError("invalid_response", f"{self.url} answered without choices: {_snippet(response.text)}")
        return data

    async def open_stream(self, body: Mapping[str, Any]) -> httpx.Response:
        """The response with its status checked and its body not yet read (the caller closes it)."""
        request = self._client.build_request("POST", self.url, json=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise BackendError("timeout", f"no answer from {self.url} in time ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise BackendError("unreachable", f"{self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            text = (await response.aread()).decode("utf-8", errors="replace")
            await response.aclose()
            raise _status_error(response.status_code, text, self.url)
        return response

    async def aclose(self) -> None:
        await self._client.aclose()


def _status_error(status: int, text: str, url: str) -> BackendError:
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    return BackendError(f"http_{status}", f"{url} answered HTTP {status}: {_snippet(text)}", status=status, body=body)


def _usage(data: Mapping[str, Any]) -> tuple[int | None, int | None]:
    usage = data.get("usage") or {}
    return usage.get("prompt_tokens"), usage.get("completion_tokens")


class FrontierBackend:
    def __init__(self, base_url: str, model: str, api_key: str | None, timeout_s: float):
        self.model = model
        self.client = OpenAICompatibleClient(base_url, api_key, timeout_s)

    async def complete(self, call: ChatCall) -> Completion:
        started = time.perf_counter()
        data = await self.client.post(call.frontier_body(self.model))
        choice = data["choices"][0]
        input_tokens, output_tokens = _usage(data)
        return Completion(
            text=str((choice.get("message") or {}).get("content") or ""),
            model=str(data.get("model") or self.model),
            seconds=time.perf_counter() - started,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            finish_reason=str(choice.get("finish_reason") or "stop"),
            response=data,
        )

    async def stream(self, call: ChatCall) -> "FrontierStream":
        started = time.perf_counter()
        response = await self.client.open_stream(call.frontier_body(self.model))
        asked_for_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
        return FrontierStream(response, self.model, started, relay_usage=asked_for_usage)

    async def aclose(self) -> None:
        await self.client.aclose()


class FrontierStream:
    """The frontier's SSE lines, relayed as they come while the answer and usage are collected.

    The router always asks for usage (the trace's cost needs it); the usage-only chunk (no choices)
    is relayed only to a client that asked for it too, as the OpenAI API does."""

    def __init__(self, response: httpx.Response, model: str, started: float, relay_usage: bool = True):
        self.response = response
        self.relay_usage = relay_usage
        self.model = model
        self.started = started
        self.parts: list[str] = []
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.finish_reason = "stop"
        self.seconds = 0.0

    async def lines(self) -> AsyncIterator[bytes]:
        try:
            async for line in self.response.aiter_lines():
                if self._collect(line) and not self.relay_usage:
                    continue
                yield (line + "\n").encode("utf-8")
        except httpx.TimeoutException as exc:
            raise BackendError("timeout", f"the frontier's stream stalled ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise BackendError("unreachable", f"the frontier's stream broke: {type(exc).__name__}: {exc}") from None
        finally:
            self.seconds = time.perf_counter() - self.started
            await self.response.aclose()

    def _collect(self, line: str) -> bool:
        """Take the answer's text, finish reason and usage from an SSE line; True for a usage-only chunk."""
        if not line.startswith("data:"):
            return False
        payload = line[5:].strip()
        if not payload or payload == "[DONE]":
            return False
        try:
            chunk = json.loads(payload)
        except ValueError:
            return False  # relayed as is; only the trace misses it
        self.model = str(chunk.get("model") or self.model)
        for choice in chunk.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                self.parts.append(content)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        if chunk.get("usage"):
            self.input_tokens, self.output_tokens = _usage(chunk)
        return bool(chunk.get("usage")) and not chunk.get("choices")

    @property
    def text(self) -> str:
        return "".join(self.parts)


def confidence_from_logprobs(choice: Mapping[str, Any]) -> float | None:
    """exp(sum of the answer's token logprobs); None when the server returned none."""
    content = (choice.get("logprobs") or {}).get("content")
    if content is None:
        return None
    return float(math.exp(sum(float(token["logprob"]) for token in content)))


class OpenAILocalBackend:
    """The fine-tuned model behind an OpenAI-compatible URL."""

    def __init__(self, spec: ServingSpec, base_url: str, model: str, api_key: str | None, timeout_s: float):
        self.spec = spec
        self.served_model = model
        self.client = OpenAICompatibleClient(base_url, api_key, timeout_s)

    def count_input_tokens(self, messages: Sequence[Mapping[str, str]]) -> int | None:
        return None  # no tokenizer here: an over-long input fails on the server and falls back

    async def complete(self, call: ChatCall) -> Completion:
        from loop_pipeline.core.models import prepare_prompt

        started = time.perf_counter()
        body = {
            "model": self.served_model,
            "messages": prepare_prompt(call.messages, self.spec.system_prompt),
            "max_tokens": self.spec.max_new_tokens,
            "temperature": 0,
            "logprobs": True,
        }
        data = await self.client.post(body)
        choice = data["choices"][0]
        confidence = confidence_from_logprobs(choice)
        if confidence is None:
            raise BackendError("invalid_response", f"{self.client.url} returned no logprobs: cannot tell how sure the answer is")
        input_tokens, output_tokens = _usage(data)
        return Completion(
            text=str((choice.get("message") or {}).get("content") or "").strip(),
            model=self.spec.label,
            seconds=time.perf_counter() - started,
            confidence=confidence,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            finish_reason=str(choice.get("finish_reason") or "stop"),
        )

    async def aclose(self) -> None:
        await self.client.aclose()
