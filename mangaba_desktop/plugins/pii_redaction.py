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

What counts as a phone number: 7 to 15 digits after a ``+``, or 8 to 15 digits written in
groups (``(11) 91234-5678``, ``555-123-4567``, ``912 345 678``). Dates, IP addresses, decimal
numbers and plain digit strings (order numbers, timestamps) are left alone.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from mangaba_desktop import __version__
from mangaba_desktop.core.plugins import Plugin, PluginCommand, Request, Response

KEPT_REQUESTS = 64
"""Requests whose placeholders are remembered for their reply (replies that never complete
do not come back for theirs)."""

_EMAIL = re.compile(
    r"(?<![\w.+%-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
)
# Groups of digits with one separator between them, an optional "+" and area code in front;
# not inside a word, an address, a decimal, a date or a path.
_NUMBER_RUN = re.compile(r"(?<![\w@+./-])(?:\+ ?)?(?:\(\d{1,4}\) ?)?\d+(?:[ .-]\d+)*(?![\w@/])")
_GROUP = re.compile(r"\d+")
_PLACEHOLDER = re.compile(r"\[(email|phone|card) (\d+)\]")
_DATE = re.compile(r"^(?:\d{4}[-.]\d{1,2}[-.]\d{1,2}|\d{1,2}[-.]\d{1,2}[-.]\d{4})$")
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_DOTTED_NUMBER = re.compile(r"^\d{1,3}(?:\.\d{3})+$|^\d+\.\d+$")

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
    placeholders are recorded in ``masking`` when given."""
    masking = masking if masking is not None else Masking()
    text = _EMAIL.sub(lambda m: masking.placeholder("email", m.group(0)), text)
    return _NUMBER_RUN.sub(lambda m: _mask_numbers(m.group(0), masking), text)


def _mask_numbers(run: str, masking: Masking) -> str:
    """A run of digit groups with its card numbers masked, or the whole run if a phone."""
    groups = list(_GROUP.finditer(run))
    if run.startswith(("+", "(")):  # a country or area code: a phone, never a card
        return masking.placeholder("phone", run) if _is_phone(run, groups) else run
    # Cards are the longest stretch of groups that makes 13 to 19 digits and passes Luhn,
    # written with spaces or hyphens: "4111 1111 1111 1111 123" keeps the 123.
    pieces: list[str] = []
    done = 0
    start = 0
    while start < len(groups):
        end = _card_end(run, groups, start)
        if end is None:
            start += 1
            continue
        first, last = groups[start].start(), groups[end].end()
        pieces += [run[done:first], masking.placeholder("card", run[first:last])]
        done = last
        start = end + 1
    if pieces:
        return "".join([*pieces, run[done:]])
    return masking.placeholder("phone", run) if _is_phone(run, groups) else run


def _card_end(run: str, groups: Sequence[re.Match[str]], start: int) -> int | None:
    """The last group of a card number starting at group ``start``, if one does."""
    found = None
    digits = ""
    for end in range(start, len(groups)):
        if end > start and run[groups[end - 1].end() : groups[end].start()] not in (" ", "-"):
            break
        digits += groups[end].group(0)
        if len(digits) > 19:
            break
        if len(digits) >= 13 and luhn_valid(digits):
            found = end
    return found


def _is_phone(run: str, groups: Sequence[re.Match[str]]) -> bool:
    digits = sum(len(g.group(0)) for g in groups)
    if run.startswith("+"):
        return 7 <= digits <= 15
    written_in_groups = len(groups) > 1
    return (
        written_in_groups
        and 8 <= digits <= 15
        and not _DATE.match(run)
        and not _IPV4.match(run)
        and not _DOTTED_NUMBER.match(run)
    )


class PiiRedaction(Plugin):
    """Masks personal data in prompts for remote models, and shows what it masks."""

    name = "pii-redaction"
    version = __version__
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
