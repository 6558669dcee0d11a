"""A conversation as Markdown or JSON, for the user to keep elsewhere."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from .audit import USER, Action, AuditLog, recorded, write_failure
from .store import Conversation, ConversationStore, Message

ROLE_TITLES = {"user": "You", "assistant": "Assistant", "system": "System"}


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def to_markdown(conversation: Conversation, messages: Sequence[Message]) -> str:
    lines = [f"# {conversation.title}", "", f"_Started {_iso(conversation.created_at)}_", ""]
    for message in messages:
        heading = ROLE_TITLES.get(message.role, message.role.title())
        details = [_iso(message.created_at)]
        if message.model:
            details.append(message.model)
        if message.status != "complete":
            details.append(message.status)
        lines += [f"## {heading}", "", f"_{' · '.join(details)}_", "", message.content, ""]
        if message.error:
            lines += [f"> Error: {message.error}", ""]
    return "\n".join(lines)


def to_json(conversation: Conversation, messages: Sequence[Message]) -> str:
    document = {
        "format": "mangaba-desktop.conversation",
        "version": 1,
        "conversation": {
            "id": conversation.id,
            "title": conversation.title,
            "created_at": _iso(conversation.created_at),
            "updated_at": _iso(conversation.updated_at),
            "model": conversation.model,
        },
        "messages": [
            {
                "id": m.id,
                "role": m.role,
                "content": m.content,
                "created_at": _iso(m.created_at),
                "status": m.status,
                "model": m.model,
                "prompt_tokens": m.prompt_tokens,
                "completion_tokens": m.completion_tokens,
                "latency_ms": m.latency_ms,
                "time_to_first_token_ms": m.time_to_first_token_ms,
                "error": m.error,
            }
            for m in messages
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=2)


async def export_conversation(
    store: ConversationStore,
    conversation_id: int,
    path: Path,
    kind: str = "md",
    *,
    audit: AuditLog | None = None,
    actor: str = USER,
) -> None:
    """Write a conversation to ``path`` as Markdown (``md``) or JSON (``json``), off the loop;
    the export is recorded in ``audit`` when given, by ``actor``.

    Raises:
        LookupError: there is no such conversation.
        OSError: the file could not be written.
    """
    markdown = kind == "md"
    async with recorded(
        audit,
        Action.DATA_EXPORTED,
        actor=actor,
        target=f"conversation {conversation_id}",
        failure=write_failure(path),
    ) as entry:
        conversation, messages = await store.export(conversation_id)
        text = (to_markdown if markdown else to_json)(conversation, messages)
        await asyncio.to_thread(path.write_text, text, encoding="utf-8")
        entry.detail = (
            f"{len(messages)} messages as {'Markdown' if markdown else 'JSON'} to {path}."
        )
