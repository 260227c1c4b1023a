"""Backends behind an OpenAI-compatible URL: the frontier model, and the fine-tuned model served by
vLLM (LoRA adapter), TGI or Ollama. One pooled ``aiohttp.ClientSession`` per backend, opened on the
event loop (the frontier's in the app's lifespan, a local URL's on its first call) and closed with
the backend. aiohttp rather than httpx: httpx's AsyncClient costs several ms of CPU per request
under concurrency (encode/httpx#3215), which is the router's whole overhead budget.

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

import aiohttp

from loop_pipeline.core.serving import ServingSpec
from loop_pipeline.router.backends.base import BackendError, Completion
from loop_pipeline.router.chat_request import ChatCall


def _snippet(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


def _env_proxy(url: str) -> str | None:
    """The HTTP(S)_PROXY the environment sets for ``url`` (NO_PROXY honoured), as httpx used it.

    Only the proxy: the session does not read ~/.netrc (``trust_env`` stays off)."""
    from aiohttp.helpers import get_env_proxy_for_url
    from yarl import URL

    try:
        proxy, _auth = get_env_proxy_for_url(URL(url))
    except LookupError:
        return None
    return str(proxy)


def dump_json(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class OpenAICompatibleClient:
    """POSTs JSON to ``<base_url>/chat/completions``. Each phase (a connection from the pool, the
    connect, every read) is limited to ``timeout_s``, as httpx's timeout was; a stream may run
    longer as long as its chunks keep coming."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float, max_connections: int = 512):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {"content-type": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout_s, sock_connect=timeout_s, sock_read=timeout_s)
        self._max_connections = max_connections
        self._proxy = _env_proxy(self.url)
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        """Open the session; must run on the event loop that will use it."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers, timeout=self._timeout)

    def _open(self, body: Mapping[str, Any]) -> Any:
        self.start()  # no-op once open; a local backend's first call opens it on the loop
        return self._session.post(self.url, data=dump_json(body), proxy=self._proxy)

    async def post(self, body: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
        """The answer parsed, and its bytes as they came."""
        try:
            async with self._open(body) as response:
                status, raw = response.status, await response.read()
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors (checked before ClientError)
            raise BackendError("timeout", f"no answer from {self.url} in time ({type(exc).__name__})") from None
        except aiohttp.ClientError as exc:
            raise BackendError("unreachable", f"{self.url}: {type(exc).__name__}: {exc}") from None
        if status != 200:
            raise _status_error(status, raw.decode("utf-8", errors="replace"), self.url)
        try:
            data = json.loads(raw)
        except ValueError:
            text = raw.decode("utf-8", errors="replace")
            raise BackendError("invalid_response", f"{self.url} answered with non-JSON: {_snippet(text)}") from None
        if not isinstance(data, dict) or not data.get("choices"):
            text = raw.decode("utf-8", errors="replace")
            raise BackendError("invalid_response", f"{self.url} answered without choices: {_snippet(text)}")
        return data, raw

    async def open_stream(self, body: Mapping[str, Any]) -> aiohttp.ClientResponse:
        """The response with its status checked and its body not yet read (the caller closes it)."""
        try:
            response = await self._open(body)
        except TimeoutError as exc:
            raise BackendError("timeout", f"no answer from {self.url} in time ({type(exc).__name__})") from None
        except aiohttp.ClientError as exc:
            raise BackendError("unreachable", f"{self.url}: {type(exc).__name__}: {exc}") from None
        if response.status != 200:
            try:
                raw = await response.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                raw = f"(its body could not be read: {type(exc).__name__})".encode()
            finally:
                response.release()
            raise _status_error(response.status, raw.decode("utf-8", errors="replace"), self.url)
        return response

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


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
        data, raw = await self.client.post(call.frontier_body(self.model))
        choice = data["choices"][0]
        input_tokens, output_tokens = _usage(data)
        return Completion(
            text=str((choice.get("message") or {}).get("content") or ""),
            model=str(data.get("model") or self.model),
            seconds=time.perf_counter() - started,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            finish_reason=str(choice.get("finish_reason") or "stop"),
            body=raw,
        )

    async def stream(self, call: ChatCall) -> "FrontierStream":
        started = time.perf_counter()
        response = await self.client.open_stream(call.frontier_body(self.model))
        asked_for_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
        return FrontierStream(response, self.model, started, relay_usage=asked_for_usage)

    def start(self) -> None:
        self.client.start()

    async def aclose(self) -> None:
        await self.client.aclose()


async def sse_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """Lines of a byte stream without their ending (LF, CRLF or CR, as httpx's aiter_lines split
    them), decoded as UTF-8; a line split across chunks is joined first, whatever its length."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        lines = pending.splitlines(keepends=True)
        pending = b""
        if lines and not lines[-1].endswith(b"\n"):
            pending = lines.pop()  # unfinished, or a CR whose LF may be in the next chunk
        for line in lines:
            yield line.rstrip(b"\r\n").decode("utf-8", errors="replace")
    if pending:
        yield pending.rstrip(b"\r\n").decode("utf-8", errors="replace")


class FrontierStream:
    """The frontier's SSE lines, relayed as they come while the answer and usage are collected.

    The router always asks for usage (the trace's cost needs it); the usage-only chunk (no choices)
    is relayed only to a client that asked for it too, as the OpenAI API does."""

    def __init__(self, response: aiohttp.ClientResponse, model: str, started: float, relay_usage: bool = True):
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
            async for line in sse_lines(self.response.content.iter_any()):
                if self._collect(line) and not self.relay_usage:
                    continue
                yield (line + "\n").encode("utf-8")
        except TimeoutError as exc:
            raise BackendError("timeout", f"the frontier's stream stalled ({type(exc).__name__})") from None
        except aiohttp.ClientError as exc:
            raise BackendError("unreachable", f"the frontier's stream broke: {type(exc).__name__}: {exc}") from None
        finally:
            self.seconds = time.perf_counter() - self.started
            if self.response.content.at_eof():
                self.response.release()  # read to the end: the connection goes back to the pool
            else:
                self.response.close()  # the client went away mid-stream: drop the connection

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
        data, _raw = await self.client.post(body)
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
