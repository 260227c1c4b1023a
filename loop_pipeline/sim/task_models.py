"""The simulated frontier model: what it answers per task, and how it gets an answer wrong.

Each task holds the pool of examples traffic is drawn from and produces a realistic wrong output
for an example: a confused label, a dropped or shifted slot span, another dialogue's summary. It
also says how confusable an example is (errors concentrate there), which group an example belongs
to (the label mix drifts over groups), and what a user's half-way fix of a wrong output looks like.
"""

from __future__ import annotations

import json
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
    # How a repeated prompt may be retyped (see sim.traffic.paraphrase).
    paraphrase_kinds: tuple[str, ...] = ("case", "punctuation", "filler", "typo")
    # Labels the traffic treats as unknown intents (their queries are in oos_pool).
    held_out_labels: tuple[str, ...] = ()

    def wrong(self, example: Example, rng: np.random.Generator) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def confusability(self, example: Example) -> float:
        """How many plausible wrong answers an example has (>= 1); its errors scale with it."""
        return 1.0

    def drift_group(self, example: Example) -> str:
        """What the traffic mix drifts over (a label); one group means no drift."""
        return ""

    def partial_fix(self, example: Example, output: str, rng: np.random.Generator) -> str | None:
        """A user's edit that fixes ``output`` only part of the way: neither the gold nor ``output``;
        None when no such text exists."""
        return None

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
        held_out_labels: Sequence[str] = (),
    ):
        self.task_type = task_type
        self.instruction = instruction
        self.pool = pool
        self.oos_pool = oos_pool
        self.labels = list(labels)
        self.near = {k: list(v) for k, v in near.items()}
        self.p_near = p_near
        self.held_out_labels = tuple(sorted(held_out_labels))
        self.far = self.labels + [x for x in far_extra if x not in self.labels]
        self._label_tokens = [(label, set(tokens(label))) for label in self.labels]
        self._labels_by_token: dict[str, list[str]] = {}
        for label, label_words in self._label_tokens:
            for word in label_words:
                self._labels_by_token.setdefault(word, []).append(label)

    def confusability(self, example: Example) -> float:
        if example.gold in self.near:
            return 1.0 + len(self.near[example.gold])
        # An out-of-scope query: as confusable as the number of labels sharing a word with it.
        return 1.0 + len({label for word in set(tokens(example.text)) for label in self._labels_by_token.get(word, ())})

    def drift_group(self, example: Example) -> str:
        return example.gold

    def partial_fix(self, example: Example, output: str, rng: np.random.Generator) -> str | None:
        """A label nearer the gold (same domain / shared word) than ``output``, else ``output``
        with a formatting slip: still not the gold."""
        near = self.near.get(example.gold)
        if near is None:  # out of scope: labels sharing a word with the query look nearer
            words = set(tokens(example.text))
            near = [label for label, label_words in self._label_tokens if words & label_words]
        closer = [label for label in near if label not in (example.gold, output)]
        if closer:
            return closer[int(rng.integers(len(closer)))]
        return formatting_slip(output, avoid=example.gold)

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

    paraphrase_kinds = ("filler",)  # a retyped span would no longer be the gold's exact text

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

    def confusability(self, example: Example) -> float:
        return 1.0 + len(self.spans[example.ref])

    def drift_group(self, example: Example) -> str:
        return "+".join(slot for slot, _, _ in self.spans[example.ref])

    def partial_fix(self, example: Example, output: str, rng: np.random.Generator) -> str | None:
        """One wrong slot of several fixed; with one wrong slot, its span fixed but clipped."""
        gold, wrong = json.loads(example.gold), json.loads(output)
        differing = sorted(k for k in set(gold) | set(wrong) if gold.get(k) != wrong.get(k))
        if not differing:
            return None
        if len(differing) >= 2:
            key = differing[int(rng.integers(len(differing)))]
            fixed = dict(wrong)
            if key in gold:
                fixed[key] = gold[key]
            else:
                del fixed[key]
            return json_compact(fixed, sort_keys=True)
        key = differing[0]
        value = gold.get(key, "")
        for clipped in (value[:-1].rstrip(), value[1:].lstrip()):
            if clipped and clipped != wrong.get(key):
                return json_compact({**wrong, key: clipped}, sort_keys=True)
        return None


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

    def confusability(self, example: Example) -> float:
        return 1.0 + len(example.text.split()) / 100.0  # long dialogues are harder to summarise

    def partial_fix(self, example: Example, output: str, rng: np.random.Generator) -> str | None:
        """The gold summary cut after half of it or more: the user stopped fixing part of the way."""
        words = example.gold.split()
        if len(words) < 3:
            return None
        keep = int(rng.integers((len(words) + 1) // 2, len(words)))
        for size in (keep, keep + 1, keep - 1):
            text = " ".join(words[:size])
            if 0 < size < len(words) and text != output:
                return text
        return None

    def hallucination_source(self, rng: np.random.Generator) -> str:
        return "llm" if rng.random() < 0.8 else "code"


def formatting_slip(text: str, *, avoid: str) -> str:
    """``text`` with a small surface change (spaces for underscores, a capital, a full stop), other than ``avoid``."""
    for changed in (text.replace("_", " "), text[:1].upper() + text[1:], text + "."):
        if changed not in (text, avoid):
            return changed
    return text + ".."
