"""Messages and outputs in every dialect the formats use (OpenAI, OTel parts, Gemini, LangChain,
OpenInference, Responses API) rendered as canonical ``[{role, content}]`` and output text."""

from __future__ import annotations

import re
from typing import Any, Mapping

from loop_pipeline.core.ingest.formats.values import MappingError, is_json, json_text, json_type, parse_json, text

ROLE_ALIASES = {
    "model": "assistant",
    "ai": "assistant",
    "bot": "assistant",
    "chatbot": "assistant",
    "human": "user",
    "function": "tool",
    "ipython": "tool",
}
# Part types that are not the answer: the model's reasoning, and tools the provider ran itself.
DROPPED_PART_TYPES = frozenset(
    {"reasoning", "thinking", "redacted_thinking", "server_tool_call", "server_tool_call_response"}
)
TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
TOOL_CALL_TYPES = frozenset({"tool_call", "function_call", "function", "tool_use"})
TOOL_RESULT_TYPES = frozenset({"tool_call_response", "function_call_output", "function_response", "tool_result"})
_TRANSCRIPT = re.compile(r"^(system|developer|user|assistant|tool|human|ai): ", re.MULTILINE)


def normalize_role(role: Any) -> str | None:
    if role is None:
        return None
    if not isinstance(role, str):
        raise MappingError("wrong_type", f"message role: expected a string, got {json_type(role)}")
    lowered = role.strip().lower()
    return ROLE_ALIASES.get(lowered, lowered)


def _arguments(value: Any) -> Any:
    if isinstance(value, str):
        parsed = parse_json(value)
        return parsed if is_json(parsed) else value
    return value


def render_tool_call(call: Mapping[str, Any]) -> str:
    """One tool call as ``{"name": ..., "arguments": ...}``; ids are dropped (they are random)."""
    function = call.get("function") if isinstance(call.get("function"), Mapping) else None
    gemini = call.get("function_call") if isinstance(call.get("function_call"), Mapping) else None
    name = (
        call.get("name")
        or (function or {}).get("name")
        or (gemini or {}).get("name")
        or call.get("tool_call.function.name")
    )
    if "arguments" in call:
        arguments = call["arguments"]
    elif function is not None and "arguments" in function:
        arguments = function["arguments"]
    elif gemini is not None:
        arguments = gemini.get("args", gemini.get("arguments"))
    elif "input" in call:
        arguments = call["input"]
    else:
        arguments = call.get("tool_call.function.arguments")
    return json_text({"name": name, "arguments": _arguments(arguments)})


def _value_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return text(value, "value") if not isinstance(value, (dict, list)) else json_text(value)


def render_content(content: Any) -> str:
    """Message content (text, a list of parts, a part) as one text; tool calls as JSON lines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (bool, int, float)):
        return _value_text(content)
    parts = [content] if isinstance(content, dict) else content
    pieces: list[str] = []
    for part in parts:
        if isinstance(part, str):
            pieces.append(part)
            continue
        if not isinstance(part, dict):
            pieces.append(_value_text(part))
            continue
        kind = str(part.get("type") or part.get("message_content.type") or "").lower()
        if kind in DROPPED_PART_TYPES:
            continue
        if kind in TOOL_CALL_TYPES or (not kind and isinstance(part.get("function_call"), Mapping)):
            pieces.append(render_tool_call(part))
            continue
        if kind in TOOL_RESULT_TYPES or (not kind and "function_response" in part):
            result = next((part[k] for k in ("response", "output", "function_response", "content", "result") if k in part), None)
            pieces.append(_value_text(result))
            continue
        for key in ("content", "text", "message_content.text"):
            if isinstance(part.get(key), str):
                pieces.append(part[key])
                break
        else:
            if isinstance(part.get("content"), (list, dict)):  # a message item (OpenAI Responses output)
                pieces.append(render_content(part["content"]))
                continue
            if kind in TEXT_PART_TYPES:
                pieces.append("")
            elif kind:
                pieces.append(f"[{kind}]")  # images, audio, files: not text
            else:
                pieces.append(json_text(part))
    return "\n".join(pieces)


def _tool_calls(item: Mapping[str, Any]) -> list[Any]:
    calls = item.get("tool_calls") or item.get("message.tool_calls")
    if not calls and isinstance(item.get("additional_kwargs"), Mapping):
        calls = item["additional_kwargs"].get("tool_calls")
    if not calls and isinstance(item.get("function_call"), Mapping) and "role" in item:
        calls = [item["function_call"]]
    return list(calls) if isinstance(calls, list) else []


def message_item(item: Mapping[str, Any], name: str, position: int) -> dict[str, Any]:
    """One message object of any dialect (OpenAI, OTel parts, Gemini, LangChain, OpenInference,
    Responses API items) as ``{role, content}``; tool calls are rendered into the content."""
    kind = str(item.get("type") or "").lower()
    role = item.get("role", item.get("message.role"))
    if role is None and kind in ("human", "ai", "system", "tool"):
        role = kind
    if kind in ("function_call",) and role is None:  # OpenAI Responses API input item
        return {"role": "assistant", "content": render_tool_call(item)}
    if kind in ("function_call_output",) and role is None:
        return {"role": "tool", "content": _value_text(item.get("output"))}
    if "parts" in item:
        body: Any = item["parts"]
    elif "content" in item:
        body = item["content"]
    elif "message.content" in item or "message.contents" in item:
        body = item.get("message.contents") if item.get("message.contents") is not None else item.get("message.content")
    elif "text" in item:
        body = item["text"]
    else:
        body = None
    calls = _tool_calls(item)
    if body is None and not calls:
        return {"role": normalize_role(role), "content": None}
    pieces = [render_content(body)] if body is not None else []
    pieces += [render_tool_call(call) for call in calls if isinstance(call, Mapping)]
    return {"role": normalize_role(role), "content": "\n".join(piece for piece in pieces if piece)}


def _transcript(value: str) -> list[dict[str, Any]] | None:
    """``"system: ...\\nuser: ..."`` (how several SDKs render a chat as text) to messages."""
    starts = list(_TRANSCRIPT.finditer(value))
    if not starts or starts[0].start() != 0:
        return None
    messages = []
    for index, match in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(value)
        messages.append({"role": normalize_role(match.group(1)), "content": value[match.end() : end].rstrip("\n")})
    return messages


def messages_from(value: Any, name: str) -> list[dict[str, Any]] | None:
    """The input of a call, in any shape the formats use, as ``[{role, content}]``."""
    if value is None:
        return None
    if isinstance(value, str):
        parsed = parse_json(value)
        if isinstance(parsed, (list, dict)):
            return messages_from(parsed, name)
        return _transcript(value) or [{"role": "user", "content": value}]
    if isinstance(value, dict):
        if not value:
            return None
        system: list[dict[str, Any]] = []
        config = value.get("config") if isinstance(value.get("config"), Mapping) else {}
        for instruction in (value.get("system_instruction"), config.get("system_instruction"), value.get("instructions"), value.get("system")):
            if isinstance(instruction, (str, list, dict)) and instruction:
                system.append({"role": "system", "content": render_content(instruction)})
        for key in ("messages", "contents", "input"):
            if key in value and value[key] is not None:
                inner = messages_from(value[key], f"{name}.{key}")
                return system + (inner or [])
        if "prompt" in value:
            return system + [{"role": "user", "content": _value_text(value["prompt"])}]
        if isinstance(value.get("args"), list) and value["args"]:
            return system + [{"role": "user", "content": _value_text(arg)} for arg in value["args"]]
        if any(k in value for k in ("role", "message.role", "parts")):
            return system + [message_item(value, name, 0)]
        return system + [{"role": "user", "content": json_text(value)}]
    if isinstance(value, list):
        messages: list[dict[str, Any]] = []
        for position, item in enumerate(value):
            if isinstance(item, str):
                messages.append({"role": "user", "content": item})
            elif isinstance(item, dict):
                messages.append(message_item(item, name, position))
            else:
                raise MappingError("wrong_type", f"{name}: item {position}: expected an object, got {json_type(item)}")
        return messages
    raise MappingError("wrong_type", f"{name}: expected messages (an array or text), got {json_type(value)}")


def _first(items: Any) -> Any:
    return items[0] if isinstance(items, list) and items else None


def _output_from_structure(value: Any) -> str | None:
    """The answer inside a provider response, a message or a message list; None if unrecognized."""
    if isinstance(value, list):
        first = _first(value)
        if isinstance(first, dict):
            return _output_from_structure(first)
        if isinstance(first, str):
            return first
        return None
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("choices"), list):  # OpenAI chat.completion / completion
        choice = _first(value["choices"])
        if not isinstance(choice, dict):
            return None
        if isinstance(choice.get("message"), dict):
            return message_item(choice["message"], "output", 0)["content"]
        if "text" in choice:
            return _value_text(choice["text"])
        return None
    if isinstance(value.get("candidates"), list):  # Gemini GenerateContentResponse
        candidate = _first(value["candidates"])
        if isinstance(candidate, dict) and isinstance(candidate.get("content"), dict):
            return message_item(candidate["content"], "output", 0)["content"]
        return None
    if value.get("object") == "response" and isinstance(value.get("output"), list):  # OpenAI Responses
        pieces = [render_content(item) for item in value["output"] if isinstance(item, dict) and item.get("type") != "reasoning"]
        return "\n".join(p for p in pieces if p)
    if isinstance(value.get("content"), dict) and "parts" in value["content"]:  # Gemini content
        return message_item(value["content"], "output", 0)["content"]
    if any(k in value for k in ("role", "message.role", "parts")) or (
        "content" in value and ("additional_kwargs" in value or "tool_calls" in value)
    ):
        return message_item(value, "output", 0)["content"]
    if isinstance(value.get("text"), str):
        return value["text"]
    if isinstance(value.get("content"), str):
        return value["content"]
    if isinstance(value.get("messages"), list) and value["messages"]:
        return _output_from_structure(value["messages"][-1])
    return None


def output_from(value: Any, name: str) -> str | None:
    """The output of a call as text: provider responses and message objects are unwrapped."""
    if value is None:
        return None
    if isinstance(value, str):
        parsed = parse_json(value)
        if isinstance(parsed, (dict, list)):
            extracted = _output_from_structure(parsed)
            if extracted is not None:
                return extracted
        return value
    if isinstance(value, (dict, list)):
        extracted = _output_from_structure(value)
        return extracted if extracted is not None else json_text(value)
    return text(value, name)
