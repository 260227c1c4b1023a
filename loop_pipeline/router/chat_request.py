"""Reading a chat completion request: size limit, JSON, messages, roles, task type.

Anything wrong becomes a 4xx OpenAI-style error (a rejection: counted, never traced). Message
content may be a string or a list of text parts (joined); the rest of the body travels to the
frontier as the client sent it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from fastapi import Request

from loop_pipeline.router.errors import RouterError, bad_request

# The roles the trace format accepts (loop_pipeline.schemas.traces.MESSAGE_ROLES, not imported
# here: that module pulls pandera into the router's import path).
MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool")
TASK_TYPE_HEADER = "x-loop-task-type"


async def read_json_body(request: Request, max_bytes: int) -> Any:
    """The body as JSON; 413 past ``max_bytes`` (checked before and while reading), 400 if not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(int(declared), max_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(size, max_bytes)
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"We could not parse the JSON body of your request: {exc}", code="invalid_json", rejection="malformed_json") from None


def _too_large(size: int, limit: int) -> RouterError:
    return RouterError(
        413, f"The request body is {size} bytes or more, over the {limit} byte limit.", code="request_too_large", rejection="too_large"
    )


@dataclass(frozen=True)
class ChatCall:
    body: dict[str, Any]
    messages: list[dict[str, str]]  # role / content text, as traces record them
    stream: bool
    task_type: str | None
    app: str | None
    user_id: str | None
    session_id: str | None
    prompt_version: str | None

    def frontier_body(self, model: str) -> dict[str, Any]:
        """What the frontier receives: the client's body with the frontier's model name and without
        the router's own metadata (task type and friends are the router's business)."""
        body = {k: v for k, v in self.body.items() if k != "metadata"}
        body["model"] = model
        if self.stream:
            # Token counts for the cost, also when streaming.
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return body


def _content_text(content: Any, index: int) -> str:
    if content is None:
        return ""  # an assistant turn that only called tools
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad_request(
                    "Only text content parts are supported.", param=f"messages[{index}].content", code="invalid_content", rejection="invalid_content"
                )
            texts.append(part["text"])
        return "".join(texts)
    raise bad_request(
        "Message content must be a string or a list of text parts.", param=f"messages[{index}].content", code="invalid_content", rejection="invalid_content"
    )


def _messages(body: Mapping[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if messages is None:
        raise bad_request("Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter", rejection="missing_messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array.", param="messages", code="invalid_type", rejection="missing_messages")
    plain = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise bad_request(f"messages[{i}] must be an object.", param=f"messages[{i}]", code="invalid_type", rejection="invalid_message")
        role = message.get("role")
        if role not in MESSAGE_ROLES:
            raise bad_request(
                f"Invalid value for 'messages[{i}].role': {str(role)[:40]!r}; supported: {', '.join(MESSAGE_ROLES)}.",
                param=f"messages[{i}].role",
                code="invalid_value",
                rejection="unknown_role",
            )
        plain.append({"role": role, "content": _content_text(message.get("content"), i)})
    return plain


def _text_field(metadata: Mapping[str, Any], name: str) -> str | None:
    value = metadata.get(name)
    return str(value) if value is not None and str(value).strip() else None


def parse_chat_call(body: Any, headers: Mapping[str, str]) -> ChatCall:
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_type", rejection="malformed_json")
    messages = _messages(body)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", param="stream", code="invalid_type", rejection="invalid_parameter")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise bad_request("'metadata' must be an object.", param="metadata", code="invalid_type", rejection="invalid_parameter")
    task_type = _text_field(metadata, "task_type") or (headers.get(TASK_TYPE_HEADER) or "").strip() or None
    user = body.get("user")
    return ChatCall(
        body=body,
        messages=messages,
        stream=stream,
        task_type=task_type,
        app=_text_field(metadata, "app") or (headers.get("x-loop-app") or "").strip() or None,
        user_id=_text_field(metadata, "user_id") or (str(user) if isinstance(user, str) and user else None),
        session_id=_text_field(metadata, "session_id"),
        prompt_version=_text_field(metadata, "prompt_version"),
    )
