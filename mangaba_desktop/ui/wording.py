"""Words the panes share."""

from __future__ import annotations


def plural(count: int, word: str) -> str:
    """``count`` and ``word``, with an s unless it is one: "1 context", "2,000 contexts"."""
    return f"{count:,} {word}" + ("" if count == 1 else "s")
