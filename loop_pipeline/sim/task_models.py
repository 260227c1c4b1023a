"""The simulated frontier model: what it answers per task, and how it gets an answer wrong.

Each task holds the pool of examples traffic is drawn from and produces a realistic wrong output
for an example: a confused label, a dropped or shifted slot span, another dialogue's summary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from loop_pipeline.sim.text import json_compact, tokens

OUT_OF_SCOPE = "out_of_scope"
"""Gold label of CLINC150's out-of-scope queries (the dataset calls them ``oos``)."""

RESTAURANT8K_SLOTS = ("date", "first_name", "last_name", "people", "time")

# An out-of-scope query is mistaken for an intent sharing a word with it this often.
_P_PLAUSIBLE_OOS_CONFUSION = 0.8
_SPAN_SHIFT_TRIES = 8

Span = tuple[str, int, int]  # slot, start, end (character offsets into the text)


@dataclass(frozen=True)
class Example:
    text: str
    gold: str
    ref: int  # index into the task's own per-example data


class Task:
    """A kind of work the frontier does; ``wrong`` returns an output other than the gold one."""

    task_type: str
    instruction: str
    pool: list[Example]
    oos_pool: list[Example]

    def wrong(self, example: Example, rng: np.random.Generator) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def hallucination_source(self, rng: np.random.Generator) -> str:
        """Who flags a wrong output: a code check or an LLM judge."""
        return "code" if rng.random() < 0.5 else "llm"


class ClassificationTask(Task):
    """One label per input. Errors prefer ``near`` labels (same domain / shared word)."""

    def __init__(
        self,
        *,
        task_type: str,
        instruction: str,
        pool: list[Example],
        oos_pool: list[Example],
        labels: Sequence[str],
        near: Mapping[str, Sequence[str]],
        p_near: float,
        far_extra: Sequence[str] = (),
    ):
        self.task_type = task_type
        self.instruction = instruction
        self.pool = pool
        self.oos_pool = oos_pool
        self.labels = list(labels)
        self.near = {k: list(v) for k, v in near.items()}
        self.p_near = p_near
        self.far = self.labels + [x for x in far_extra if x not in self.labels]
        self._label_tokens = [(label, set(tokens(label))) for label in self.labels]

    def wrong(self, example: Example, rng: np.random.Generator) -> str:
        gold = example.gold
        if gold == OUT_OF_SCOPE and gold not in self.labels:
            return self._plausible_label(example.text, rng)
        near = self.near.get(gold, ())
        if near and rng.random() < self.p_near:
            return near[int(rng.integers(len(near)))]
        while True:  # at least two distinct labels exist (checked when the task is built)
            pick = self.far[int(rng.integers(len(self.far)))]
            if pick != gold:
                return pick

    def _plausible_label(self, text: str, rng: np.random.Generator) -> str:
        """An in-scope label for an out-of-scope query: one sharing most words with it, if any."""
        words = set(tokens(text))
        best, best_overlap = [], 0
        for label, label_words in self._label_tokens:
            overlap = len(words & label_words)
            if overlap > best_overlap:
                best, best_overlap = [label], overlap
            elif overlap == best_overlap and overlap > 0:
                best.append(label)
        if best and rng.random() < _P_PLAUSIBLE_OOS_CONFUSION:
            return best[int(rng.integers(len(best)))]
        return self.labels[int(rng.integers(len(self.labels)))]


class ExtractionTask(Task):
    """restaurant8k: output is a compact JSON object slot -> span text."""

    def __init__(self, *, task_type: str, pool: list[Example], spans: list[tuple[Span, ...]]):
        self.task_type = task_type
        self.instruction = (
            "You read messages sent to a restaurant booking assistant. Extract the booking details "
            f"({', '.join(RESTAURANT8K_SLOTS)}) the message states. Answer with a JSON object that maps "
            "each slot found to the exact text span from the message, and {} when it states none."
        )
        self.pool = pool
        self.oos_pool = []
        self.spans = spans

    def wrong(self, example: Example, rng: np.random.Generator) -> str:
        text, gold = example.text, example.gold
        spans = self.spans[example.ref]
        if spans:
            modes = ("drop", "shift") if rng.random() < 0.5 else ("shift", "drop")
            for mode in modes:
                values = _dropped_slot(text, spans, rng) if mode == "drop" else _shifted_span(text, spans, rng)
                if values is None:
                    continue
                out = json_compact(values, sort_keys=True)
                if out != gold:
                    return out
        return _false_positive(text, gold, rng)


def _dropped_slot(text: str, spans: Sequence[Span], rng: np.random.Generator) -> dict[str, str]:
    """The gold slots less one."""
    values = {slot: text[a:b] for slot, a, b in spans}
    del values[spans[int(rng.integers(len(spans)))][0]]
    return values


def _shifted_span(text: str, spans: Sequence[Span], rng: np.random.Generator) -> dict[str, str] | None:
    """The gold slots with one span's start or end moved by 1-3 characters; None if no move fits."""
    values = {slot: text[a:b] for slot, a, b in spans}
    slot, a, b = spans[int(rng.integers(len(spans)))]
    for _ in range(_SPAN_SHIFT_TRIES):
        delta = int(rng.integers(1, 4)) * (1 if rng.random() < 0.5 else -1)
        a2, b2 = (a + delta, b) if rng.random() < 0.5 else (a, b + delta)
        if 0 <= a2 < b2 <= len(text) and text[a2:b2].strip() and text[a2:b2] != text[a:b]:
            values[slot] = text[a2:b2]
            return values
    return None


def _false_positive(text: str, gold: str, rng: np.random.Generator) -> str:
    """Nothing to drop or shift: some word of the message taken for a slot."""
    words = re.findall(r"\w+", text) or [text]
    word = words[int(rng.integers(len(words)))]
    slot = "people" if word.isdigit() else RESTAURANT8K_SLOTS[int(rng.integers(len(RESTAURANT8K_SLOTS)))]
    out = json_compact({slot: word}, sort_keys=True)
    if out == gold:  # cannot happen for an empty gold; kept for safety
        out = json_compact({}, sort_keys=True)
    return out


class SummarizationTask(Task):
    """dialogsum: output is the reference summary; errors are another dialogue's summary or a cut one."""

    def __init__(self, *, task_type: str, pool: list[Example]):
        self.task_type = task_type
        self.instruction = (
            "Summarize the dialogue in one to three sentences. Refer to the speakers as #Person1# and "
            "#Person2#, as the dialogue does."
        )
        self.pool = pool
        self.oos_pool = []
        self.summaries = [example.gold for example in pool]

    def wrong(self, example: Example, rng: np.random.Generator) -> str:
        gold = example.gold
        n = len(self.summaries)
        words = gold.split()
        if n > 1 and (rng.random() < 0.5 or len(words) < 2):
            other = self.summaries[(example.ref + 1 + int(rng.integers(n - 1))) % n]
            if other != gold:
                return other
        if len(words) >= 2:
            keep = min(len(words) - 1, max(1, int(len(words) * rng.uniform(0.3, 0.7))))
            out = " ".join(words[:keep])
            if out != gold:
                return out
        return gold[: len(gold) // 2] if len(gold) > 1 else gold + " ..."

    def hallucination_source(self, rng: np.random.Generator) -> str:
        return "llm" if rng.random() < 0.8 else "code"
