"""Text helpers shared by the datasets, the simulated frontier model and the writer."""

from __future__ import annotations

import json
import math
import re
from typing import Any

_STOPWORDS = frozenset(
    "a about am an and any are as at be by can could do does for from get give have how i i'm im in "
    "is it its me my need of on or please s the this that to want what whats when where which who "
    "will with would you your".split()
)


def tokens(text: str) -> list[str]:
    """Lower-case word tokens without stop words; splits snake_case, kebab-case and camelCase."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    return [t for t in re.findall(r"[a-z0-9]+", spaced.lower()) if t not in _STOPWORDS and len(t) > 1]


def json_compact(value: Any, *, sort_keys: bool = False) -> str:
    """One-line JSON that keeps non-ASCII text as it is (the landing files' encoding)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)


def estimate_tokens(text: str) -> int:
    """Roughly four characters a token: enough for prices and latencies of simulated calls."""
    return math.ceil(len(text) / 4)
