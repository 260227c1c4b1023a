"""The one small protocol every backend speaks, and what a call gives back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

from loop_pipeline.router.chat_request import ChatCall


@dataclass(frozen=True)
class Completion:
    text: str
    model: str  # what traces name the model that answered
    seconds: float  # the backend's own time
    confidence: float | None = None  # probability of the answer (local backends)
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str = "stop"
    body: bytes | None = None  # the backend's own JSON body, relayed to the client byte for byte (frontier)


class BackendError(Exception):
    """A backend call that failed. ``kind``: timeout | unreachable | http_<status> | invalid_response | error."""

    def __init__(self, kind: str, message: str, status: int | None = None, body: Any = None):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.body = body  # the backend's error body, when it sent JSON


class ChatBackend(Protocol):
    async def complete(self, call: ChatCall) -> Completion: ...

    async def aclose(self) -> None: ...


class LocalBackend(ChatBackend, Protocol):
    """The fine-tuned model: answers with a confidence and knows how long an input is."""

    def count_input_tokens(self, messages: Sequence[Mapping[str, str]]) -> int | None:
        """Prompt tokens after the prompt transform; None when this backend cannot tell."""
        ...
