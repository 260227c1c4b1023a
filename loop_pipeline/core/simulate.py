"""Turn a labeled dataset into realistic production traffic: native JSONL traces and feedback events.

Anyone can run the whole loop without production data: ``simulate`` plays a frontier model answering
real user utterances (CLINC150 intents, a labeled CSV/JSONL, restaurant8k slots, dialogsum summaries),
makes it wrong at a configured rate with realistic confusions, and plays users and reviewers reacting
to the answers: accepting, editing, rejecting, regenerating, thumbs, copies, hallucination flags from
checks and judges, and human review labels that arrive days later.

Output (the native ingest reads it; a contract)::

    out_dir/traces/YYYY-MM-DD/traces.jsonl      one file per day of traffic, rows in timestamp order
    out_dir/feedback/YYYY-MM-DD/feedback.jsonl  feedback in the folder of the day it ARRIVES

The gold answer is written only to ``metadata.gold`` of a trace (never into its messages), with the
simulator's own bookkeeping under ``metadata.sim``. Costs are not written: ingest computes them from
configs/prices.yaml. Everything is decided by one seed: the same configuration writes byte-identical
files. Files are written atomically (a temporary file in the same folder, then ``os.replace``);
files of a previous run for days this run does not produce are left alone.

Pure logic: numpy, polars and the standard library (no dagster, no torch).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import polars as pl
import yaml

from loop_pipeline.schemas import FEEDBACK_KINDS, FEEDBACK_SOURCES, MESSAGE_ROLES
from loop_pipeline.settings import ConfigError, load_config

__all__ = [
    "DATASETS",
    "DEFAULT_TASK_TYPES",
    "OUT_OF_SCOPE",
    "SimulationConfig",
    "SimulationSummary",
    "bundled_clinc150_dir",
    "simulate",
]

DATASETS = ("clinc150", "labeled", "restaurant8k", "dialogsum")
DEFAULT_TASK_TYPES = {
    "clinc150": "intent",
    "labeled": "classification",
    "restaurant8k": "slot_extraction",
    "dialogsum": "summarization",
}
OUT_OF_SCOPE = "out_of_scope"
"""Gold label of CLINC150's out-of-scope queries (the dataset calls them ``oos``)."""

RESTAURANT8K_SLOTS = ("date", "first_name", "last_name", "people", "time")

_MICROS_PER_SECOND = 1_000_000
_MICROS_PER_HOUR = 3600 * _MICROS_PER_SECOND
_MICROS_PER_DAY = 24 * _MICROS_PER_HOUR
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

# Share of the day's traffic per UTC hour: quiet nights, busy working hours.
_HOUR_WEIGHTS = np.array(
    [0.20, 0.15, 0.10, 0.10, 0.10, 0.15, 0.30, 0.60, 1.00, 1.30, 1.40, 1.40,
     1.30, 1.40, 1.40, 1.30, 1.20, 1.00, 0.80, 0.70, 0.60, 0.50, 0.40, 0.30]
)
_HOUR_WEIGHTS = _HOUR_WEIGHTS / _HOUR_WEIGHTS.sum()

# How users react to a correct output: P(accept), P(no action), P(regenerate); the rest rejects.
_CORRECT_REACTIONS = {"rushed": (0.85, 0.11, 0.025), "careful": (0.72, 0.20, 0.05)}
# How users who do not accept a wrong output react: P(edit), P(reject), P(regenerate); rest: nothing.
_WRONG_REACTIONS = (0.50, 0.25, 0.15)
_P_COPY_AFTER_ACCEPT = 0.3
_P_THUMBS_UP_AFTER_ACCEPT = 0.12
_P_THUMBS_DOWN = {"edited": 0.2, "rejected": 0.4, "regenerated": 0.1, None: 0.05}
_SESSION_GAP_US = 30 * 60 * _MICROS_PER_SECOND
_N_REVIEWERS = 5
# Confusion mix of the simulated frontier model.
_P_SAME_DOMAIN_CONFUSION = 0.7  # CLINC150: another intent of the same domain
_P_SIMILAR_LABEL_CONFUSION = 0.8  # labeled data: a label sharing a word with the gold label
_P_PLAUSIBLE_OOS_CONFUSION = 0.8  # out-of-scope query: an intent sharing a word with the query
# Latency model: base + per token, times log-normal noise.
_LATENCY_BASE_MS = 350.0
_LATENCY_PER_INPUT_TOKEN_MS = 0.02
_LATENCY_PER_OUTPUT_TOKEN_MS = 15.0
_LATENCY_NOISE_SIGMA = 0.25

_STOPWORDS = frozenset(
    "a about am an and any are as at be by can could do does for from get give have how i i'm im in "
    "is it its me my need of on or please s the this that to want what whats when where which who "
    "will with would you your".split()
)

_SIMULATED_KINDS = ("accepted", "edited", "rejected", "regenerated", "thumbs", "human_label",
                    "hallucination", "copied")
assert set(_SIMULATED_KINDS) <= set(FEEDBACK_KINDS)
assert {"user", "human_reviewer", "code", "llm"} <= set(FEEDBACK_SOURCES)
assert {"system", "user"} <= set(MESSAGE_ROLES)


def bundled_clinc150_dir() -> Path:
    """The CLINC150 copy shipped with the package (``loop_pipeline/data/clinc150``)."""
    return Path(__file__).resolve().parent.parent / "data" / "clinc150"


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------

_RATE_FIELDS = (
    "out_of_scope_rate",
    "frontier_error_rate",
    "rushed_user_rate",
    "rushed_accept_wrong_rate",
    "careful_accept_wrong_rate",
    "human_review_rate",
    "hallucination_flag_rate",
)


def _fail(name: str, problem: str, value: Any) -> ConfigError:
    return ConfigError(f"simulation config: {name} {problem}, got {value!r}")


@dataclass
class SimulationConfig:
    """What traffic to simulate. Validated on construction; errors name the field."""

    dataset: str = "clinc150"
    input_path: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    task_type: str | None = None
    domains: list[str] | None = None
    days: int = 7
    start_date: str = "2026-11-01"
    traces_per_day: int = 1000
    out_of_scope_rate: float = 0.1
    frontier_model: str = "gpt-4o-2024-08-06"
    provider: str = "openai"
    app: str = "support-bot"
    frontier_error_rate: float = 0.05
    rushed_user_rate: float = 0.3
    rushed_accept_wrong_rate: float = 0.6
    careful_accept_wrong_rate: float = 0.05
    human_review_rate: float = 0.02
    hallucination_flag_rate: float = 0.3
    review_delay_days: tuple[int, int] = (1, 3)
    n_users: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        self._validate()

    # ---- loading ---------------------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> "SimulationConfig":
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"simulation config: expected a mapping, got {type(raw).__name__}")
        known = cls.field_names()
        unknown = sorted(str(key) for key in raw if key not in known)
        if unknown:
            raise ConfigError(
                f"simulation config: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(known)}"
            )
        return cls(**dict(raw))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> "SimulationConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"simulation config file not found: {path}")
        try:
            with open(path, encoding="utf-8") as handle:
                loaded = yaml.safe_load(handle)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
        try:
            return cls.from_mapping(loaded)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    @classmethod
    def from_config(cls, overrides: Mapping[str, Any] | None = None) -> "SimulationConfig":
        """``configs/simulate.yaml`` (see :func:`loop_pipeline.settings.config_dir`) with overrides.

        Overrides whose value is None count as not given, so a CLI can pass all its options.
        """
        merged = dict(load_config("simulate"))
        merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_mapping(merged)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["review_delay_days"] = list(self.review_delay_days)
        out["domains"] = list(self.domains) if self.domains is not None else None
        return out

    # ---- derived ---------------------------------------------------------------------------------

    @property
    def resolved_task_type(self) -> str:
        return self.task_type or DEFAULT_TASK_TYPES[self.dataset]

    @property
    def start(self) -> dt.date:
        return dt.date.fromisoformat(self.start_date)

    # ---- validation ------------------------------------------------------------------------------

    def _validate(self) -> None:
        if not isinstance(self.dataset, str) or self.dataset not in DATASETS:
            raise _fail("dataset", f"must be one of {', '.join(DATASETS)}", self.dataset)

        if isinstance(self.input_path, os.PathLike):
            self.input_path = os.fspath(self.input_path)
        if self.input_path is not None and (not isinstance(self.input_path, str) or not self.input_path):
            raise _fail("input_path", "must be a non-empty path", self.input_path)
        if self.input_path is None and self.dataset != "clinc150":
            raise ConfigError(
                f"simulation config: input_path is required for dataset {self.dataset!r} "
                "(only clinc150 ships with the package)"
            )

        for name in ("text_column", "label_column", "frontier_model", "provider", "app"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise _fail(name, "must be a non-empty string", value)
        if self.task_type is not None and (not isinstance(self.task_type, str) or not self.task_type.strip()):
            raise _fail("task_type", "must be a non-empty string or null", self.task_type)

        if self.domains is not None:
            if isinstance(self.domains, str) or not isinstance(self.domains, (list, tuple)):
                raise _fail("domains", "must be a list of CLINC150 domain names", self.domains)
            if not self.domains or not all(isinstance(d, str) and d for d in self.domains):
                raise _fail("domains", "must be a non-empty list of CLINC150 domain names", self.domains)
            if self.dataset != "clinc150":
                raise _fail("domains", "only applies to dataset clinc150", self.domains)
            self.domains = list(dict.fromkeys(self.domains))

        for name, low, high in (("days", 1, 36600), ("traces_per_day", 1, 100_000_000), ("n_users", 1, 10_000_000)):
            value = getattr(self, name)
            if not _is_int(value) or not low <= value <= high:
                raise _fail(name, f"must be an integer in [{low}, {high}]", value)
        if not _is_int(self.seed) or self.seed < 0:
            raise _fail("seed", "must be a non-negative integer", self.seed)

        if isinstance(self.start_date, dt.datetime):
            raise _fail("start_date", "must be a date YYYY-MM-DD", self.start_date)
        if isinstance(self.start_date, dt.date):  # YAML reads an unquoted 2026-11-01 as a date
            self.start_date = self.start_date.isoformat()
        try:
            if not isinstance(self.start_date, str):
                raise ValueError
            dt.date.fromisoformat(self.start_date)
            if len(self.start_date) != 10:
                raise ValueError
        except ValueError:
            raise _fail("start_date", "must be a date YYYY-MM-DD", self.start_date) from None

        for name in _RATE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise _fail(name, "must be a number in [0, 1]", value)
            if not 0.0 <= value <= 1.0:
                raise _fail(name, "must be within [0, 1]", value)
            setattr(self, name, float(value))

        delay = self.review_delay_days
        if (
            isinstance(delay, (str, bytes))
            or not isinstance(delay, (list, tuple))
            or len(delay) != 2
            or not all(_is_int(d) for d in delay)
        ):
            raise _fail("review_delay_days", "must be a pair [min, max] of whole days", delay)
        low, high = int(delay[0]), int(delay[1])
        if not 0 <= low <= high <= 365:
            raise _fail("review_delay_days", "must satisfy 0 <= min <= max <= 365", delay)
        self.review_delay_days = (low, high)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------------


@dataclass
class SimulationSummary:
    dataset: str
    task_type: str
    seed: int
    days: int
    start_date: str
    end_date: str
    traces: int
    feedback_events: int
    feedback_by_kind: dict[str, int]
    frontier_errors: int
    frontier_error_rate: float
    human_reviewed: int
    out_of_scope: int
    accepted_wrong_rate: dict[str, float | None]
    last_feedback_date: str | None
    estimated_frontier_cost_usd: float | None
    out_dir: str
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Datasets and the simulated frontier model
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Example:
    text: str
    gold: str
    ref: int  # index into the task's own per-example data


def _tokens(text: str) -> list[str]:
    """Lower-case word tokens without stop words; splits snake_case, kebab-case and camelCase."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    return [t for t in re.findall(r"[a-z0-9]+", spaced.lower()) if t not in _STOPWORDS and len(t) > 1]


def _json_compact(value: Any, *, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)


class _Task:
    task_type: str
    instruction: str
    pool: list[_Example]
    oos_pool: list[_Example]

    def wrong(self, example: _Example, rng: np.random.Generator) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def hallucination_source(self, rng: np.random.Generator) -> str:
        return "code" if rng.random() < 0.5 else "llm"


class _ClassificationTask(_Task):
    """One label per input. Errors prefer ``near`` labels (same domain / shared word)."""

    def __init__(
        self,
        *,
        task_type: str,
        instruction: str,
        pool: list[_Example],
        oos_pool: list[_Example],
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
        self._label_tokens = [(label, set(_tokens(label))) for label in self.labels]

    def wrong(self, example: _Example, rng: np.random.Generator) -> str:
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
        words = set(_tokens(text))
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


class _ExtractionTask(_Task):
    """restaurant8k: output is a compact JSON object slot -> span text."""

    def __init__(self, *, task_type: str, pool: list[_Example], spans: list[tuple[tuple[str, int, int], ...]]):
        self.task_type = task_type
        self.instruction = (
            "You read messages sent to a restaurant booking assistant. Extract the booking details "
            f"({', '.join(RESTAURANT8K_SLOTS)}) the message states. Answer with a JSON object that maps "
            "each slot found to the exact text span from the message, and {} when it states none."
        )
        self.pool = pool
        self.oos_pool = []
        self.spans = spans

    def wrong(self, example: _Example, rng: np.random.Generator) -> str:
        text, gold = example.text, example.gold
        spans = self.spans[example.ref]
        if spans:
            modes = ("drop", "shift") if rng.random() < 0.5 else ("shift", "drop")
            for mode in modes:
                values = {slot: text[a:b] for slot, a, b in spans}
                if mode == "drop":
                    slot = spans[int(rng.integers(len(spans)))][0]
                    del values[slot]
                else:
                    slot, a, b = spans[int(rng.integers(len(spans)))]
                    shifted = None
                    for _ in range(8):
                        delta = int(rng.integers(1, 4)) * (1 if rng.random() < 0.5 else -1)
                        a2, b2 = (a + delta, b) if rng.random() < 0.5 else (a, b + delta)
                        if 0 <= a2 < b2 <= len(text) and text[a2:b2].strip() and text[a2:b2] != text[a:b]:
                            shifted = text[a2:b2]
                            break
                    if shifted is None:
                        continue
                    values[slot] = shifted
                out = _json_compact(values, sort_keys=True)
                if out != gold:
                    return out
        # Nothing to drop or shift: a false positive, some word of the message taken for a slot.
        words = re.findall(r"\w+", text) or [text]
        word = words[int(rng.integers(len(words)))]
        slot = "people" if word.isdigit() else RESTAURANT8K_SLOTS[int(rng.integers(len(RESTAURANT8K_SLOTS)))]
        out = _json_compact({slot: word}, sort_keys=True)
        if out == gold:  # cannot happen for an empty gold; kept for safety
            out = _json_compact({}, sort_keys=True)
        return out


class _SummarizationTask(_Task):
    """dialogsum: output is the reference summary; errors are another dialogue's summary or a cut one."""

    def __init__(self, *, task_type: str, pool: list[_Example]):
        self.task_type = task_type
        self.instruction = (
            "Summarize the dialogue in one to three sentences. Refer to the speakers as #Person1# and "
            "#Person2#, as the dialogue does."
        )
        self.pool = pool
        self.oos_pool = []
        self.summaries = [example.gold for example in pool]

    def wrong(self, example: _Example, rng: np.random.Generator) -> str:
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


def _check_input_file(path_text: str) -> Path:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ConfigError(f"simulation config: input_path {path_text!r} does not exist or is not a file")
    return path


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON: {exc}") from exc


def _read_jsonl(path: Path) -> list[Any]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: invalid JSON line: {exc}") from exc
    return rows


@lru_cache(maxsize=4)
def _load_clinc150(key: tuple[str, int, int]) -> tuple[dict[str, tuple[tuple[str, str], ...]], dict[str, tuple[str, ...]] | None]:
    path = Path(key[0])
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected the CLINC150 data_full.json object of split -> [[text, intent], ...]")
    splits: dict[str, tuple[tuple[str, str], ...]] = {}
    for split, pairs in raw.items():
        if not isinstance(pairs, list):
            raise ValueError(f"{path}: split {split!r} is not a list of [text, intent] pairs")
        rows = []
        for number, pair in enumerate(pairs):
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise ValueError(f"{path}: {split}[{number}] is not a [text, intent] pair")
            if pair[0].strip():
                rows.append((pair[0], pair[1]))
        splits[str(split)] = tuple(rows)
    domains_path = path.parent / "domains.json"
    domains = None
    if domains_path.is_file():
        loaded = _read_json(domains_path)
        if not isinstance(loaded, dict) or not all(isinstance(v, list) for v in loaded.values()):
            raise ValueError(f"{domains_path}: expected an object of domain -> [intent, ...]")
        domains = {str(k): tuple(str(x) for x in v) for k, v in loaded.items()}
    return splits, domains


def _clinc150_task(config: SimulationConfig) -> _ClassificationTask:
    path = _check_input_file(config.input_path) if config.input_path else bundled_clinc150_dir() / "data_full.json"
    splits, domains = _load_clinc150(_file_key(path))
    in_rows = [row for name, rows in sorted(splits.items()) if not name.startswith("oos") for row in rows]
    oos_rows = [row for name, rows in sorted(splits.items()) if name.startswith("oos") for row in rows]
    if config.domains is not None:
        if domains is None:
            raise ConfigError(f"simulation config: domains needs {path.parent / 'domains.json'}, which is missing")
        unknown = [d for d in config.domains if d not in domains]
        if unknown:
            raise ConfigError(
                f"simulation config: domains has unknown CLINC150 domain(s) {', '.join(unknown)}; "
                f"known: {', '.join(domains)}"
            )
        allowed = {intent for d in config.domains for intent in domains[d]}
        in_rows = [row for row in in_rows if row[1] in allowed]
    in_rows = [row for row in in_rows if row[1] != "oos"]
    if not in_rows:
        raise ValueError(f"{path}: no in-scope queries to simulate (domains={config.domains})")
    if config.out_of_scope_rate > 0 and not oos_rows:
        raise ValueError(f"{path}: out_of_scope_rate > 0 but the dataset has no oos_* queries")
    labels = sorted({intent for _, intent in in_rows})
    if len(labels) < 2:
        raise ValueError(f"{path}: need at least two intents to simulate classification, found {labels}")
    domain_of = {}
    for domain, intents in (domains or {}).items():
        for intent in intents:
            domain_of.setdefault(intent, domain)
    label_set = set(labels)
    near = {}
    for label in labels:
        domain = domain_of.get(label)
        near[label] = [x for x in (domains or {}).get(domain, ()) if x != label and x in label_set] if domain else []
    instruction = (
        f"You are the intent classifier of the {config.app} assistant. Classify the user's message into "
        f"exactly one of these intents: {', '.join(labels)}. If none of them applies, answer "
        f"{OUT_OF_SCOPE}. Answer with the intent name only."
    )
    pool = [_Example(text, intent, i) for i, (text, intent) in enumerate(in_rows)]
    oos_pool = [_Example(text, OUT_OF_SCOPE, i) for i, (text, _) in enumerate(oos_rows)]
    return _ClassificationTask(
        task_type=config.resolved_task_type,
        instruction=instruction,
        pool=pool,
        oos_pool=oos_pool,
        labels=labels,
        near=near,
        p_near=_P_SAME_DOMAIN_CONFUSION,
        far_extra=[OUT_OF_SCOPE] if config.out_of_scope_rate > 0 else [],
    )


@lru_cache(maxsize=4)
def _load_labeled(key: tuple[str, int, int], text_column: str, label_column: str) -> tuple[tuple[str, str], ...]:
    path = Path(key[0])
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            frame = pl.read_csv(path, separator="\t" if suffix == ".tsv" else ",", infer_schema=False)
        elif suffix == ".parquet":
            frame = pl.read_parquet(path)
        elif suffix in (".jsonl", ".ndjson", ".json"):
            rows = _read_jsonl(path) if suffix != ".json" else _read_json(path)
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise ValueError(f"{path}: expected JSON objects, one per row")
            columns = sorted({k for r in rows for k in r})
            frame = pl.DataFrame(
                {c: [None if r.get(c) is None else str(r.get(c)) for r in rows] for c in columns},
                schema={c: pl.String for c in columns},
            )
        else:
            raise ValueError(f"{path}: unsupported file type {suffix!r} (use .csv, .tsv, .jsonl, .json or .parquet)")
    except pl.exceptions.PolarsError as exc:
        raise ValueError(f"{path}: cannot read: {exc}") from exc
    for role, column in (("text_column", text_column), ("label_column", label_column)):
        if column not in frame.columns:
            raise ConfigError(
                f"{path}: column {column!r} ({role}) not found; columns: {', '.join(frame.columns) or '(none)'}"
            )
    frame = frame.select(
        pl.col(text_column).cast(pl.String).alias("text"),
        pl.col(label_column).cast(pl.String).str.strip_chars().alias("label"),
    ).filter(pl.col("text").is_not_null() & (pl.col("text").str.strip_chars() != "")
             & pl.col("label").is_not_null() & (pl.col("label") != ""))
    return tuple(zip(frame.get_column("text").to_list(), frame.get_column("label").to_list()))


def _labeled_task(config: SimulationConfig) -> _ClassificationTask:
    path = _check_input_file(config.input_path)
    rows = _load_labeled(_file_key(path), config.text_column, config.label_column)
    if not rows:
        raise ValueError(f"{path}: empty dataset: no row has both a text and a label")
    labels = sorted({label for _, label in rows})
    if len(labels) < 2:
        raise ValueError(f"{path}: need at least two distinct labels to simulate classification, found {labels}")
    index: dict[str, list[str]] = {}
    for label in labels:
        for token in dict.fromkeys(_tokens(label)):
            index.setdefault(token, []).append(label)
    near = {}
    for label in labels:
        similar = {other for token in _tokens(label) for other in index.get(token, ()) if other != label}
        near[label] = sorted(similar)
    if len(labels) <= 200:
        listing = f"exactly one of these labels: {', '.join(labels)}"
    else:
        listing = f"exactly one of the {len(labels)} labels of the {config.app} label set"
    instruction = f"Classify the text into {listing}. Answer with the label only."
    pool = [_Example(text, label, i) for i, (text, label) in enumerate(rows)]
    return _ClassificationTask(
        task_type=config.resolved_task_type,
        instruction=instruction,
        pool=pool,
        oos_pool=[],
        labels=labels,
        near=near,
        p_near=_P_SIMILAR_LABEL_CONFUSION,
    )


@lru_cache(maxsize=4)
def _load_restaurant8k(key: tuple[str, int, int]) -> tuple[tuple[str, tuple[tuple[str, int, int], ...]], ...]:
    path = Path(key[0])
    raw = _read_jsonl(path) if path.suffix.lower() in (".jsonl", ".ndjson") else _read_json(path)
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected the restaurant8k JSON list of {{userInput, labels}} items")
    items = []
    for number, item in enumerate(raw):
        text = item.get("userInput", {}).get("text") if isinstance(item, dict) else None
        if not isinstance(text, str):
            raise ValueError(f"{path}: item {number} has no userInput.text")
        if not text.strip():
            continue
        spans: dict[str, tuple[str, int, int]] = {}
        for label in item.get("labels") or []:
            try:
                slot = str(label["slot"])
                span = label["valueSpan"]
                start, end = int(span.get("startIndex", 0)), int(span["endIndex"])
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ValueError(f"{path}: item {number} has a malformed label {label!r}") from exc
            if not 0 <= start < end <= len(text):
                raise ValueError(f"{path}: item {number}: span [{start}, {end}) is outside its text")
            spans.setdefault(slot, (slot, start, end))  # the first span of a slot wins
        items.append((text, tuple(sorted(spans.values()))))
    return tuple(items)


def _restaurant8k_task(config: SimulationConfig) -> _ExtractionTask:
    path = _check_input_file(config.input_path)
    items = _load_restaurant8k(_file_key(path))
    if not items:
        raise ValueError(f"{path}: empty dataset: no restaurant8k item with text")
    pool = [
        _Example(text, _json_compact({slot: text[a:b] for slot, a, b in spans}, sort_keys=True), i)
        for i, (text, spans) in enumerate(items)
    ]
    return _ExtractionTask(task_type=config.resolved_task_type, pool=pool, spans=[spans for _, spans in items])


@lru_cache(maxsize=4)
def _load_dialogsum(key: tuple[str, int, int]) -> tuple[tuple[str, str], ...]:
    path = Path(key[0])
    raw = _read_jsonl(path) if path.suffix.lower() != ".json" else _read_json(path)
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected dialogsum JSONL rows")
    rows = []
    for number, row in enumerate(raw, start=1):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {number} is not a JSON object")
        dialogue = row.get("dialogue")
        summary = row.get("summary", row.get("summary1"))
        if not isinstance(dialogue, str) or not isinstance(summary, str):
            raise ConfigError(
                f"{path}: row {number} needs a `dialogue` and a `summary` (or `summary1`) string; "
                f"it has {', '.join(sorted(row)) or 'no keys'}"
            )
        if dialogue.strip() and summary.strip():
            rows.append((dialogue, summary.strip()))
    return tuple(rows)


def _dialogsum_task(config: SimulationConfig) -> _SummarizationTask:
    path = _check_input_file(config.input_path)
    rows = _load_dialogsum(_file_key(path))
    if not rows:
        raise ValueError(f"{path}: empty dataset: no dialogue with a summary")
    pool = [_Example(dialogue, summary, i) for i, (dialogue, summary) in enumerate(rows)]
    return _SummarizationTask(task_type=config.resolved_task_type, pool=pool)


def _build_task(config: SimulationConfig) -> _Task:
    builders = {
        "clinc150": _clinc150_task,
        "labeled": _labeled_task,
        "restaurant8k": _restaurant8k_task,
        "dialogsum": _dialogsum_task,
    }
    return builders[config.dataset](config)


# --------------------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------------------


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


def _iso(micros: int) -> str:
    return (_EPOCH + dt.timedelta(microseconds=int(micros))).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _day_of(micros: int) -> dt.date:
    return (_EPOCH + dt.timedelta(microseconds=int(micros))).date()


def _estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _seconds(rng: np.random.Generator, median: float, sigma: float) -> int:
    """A reaction delay in microseconds: log-normal around ``median`` seconds, within [0.2 s, 30 min]."""
    value = min(max(median * math.exp(sigma * float(rng.standard_normal())), 0.2), 1800.0)
    return int(value * _MICROS_PER_SECOND)


class _AtomicLines:
    """Write lines to ``path`` through a temporary file in the same folder, then ``os.replace``."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        self.temp = Path(temp)
        self.handle = os.fdopen(fd, "w", encoding="utf-8", newline="\n")

    def write(self, record: Mapping[str, Any]) -> None:
        self.handle.write(_json_compact(record))
        self.handle.write("\n")

    def commit(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.temp, self.path)

    def abort(self) -> None:
        if not self.handle.closed:
            self.handle.close()
        self.temp.unlink(missing_ok=True)


def _write_lines(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    writer = _AtomicLines(path)
    try:
        for record in records:
            writer.write(record)
        writer.commit()
    except BaseException:
        writer.abort()
        raise


def _feedback(trace_id: str, micros: int, kind: str, source: str, annotator: str, *, value: float | None = None,
              label: str | None = None, edited_output: str | None = None) -> dict[str, Any]:
    return {
        "trace_id": trace_id,
        "timestamp": _iso(micros),
        "kind": kind,
        "value": value,
        "label": label,
        "edited_output": edited_output,
        "source": source,
        "annotator_id": annotator,
    }


def simulate(
    config: SimulationConfig,
    out_dir: str | os.PathLike[str],
    progress: Callable[[str], None] | None = None,
) -> SimulationSummary:
    """Write ``config.days`` days of simulated traffic and its feedback under ``out_dir``."""
    if not isinstance(config, SimulationConfig):
        raise TypeError(f"simulate() needs a SimulationConfig, got {type(config).__name__}")
    out_dir = Path(out_dir)
    say = progress or (lambda _line: None)
    task = _build_task(config)
    is_clinc = config.dataset == "clinc150"

    streams = np.random.SeedSequence(config.seed).spawn(6)
    rng_users, rng_traffic, rng_ids, rng_frontier, rng_users_react, rng_review = (
        np.random.default_rng(s) for s in streams
    )

    # Users: a fixed share is rushed; activity is skewed (a few users send much of the traffic).
    width = max(4, len(str(config.n_users)))
    user_ids = [f"user-{i:0{width}d}" for i in range(1, config.n_users + 1)]
    n_rushed = int(round(config.rushed_user_rate * config.n_users))
    rushed = np.zeros(config.n_users, dtype=bool)
    rushed[rng_users.permutation(config.n_users)[:n_rushed]] = True
    activity = rng_users.lognormal(0.0, 0.75, size=config.n_users)
    activity = activity / activity.sum()
    reviewers = [f"reviewer-{i:02d}" for i in range(1, _N_REVIEWERS + 1)]

    in_cycle = _Cycler(len(task.pool), rng_traffic)
    oos_cycle = _Cycler(len(task.oos_pool), rng_traffic) if task.oos_pool else None
    oos_rate = config.out_of_scope_rate if is_clinc else 0.0

    system_message = {"role": "system", "content": task.instruction}
    system_tokens = _estimate_tokens(task.instruction)
    task_type = task.task_type
    prompt_version = f"{task_type}-v1"
    delay_low, delay_high = config.review_delay_days

    pending: dict[dt.date, list[tuple[int, int, dict[str, Any]]]] = {}
    sequence = 0
    sessions: dict[int, tuple[int, str]] = {}
    files: list[str] = []
    kind_counts = {kind: 0 for kind in FEEDBACK_KINDS}
    totals = {"traces": 0, "feedback": 0, "wrong": 0, "reviewed": 0, "oos": 0, "in_tok": 0, "out_tok": 0}
    wrong_by_type = {"rushed": 0, "careful": 0}
    accepted_wrong_by_type = {"rushed": 0, "careful": 0}
    last_feedback_date: dt.date | None = None

    def emit(when: int, record: dict[str, Any]) -> None:
        nonlocal sequence
        pending.setdefault(_day_of(when), []).append((when, sequence, record))
        sequence += 1

    def flush(day: dt.date, late: bool) -> None:
        nonlocal last_feedback_date
        events = pending.pop(day, [])
        if not events:
            return
        events.sort(key=lambda item: (item[0], item[1]))
        relative = f"feedback/{day.isoformat()}/feedback.jsonl"
        _write_lines(out_dir / relative, (record for _, _, record in events))
        files.append(relative)
        totals["feedback"] += len(events)
        for _, _, record in events:
            kind_counts[record["kind"]] += 1
        last_feedback_date = day
        if late:
            say(f"{day.isoformat()}: {len(events)} late feedback events -> {relative}")

    start = config.start
    for day_index in range(config.days):
        day = start + dt.timedelta(days=day_index)
        day_start = int((dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc) - _EPOCH)
                        // dt.timedelta(microseconds=1))
        n = config.traces_per_day
        hours = rng_traffic.choice(24, size=n, p=_HOUR_WEIGHTS)
        offsets = np.sort(hours * _MICROS_PER_HOUR + rng_traffic.integers(0, _MICROS_PER_HOUR, size=n))
        users = rng_traffic.choice(config.n_users, size=n, p=activity)
        from_oos = rng_traffic.random(n) < oos_rate if oos_rate > 0 else np.zeros(n, dtype=bool)
        latency_noise = rng_traffic.lognormal(0.0, _LATENCY_NOISE_SIGMA, size=n)
        errs = rng_frontier.random(n) < config.frontier_error_rate
        reviewed = rng_review.random(n) < config.human_review_rate
        review_delay = rng_review.integers(delay_low, delay_high + 1, size=n)
        review_time = rng_review.integers(9 * _MICROS_PER_HOUR, 18 * _MICROS_PER_HOUR, size=n)
        review_by = rng_review.integers(0, _N_REVIEWERS, size=n)

        relative = f"traces/{day.isoformat()}/traces.jsonl"
        writer = _AtomicLines(out_dir / relative)
        day_feedback_before = sequence
        try:
            for i in range(n):
                ts = day_start + int(offsets[i])
                user = int(users[i])
                user_id = user_ids[user]
                user_type = "rushed" if rushed[user] else "careful"
                if from_oos[i] and oos_cycle is not None:
                    example = task.oos_pool[oos_cycle.next()]
                    totals["oos"] += 1
                else:
                    example = task.pool[in_cycle.next()]
                gold = example.gold
                output = task.wrong(example, rng_frontier) if errs[i] else gold
                correct = output == gold
                if errs[i] and correct:  # every error path returns something else; a guard, not a branch
                    raise AssertionError("simulated frontier error produced the gold answer")
                trace_id = rng_ids.bytes(16).hex()
                last = sessions.get(user)
                if last is None or ts - last[0] > _SESSION_GAP_US:
                    session_id = rng_ids.bytes(8).hex()
                else:
                    session_id = last[1]
                sessions[user] = (ts, session_id)

                input_tokens = system_tokens + _estimate_tokens(example.text) + 8  # + chat framing
                output_tokens = max(1, _estimate_tokens(output))
                latency = (
                    _LATENCY_BASE_MS
                    + _LATENCY_PER_INPUT_TOKEN_MS * input_tokens
                    + _LATENCY_PER_OUTPUT_TOKEN_MS * output_tokens
                ) * float(latency_noise[i])
                writer.write(
                    {
                        "trace_id": trace_id,
                        "timestamp": _iso(ts),
                        "task_type": task_type,
                        "app": config.app,
                        "model": config.frontier_model,
                        "provider": config.provider,
                        "messages": [system_message, {"role": "user", "content": example.text}],
                        "output": output,
                        "input_tokens": input_tokens,
                        "output_tokens": output_tokens,
                        "latency_ms": round(latency, 1),
                        "user_id": user_id,
                        "session_id": session_id,
                        "prompt_version": prompt_version,
                        "metadata": {
                            "gold": gold,
                            "sim": {"frontier_correct": correct, "user_type": user_type, "seed": config.seed},
                        },
                    }
                )
                totals["traces"] += 1
                totals["in_tok"] += input_tokens
                totals["out_tok"] += output_tokens
                if not correct:
                    totals["wrong"] += 1
                    wrong_by_type[user_type] += 1

                # ---- the user's reaction, seconds to minutes later ----
                rng = rng_users_react
                when = ts
                reaction: str | None
                if correct:
                    p_accept, p_none, p_regen = _CORRECT_REACTIONS[user_type]
                    r = rng.random()
                    reaction = ("accepted" if r < p_accept else None if r < p_accept + p_none
                                else "regenerated" if r < p_accept + p_none + p_regen else "rejected")
                else:
                    p_accept = config.rushed_accept_wrong_rate if user_type == "rushed" else config.careful_accept_wrong_rate
                    if rng.random() < p_accept:
                        reaction = "accepted"
                        accepted_wrong_by_type[user_type] += 1
                    else:
                        p_edit, p_reject, p_regen = _WRONG_REACTIONS
                        r = rng.random()
                        reaction = ("edited" if r < p_edit else "rejected" if r < p_edit + p_reject
                                    else "regenerated" if r < p_edit + p_reject + p_regen else None)
                if reaction == "accepted":
                    when += _seconds(rng, 12.0, 0.8)
                    emit(when, _feedback(trace_id, when, "accepted", "user", user_id))
                    if rng.random() < _P_COPY_AFTER_ACCEPT:
                        when += _seconds(rng, 3.0, 0.5)
                        emit(when, _feedback(trace_id, when, "copied", "user", user_id))
                    if rng.random() < _P_THUMBS_UP_AFTER_ACCEPT:
                        when += _seconds(rng, 5.0, 0.6)
                        emit(when, _feedback(trace_id, when, "thumbs", "user", user_id, value=1.0))
                else:
                    if reaction == "edited":
                        when += _seconds(rng, 60.0, 0.7)
                        emit(when, _feedback(trace_id, when, "edited", "user", user_id, edited_output=gold))
                    elif reaction == "rejected":
                        when += _seconds(rng, 10.0, 0.7)
                        emit(when, _feedback(trace_id, when, "rejected", "user", user_id))
                    elif reaction == "regenerated":
                        when += _seconds(rng, 5.0, 0.6)
                        emit(when, _feedback(trace_id, when, "regenerated", "user", user_id))
                    if not correct and rng.random() < _P_THUMBS_DOWN[reaction]:
                        when += _seconds(rng, 4.0, 0.6)
                        emit(when, _feedback(trace_id, when, "thumbs", "user", user_id, value=0.0))

                # ---- automated hallucination flags on wrong outputs ----
                if not correct and rng.random() < config.hallucination_flag_rate:
                    source = task.hallucination_source(rng)
                    flagged = ts + (_seconds(rng, 0.5, 0.5) if source == "code" else _seconds(rng, 30.0, 0.5))
                    annotator = "output-check" if source == "code" else "llm-judge"
                    emit(flagged, _feedback(trace_id, flagged, "hallucination", source, annotator, value=1.0))

                # ---- human review, days later ----
                if reviewed[i]:
                    totals["reviewed"] += 1
                    review_day = day + dt.timedelta(days=int(review_delay[i]))
                    review_at = (
                        day_start + int((review_day - day).days) * _MICROS_PER_DAY + int(review_time[i])
                    )
                    if review_at <= ts:  # a same-day review (delay 0) of a late trace
                        review_at = ts + _seconds(rng_review, 600.0, 0.5)
                    emit(
                        review_at,
                        _feedback(trace_id, review_at, "human_label", "human_reviewer", reviewers[int(review_by[i])],
                                  value=1.0 if correct else 0.0, label=gold),
                    )
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        files.append(relative)
        say(
            f"{day.isoformat()}: {n} traces, {sequence - day_feedback_before} feedback events generated "
            f"-> {relative}"
        )
        assert all(d >= day for d in pending), "feedback cannot arrive before its trace"
        flush(day, late=False)

    for day in sorted(pending):
        flush(day, late=True)

    end = start + dt.timedelta(days=config.days - 1)
    from loop_pipeline.core.costs import PriceTable

    # A model without a price has no estimate; a broken prices.yaml is an error, not a None.
    price = PriceTable.load().lookup(config.frontier_model)
    estimated_cost = round(price.cost(totals["in_tok"], totals["out_tok"]), 6) if price is not None else None

    return SimulationSummary(
        dataset=config.dataset,
        task_type=task_type,
        seed=config.seed,
        days=config.days,
        start_date=start.isoformat(),
        end_date=end.isoformat(),
        traces=totals["traces"],
        feedback_events=totals["feedback"],
        feedback_by_kind=kind_counts,
        frontier_errors=totals["wrong"],
        frontier_error_rate=totals["wrong"] / totals["traces"] if totals["traces"] else 0.0,
        human_reviewed=totals["reviewed"],
        out_of_scope=totals["oos"],
        accepted_wrong_rate={
            kind: (accepted_wrong_by_type[kind] / wrong_by_type[kind] if wrong_by_type[kind] else None)
            for kind in ("rushed", "careful")
        },
        last_feedback_date=last_feedback_date.isoformat() if last_feedback_date else None,
        estimated_frontier_cost_usd=estimated_cost,
        out_dir=str(out_dir),
        files=sorted(files),
    )
