"""Full-text search over every message."""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlmodel import Session

from ..validation import clean_text
from .models import SearchHit

HIT_START = "\ue000"
HIT_END = "\ue001"
"""Private-use characters that mark the matched words in a snippet; no real text carries them."""

_WORD = re.compile(r"\w+", re.UNICODE)


def match_expression(query: str) -> str | None:
    """Turn what the user typed into an FTS5 query: every word must appear, the last one as a
    prefix (search as you type). Returns ``None`` when the query holds no word at all.

    User text never reaches FTS5 syntax: each word is quoted, so operators and punctuation in
    the query are plain characters.
    """
    words = _WORD.findall(query)
    if not words:
        return None
    quoted = [f'"{word}"' for word in words]
    if len(words[-1]) >= 2:
        quoted[-1] += "*"
    return " ".join(quoted)


_FTS_QUERY = text(
    f"""
    SELECT m.id, m.conversation_id, c.title, m.role,
           snippet(messages_fts, 0, '{HIT_START}', '{HIT_END}', '…', 16), m.created_at
    FROM messages_fts
    JOIN messages AS m ON m.id = messages_fts.rowid
    JOIN conversations AS c ON c.id = m.conversation_id
    WHERE messages_fts MATCH :match
    ORDER BY messages_fts.rowid DESC
    LIMIT :limit
    """
)

# For queries with no word characters (an emoji, a symbol), which the tokenizer cannot index.
_SCAN_QUERY = text(
    """
    SELECT m.id, m.conversation_id, c.title, m.role, m.content, m.created_at
    FROM messages AS m JOIN conversations AS c ON c.id = m.conversation_id
    WHERE instr(m.content, :needle) > 0
    ORDER BY m.id DESC
    LIMIT :limit
    """
)


def _scan_snippet(content: str, needle: str, width: int = 60) -> str:
    at = content.find(needle)
    start = max(0, at - width)
    end = min(len(content), at + len(needle) + width)
    return (
        ("…" if start else "")
        + content[start:at]
        + HIT_START
        + needle
        + HIT_END
        + content[at + len(needle) : end]
        + ("…" if end < len(content) else "")
    )


def search_messages(session: Session, query: str, limit: int = 50) -> list[SearchHit]:
    """Messages matching ``query``, newest first."""
    # Cleaned as stored messages are, so that pasted text with a lone surrogate finds them.
    query = clean_text(query).strip()
    if not query:
        return []
    match = match_expression(query)
    connection = session.connection()
    if match is not None:
        rows = connection.execute(_FTS_QUERY, {"match": match, "limit": limit}).all()
        return [
            SearchHit(
                message_id=r[0],
                conversation_id=r[1],
                conversation_title=r[2],
                role=r[3],
                snippet=r[4],
                created_at=r[5],
            )
            for r in rows
        ]
    rows = connection.execute(_SCAN_QUERY, {"needle": query, "limit": limit}).all()
    return [
        SearchHit(
            message_id=r[0],
            conversation_id=r[1],
            conversation_title=r[2],
            role=r[3],
            snippet=_scan_snippet(r[4], query),
            created_at=r[5],
        )
        for r in rows
    ]
