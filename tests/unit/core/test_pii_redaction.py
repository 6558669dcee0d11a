"""The shipped PII redaction plugin on its own: what it masks, what it leaves, and how the
placeholders come back. Its part in real chat turns is in test_plugins.py."""

from __future__ import annotations

import time

import pytest

from mangaba_desktop.core.plugins import Request, Response
from mangaba_desktop.plugins.pii_redaction import (
    KEPT_REQUESTS,
    Masking,
    PiiRedaction,
    luhn_valid,
    redact,
)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            "Write to ana.souza@example.com.br or joao+news@mail.co",
            "Write to [email 1] or [email 2]",
        ),
        ("Call +55 11 91234-5678 or (11) 3456-7890.", "Call [phone 1] or [phone 2]."),
        ("US 555-123-4567, 555.123.4567, +1 (555) 123-4567", "US [phone 1], [phone 2], [phone 3]"),
        (
            "PT +351 912 345 678, DE +4915112345678, BR 91234-5678",
            "PT [phone 1], DE [phone 2], BR [phone 3]",
        ),
        ("Escreva para joão@exemplo.com.br.", "Escreva para [email 1]."),
        ("Card 4111 1111 1111 1111, exp 12/27", "Card [card 1], exp 12/27"),
        ("Amex 378282246310005 and 3782-822463-10005", "Amex [card 1] and [card 2]"),
        ("Visa 4111111111111111", "Visa [card 1]"),
        ("Card then code: 4111-1111-1111-1111 123", "Card then code: [card 1] 123"),
        # Luhn-invalid: not a card (and too long for a phone number)
        ("Ref 4111 1111 1111 1112 and 1234567890123456", None),
        # dates, addresses, decimals, thousands, versions, timestamps, short numbers
        ("On 2024-01-15 or 15.01.2024 at 192.168.100.200", None),
        ("pi is 3.14159265, R$ 10.000.000, v1.2.3, ts 1718000000, order 12345678, 1234-567", None),
        # year ranges, times, lists of numbers, millisecond timestamps: not phones nor cards
        ("In 2023-2024 revenue; at 2024-01-15 10:30; sum 1000 2000 3000", None),
        ("40 85 79 26 57 87 70 90 84 76 59 11, ts 1700000000000, call 912 345 678", None),
    ],
)
def test_redaction_masks_personal_data_and_nothing_else(text, masked):
    assert redact(text) == (masked or text)


def test_the_luhn_check():
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("79927398710")


def test_the_same_value_gets_the_same_placeholder_and_comes_back():
    masking = Masking()
    first = redact("Mail ana@example.com.", masking)
    second = redact("Again: ana@example.com, and bia@example.com", masking)

    assert (first, second) == ("Mail [email 1].", "Again: [email 1], and [email 2]")
    assert masking.restore("Wrote to [email 2] and [email 1]; [email 3] is unknown.") == (
        "Wrote to bia@example.com and ana@example.com; [email 3] is unknown."
    )


def test_only_prompts_that_may_leave_are_masked_and_each_reply_gets_its_own_values_back():
    plugin = PiiRedaction()
    local = Request([{"role": "user", "content": "Mail ana@example.com"}], "m", False, "r0")
    first = Request([{"role": "user", "content": "Mail ana@example.com"}], "m", True, "r1")
    second = Request([{"role": "user", "content": "Mail bia@example.com"}], "m", True, "r2")

    for request in (local, first, second):
        plugin.before_request(request)

    assert local.messages[0]["content"] == "Mail ana@example.com"
    assert first.messages[0]["content"] == second.messages[0]["content"] == "Mail [email 1]"
    replies = [Response("To [email 1]", "m", "r2"), Response("To [email 1]", "m", "r1")]
    for reply in replies:
        plugin.after_response(reply)
    assert [r.text for r in replies] == ["To bia@example.com", "To ana@example.com"]
    # Once given back, a request's values are forgotten.
    again = Response("To [email 1]", "m", "r1")
    plugin.after_response(again)
    assert again.text == "To [email 1]"


def test_the_values_of_replies_that_never_complete_are_not_kept_forever():
    plugin = PiiRedaction()
    for number in range(KEPT_REQUESTS + 10):
        request = Request(
            [{"role": "user", "content": f"Mail user{number}@example.com"}], "m", True, str(number)
        )
        plugin.before_request(request)

    oldest, newest = (
        Response("[email 1]", "m", "0"),
        Response("[email 1]", "m", str(KEPT_REQUESTS + 9)),
    )
    plugin.after_response(oldest)
    plugin.after_response(newest)

    assert (oldest.text, newest.text) == ("[email 1]", f"user{KEPT_REQUESTS + 9}@example.com")


def test_redaction_of_a_huge_prompt_is_quick():
    started = time.perf_counter()
    redact("1 " * 250_000 + "4111 " * 100_000)
    assert time.perf_counter() - started < 2.0  # linear: well under the hooks' 3 s
