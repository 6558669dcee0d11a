"""PII redaction: e-mail addresses, phone numbers and card numbers never reach a remote model.

Before a prompt leaves this computer (the model, or a fallback it may go to, is not run
locally), each e-mail address, phone number and card number (13 to 19 digits passing the Luhn
check) in it becomes a numbered placeholder: ``[email 1]``, ``[phone 1]``, ``[card 1]``, the
same value the same placeholder throughout the prompt. The placeholders the model writes back
are put back to the real values when its reply is complete, so the user reads their own data
and the model never saw it (while a reply streams, the placeholders show).

Prompts for the embedded model and other models on this computer are left as typed: nothing
leaves, and masking would only make their replies worse.

It is on by default, like every installed plugin: data leaves only for a remote model the
user added, and that is when they would expect it to be protected; Settings → Plugins turns it
off. ``/redact <text>`` shows what would be masked.

What counts, by the shapes people write them in (anything else of digits is left alone: dates,
times, year ranges, amounts, IP addresses, lists of numbers, order numbers, timestamps):

- phone numbers: international (``+55 11 91234-5678``, ``+1 (555) 123-4567``), with an area
  code in brackets (``(11) 91234-5678``), North American (``555-123-4567``), a Brazilian mobile
  (``91234-5678``); 8 to 15 digits;
- card numbers: 15 or 16 digits in one run, or in groups of four (Amex: 4-6-5) with one kind
  of separator, starting as Visa, Mastercard, Amex or Discover numbers do and passing Luhn.

A failure of this plugin while a prompt is about to leave stops that prompt (the reply says
why) instead of letting it leave unmasked.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mangaba_desktop import __version__
from mangaba_desktop.core.plugins import Plugin, PluginCommand, Request, Response

KEPT_REQUESTS = 64
"""Requests whose placeholders are remembered for their reply (replies that never complete
do not come back for theirs)."""

_EMAIL = re.compile(
    r"(?<![\w.+%-])[\w.%+-]+@[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)*\.[^\W\d_]{2,}"
)
# Phone numbers, by the shapes people write them in; nothing else of digits is one.
_PHONE = re.compile(
    r"(?<![\w@+./:-])(?:"
    # international: +55 11 91234-5678, +1 (555) 123-4567, +351 912 345 678, +4915112345678
    r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?)?(?:[ .-]?\d{2,5}){1,4}"
    # an area code in brackets: (11) 91234-5678, (555) 123-4567
    r"|\(\d{2,4}\) ?\d{3,5}[ .-]?\d{4}"
    # North American: 555-123-4567, 555.123.4567
    r"|\d{3}(?P<n>[.-])\d{3}(?P=n)\d{4}"
    # a Brazilian mobile without its area code: 91234-5678
    r"|9\d{4}-\d{4}"
    r")(?![\w@/]|[.:-]\d)"
)
# Card numbers: one run of 15 or 16 digits, or groups of 4 (or Amex's 4-6-5), the same
# separator throughout, starting as Visa, Mastercard, Amex or Discover do, passing Luhn.
_CARD = re.compile(
    r"(?<![\w.+/:-])(?:"
    r"\d{15,16}"
    r"|\d{4}(?P<s>[ -])\d{4}(?P=s)\d{4}(?P=s)\d{4}(?:(?P=s)\d{3})?"
    r"|\d{4}(?P<a>[ -])\d{6}(?P=a)\d{5}"
    r")(?![\w/]|[.:-]\d)"
)
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|6011|65)")
_PLACEHOLDER = re.compile(r"\[(email|phone|card) (\d+)\]")

_LABELS = {
    "email": ("e-mail address", "e-mail addresses"),
    "phone": ("phone number", "phone numbers"),
    "card": ("card number", "card numbers"),
}


def luhn_valid(digits: str) -> bool:
    """Whether ``digits`` pass the Luhn check card numbers carry."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def is_card(text: str) -> bool:
    digits = "".join(c for c in text if c.isdigit())
    return bool(_CARD_PREFIX.match(digits)) and luhn_valid(digits)


def is_phone(text: str) -> bool:
    digits = sum(c.isdigit() for c in text)
    return 8 <= digits <= 15


@dataclass
class Masking:
    """The placeholders of one request: each value found, and what it became."""

    placeholders: dict[str, str] = field(default_factory=dict)
    """Value → placeholder."""
    counts: dict[str, int] = field(default_factory=dict)

    def placeholder(self, kind: str, value: str) -> str:
        if value not in self.placeholders:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.placeholders[value] = f"[{kind} {self.counts[kind]}]"
        return self.placeholders[value]

    def restore(self, text: str) -> str:
        """``text`` with the placeholders put back to the values they stand for."""
        values = {p: v for v, p in self.placeholders.items()}
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(0), m.group(0)), text)


def redact(text: str, masking: Masking | None = None) -> str:
    """``text`` with its e-mail addresses, phone numbers and card numbers masked; the
    placeholders are recorded in ``masking`` when given. Linear in the text's length."""
    masking = masking if masking is not None else Masking()

    def mask(kind: str, check: Any) -> Any:
        def replace(match: re.Match[str]) -> str:
            found = match.group(0)
            return masking.placeholder(kind, found) if check(found) else found

        return replace

    text = _EMAIL.sub(lambda m: masking.placeholder("email", m.group(0)), text)
    text = _CARD.sub(mask("card", is_card), text)
    return _PHONE.sub(mask("phone", is_phone), text)


class PiiRedaction(Plugin):
    """Masks personal data in prompts for remote models, and shows what it masks."""

    name = "pii-redaction"
    version = __version__
    protective = True
    """If it fails, a prompt for a remote model is not sent (see the host)."""
    description = (
        "Masks e-mail addresses, phone numbers and card numbers in prompts before they leave "
        "for a remote model, and puts them back in the reply; /redact shows what it masks."
    )

    def __init__(self) -> None:
        self._requests: OrderedDict[str, Masking] = OrderedDict()

    def before_request(self, request: Request) -> None:
        if not request.remote:
            return
        masking = Masking()
        for message in request.messages:
            message["content"] = redact(message["content"], masking)
        if masking.placeholders:
            self._requests[request.request_id] = masking
            while len(self._requests) > KEPT_REQUESTS:
                self._requests.popitem(last=False)

    def after_response(self, response: Response) -> None:
        masking = self._requests.pop(response.request_id, None)
        if masking is not None:
            response.text = masking.restore(response.text)

    def commands(self) -> Sequence[PluginCommand]:
        return (
            PluginCommand(
                "redact",
                "/redact <text>",
                "show what is masked before a prompt leaves for a remote model",
                self.show,
            ),
        )

    def show(self, text: str) -> str:
        """The answer to ``/redact text``."""
        if not text.strip():
            return "Usage: /redact <text>: shows what is masked before a remote model reads it."
        masking = Masking()
        masked = redact(text, masking)
        if not masking.placeholders:
            return "Nothing in this text would be masked."
        found = ", ".join(
            f"{count} {_LABELS[kind][count > 1]}" for kind, count in masking.counts.items()
        )
        return f"A remote model would read:\n\n{masked}\n\nMasked: {found}."
