"""Agreement of an answer with an expected text (the frontier's output, or a holdout row's curated
reference: the caller says which), per task kind: normalized exact match (classification), equal
tag / slot sets (extraction, tagging), ROUGE-L F1 over a threshold (summarization)."""

from __future__ import annotations

import json
import re
from typing import Any


def normalize_label(text: str | None) -> str:
    return re.sub(r"[^a-z0-9_]+", " ", (text or "").lower()).strip()


def _normalized_value(value: Any) -> str:
    return normalize_label(value if isinstance(value, str) else json.dumps(value, sort_keys=True))


def tag_set(text: str | None) -> frozenset | None:
    """A JSON object as a set of (key, value) pairs, a JSON list as a set of values; None when the
    text is not one of those (an answer that is not JSON never agrees)."""
    try:
        value = json.loads(text or "")
    except json.JSONDecodeError:
        return None
    if isinstance(value, dict):
        return frozenset((normalize_label(str(k)), _normalized_value(v)) for k, v in value.items())
    if isinstance(value, list):
        return frozenset(_normalized_value(v) for v in value)
    return None


def rouge_l_f1(a: str | None, b: str | None) -> float:
    x, y = (a or "").lower().split(), (b or "").lower().split()
    if not x or not y:
        return float(x == y)
    previous = [0] * (len(y) + 1)
    for token in x:
        current = [0]
        for j, other in enumerate(y):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(x), lcs / len(y)
    return 2 * precision * recall / (precision + recall)


def agrees(kind: str, answer: str | None, reference: str | None, summary_threshold: float = 0.5) -> bool:
    if kind in ("extraction", "tagging"):
        mine, theirs = tag_set(answer), tag_set(reference)
        return mine is not None and mine == theirs
    if kind == "summarization":
        return rouge_l_f1(answer, reference) >= summary_threshold
    return normalize_label(answer) == normalize_label(reference)
