"""Which example each call sends: the pools in shuffled order, a label mix drifting over the days,
popular prompts sent again (some lightly paraphrased), and out-of-scope queries.

Every call first takes the next example of its pool exactly as the first simulator did (a shuffled
cycle on the traffic stream), so the traffic stream, and with it call times and users, stay aligned
whatever the mess rates; drift and repeats then replace that pick from their own streams.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loop_pipeline.sim.config import SimulationConfig
from loop_pipeline.sim.streams import Streams
from loop_pipeline.sim.task_models import Example, Task

__all__ = ["IN_SCOPE", "OUT_OF_SCOPE_POOL", "Pick", "Traffic", "TrafficDay", "paraphrase"]

IN_SCOPE, OUT_OF_SCOPE_POOL = 0, 1  # which pool an example comes from
_POPULAR_PROMPTS = 20  # size of the set of prompts users send again and again
_ZIPF_EXPONENT = 1.0
_FILLERS_BEFORE = ("please ", "hey, ", "hi, ", "ok so ")
_FILLERS_AFTER = (" please", " thanks", " pls", "??")
_TRAILING_PUNCTUATION = "?.!"


@dataclass(frozen=True)
class Pick:
    """The example a call sends, the pool it comes from, and the text the user typed."""

    example: Example
    pool: int  # IN_SCOPE or OUT_OF_SCOPE_POOL
    text: str
    repeat: str | None  # None, "exact" or "paraphrase"


@dataclass
class TrafficDay:
    """Per-call draws of one day from the drift, repeat and paraphrase streams."""

    group: np.ndarray | None  # drifting label group of each in-scope call
    repeat: np.ndarray | None  # the call re-sends a popular prompt
    popular_rank: list[np.ndarray] | None  # per pool: which popular prompt a repeat re-sends
    paraphrased: np.ndarray | None


class _Cycler:
    """Indices of a pool in random order, without replacement until the pool is used up, then again."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size, self.rng = size, rng
        self.order: list[int] = []
        self.pos = 0

    def next(self) -> int:
        if self.pos >= len(self.order):
            self.order = self.rng.permutation(self.size).tolist()
            self.pos = 0
        self.pos += 1
        return self.order[self.pos - 1]


class Traffic:
    """Chooses the example of every call; ``expected_shares`` says how often each one will be sent."""

    def __init__(self, task: Task, config: SimulationConfig, streams: Streams):
        self.task, self.config, self.streams = task, config, streams
        self.oos_rate = config.out_of_scope_rate if task.oos_pool else 0.0
        self.in_scope = _Cycler(len(task.pool), streams.traffic)
        self.out_of_scope = _Cycler(len(task.oos_pool), streams.traffic) if task.oos_pool else None
        self._init_drift()
        self._init_repeats()

    def _init_drift(self) -> None:
        """Label groups and the two random mixes the in-scope traffic moves between."""
        members: dict[str, list[int]] = {}
        for index, example in enumerate(self.task.pool):
            members.setdefault(self.task.drift_group(example), []).append(index)
        self.groups = [members[key] for key in sorted(members)]
        self.drifts = self.config.label_drift > 0 and len(self.groups) > 1
        sizes = np.array([len(group) for group in self.groups], dtype=float)
        self.base_mix = sizes / sizes.sum()  # the mix of shuffled cycling: each group by its size
        if self.drifts:
            rng = self.streams.drift
            ones = np.ones(len(self.groups))
            self.first_mix, self.last_mix = rng.dirichlet(ones), rng.dirichlet(ones)
            self.group_cyclers = [_Cycler(len(group), rng) for group in self.groups]

    def _init_repeats(self) -> None:
        """Each pool's popular prompts, drawn once per seed, with Zipf-like popularity: an in-scope
        call may re-send a popular in-scope prompt, an out-of-scope call a popular out-of-scope one."""
        self.popular: list[np.ndarray] = [np.zeros(0, dtype=int), np.zeros(0, dtype=int)]
        self.popularity: list[np.ndarray] = [np.zeros(0), np.zeros(0)]
        if self.config.repeat_rate == 0:
            return
        for pool, examples in ((IN_SCOPE, self.task.pool), (OUT_OF_SCOPE_POOL, self.task.oos_pool)):
            count = min(_POPULAR_PROMPTS, len(examples))
            if count:
                self.popular[pool] = self.streams.repeats.choice(len(examples), size=count, replace=False)
                popularity = 1.0 / np.arange(1, count + 1) ** _ZIPF_EXPONENT
                self.popularity[pool] = popularity / popularity.sum()

    def day_mix(self, day_index: int) -> np.ndarray:
        """Day ``day_index``'s sampling weights over the label groups (``base_mix`` without drift)."""
        return self._mix_at(day_index / (self.config.days - 1) if self.config.days > 1 else 0.0)

    def _mix_at(self, progress: float) -> np.ndarray:
        """The group mix ``progress`` (0..1) of the way through the run."""
        if not self.drifts:
            return self.base_mix
        moving = (1.0 - progress) * self.first_mix + progress * self.last_mix
        mix = (1.0 - self.config.label_drift) * self.base_mix + self.config.label_drift * moving
        return mix / mix.sum()

    def draw_day(self, day_index: int, n: int) -> TrafficDay:
        group = self.streams.drift.choice(len(self.groups), size=n, p=self.day_mix(day_index)) if self.drifts else None
        repeat = popular_rank = paraphrased = None
        if self.config.repeat_rate > 0:
            rng = self.streams.repeats
            repeat = rng.random(n) < self.config.repeat_rate
            popular_rank = [rng.choice(len(p), size=n, p=p) if len(p) else np.zeros(n, dtype=int)
                            for p in self.popularity]
            if self.config.paraphrase_rate > 0:
                paraphrased = self.streams.paraphrases.random(n) < self.config.paraphrase_rate
        return TrafficDay(group, repeat, popular_rank, paraphrased)

    def pick(self, day: TrafficDay, i: int, from_oos: bool) -> Pick:
        """Call ``i``'s example: a popular prompt again, else the next of its pool (or drifting group)."""
        pool = OUT_OF_SCOPE_POOL if from_oos and self.out_of_scope is not None else IN_SCOPE
        index = self.out_of_scope.next() if pool == OUT_OF_SCOPE_POOL else self.in_scope.next()  # type: ignore[union-attr]
        examples = self.task.oos_pool if pool == OUT_OF_SCOPE_POOL else self.task.pool
        if day.repeat is not None and day.popular_rank is not None and day.repeat[i]:
            example = examples[int(self.popular[pool][day.popular_rank[pool][i]])]
            if day.paraphrased is not None and day.paraphrased[i]:
                text = paraphrase(example.text, self.streams.paraphrases, self.task.paraphrase_kinds)
                return Pick(example, pool, text, "paraphrase")
            return Pick(example, pool, example.text, "exact")
        if pool == IN_SCOPE and day.group is not None:
            group = int(day.group[i])
            index = self.groups[group][self.group_cyclers[group].next()]
        return Pick(examples[index], pool, examples[index].text, None)

    def expected_shares(self) -> tuple[np.ndarray, np.ndarray]:
        """The share of all calls each in-scope and each out-of-scope example should receive."""
        # The days' mixes are linear in the run's progress: on average, the mix halfway through.
        group_mix = self._mix_at(0.5 if self.config.days > 1 else 0.0)
        in_scope = np.zeros(len(self.task.pool))
        for share, group in zip(group_mix, self.groups):
            in_scope[group] = share / len(group)
        oos_size = len(self.task.oos_pool)
        out_of_scope = np.full(oos_size, 1.0 / oos_size) if oos_size else np.zeros(0)
        shares = []
        for pool, (fresh, pool_share) in enumerate(((in_scope, 1.0 - self.oos_rate), (out_of_scope, self.oos_rate))):
            repeat = self.config.repeat_rate if len(self.popular[pool]) else 0.0
            mixed = (1.0 - repeat) * fresh
            np.add.at(mixed, self.popular[pool], repeat * self.popularity[pool])
            shares.append(pool_share * mixed)
        return shares[0], shares[1]


def paraphrase(text: str, rng: np.random.Generator, kinds: tuple[str, ...]) -> str:
    """``text`` lightly changed as people retype it: case, punctuation, a filler word, a typo."""
    count = 1 + int(len(kinds) > 1 and rng.random() < 0.4)
    changed = text
    for kind in rng.choice(len(kinds), size=count, replace=False):
        changed = _SURFACE_EDITS[kinds[int(kind)]](changed, rng)
    return changed if changed != text else text + _FILLERS_AFTER[0]


def _change_case(text: str, rng: np.random.Generator) -> str:
    lowered = text.lower()
    return lowered if lowered != text else text[:1].upper() + text[1:]


def _change_punctuation(text: str, rng: np.random.Generator) -> str:
    stripped = text.rstrip(_TRAILING_PUNCTUATION + " ")
    if stripped != text and stripped:
        return stripped
    return text + _TRAILING_PUNCTUATION[int(rng.integers(len(_TRAILING_PUNCTUATION)))]


def _add_filler(text: str, rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        return _FILLERS_BEFORE[int(rng.integers(len(_FILLERS_BEFORE)))] + text
    return text + _FILLERS_AFTER[int(rng.integers(len(_FILLERS_AFTER)))]


def _add_typo(text: str, rng: np.random.Generator) -> str:
    """Two neighbouring letters swapped, or one dropped, in a word of four letters or more."""
    words = text.split(" ")
    candidates = [i for i, word in enumerate(words) if len(word) >= 4 and word.isalpha()]
    if not candidates:
        return text
    index = candidates[int(rng.integers(len(candidates)))]
    word = words[index]
    at = int(rng.integers(1, len(word) - 2))
    swapped = word[:at] + word[at + 1] + word[at] + word[at + 2:]
    words[index] = swapped if swapped != word and rng.random() < 0.6 else word[:at] + word[at + 1:]
    return " ".join(words)


_SURFACE_EDITS = {"case": _change_case, "punctuation": _change_punctuation, "filler": _add_filler,
                  "typo": _add_typo}
