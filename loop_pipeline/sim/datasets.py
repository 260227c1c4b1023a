"""The datasets traffic is drawn from, each turned into a task of the simulated frontier model.

clinc150 (bundled; intents, out-of-scope queries and domains) | labeled (CSV, TSV, JSONL, JSON or
Parquet with a text and a label column) | restaurant8k (slot spans, JSON list) | dialogsum
(dialogues and summaries, JSONL). Parsed files are cached by path, modification time and size.

Labels held out of a classification task (``out_of_scope_labels``, or for labeled files a seeded
``out_of_scope_label_share``) become unknown intents: they are not listed in the instruction and
their queries join the out-of-scope pool with gold ``out_of_scope``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from loop_pipeline.config import ConfigError
from loop_pipeline.sim.config import SimulationConfig
from loop_pipeline.sim.streams import seed_sequence
from loop_pipeline.sim.task_models import (
    OUT_OF_SCOPE,
    ClassificationTask,
    Example,
    ExtractionTask,
    Span,
    SummarizationTask,
    Task,
)
from loop_pipeline.sim.text import json_compact, tokens

__all__ = ["build_task", "bundled_clinc150_dir"]

# Share of classification errors that pick a near label rather than any label.
_P_SAME_DOMAIN_CONFUSION = 0.7  # CLINC150: another intent of the same domain
_P_SIMILAR_LABEL_CONFUSION = 0.8  # labeled data: a label sharing a word with the gold label
_MAX_LISTED_LABELS = 200  # beyond this, the instruction names the label set instead of listing it

FileKey = tuple[str, int, int]  # resolved path, mtime_ns, size: a changed file is read again
Clinc150Splits = dict[str, tuple[tuple[str, str], ...]]
Clinc150Domains = dict[str, tuple[str, ...]]


def bundled_clinc150_dir() -> Path:
    """The CLINC150 copy shipped with the package (``loop_pipeline/data/clinc150``)."""
    return Path(__file__).resolve().parent.parent / "data" / "clinc150"


def build_task(config: SimulationConfig) -> Task:
    """The frontier task for ``config.dataset``, with the examples traffic is drawn from."""
    builders = {
        "clinc150": _clinc150_task,
        "labeled": _labeled_task,
        "restaurant8k": _restaurant8k_task,
        "dialogsum": _dialogsum_task,
    }
    return builders[config.dataset](config)


# ---- reading files -------------------------------------------------------------------------------


def _input_file(path_text: str) -> Path:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ConfigError(f"simulation config: input_path {path_text!r} does not exist or is not a file")
    return path


def _file_key(path: Path) -> FileKey:
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


# ---- clinc150 ------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _load_clinc150(key: FileKey) -> tuple[Clinc150Splits, Clinc150Domains | None]:
    path = Path(key[0])
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected the CLINC150 data_full.json object of split -> [[text, intent], ...]")
    splits: Clinc150Splits = {}
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
    return splits, _load_clinc150_domains(path.parent / "domains.json")


def _load_clinc150_domains(path: Path) -> Clinc150Domains | None:
    if not path.is_file():
        return None
    loaded = _read_json(path)
    if not isinstance(loaded, dict) or not all(isinstance(v, list) for v in loaded.values()):
        raise ValueError(f"{path}: expected an object of domain -> [intent, ...]")
    return {str(k): tuple(str(x) for x in v) for k, v in loaded.items()}


def _intents_of_domains(path: Path, config: SimulationConfig, domains: Clinc150Domains | None) -> set[str]:
    """The intents of ``config.domains``; unknown domains are an error naming the known ones."""
    if domains is None:
        raise ConfigError(f"simulation config: domains needs {path.parent / 'domains.json'}, which is missing")
    unknown = [d for d in config.domains or () if d not in domains]
    if unknown:
        raise ConfigError(
            f"simulation config: domains has unknown CLINC150 domain(s) {', '.join(unknown)}; "
            f"known: {', '.join(domains)}"
        )
    return {intent for d in config.domains or () for intent in domains[d]}


def _same_domain_intents(labels: list[str], domains: Clinc150Domains | None) -> dict[str, list[str]]:
    """For each intent, the other intents of its domain (its likeliest confusions)."""
    domain_of: dict[str, str] = {}
    for domain, intents in (domains or {}).items():
        for intent in intents:
            domain_of.setdefault(intent, domain)
    label_set = set(labels)
    near = {}
    for label in labels:
        domain = domain_of.get(label)
        near[label] = [x for x in (domains or {}).get(domain, ()) if x != label and x in label_set] if domain else []
    return near


def _held_out_labels(config: SimulationConfig, labels: list[str], path: Path) -> set[str]:
    """The labels traffic treats as unknown intents: those listed, else (labeled files) a seeded share."""
    if config.out_of_scope_labels is not None:
        unknown = [label for label in config.out_of_scope_labels if label not in labels]
        if unknown:
            raise ConfigError(
                f"simulation config: out_of_scope_labels names label(s) {', '.join(unknown)} not found in {path}"
            )
        held = set(config.out_of_scope_labels)
    elif config.dataset == "labeled":
        count = min(int(round(config.out_of_scope_label_share * len(labels))), len(labels) - 2)
        order = np.random.default_rng(seed_sequence(config.seed, "held_out_labels")).permutation(len(labels))
        held = {labels[int(i)] for i in order[: max(count, 0)]}
    else:
        held = set()
    if len(labels) - len(held) < 2:
        raise ConfigError(f"simulation config: out_of_scope_labels leaves fewer than two labels of {path} in scope")
    return held


def _clinc150_task(config: SimulationConfig) -> ClassificationTask:
    path = _input_file(config.input_path) if config.input_path else bundled_clinc150_dir() / "data_full.json"
    splits, domains = _load_clinc150(_file_key(path))
    in_rows = [row for name, rows in sorted(splits.items()) if not name.startswith("oos") for row in rows]
    oos_rows = [row for name, rows in sorted(splits.items()) if name.startswith("oos") for row in rows]
    if config.domains is not None:
        allowed = _intents_of_domains(path, config, domains)
        in_rows = [row for row in in_rows if row[1] in allowed]
    in_rows = [row for row in in_rows if row[1] != "oos"]
    held: set[str] = set()
    if config.out_of_scope_labels is not None:
        held = _held_out_labels(config, sorted({intent for _, intent in in_rows}), path)
        oos_rows = oos_rows + [row for row in in_rows if row[1] in held]
        in_rows = [row for row in in_rows if row[1] not in held]
    if not in_rows:
        raise ValueError(f"{path}: no in-scope queries to simulate (domains={config.domains})")
    if config.out_of_scope_rate > 0 and not oos_rows:
        raise ValueError(f"{path}: out_of_scope_rate > 0 but the dataset has no oos_* queries")
    labels = sorted({intent for _, intent in in_rows})
    if len(labels) < 2:
        raise ValueError(f"{path}: need at least two intents to simulate classification, found {labels}")
    instruction = (
        f"You are the intent classifier of the {config.app} assistant. Classify the user's message into "
        f"exactly one of these intents: {', '.join(labels)}. If none of them applies, answer "
        f"{OUT_OF_SCOPE}. Answer with the intent name only."
    )
    return ClassificationTask(
        task_type=config.resolved_task_type,
        instruction=instruction,
        pool=[Example(text, intent, i) for i, (text, intent) in enumerate(in_rows)],
        oos_pool=[Example(text, OUT_OF_SCOPE, i) for i, (text, _) in enumerate(oos_rows)],
        labels=labels,
        near=_same_domain_intents(labels, domains),
        p_near=_P_SAME_DOMAIN_CONFUSION,
        far_extra=[OUT_OF_SCOPE] if config.out_of_scope_rate > 0 else [],
        held_out_labels=held,
    )


# ---- labeled files -------------------------------------------------------------------------------


def _read_table(path: Path) -> pl.DataFrame:
    """A labeled file as a frame of strings (CSV / TSV / JSON / JSONL) or its own types (Parquet)."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            return pl.read_csv(path, separator="\t" if suffix == ".tsv" else ",", infer_schema=False)
        if suffix == ".parquet":
            return pl.read_parquet(path)
        if suffix in (".jsonl", ".ndjson", ".json"):
            rows = _read_jsonl(path) if suffix != ".json" else _read_json(path)
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise ValueError(f"{path}: expected JSON objects, one per row")
            columns = sorted({k for r in rows for k in r})
            return pl.DataFrame(
                {c: [None if r.get(c) is None else str(r.get(c)) for r in rows] for c in columns},
                schema={c: pl.String for c in columns},
            )
    except pl.exceptions.PolarsError as exc:
        raise ValueError(f"{path}: cannot read: {exc}") from exc
    raise ValueError(f"{path}: unsupported file type {suffix!r} (use .csv, .tsv, .jsonl, .json or .parquet)")


@lru_cache(maxsize=4)
def _load_labeled(key: FileKey, text_column: str, label_column: str) -> tuple[tuple[str, str], ...]:
    path = Path(key[0])
    frame = _read_table(path)
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


def _labels_sharing_a_word(labels: list[str]) -> dict[str, list[str]]:
    """For each label, the other labels sharing a word with it (its likeliest confusions)."""
    index: dict[str, list[str]] = {}
    for label in labels:
        for token in dict.fromkeys(tokens(label)):
            index.setdefault(token, []).append(label)
    return {
        label: sorted({other for token in tokens(label) for other in index.get(token, ()) if other != label})
        for label in labels
    }


def _labeled_task(config: SimulationConfig) -> ClassificationTask:
    path = _input_file(config.input_path)
    rows = _load_labeled(_file_key(path), config.text_column, config.label_column)
    if not rows:
        raise ValueError(f"{path}: empty dataset: no row has both a text and a label")
    all_labels = sorted({label for _, label in rows})
    if len(all_labels) < 2:
        raise ValueError(f"{path}: need at least two distinct labels to simulate classification, found {all_labels}")
    held = _held_out_labels(config, all_labels, path)
    labels = [label for label in all_labels if label not in held]
    if len(labels) <= _MAX_LISTED_LABELS:
        listing = f"exactly one of these labels: {', '.join(labels)}"
    else:
        listing = f"exactly one of the {len(labels)} labels of the {config.app} label set"
    # Unknown intents exist only when labels are held out; the app then has an out-of-scope answer.
    fallback = f" If none of them applies, answer {OUT_OF_SCOPE}." if held else ""
    oos_traffic = bool(held) and config.out_of_scope_rate > 0
    return ClassificationTask(
        task_type=config.resolved_task_type,
        instruction=f"Classify the text into {listing}.{fallback} Answer with the label only.",
        pool=[Example(text, label, i) for i, (text, label) in enumerate(r for r in rows if r[1] not in held)],
        oos_pool=[Example(text, OUT_OF_SCOPE, i) for i, (text, _) in enumerate(r for r in rows if r[1] in held)],
        labels=labels,
        near=_labels_sharing_a_word(labels),
        p_near=_P_SIMILAR_LABEL_CONFUSION,
        far_extra=[OUT_OF_SCOPE] if oos_traffic else [],
        held_out_labels=held,
    )


# ---- restaurant8k --------------------------------------------------------------------------------


def _slot_spans(path: Path, number: int, text: str, labels: list[Any]) -> tuple[Span, ...]:
    """The (slot, start, end) spans of one restaurant8k item, sorted; the first span of a slot wins."""
    spans: dict[str, Span] = {}
    for label in labels:
        try:
            slot = str(label["slot"])
            span = label["valueSpan"]
            start, end = int(span.get("startIndex", 0)), int(span["endIndex"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{path}: item {number} has a malformed label {label!r}") from exc
        if not 0 <= start < end <= len(text):
            raise ValueError(f"{path}: item {number}: span [{start}, {end}) is outside its text")
        spans.setdefault(slot, (slot, start, end))
    return tuple(sorted(spans.values()))


@lru_cache(maxsize=4)
def _load_restaurant8k(key: FileKey) -> tuple[tuple[str, tuple[Span, ...]], ...]:
    path = Path(key[0])
    raw = _read_jsonl(path) if path.suffix.lower() in (".jsonl", ".ndjson") else _read_json(path)
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected the restaurant8k JSON list of {{userInput, labels}} items")
    items = []
    for number, item in enumerate(raw):
        text = item.get("userInput", {}).get("text") if isinstance(item, dict) else None
        if not isinstance(text, str):
            raise ValueError(f"{path}: item {number} has no userInput.text")
        if text.strip():
            items.append((text, _slot_spans(path, number, text, item.get("labels") or [])))
    return tuple(items)


def _restaurant8k_task(config: SimulationConfig) -> ExtractionTask:
    path = _input_file(config.input_path)
    items = _load_restaurant8k(_file_key(path))
    if not items:
        raise ValueError(f"{path}: empty dataset: no restaurant8k item with text")
    pool = [
        Example(text, json_compact({slot: text[a:b] for slot, a, b in spans}, sort_keys=True), i)
        for i, (text, spans) in enumerate(items)
    ]
    return ExtractionTask(task_type=config.resolved_task_type, pool=pool, spans=[spans for _, spans in items])


# ---- dialogsum -----------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _load_dialogsum(key: FileKey) -> tuple[tuple[str, str], ...]:
    path = Path(key[0])
    raw = _read_jsonl(path) if path.suffix.lower() != ".json" else _read_json(path)
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected dialogsum JSONL rows")
    rows = []
    for number, row in enumerate(raw, start=1):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {number} is not a JSON object")
        dialogue = row.get("dialogue")
        summary = row.get("summary", row.get("summary1"))  # the dev split names it `summary`
        if not isinstance(dialogue, str) or not isinstance(summary, str):
            raise ConfigError(
                f"{path}: row {number} needs a `dialogue` and a `summary` (or `summary1`) string; "
                f"it has {', '.join(sorted(row)) or 'no keys'}"
            )
        if dialogue.strip() and summary.strip():
            rows.append((dialogue, summary.strip()))
    return tuple(rows)


def _dialogsum_task(config: SimulationConfig) -> SummarizationTask:
    path = _input_file(config.input_path)
    rows = _load_dialogsum(_file_key(path))
    if not rows:
        raise ValueError(f"{path}: empty dataset: no dialogue with a summary")
    pool = [Example(dialogue, summary, i) for i, (dialogue, summary) in enumerate(rows)]
    return SummarizationTask(task_type=config.resolved_task_type, pool=pool)
