"""Checks on what a user sends: sizes and encodings, never keyword blacklists."""

from __future__ import annotations

MAX_MESSAGE_CHARS = 1_000_000
"""Largest message accepted (about 1 MB of text): bigger pastes are refused with a message."""


class InvalidMessage(ValueError):
    """A message that cannot be sent, with a sentence the user can read."""


def clean_text(text: str) -> str:
    """Return ``text`` as storable Unicode.

    Surrogate pairs that arrived split (as from UTF-16 sources) are joined into their character;
    lone surrogates, which no encoding can store, become U+FFFD. Everything else, NUL bytes,
    right-to-left marks and emoji included, is kept exactly.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def validate_message(text: str) -> str:
    """Return the message to store, or raise :class:`InvalidMessage`."""
    if not isinstance(text, str):
        raise InvalidMessage("A message must be text.")
    if not text.strip():
        raise InvalidMessage("Type a message first: an empty message is not sent.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise InvalidMessage(
            f"This message has {len(text):,} characters; the limit is {MAX_MESSAGE_CHARS:,}. "
            "Shorten it or send it in parts."
        )
    return clean_text(text)
