"""A scripted stand-in for a remote model, for flows that need a slow or failing stream.

litellm's ``mock_response`` streams every piece at once (``mock_delay`` only delays the start),
so a stream that must last long enough to be stopped, snapshotted or killed comes from here.
It replaces the model at the other end of the network, never code of ours: ChatService, the store
and the database stay real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from mangaba_desktop.core.providers.completions import StreamPiece


class ScriptedSource:
    """Streams ``pieces`` with ``interval`` seconds before each, then the usage, or ``error``.

    Records every request (``requests``: model, messages and params) and whether the stream was
    closed (``closed``: its ``finally`` ran, as on Stop) or ran to its end (``finished``).
    """

    default_model = "scripted/slow-model"

    def __init__(
        self,
        pieces: Sequence[str],
        interval: float = 0.0,
        *,
        error: Exception | None = None,
    ) -> None:
        self.pieces = list(pieces)
        self.interval = interval
        self.error = error
        self.requests: list[dict[str, Any]] = []
        self.closed = False
        self.finished = False

    @property
    def full_text(self) -> str:
        return "".join(self.pieces)

    async def stream(
        self, model: str, messages: list[dict[str, str]], **params: Any
    ) -> AsyncIterator[StreamPiece]:
        self.requests.append({"model": model, "messages": messages, "params": params})
        self.closed = self.finished = False
        try:
            for piece in self.pieces:
                await asyncio.sleep(self.interval)
                yield StreamPiece(text=piece)
            if self.error is not None:
                raise self.error
            yield StreamPiece(
                usage={"prompt_tokens": len(messages), "completion_tokens": len(self.pieces)}
            )
            self.finished = True
        finally:
            self.closed = True


def words(count: int) -> list[str]:
    """``count`` distinct pieces of text ("w0 ", "w1 ", ...), so a prefix shows how far it got."""
    return [f"w{i} " for i in range(count)]
