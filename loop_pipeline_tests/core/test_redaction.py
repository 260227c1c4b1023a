"""Redaction: every detector on positive and negative examples, order, message columns, counts,
idempotence, the data-quality predicate, configuration, and a vectorization / speed check."""

from __future__ import annotations

import random
import string
from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from loop_pipeline.core.redaction import (
    DETECTORS,
    PLACEHOLDER_TYPES,
    RedactionConfig,
    find_sensitive_expr,
    redact_expr,
    redact_frame,
    shannon_entropy,
)
from loop_pipeline.schemas.traces import MESSAGES_DTYPE
from loop_pipeline.config import ConfigError
from loop_pipeline_tests.helpers import REPO_CONFIGS

CONFIG = RedactionConfig()

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


def redact(texts: list[str | None], config: RedactionConfig = CONFIG) -> list[str | None]:
    frame = pl.DataFrame({"text": texts}, schema={"text": pl.String})
    return frame.select(redact_expr(pl.col("text"), config)).to_series().to_list()


def redact_one(text: str, config: RedactionConfig = CONFIG) -> str:
    return redact([text], config)[0]


def sensitive(texts: list[str | None], config: RedactionConfig = CONFIG) -> list[bool]:
    frame = pl.DataFrame({"text": texts}, schema={"text": pl.String})
    return frame.select(find_sensitive_expr(pl.col("text"), config)).to_series().to_list()


def counts_of(texts: list[str], config: RedactionConfig = CONFIG) -> dict[str, int]:
    return redact_frame(pl.DataFrame({"text": texts}), ["text"], config=config)[1]


# ---------------------------------------------------------------------------------------------
# Emails


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mail me at john.doe@example.com.", "Mail me at [EMAIL]."),
        ("(jane+billing@mail.example.co.uk), thanks!", "([EMAIL]), thanks!"),
        ("Contact:ops_team-1@corp.io;sales@corp.io", "Contact:[EMAIL];[EMAIL]"),
        ('{"email": "a.b@c-d.org"}', '{"email": "[EMAIL]"}'),
        ("Reach admin@db.internal.example.com now", "Reach [EMAIL] now"),
    ],
)
def test_emails_inside_text_with_punctuation(text: str, expected: str) -> None:
    assert redact_one(text) == expected


@pytest.mark.parametrize("text", ["Follow @openai on X", "user@localhost is not routable", "price is 5 @ 3 each", "a@b"])
def test_not_emails(text: str) -> None:
    assert redact_one(text) == text


# ---------------------------------------------------------------------------------------------
# Payment cards


@pytest.mark.parametrize(
    "card",
    ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "5555 5555 5555 4444", "378282246310005",
     "3782 822463 10005", "6011111111111117", "4222222222222"],
)
def test_luhn_valid_cards_are_redacted(card: str) -> None:
    assert redact_one(f"My card is {card}, exp 12/27.") == "My card is [CARD], exp 12/27."


@pytest.mark.parametrize(
    "number",
    [
        "4111 1111 1111 1112",  # 16 digits, Luhn fails
        "4111111111111112",
        "5555-5555-5555-4445",
        "1700000000000",  # epoch milliseconds (starts with 1: not a card network)
        "12345678901234567890",  # 20 digits
    ],
)
def test_non_luhn_or_non_card_numbers_stay(number: str) -> None:
    text = f"Reference {number} in the ledger."
    assert redact_one(text) == text


# ---------------------------------------------------------------------------------------------
# IBANs


@pytest.mark.parametrize(
    "iban", ["DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "GB82 WEST 1234 5698 7654 32", "FR14 2004 1010 0505 0001 3M02 606"]
)
def test_valid_ibans_are_redacted(iban: str) -> None:
    assert redact_one(f"Pay to {iban}. Thanks") == "Pay to [IBAN]. Thanks"


@pytest.mark.parametrize("text", ["Pay to GB82WEST12345698765433 now", "SKU AB12CDEF34567890GH in stock", "DE00 3704 0044 0532 0130 00"])
def test_invalid_ibans_stay(text: str) -> None:
    assert redact_one(text) == text


# ---------------------------------------------------------------------------------------------
# IP addresses


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ssh 192.168.1.10 now", "ssh [IP] now"),
        ("host 10.0.0.255:8080,", "host [IP]:8080,"),
        ("edge 255.255.255.255.", "edge [IP]."),
        ("cidr 172.16.0.0/12", "cidr [IP]/12"),
        ("v6 2001:db8::ff00:42:8329 ok", "v6 [IP] ok"),
        ("link fe80::1 ok", "link [IP] ok"),
        ("full 2001:0db8:85a3:0000:0000:8a2e:0370:7334.", "full [IP]."),
        ("url http://[2001:db8::1]:443/", "url http://[[IP]]:443/"),
    ],
)
def test_ip_addresses_are_redacted(text: str, expected: str) -> None:
    assert redact_one(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "bad 256.1.1.1 and 999.10.10.10",
        "version 1.2.3.4.5 released",
        "build v1.2.3.4 shipped",
        "at 12:30:45 today",
        "mac 00:1A:2B:3C:4D:5E",
        "std::vector<int> and a[1::2]",
        "ratio 3:2:1",
    ],
)
def test_not_ip_addresses(text: str) -> None:
    assert redact_one(text) == text


def test_email_domain_is_not_turned_into_an_ip() -> None:
    assert redact_one("write to ops@10.0.0.1.nip.io or ops@example.com") == "write to [EMAIL] or [EMAIL]"
    assert counts_of(["write to ops@10.0.0.1.nip.io"])["IP"] == 0


# ---------------------------------------------------------------------------------------------
# Phone numbers


@pytest.mark.parametrize(
    "phone",
    ["+1 415 555 2671", "+14155552671", "+44 20 7946 0958", "+49 (0)30 1234567", "+33 1 23 45 67 89", "(415) 555-2671",
     "415-555-2671", "415.555.2671", "020 7946 0958", "06 12 34 56 78", "+1-415-555-2671"],
)
def test_phone_numbers_are_redacted(phone: str) -> None:
    assert redact_one(f"Call {phone} today.") == "Call [PHONE] today."


@pytest.mark.parametrize(
    "text",
    [
        "In 2024 we sold 1500 units.",
        "Meet at 12:30 or 14:45.",
        "It costs $1,299.00 or 1299.99 EUR.",
        "Order 12345678 shipped on 2024-05-01.",
        "Order #87654321, ticket 555-2671.",
        "Scores 3 - 2 and 10-20 items, pi 3.14159.",
        "Dates 2024-05-01 to 2024-06-30.",
    ],
)
def test_not_phone_numbers(text: str) -> None:
    assert redact_one(text) == text


# ---------------------------------------------------------------------------------------------
# Secrets: token families, JWT, Bearer, generic high entropy


@pytest.mark.parametrize(
    "token",
    [
        "sk-abcdefghijklmnopqrstuvwxyz0123456789ABCD",
        "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z_AbC-dEf",
        "AKIAIOSFODNN7EXAMPLE",
        "ASIAY34FZKBOKMUTVV7A",
        "ghp_1a2B3c4D5e6F7g8H9i0JkLmNoPqRsTuVwXyZ",
        "gho_16C7e42F292c6912E7710c838347Ae178B4a",
        "ghu_16C7e42F292c6912E7710c838347Ae178B4a",
        "ghs_16C7e42F292c6912E7710c838347Ae178B4a",
        "ghr_1B4a2e77838347a7E420ce178F2E7c6912E169",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ012",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "xoxp-2048-4096-8192-abcdef0123",
        JWT,
    ],
)
def test_token_families_are_redacted_whole(token: str) -> None:
    assert redact_one(f"use {token} here.") == "use [SECRET] here."


@pytest.mark.parametrize(
    "text",
    [
        "the task-list and risk-free desk-job",  # "sk-" only after a word boundary
        "sk-short is not a key",
        "ghp_short and AKIA1234",
        "xoxb- alone",
        "eyJ is how base64 JSON starts",
    ],
)
def test_token_near_misses_stay(text: str) -> None:
    assert redact_one(text) == text


def test_aws_secret_key_value_is_redacted_and_name_kept() -> None:
    text = "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\nregion = eu-west-1"
    assert redact_one(text) == "aws_secret_access_key = [SECRET]\nregion = eu-west-1"
    assert redact_one('AWS_SECRET_ACCESS_KEY: "abcdefghijklmnopqrstuvwxyz0123456789ABCD"') == 'AWS_SECRET_ACCESS_KEY: "[SECRET]"'


def test_jwt_is_not_half_eaten_and_counts_once() -> None:
    text = f"Authorization: Bearer {JWT}"
    assert redact_one(text) == "Authorization: Bearer [SECRET]"
    assert counts_of([text])["SECRET"] == 1
    # A JWT with an empty signature (alg none, "header.payload.") is still one secret.
    head, payload, _ = JWT.split(".")
    assert redact_one(f"token {head}.{payload}. end") == "token [SECRET] end"


def test_bearer_headers() -> None:
    assert redact_one("curl -H 'Authorization: Bearer abc123def456ghi789jkl'") == "curl -H 'Authorization: Bearer [SECRET]'"
    assert redact_one("BEARER 0123456789abcdef0123 x") == "BEARER [SECRET] x"
    for text in ("Bearer authentication is standard.", "The bearer of bad news.", "Bearer token"):
        assert redact_one(text) == text


def test_generic_high_entropy_tokens_are_redacted() -> None:
    for token in ("8fDk2LpQ9zXr4TbN7vWs1YhC", "a8F3kL9mQ2xZ7pR4tY6wB5nM", "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe"):
        assert redact_one(f'config {{"key": "{token}"}}') == 'config {"key": "[SECRET]"}'
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits
    tokens = ["".join(rng.choice(alphabet) for _ in range(40)) for _ in range(300)]
    redacted = redact([f"secret={t};" for t in tokens])
    share = sum(r == "secret=[SECRET];" for r in redacted) / len(tokens)
    assert share >= 0.97, share


@pytest.mark.parametrize(
    "text",
    [
        "Internationalization and counterrevolutionaries are long ordinary words.",
        "Supercalifragilisticexpialidocious",
        "call getUserProfileById2024Handler then OAuth2AuthorizationCodeFlow",
        "see src/components/UserProfile2 and com/example/myapp/MainActivity2",
        "MAX_RETRY_COUNT_2024 and test_user_2024_09_15_report",
        "request 550e8400-e29b-41d4-a716-446655440000",  # UUIDs are kept (identifiers, not credentials)
        "commit 3f786850e387550fdab836ed7e6dc881de23001b",  # hex digests too (one letter case)
        "aA1aA1aA1aA1aA1aA1aA1aA1",  # mixed but repetitive: low entropy
        "The quick brown fox jumps over the lazy dog while 42 engineers review 7 pull requests.",
    ],
)
def test_ordinary_text_and_identifiers_are_not_secrets(text: str) -> None:
    assert redact_one(text) == text


def test_shannon_entropy_expression() -> None:
    frame = pl.DataFrame({"t": ["aaaa", "abab", "abcd", "", None]})
    values = frame.select(shannon_entropy(pl.col("t"))).to_series().to_list()
    assert values[:4] == pytest.approx([0.0, 1.0, 2.0, 0.0])
    assert values[4] is None


# ---------------------------------------------------------------------------------------------
# Frames: text and message columns, counts, idempotence, the data-quality predicate


MIXED = [
    "Hi, I'm ann@example.com, card 4111 1111 1111 1111, call +1 415 555 2671.",
    "IBAN DE89 3704 0044 0532 0130 00 from 10.1.2.3 with sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
    "Nothing to see: order 12345678 on 2024-05-01 at 12:30 for $19.99.",
    None,
    "",
]


def test_redact_frame_text_columns_and_counts() -> None:
    frame = pl.DataFrame({"id": [1, 2, 3, 4, 5], "output": MIXED, "other": MIXED})
    redacted, counts = redact_frame(frame, ["output"], config=CONFIG)
    assert redacted["output"].to_list() == [
        "Hi, I'm [EMAIL], card [CARD], call [PHONE].",
        "IBAN [IBAN] from [IP] with [SECRET]",
        MIXED[2],
        None,
        "",
    ]
    assert redacted["other"].to_list() == MIXED  # not listed: untouched
    assert redacted["id"].to_list() == [1, 2, 3, 4, 5]
    assert counts == {"EMAIL": 1, "PHONE": 1, "CARD": 1, "IBAN": 1, "IP": 1, "SECRET": 1}
    assert list(counts) == list(PLACEHOLDER_TYPES)


def test_counts_have_every_type_with_zero() -> None:
    _, counts = redact_frame(pl.DataFrame({"t": ["plain words only", None]}), ["t"], config=CONFIG)
    assert counts == {kind: 0 for kind in PLACEHOLDER_TYPES}
    _, counts = redact_frame(pl.DataFrame({"t": ["a@b.io x@y.io", "c@d.io"]}), ["t"], config=CONFIG)
    assert counts["EMAIL"] == 3 and sum(counts.values()) == 3


def test_redact_frame_message_columns_keep_roles_order_and_nulls() -> None:
    messages = [
        [
            {"role": "system", "content": "You are support. Key: sk-abcdefghijklmnopqrstuvwxyz0123456789ABCD"},
            {"role": "user", "content": "my email is bob@example.org and my ip 8.8.8.8"},
            {"role": "assistant", "content": None},
            {"role": "user", "content": "thanks"},
        ],
        None,
        [],
        [{"role": "user", "content": "call (415) 555-2671"}],
    ]
    frame = pl.DataFrame({"messages": messages, "output": ["ok bob@example.org", None, "x", "y"]}, schema={"messages": MESSAGES_DTYPE, "output": pl.String})
    redacted, counts = redact_frame(frame, ["output"], ["messages"], config=CONFIG)
    assert redacted.schema == frame.schema
    rows = redacted["messages"].to_list()
    assert rows[0] == [
        {"role": "system", "content": "You are support. Key: [SECRET]"},
        {"role": "user", "content": "my email is [EMAIL] and my ip [IP]"},
        {"role": "assistant", "content": None},
        {"role": "user", "content": "thanks"},
    ]
    assert rows[1] is None and rows[2] == []
    assert rows[3] == [{"role": "user", "content": "call [PHONE]"}]
    assert redacted["output"].to_list() == ["ok [EMAIL]", None, "x", "y"]
    assert counts == {"EMAIL": 2, "PHONE": 1, "CARD": 0, "IBAN": 0, "IP": 1, "SECRET": 1}


def test_redact_frame_gives_the_same_rows_and_counts_a_slice_at_a_time(monkeypatch) -> None:
    from loop_pipeline.core import redaction

    frame = pl.DataFrame({"id": range(7), "t": MIXED + ["a@b.io x@y.io", "plain"], "m": [[{"role": "user", "content": "c@d.io"}]] * 7})
    whole, whole_counts = redact_frame(frame, ["t"], ["m"], config=CONFIG)
    monkeypatch.setattr(redaction, "_ROWS_PER_SLICE", 3)  # slices of 3, 3 and 1 rows
    sliced, sliced_counts = redact_frame(frame, ["t"], ["m"], config=CONFIG)
    assert sliced.equals(whole) and sliced.columns == frame.columns
    assert sliced_counts == whole_counts and whole_counts["EMAIL"] == 1 + 2 + 7
    empty, counts = redact_frame(frame.clear(), ["t"], ["m"], config=CONFIG)
    assert empty.height == 0 and empty.schema == frame.schema and sum(counts.values()) == 0


def test_extra_struct_fields_are_kept() -> None:
    dtype = pl.List(pl.Struct({"role": pl.String, "content": pl.String, "name": pl.String}))
    frame = pl.DataFrame({"m": [[{"role": "user", "content": "x@y.com", "name": "ann"}]]}, schema={"m": dtype})
    redacted, _ = redact_frame(frame, [], ["m"], config=CONFIG)
    assert redacted["m"].to_list() == [[{"role": "user", "content": "[EMAIL]", "name": "ann"}]]


def test_redaction_is_idempotent_and_placeholders_are_not_secrets() -> None:
    frame = pl.DataFrame({"t": MIXED + [f"Bearer {JWT}", "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"]})
    once, first = redact_frame(frame, ["t"], config=CONFIG)
    twice, second = redact_frame(once, ["t"], config=CONFIG)
    assert sum(first.values()) > 0
    assert twice.equals(once)
    assert second == {kind: 0 for kind in PLACEHOLDER_TYPES}
    placeholders = " ".join(f"[{kind}]" for kind in PLACEHOLDER_TYPES)
    assert redact_one(placeholders) == placeholders
    assert redact_one("[EMAIL][PHONE][CARD][IBAN][IP][SECRET]") == "[EMAIL][PHONE][CARD][IBAN][IP][SECRET]"


def test_find_sensitive_true_before_and_false_after() -> None:
    texts = MIXED + ["see 4111 1111 1111 1112", f"tok {JWT}"]
    assert sensitive(texts) == [True, True, False, False, False, False, True]
    redacted = redact(texts)
    assert sensitive(redacted) == [False] * len(texts)
    # The predicate agrees with redact_frame's counts row by row.
    for text, flagged in zip(texts, sensitive(texts)):
        if text is not None:
            assert (sum(counts_of([text]).values()) > 0) == flagged


def test_newline_joined_messages_create_no_match() -> None:
    # The data-quality check joins message contents with newlines: no detector crosses them.
    assert redact_one("call 415\n555 2671") == "call 415\n555 2671"
    assert redact_one("Bearer\nabcdefghij0123456789") == "Bearer\nabcdefghij0123456789"


def test_reserved_private_use_characters_are_neutralised() -> None:
    text = "odd \ue002\ue000 chars a@b.io"
    assert redact_one(text) == "odd \ufffd\ufffd chars [EMAIL]"
    assert counts_of([text]) == {"EMAIL": 1, "PHONE": 0, "CARD": 0, "IBAN": 0, "IP": 0, "SECRET": 0}


def test_redact_frame_rejects_bad_columns() -> None:
    frame = pl.DataFrame({"n": [1], "t": ["x"]})
    with pytest.raises(ValueError, match="missing_col"):
        redact_frame(frame, ["missing_col"], config=CONFIG)
    with pytest.raises(ValueError, match="'n' must be String"):
        redact_frame(frame, ["n"], config=CONFIG)
    with pytest.raises(ValueError, match="'t' must be List"):
        redact_frame(frame, [], ["t"], config=CONFIG)


# ---------------------------------------------------------------------------------------------
# Configuration


def test_config_file_documents_the_defaults() -> None:
    loaded = RedactionConfig.from_yaml(REPO_CONFIGS / "redaction.yaml")
    assert loaded == RedactionConfig()
    assert loaded.model_dump()["detectors"] == {name: True for name in DETECTORS}
    assert loaded.placeholders == {kind: f"[{kind}]" for kind in PLACEHOLDER_TYPES}


def test_detectors_switch_off() -> None:
    text = "ann@example.com 4111 1111 1111 1111 +1 415 555 2671 DE89370400440532013000 10.0.0.1 sk-abcdefghijklmnopqrstuvwxyz0123456789ABCD 8fDk2LpQ9zXr4TbN7vWs1YhC"
    everything = "[EMAIL] [CARD] [PHONE] [IBAN] [IP] [SECRET] [SECRET]"
    assert redact_one(text) == everything
    off = {name: False for name in DETECTORS}
    nothing = RedactionConfig.from_mapping({"detectors": off})
    assert redact_one(text, nothing) == text
    assert sensitive([text], nothing) == [False]
    assert redact_one(text, RedactionConfig.from_mapping({"detectors": {"email": False}})).startswith("ann@example.com [CARD]")
    # Card off: a card number is not reported as a phone instead.
    no_card = RedactionConfig(detectors={"card": False})
    assert redact_one("pay 4111 1111 1111 1111 or call +1 415 555 2671", no_card) == "pay 4111 1111 1111 1111 or call [PHONE]"
    no_phone = RedactionConfig(detectors={"phone": False})
    assert redact_one("pay 4111 1111 1111 1111 or call +1 415 555 2671", no_phone) == "pay [CARD] or call +1 415 555 2671"
    # Known token families and the generic detector are separate switches.
    only_keys = RedactionConfig(detectors={"generic_secret": False})
    assert redact_one("sk-abcdefghijklmnopqrstuvwxyz0123456789ABCD 8fDk2LpQ9zXr4TbN7vWs1YhC", only_keys) == "[SECRET] 8fDk2LpQ9zXr4TbN7vWs1YhC"
    only_generic = RedactionConfig(detectors={"api_key": False})
    assert redact_one("AKIAIOSFODNN7EXAMPLE 8fDk2LpQ9zXr4TbN7vWs1YhC", only_generic) == "AKIAIOSFODNN7EXAMPLE [SECRET]"
    no_ip = RedactionConfig(detectors={"ip": False})
    assert redact_one("10.0.0.1 and fe80::1", no_ip) == "10.0.0.1 and fe80::1"


def test_thresholds_change_the_generic_detector() -> None:
    token = "8fDk2LpQ9zXr4TbN7vWs1YhC"  # 24 characters
    assert redact_one(token, RedactionConfig(min_secret_length=30)) == token
    assert redact_one(token, RedactionConfig(entropy_threshold=4.9)) == token
    identifier = "getUserProfileById2024Handler"
    assert redact_one(identifier) == identifier
    assert redact_one(identifier, RedactionConfig(min_class_switch_ratio=0.3)) == "[SECRET]"


def test_custom_placeholder_format() -> None:
    config = RedactionConfig.from_mapping({"placeholder_format": "<redacted:{type}>"})
    frame = pl.DataFrame({"t": ["ann@example.com on 10.0.0.1"]})
    once, counts = redact_frame(frame, ["t"], config=config)
    assert once["t"].to_list() == ["<redacted:EMAIL> on <redacted:IP>"]
    assert counts["EMAIL"] == 1 and counts["IP"] == 1
    twice, again = redact_frame(once, ["t"], config=config)
    assert twice.equals(once) and sum(again.values()) == 0


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"detector": {"email": True}}, r"^redaction.yaml: detector: unknown key$"),
        ({"detectors": {"emails": True, "ssn": False}}, r"detectors.emails: unknown key; detectors.ssn: unknown key"),
        ({"detectors": {"email": "yes"}}, r"detectors.email: Input should be a valid boolean \(got 'yes'\)"),
        ({"detectors": ["email"]}, r"detectors: Input should be a valid dictionary"),
        ({"placeholder_format": "[REDACTED]"}, r"placeholder_format: Value error, must contain \{type\} exactly once"),
        ({"placeholder_format": "{type}"}, r"placeholder_format: Value error, must start and end with a bracket-like"),
        ({"placeholder_format": "REDACTED_{type}!"}, r"placeholder_format: Value error, must start and end"),
        ({"min_secret_length": 4}, r"min_secret_length: Input should be greater than or equal to 12 \(got 4\)"),
        ({"min_secret_length": 20.5}, r"min_secret_length: Input should be a valid integer"),
        ({"entropy_threshold": 9}, r"entropy_threshold: Input should be less than or equal to 8"),
        ({"min_class_switch_ratio": -0.1}, r"min_class_switch_ratio: Input should be greater than or equal to 0"),
    ],
)
def test_config_errors_name_the_key(mapping: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as failure:
        RedactionConfig.from_mapping(mapping, source="redaction.yaml")
    assert "\n" not in str(failure.value)


def test_placeholder_that_would_be_redacted_is_rejected() -> None:
    with pytest.raises(ValidationError, match="would be redacted themselves"):
        RedactionConfig(placeholder_format="(+1 415 555 2671 {type})")


def test_a_file_merges_over_the_defaults_and_names_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "redaction.yaml"
    path.write_text("detectors:\n  phone: false\nplaceholder_format: '<{type}>'\nmin_secret_length: 24\n", encoding="utf-8")
    config = RedactionConfig.from_yaml(path)
    assert (config.detectors.phone, config.detectors.email, config.placeholder_format, config.min_secret_length) == (
        False,
        True,
        "<{type}>",
        24,
    )
    path.write_text("detectors: {email: true}\nentropy: 3.0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"^{path}: entropy: unknown key$"):
        RedactionConfig.from_yaml(path)
    with pytest.raises(ConfigError, match="not found"):
        RedactionConfig.from_yaml(tmp_path / "no_such_redaction.yaml")


# ---------------------------------------------------------------------------------------------
# Vectorization / speed


def _traffic(rows: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = (
        "the a my order refund account please help with shipping delivery late package where is status invoice "
        "payment card update address change password reset login error app crash thanks hello could you check "
        "why was I charged twice yesterday today meeting schedule summary of the call about pricing plan"
    ).split()
    alphabet = string.ascii_letters + string.digits

    def pii() -> str:
        kind = rng.randrange(8)
        if kind == 0:
            return f"{rng.choice(['anna', 'bob.smith', 'c.lee'])}{rng.randint(1, 999)}@example.{rng.choice(['com', 'org', 'co.uk'])}"
        if kind == 1:
            return f"+1 {rng.randint(200, 999)} {rng.randint(200, 999)} {rng.randint(1000, 9999)}"
        if kind == 2:
            return rng.choice(["4111 1111 1111 1111", "5555-5555-5555-4444", "4111 1111 1111 1112"])
        if kind == 3:
            return ".".join(str(rng.randint(0, 300)) for _ in range(4))
        if kind == 4:
            return "sk-proj-" + "".join(rng.choice(alphabet) for _ in range(32))
        if kind == 5:
            return "".join(rng.choice(alphabet) for _ in range(28))
        if kind == 6:
            return "DE89 3704 0044 0532 0130 00"
        return f"order {rng.randint(10000, 99999999)} on 2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)} at 1{rng.randint(0, 9)}:{rng.randint(10, 59)} for ${rng.randint(1, 999)}.99"

    texts = []
    for _ in range(rows):
        sentence = [rng.choice(words) for _ in range(rng.randint(6, 30))]
        for _ in range(rng.choice((0, 0, 0, 1, 1, 2))):
            sentence.insert(rng.randint(0, len(sentence)), pii())
        texts.append(" ".join(sentence) + rng.choice((".", "?", "!")))
    return texts


def test_redacting_a_large_frame_matches_the_row_by_row_result() -> None:
    # Speed is measured by `loop bench datasets` (redaction on 1M rows against a bare read), not here.
    rows = 50_000
    frame = pl.DataFrame({"id": range(rows), "text": _traffic(rows, seed=11)})
    redacted, counts = redact_frame(frame, ["text"], config=CONFIG)
    assert sum(counts.values()) > 0
    assert redacted["id"].to_list() == list(range(rows))  # order kept on the streaming engine
    sample = random.Random(5).sample(range(rows), 300)
    assert redact([frame["text"][i] for i in sample]) == [redacted["text"][i] for i in sample]
    assert all(counts[kind] > 1000 for kind in PLACEHOLDER_TYPES), counts
    # Nothing detectable is left, and the Luhn-invalid card number survived where it was written.
    assert not redacted.select(find_sensitive_expr(pl.col("text"), CONFIG).any()).item()
    assert redacted["text"].str.contains("4111 1111 1111 1112", literal=True).sum() > 0
