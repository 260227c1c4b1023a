"""JSON parsing that a hostile record cannot crash: nesting is bounded before anything recurses.

Python's ``json.loads`` recurses once per level and raises ``RecursionError`` near 1,000 levels,
and polars' JSON path reader silently gives null past about 127. A record nesting deeper than
:data:`MAX_DEPTH` is therefore refused up front (``too_deeply_nested``) by every reader, so no
reader ever sees it and no field of it is silently lost.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Levels of arrays / objects a record may nest (the record itself is level 1).
MAX_DEPTH = 100
TOO_DEEP = "too_deeply_nested"

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")
# A \uD800-\uDFFF escape: json.loads keeps a lone one as a lone surrogate, which no UTF-8 text
# (a polars column, a Parquet file) can hold.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class TooDeeplyNested(ValueError):
    """A JSON text nests arrays / objects deeper than :data:`MAX_DEPTH`."""

    def __init__(self, limit: int = MAX_DEPTH):
        super().__init__(f"JSON nests arrays / objects more than {limit} levels deep")
        self.msg = str(self)


def nesting_over(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether ``text`` nests arrays / objects (outside strings) more than ``limit`` levels deep.

    Cheap for ordinary records (a bracket count decides); otherwise the strings are removed and
    innermost bracket pairs are peeled one level a pass, at most ``limit + 1`` passes.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    for _ in range(limit):
        peeled = _INNERMOST.sub("", brackets)
        if peeled == brackets:
            return False  # nothing left to peel: at most this many levels
        brackets = peeled
    return bool(brackets) and _INNERMOST.search(brackets) is not None


def loads(text: str | bytes, limit: int = MAX_DEPTH) -> Any:
    """``json.loads`` that raises :class:`TooDeeplyNested` (a ``ValueError``) instead of recursing
    past ``limit`` levels; any other invalid text raises ``json.JSONDecodeError`` as usual."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8", errors="replace")
    if nesting_over(text, limit):
        raise TooDeeplyNested(limit)
    try:
        value = json.loads(text)
    except RecursionError:
        raise TooDeeplyNested(limit) from None
    return _without_lone_surrogates(value) if _SURROGATE_ESCAPE.search(text) else value


def _without_lone_surrogates(value: Any) -> Any:
    """Lone surrogates (from escapes like ``"\\ud800"``) as U+FFFD, as polars' decoder reads them."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_without_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_without_lone_surrogates(key): _without_lone_surrogates(item) for key, item in value.items()}
    return value


def error_reason(exc: ValueError) -> str:
    """The quarantine reason for a text ``loads`` refused."""
    return TOO_DEEP if isinstance(exc, TooDeeplyNested) else "malformed_json"


def error_detail(exc: ValueError) -> str:
    message = getattr(exc, "msg", str(exc))
    position = getattr(exc, "pos", None)
    return f"{message} at character {position}" if position is not None else message
