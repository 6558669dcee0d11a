"""What a user may send: sizes and encodings, checked with messages a person can read."""

from __future__ import annotations

import time

import pytest

from mangaba_desktop.core.validation import (
    MAX_MESSAGE_CHARS,
    InvalidMessage,
    clean_text,
    validate_message,
)


@pytest.mark.parametrize("text", ["", " ", "\n\n", "\t \r\n", "\u3000\u2003"])
def test_empty_or_blank_message_is_refused_with_a_reason(text):
    with pytest.raises(InvalidMessage, match="empty message is not sent"):
        validate_message(text)


def test_non_text_is_refused():
    with pytest.raises(InvalidMessage, match="must be text"):
        validate_message(b"bytes")  # type: ignore[arg-type]


def test_message_at_the_limit_is_accepted():
    text = "x" * MAX_MESSAGE_CHARS

    assert validate_message(text) == text


def test_message_over_the_limit_is_refused_naming_its_size_and_the_limit():
    with pytest.raises(InvalidMessage) as refused:
        validate_message("x" * (MAX_MESSAGE_CHARS + 1))

    assert "1,000,001 characters" in str(refused.value)
    assert f"{MAX_MESSAGE_CHARS:,}" in str(refused.value)


def test_a_5mb_paste_is_refused_within_a_second():
    paste = "lorem ipsum \ud800 dolor " * (5_000_000 // 20)

    started = time.perf_counter()
    with pytest.raises(InvalidMessage, match="characters; the limit is"):
        validate_message(paste)

    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    "text",
    [
        "plain",
        "  leading and trailing spaces kept  \n",
        "nul\x00inside",
        "\u202bעברית\u202c and \u200fعربي\u200f",
        "emoji 👨‍👩‍👧‍👦 🇧🇷 👍🏿",
        "e\u0301 vs é (not normalised)",
        "zero\u200bwidth\ufeffmarks",
        "tabs\tand\r\nnewlines",
        "\U0001f600 astral",
    ],
)
def test_valid_text_is_kept_exactly(text):
    kept = validate_message(text)

    assert kept == text
    assert kept.encode("utf-8") == text.encode("utf-8")


def test_lone_surrogates_become_replacement_characters():
    assert validate_message("a\ud800b\udfffc") == "a\ufffdb\ufffdc"


def test_split_surrogate_pair_is_joined_into_its_character():
    assert clean_text("\ud83d\ude00") == "😀"
    assert clean_text("ok \ud83d\ude00 \udc00").encode("utf-8") == "ok 😀 \ufffd".encode()
