"""Checks on contexts and the splitting of long text into passages an agent can retrieve."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable

from ..validation import clean_text

MAX_CONTEXT_CHARS = 16_000
"""Largest single context; longer text is split into passages (or refused where it cannot be)."""

PASSAGE_CHARS = 1_200
"""Target size of a passage: a few paragraphs, small enough to quote in a prompt."""

MAX_IMPORT_CHARS = 20_000_000
"""Largest text accepted at once for splitting (a 20 MB book)."""

MAX_TAGS = 20
MAX_TAG_CHARS = 40
_TAG = re.compile(r"^[\w][\w\-.]*$", re.UNICODE)


class InvalidContext(ValueError):
    """A context that cannot be stored, with a sentence the user can read."""


def parse_tags(tags: str | Iterable[str] | None) -> list[str]:
    """Normalise tags: a comma- or space-separated string or a list; lower case, no repeats.

    Raises :class:`InvalidContext` for a tag with characters other than letters, digits, ``-``,
    ``_`` and ``.``, or for too many or too long tags.
    """
    if tags is None:
        return []
    items = re.split(r"[,\s]+", tags) if isinstance(tags, str) else list(tags)
    result: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidContext(f"A tag must be text, not {type(item).__name__}.")
        tag = item.strip().lstrip("#").lower()
        if not tag:
            continue
        if len(tag) > MAX_TAG_CHARS:
            raise InvalidContext(
                f"The tag “{tag[:20]}…” is longer than {MAX_TAG_CHARS} characters."
            )
        if not _TAG.match(tag):
            raise InvalidContext(
                f"The tag “{tag}” may hold only letters, digits, “-”, “_” and “.”."
            )
        if tag not in result:
            result.append(tag)
    if len(result) > MAX_TAGS:
        raise InvalidContext(f"A context takes at most {MAX_TAGS} tags ({len(result)} given).")
    return result


def tags_json(tags: str | Iterable[str] | None) -> str:
    return json.dumps(parse_tags(tags), ensure_ascii=False)


def clean_content(content: str) -> str:
    """The text of a context as stored; raises :class:`InvalidContext` when there is none or
    when it is over :data:`MAX_CONTEXT_CHARS` (split it with :func:`split_passages`)."""
    if not isinstance(content, str):
        raise InvalidContext("A context must be text.")
    content = clean_text(content).strip()
    if not content:
        raise InvalidContext("A context needs some text: this one is empty.")
    if len(content) > MAX_CONTEXT_CHARS:
        raise InvalidContext(
            f"This context has {len(content):,} characters; one context holds at most "
            f"{MAX_CONTEXT_CHARS:,}. Add it as knowledge to have it split into passages."
        )
    return content


def digest(context_type: str, content: str) -> str:
    """What identifies a context's text, for refusing duplicates."""
    return hashlib.sha1(f"{context_type}\0{content}".encode()).hexdigest()[:24]


def split_passages(text: str, size: int = PASSAGE_CHARS) -> list[str]:
    """Split ``text`` into passages of about ``size`` characters along paragraph, then sentence,
    then word boundaries; never loses or reorders text (whitespace between passages aside)."""
    text = clean_text(text).strip()
    if len(text) > MAX_IMPORT_CHARS:
        raise InvalidContext(
            f"This text has {len(text):,} characters; at most {MAX_IMPORT_CHARS:,} can be added "
            "at once. Split the file first."
        )
    if not text:
        return []
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    pieces: list[str] = []
    for paragraph in paragraphs:
        if len(paragraph) <= size:
            pieces.append(paragraph)
            continue
        sentences = re.split(r"(?<=[.!?。！？])\s+", paragraph)
        for sentence in sentences:
            while len(sentence) > size:
                cut = sentence.rfind(" ", 0, size)
                cut = cut if cut > size // 2 else size
                pieces.append(sentence[:cut].strip())
                sentence = sentence[cut:].strip()
            if sentence:
                pieces.append(sentence)
    passages: list[str] = []
    current = ""
    for piece in pieces:
        joiner = "\n\n" if current else ""
        if current and len(current) + len(joiner) + len(piece) > size:
            passages.append(current)
            current = piece
        else:
            current = current + joiner + piece
    if current:
        passages.append(current)
    return passages
