"""Redaction of PII and secrets before any text is written to a dataset.

Every detection is replaced by a typed placeholder (``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]``,
``[IP]``, ``[SECRET]`` by default; see ``configs/redaction.yaml``). Everything is a polars
expression: no Python code runs per row or per match.

How a pass works. Detectors whose regex says it all (emails, known token families) are one
``str.replace_all``. Detectors that need a check a regex cannot do (the Luhn checksum of a card,
the mod-97 check of an IBAN, the octet range and shape of an address, the entropy of a token) first
wrap every regex candidate in two reserved private-use characters, split the text on them, decide
per candidate with vectorized expressions inside ``list.eval`` and join the pieces back. A detection
becomes a one-character *type marker* (also private use) that no later detector can match; at the
end the markers are counted and swapped for the placeholders. Characters U+E000-U+E00F are
therefore reserved: input that holds them gets U+FFFD instead.

Order, each pass seeing the markers of the passes before it:

1. known secrets: JWTs (``eyJ...``), OpenAI (``sk-``, ``sk-proj-``), AWS access key ids, GitHub
   and Slack tokens, then the value after ``aws_secret_access_key`` (the key name stays);
2. emails (before IPs, so ``ops@10.0.0.1``-style domains and dotted hosts are not half-eaten);
3. IBANs (country, check digits, 11-30 alphanumerics, optional spaces every 4), mod-97 checked;
4. IPv4 (four octets 0-255, not part of a longer dotted run such as ``1.2.3.4.5``) and IPv6
   (eight groups, or one ``::`` with at least one group of 3-4 hex digits, so ``1::2`` and
   ``std::vector`` stay; the loopback ``::1`` stays too);
5. numbers: a run of digit groups (separators ``space . -`` and parenthesized area codes) is a
   CARD when it has 13-19 digits, starts with 2-6 (the major networks), is contiguous or grouped
   like a card, and passes Luhn; otherwise a PHONE when it starts with ``+CC`` and has 9-15 digits,
   or is a national format with separators (groups of 2-5 digits, last one up to 8) and 9-15
   digits. A card-shaped number that fails Luhn stays, and so do years, times, dates, prices and
   ids under 9 digits;
6. ``Bearer <token>`` (token of 16+ characters holding a digit or symbol; the word ``Bearer``
   stays) and generic secrets: a maximal run of ``[A-Za-z0-9_+/-]`` (plus ``=`` padding) at least
   ``min_secret_length`` long with a lowercase letter, an uppercase letter and a digit, Shannon
   entropy of at least ``entropy_threshold`` bits per character, and a class-switch ratio (runs of
   lowercase / uppercase / digits / symbols per character) of at least ``min_class_switch_ratio``.
   Random base62/base64 secrets of 32+ characters switch class on ~60% of characters and pass
   ~98% of the time (~95% at 20 characters); code identifiers (``getUserProfileById2024Handler``,
   ``OAuth2AuthorizationCodeFlow``) switch less and stay. UUIDs, git SHAs and other hex strings
   have a single letter case, so they are never generic secrets (they identify, they don't grant).

No regex crosses a line break, so joining message contents with newlines never creates a match.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Sequence

import polars as pl
from pydantic import Field, StrictBool, StrictFloat, StrictInt, field_validator, model_validator

from loop_pipeline.config import ConfigModel

PLACEHOLDER_TYPES = ("EMAIL", "PHONE", "CARD", "IBAN", "IP", "SECRET")
# Detector switches (configs/redaction.yaml ``detectors``) and the placeholder each one writes.
DETECTOR_TYPES: dict[str, str] = {
    "email": "EMAIL",
    "phone": "PHONE",
    "card": "CARD",
    "iban": "IBAN",
    "ip": "IP",
    "api_key": "SECRET",
    "generic_secret": "SECRET",
}
DETECTORS = tuple(DETECTOR_TYPES)

# Reserved private-use characters: candidate delimiters and one marker per placeholder type.
_OPEN, _CLOSE = "\ue000", "\ue001"
_MARKERS: dict[str, str] = {kind: chr(0xE002 + i) for i, kind in enumerate(PLACEHOLDER_TYPES)}
_RESERVED = "[\ue000-\ue00f]"
_ANY_MARKER = "[" + "".join(_MARKERS.values()) + "]"

BEARER_MIN_TOKEN = 16

# ---------------------------------------------------------------------------------------------
# Patterns. Rust regex: no look-around, so boundaries are \b or part of the candidate.

_KNOWN_TOKENS = "|".join(
    (
        r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",  # JWT (signature may be empty)
        r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",  # OpenAI
        r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",  # AWS access key id
        r"\bgh[pousr]_[A-Za-z0-9]{30,}\b",  # GitHub classic tokens
        r"\bgithub_pat_[A-Za-z0-9_]{22,}\b",  # GitHub fine-grained tokens
        r"\bxox[abprs]-[A-Za-z0-9-]{10,}",  # Slack
    )
)
_AWS_SECRET = r"(?i)(\baws_secret_access_key[\"']?[ \t]*[:=][ \t]*[\"']?)[A-Za-z0-9/+]{20,}=*"
_EMAIL = r"[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b"
_IBAN = r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"
_IPV4_CANDIDATE = r"\b[0-9]+(?:\.[0-9]+){3,}\b"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"^{_OCTET}(?:\.{_OCTET}){{3}}$"
# Includes the alphanumerics around it, so a candidate glued to a word fails the check below.
_IPV6_CANDIDATE = r"[0-9A-Za-z]*(?::[0-9A-Za-z]*){2,}"
_HEX_GROUPS = r"[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4})*"
_IPV6_FULL = r"^[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){7}$"
_IPV6_COMPRESSED = rf"^(?:{_HEX_GROUPS})?::(?:{_HEX_GROUPS})?$"
_NUM_SEP = r"(?:[ .-]| ?\([0-9]{1,5}\) ?)"
_NUMBER = (
    rf"\+ ?(?:\([0-9]{{1,5}}\) ?)?[0-9]+(?:{_NUM_SEP}[0-9]+)*\b"  # +CC ...
    rf"|\([0-9]{{1,5}}\) ?[0-9]+(?:{_NUM_SEP}[0-9]+)*\b"  # (415) 555-2671
    rf"|\b[0-9]+(?:{_NUM_SEP}[0-9]+)+\b"  # grouped: 415-555-2671, 4111 1111 1111 1111
    r"|\b[0-9]{13,19}\b"  # contiguous card number
)
_CARD_SHAPE = r"^[2-6](?:[0-9]{12,18}|[0-9]{3}(?:[ -][0-9]{3,6}){2,4})$"
_PHONE_NATIONAL = r"^(?:\([0-9]{2,5}\) ?|[0-9]{2,5}[ .-])(?:[0-9]{2,5}[ .-])*[0-9]{2,8}$"
_BEARER = r"\b(?:Bearer|bearer|BEARER)[ \t]+[A-Za-z0-9._~+/-]+=*"
_CLASS_RUNS = r"[a-z]+|[A-Z]+|[0-9]+|[^A-Za-z0-9]+"


# ---------------------------------------------------------------------------------------------
# Configuration


class Detectors(ConfigModel):
    """Which detectors run (``detectors:`` in configs/redaction.yaml), each on or off."""

    email: StrictBool = True
    phone: StrictBool = True
    card: StrictBool = True
    iban: StrictBool = True
    ip: StrictBool = True
    api_key: StrictBool = True
    generic_secret: StrictBool = True


class RedactionConfig(ConfigModel):
    """``configs/redaction.yaml``: the detectors and how placeholders look."""

    FILE = "redaction"

    detectors: Detectors = Detectors()
    placeholder_format: str = "[{type}]"
    min_secret_length: StrictInt = Field(default=20, ge=12, le=1000)
    entropy_threshold: StrictFloat = Field(default=3.5, ge=0.0, le=8.0)
    min_class_switch_ratio: StrictFloat = Field(default=0.45, ge=0.0, le=1.0)

    @field_validator("placeholder_format")
    @classmethod
    def _placeholder_stands_apart(cls, fmt: str) -> str:
        if fmt.count("{type}") != 1:
            raise ValueError("must contain {type} exactly once, e.g. '[{type}]'")
        rendered = fmt.replace("{type}", "T")
        # A placeholder must never join the text around it into something a detector matches.
        if any(ch.isalnum() or ch in "_+/=.-@:" for ch in (rendered[0], rendered[-1])):
            raise ValueError("must start and end with a bracket-like character (not a letter, digit or any of _+/=.-@:)")
        if "\n" in fmt or any(0xE000 <= ord(ch) <= 0xE00F for ch in fmt):
            raise ValueError("must not hold line breaks or characters U+E000-U+E00F")
        return fmt

    @model_validator(mode="after")
    def _placeholders_survive_redaction(self) -> "RedactionConfig":
        flagged = _placeholders_detected(self)
        if flagged:
            raise ValueError(f"placeholder_format gives placeholders that would be redacted themselves ({', '.join(flagged)})")
        return self

    def placeholder(self, kind: str) -> str:
        if kind not in PLACEHOLDER_TYPES:
            raise ValueError(f"unknown placeholder type {kind!r}; known: {', '.join(PLACEHOLDER_TYPES)}")
        return self.placeholder_format.replace("{type}", kind)

    @property
    def placeholders(self) -> dict[str, str]:
        return {kind: self.placeholder(kind) for kind in PLACEHOLDER_TYPES}


@lru_cache(maxsize=64)
def _placeholders_detected(config: RedactionConfig) -> tuple[str, ...]:
    samples = list(config.placeholders.values())
    samples += [" ".join(samples), "".join(samples), "Bearer " + config.placeholder("SECRET")]
    found = pl.DataFrame({"text": samples}).select(_mark(pl.col("text"), config).str.contains(_ANY_MARKER))
    return tuple(samples[i] for i, hit in enumerate(found.to_series()) if hit)


# ---------------------------------------------------------------------------------------------
# Public API


def redact_expr(expr: pl.Expr, config: RedactionConfig) -> pl.Expr:
    """Text to redacted text (nulls stay null)."""
    return _finish(_mark(expr, config), config)


def find_sensitive_expr(expr: pl.Expr, config: RedactionConfig) -> pl.Expr:
    """True where :func:`redact_expr` would replace anything (false for null)."""
    return _mark(expr, config).str.contains(_ANY_MARKER).fill_null(False)


# Rows redacted together (see redact_frame).
_ROWS_PER_SLICE = 100_000


def redact_frame(
    frame: pl.DataFrame,
    text_columns: Sequence[str],
    message_columns: Sequence[str] = (),
    *,
    config: RedactionConfig,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Redact String ``text_columns`` and the ``content`` of each message in ``message_columns``.

    Message columns are ``List(Struct{role, content, ...})``: roles, order, other fields and nulls
    are kept. Returns the frame and the number of replacements per placeholder type (every type
    present, 0 when none). Idempotent: redacted text is left as it is and counts nothing. Runs on
    polars' streaming engine, so large frames use every core; row order is kept.
    """
    text_columns, message_columns = list(text_columns), list(message_columns)
    _check_columns(frame, text_columns, message_columns)
    # An all-null column (dtype Null) has nothing to redact.
    text_columns = [c for c in text_columns if frame.schema[c] != pl.Null]
    message_columns = [c for c in message_columns if frame.schema[c] != pl.Null]
    if not text_columns and not message_columns:
        return frame, {kind: 0 for kind in PLACEHOLDER_TYPES}

    def on_content(column: str, fn: Callable[[pl.Expr], pl.Expr]) -> pl.Expr:
        return pl.col(column).list.eval(pl.element().struct.with_fields(fn(pl.field("content")).alias("content")))

    marked = [_mark(pl.col(c), config).alias(c) for c in text_columns]
    marked += [on_content(c, lambda e: _mark(e, config)).alias(c) for c in message_columns]
    count_names = {kind: f"__redaction_count_{kind}" for kind in PLACEHOLDER_TYPES}
    clash = sorted(set(count_names.values()) & set(frame.columns))
    if clash:
        raise ValueError(f"redact_frame: column name(s) reserved for counting: {', '.join(clash)}")
    row_counts = []
    for kind, marker in _MARKERS.items():
        per_column = [pl.col(c).str.count_matches(marker, literal=True) for c in text_columns]
        per_column += [
            pl.col(c).list.eval(pl.element().struct.field("content").str.count_matches(marker, literal=True)).list.sum()
            for c in message_columns
        ]
        row_counts.append(pl.sum_horizontal(per_column).alias(count_names[kind]))
    finished = [_finish(pl.col(c), config).alias(c) for c in text_columns]
    finished += [on_content(c, lambda e: _finish(e, config)).alias(c) for c in message_columns]
    # The streaming engine runs the (single-threaded per batch) string work on all cores. Only the
    # redacted columns go through it (the others stay where they are, not copied), a slice of
    # rows at a time: memory holds the redacted columns plus one slice's intermediate texts.
    columns = text_columns + message_columns
    redacted: list[pl.DataFrame] = []
    totals = dict.fromkeys(PLACEHOLDER_TYPES, 0)
    for start in range(0, max(frame.height, 1), _ROWS_PER_SLICE):
        result = (
            frame.slice(start, _ROWS_PER_SLICE)
            .lazy()
            .select(columns)
            .with_columns(marked)
            .with_columns(row_counts)
            .with_columns(finished)
            .collect(engine="streaming")
        )
        for kind, total in zip(PLACEHOLDER_TYPES, result.select(pl.col(name).sum() for name in count_names.values()).row(0)):
            totals[kind] += int(total or 0)
        redacted.append(result.select(columns))
    return frame.with_columns(pl.concat(redacted).get_columns()), totals


def _check_columns(frame: pl.DataFrame, text_columns: list[str], message_columns: list[str]) -> None:
    missing = [c for c in (*text_columns, *message_columns) if c not in frame.columns]
    if missing:
        raise ValueError(f"redact_frame: column(s) not in the frame: {', '.join(missing)}")
    both = sorted(set(text_columns) & set(message_columns))
    if both:
        raise ValueError(f"redact_frame: column(s) listed as both text and messages: {', '.join(both)}")
    for column in text_columns:
        dtype = frame.schema[column]
        if dtype != pl.String and dtype != pl.Null:
            raise ValueError(f"redact_frame: text column {column!r} must be String, got {dtype}")
    for column in message_columns:
        dtype = frame.schema[column]
        if dtype == pl.Null:
            continue
        inner = dtype.inner if isinstance(dtype, pl.List) else None
        content = dict(inner.to_schema()).get("content") if isinstance(inner, pl.Struct) else None
        if content != pl.String:
            raise ValueError(
                f"redact_frame: message column {column!r} must be List(Struct{{role, content: String}}), got {dtype}"
            )


# ---------------------------------------------------------------------------------------------
# The passes


def _mark(expr: pl.Expr, config: RedactionConfig) -> pl.Expr:
    """Text with every detection replaced by its one-character type marker."""
    text = expr.str.replace_all(_RESERVED, "\ufffd")
    secret = _MARKERS["SECRET"]
    if config.detectors.api_key:
        text = text.str.replace_all(_KNOWN_TOKENS, secret)
        text = text.str.replace_all(_AWS_SECRET, "${1}" + secret)
    if config.detectors.email:
        text = text.str.replace_all(_EMAIL, _MARKERS["EMAIL"])
    if config.detectors.iban:
        text = _validated_pass(text, _IBAN, _iban_steps())
    if config.detectors.ip:
        text = _validated_pass(text, _IPV4_CANDIDATE, _ipv4_steps())
        text = _validated_pass(text, _IPV6_CANDIDATE, _ipv6_steps())
    if config.detectors.card or config.detectors.phone:
        text = _validated_pass(text, _NUMBER, _number_steps(config))
    if config.detectors.api_key or config.detectors.generic_secret:
        alternatives = ([_BEARER] if config.detectors.api_key else []) + (
            [rf"[A-Za-z0-9_+/-]{{{config.min_secret_length},}}=*"] if config.detectors.generic_secret else []
        )
        text = _validated_pass(text, "|".join(alternatives), _secret_steps(config))
    return text


def _finish(marked: pl.Expr, config: RedactionConfig) -> pl.Expr:
    return marked.str.replace_many(list(_MARKERS.values()), [config.placeholder(k) for k in _MARKERS])


def _validated_pass(text: pl.Expr, pattern: str, steps: Sequence[Sequence[pl.Expr]]) -> pl.Expr:
    """Replace the regex candidates for which ``steps`` give a ``replacement`` (null keeps one).

    Each candidate is wrapped as OPEN candidate CLOSE and the text split on OPEN: the first piece
    is plain text, every other piece is ``candidate CLOSE rest``. Pieces become structs
    ``{head, rest, cand}`` (``cand`` null for plain text); each step adds fields computed from
    earlier ones with ``pl.field``, one ``list.eval`` per step so a value used many times (the
    digits of a card, say) is computed once; the last step adds ``replacement``.
    """
    pieces = text.str.replace_all(pattern, _OPEN + "${0}" + _CLOSE).str.split(_OPEN)
    split = pl.element().str.splitn(_CLOSE, 2).struct.rename_fields(["head", "rest"])
    pieces = pieces.list.eval(split).list.eval(
        pl.element().struct.with_fields(pl.when(pl.field("rest").is_not_null()).then(pl.field("head")).alias("cand"))
    )
    for step in steps:
        pieces = pieces.list.eval(pl.element().struct.with_fields(step))
    field = pl.element().struct.field
    rebuilt = pl.concat_str([pl.coalesce(field("replacement"), field("head")), field("rest").fill_null("")])
    return pieces.list.eval(rebuilt).list.join("")


_CAND = pl.field("cand")
_NO_REPLACEMENT = pl.lit(None, dtype=pl.String)


def _iban_steps() -> list[list[pl.Expr]]:
    compact = _CAND.str.replace_all(" ", "", literal=True)
    rearranged = pl.concat_str([compact.str.slice(4), compact.str.slice(0, 4)])
    letters = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    digits = rearranged.str.replace_many(letters, [str(10 + i) for i in range(26)]).str.pad_start(72, "0")
    remainder = pl.lit(0, dtype=pl.Int64)
    for chunk in range(8):  # 34 characters are at most 68 digits: 8 chunks of 9
        value = pl.field("digits").str.slice(9 * chunk, 9).cast(pl.Int64, strict=False).fill_null(0)
        remainder = (remainder * 1_000_000_000 + value) % 97
    valid = pl.field("length").is_between(15, 34) & (remainder == 1)
    return [
        [digits.alias("digits"), compact.str.len_chars().alias("length")],
        [pl.when(valid).then(pl.lit(_MARKERS["IBAN"])).otherwise(_NO_REPLACEMENT).alias("replacement")],
    ]


def _ipv4_steps() -> list[list[pl.Expr]]:
    return [[pl.when(_CAND.str.contains(_IPV4)).then(pl.lit(_MARKERS["IP"])).otherwise(_NO_REPLACEMENT).alias("replacement")]]


def _ipv6_steps() -> list[list[pl.Expr]]:
    compressed = (
        _CAND.str.contains(_IPV6_COMPRESSED)
        & _CAND.str.count_matches(r"[0-9A-Fa-f]+").is_between(2, 7)
        & _CAND.str.contains(r"(?:^|:)[0-9A-Fa-f]{3,4}(?::|$)")
    )
    valid = _CAND.str.contains(_IPV6_FULL) | compressed
    return [[pl.when(valid).then(pl.lit(_MARKERS["IP"])).otherwise(_NO_REPLACEMENT).alias("replacement")]]


def _luhn_sum(number: pl.Expr) -> pl.Expr:
    """Luhn sum of a number of at most 19 digits (UInt64), by integer arithmetic."""
    total = pl.lit(0, dtype=pl.Int64)
    for position in range(19):  # from the right
        digit = ((number // (10**position)) % 10).cast(pl.Int64)
        if position % 2 == 1:
            digit = digit * 2 - (digit // 5) * 9
        total = total + digit
    return total


def _number_steps(config: RedactionConfig) -> list[list[pl.Expr]]:
    digits = _CAND.str.replace_all(r"[^0-9]", "")
    count = pl.field("digits").str.len_chars()
    card_shaped = _CAND.str.contains(_CARD_SHAPE) & count.is_between(13, 19)
    # An invalid dotted quad (999.10.10.10) is a bad address, not a phone number.
    ip_shaped = _CAND.str.contains(r"^[0-9]{1,3}(?:\.[0-9]{1,3}){3}$")
    national = _CAND.str.contains(_PHONE_NATIONAL) & ~pl.field("card_shaped") & ~ip_shaped
    is_phone = count.is_between(9, 15) & (_CAND.str.starts_with("+") | national)
    number = pl.when(pl.field("card_shaped")).then(pl.field("digits").cast(pl.UInt64, strict=False))
    is_card = pl.field("card_shaped") & (_luhn_sum(pl.field("number")) % 10 == 0).fill_null(False)
    out = pl.when(pl.lit(False)).then(_NO_REPLACEMENT)
    if config.detectors.card:
        out = out.when(is_card).then(pl.lit(_MARKERS["CARD"]))
    if config.detectors.phone:
        out = out.when(is_phone).then(pl.lit(_MARKERS["PHONE"]))
    return [
        [digits.alias("digits")],
        [card_shaped.alias("card_shaped")],
        [number.alias("number")],
        [out.otherwise(_NO_REPLACEMENT).alias("replacement")],
    ]


def shannon_entropy(text: pl.Expr) -> pl.Expr:
    """Bits per character of each string's character distribution (0 for an empty string)."""
    counts = text.str.split("").list.eval(pl.element().unique_counts().cast(pl.Float64))
    length = text.str.len_chars().cast(pl.Float64)
    # H = log2(n) - sum(c * log2(c)) / n
    weighted = counts.list.eval(pl.element() * pl.element().log(2)).list.sum()
    return pl.when(length == 0).then(pl.lit(0.0)).otherwise(length.log(2) - weighted / length)


def _secret_steps(config: RedactionConfig) -> list[list[pl.Expr]]:
    prefix = _CAND.str.extract(r"^((?:Bearer|bearer|BEARER)[ \t]+)", 1)
    token = _CAND.str.slice(pl.field("prefix").str.len_chars().fill_null(0))
    length = pl.field("token").str.len_chars()
    out = pl.when(pl.lit(False)).then(_NO_REPLACEMENT)
    if config.detectors.api_key:
        bearer_ok = (length >= BEARER_MIN_TOKEN) & pl.field("token").str.contains(r"[0-9._~+/-]")
        out = out.when(pl.field("prefix").is_not_null() & bearer_ok).then(
            pl.concat_str([pl.field("prefix"), pl.lit(_MARKERS["SECRET"])])
        )
    if config.detectors.generic_secret:
        token_ = pl.field("token")
        mixed = token_.str.contains("[a-z]") & token_.str.contains("[A-Z]") & token_.str.contains("[0-9]")
        switches = token_.str.count_matches(_CLASS_RUNS).cast(pl.Float64) / length.cast(pl.Float64)
        # Entropy only where the cheap checks pass (null elsewhere): it is the costly one.
        shape_ok = (length >= config.min_secret_length) & mixed & (switches >= config.min_class_switch_ratio)
        entropy = shannon_entropy(pl.when(shape_ok).then(token_))
        # "Bearer <generic secret>": the word stays whichever detector fires.
        out = out.when(shape_ok & (entropy >= config.entropy_threshold)).then(
            pl.concat_str([pl.field("prefix").fill_null(""), pl.lit(_MARKERS["SECRET"])])
        )
    return [
        [prefix.alias("prefix")],
        [token.alias("token")],
        [out.otherwise(_NO_REPLACEMENT).alias("replacement")],
    ]
