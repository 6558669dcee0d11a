"""A chat answered by a remote A2A agent.

In the Chat pane a remote agent is chosen where a model is: the chat's model is then
``a2a:<the agent's address>``, as it is kept in the settings. Each turn, the chat's own agent
asks the remote agent over the agent network (so the network pane draws it) to ``chat`` with
the user's message, in an A2A context of its own for this chat: the remote agent keeps the
conversation, and a second chat with it is a second conversation there. Its answer streams
into the reply like a model's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from ..providers.completions import StreamPiece
from .hub import AgentHub, AgentOffline, NetworkError, Node, NodeKind

PREFIX = "a2a:"
UNREACHABLE_SUFFIX = " (unreachable)"
"""How the node of a remote agent that could not be reached at start is named."""
PROVIDER = "a2a"
TIMEOUT_S = 600.0
"""A remote agent may think for a long while behind its own model; Stop ends it sooner."""


class RemoteAgentUnreachable(NetworkError):
    """The remote agent is offline: the reply waits (queued) and is sent when it is back."""

    unreachable = True


def is_remote_agent(model: str | None) -> bool:
    return bool(model) and model.startswith(PREFIX)  # type: ignore[union-attr]


def provider_of_model(model: str) -> str | None:
    """The provider a reply is credited to when its stream did not say: ``a2a`` for a remote
    agent, else the part of ``provider/model`` before the slash."""
    if is_remote_agent(model):
        return PROVIDER
    return model.partition("/")[0] or None


def model_for(url: str) -> str:
    """The chat model that stands for the remote agent added at ``url``."""
    return PREFIX + url


def label(model: str) -> str:
    """How a reply from a remote agent names who wrote it: its host, by A2A."""
    url = model.removeprefix(PREFIX)
    return f"{urlsplit(url).netloc or url} · A2A"


def find_node(hub: AgentHub, model: str) -> Node | None:
    """The remote agent's node: by the address it was added with (its id may be the card's
    own address, which can differ)."""
    url = model.removeprefix(PREFIX)
    for node in hub.nodes.values():
        if node.kind == NodeKind.REMOTE and (node.id == model or node.location == url):
            return node
    return None


async def ask_remote_agent(
    hub: AgentHub | None,
    model: str,
    *,
    sender: str | None,
    thread: str | None,
    text: str,
    configured: bool = False,
    timeout_s: float = TIMEOUT_S,
) -> AsyncIterator[StreamPiece]:
    """The remote agent's answer to ``text``, piece by piece as it is written.

    Raises:
        RemoteAgentUnreachable: it is offline (the chat queues the reply and sends it later).
        NetworkError: the agent is not in the network (removed), fails, or does not answer in
            time; the chat's agent does not take part in the network.
    """
    url = model.removeprefix(PREFIX)
    node = find_node(hub, model) if hub is not None else None
    if hub is not None and node is None and configured:
        # Still in the settings, not on the network yet (the app is starting, and it is
        # being reached): the reply waits for it.
        raise RemoteAgentUnreachable(f"The remote agent at {url} is not reached yet.")
    if hub is None or node is None:
        raise NetworkError(
            f"The remote agent at {url} is not in the agent network: add it again in "
            "Settings ▸ Agent network, or choose another model for this chat."
        )
    if sender is None or sender not in hub.nodes:
        raise NetworkError(
            "This chat's agent does not take part in the agent network, so it cannot ask "
            f"{node.name}."
        )
    params: dict[str, Any] = {"text": text}
    if thread:
        params["thread"] = thread
    pieces: asyncio.Queue[str | None] = asyncio.Queue()
    asking = asyncio.ensure_future(
        hub.request(
            sender, node.id, "chat", params, timeout_s=timeout_s, on_progress=pieces.put_nowait
        )
    )
    asking.add_done_callback(lambda _task: pieces.put_nowait(None))
    written: list[str] = []
    try:
        while (piece := await pieces.get()) is not None:
            written.append(piece)
            yield StreamPiece(text=piece)
        try:
            answer = (await asking).text
        except NetworkError as exc:
            # Offline when asked, or found unreachable while asked (the failure says so).
            if isinstance(exc, AgentOffline) or getattr(exc, "unreachable", False):
                name = node.name.removesuffix(UNREACHABLE_SUFFIX)
                raise RemoteAgentUnreachable(f"{name} cannot be reached now.") from None
            raise
        so_far = "".join(written)
        # An agent that does not stream answers once, at the end; one that does may end
        # with more than its pieces said.
        if answer.startswith(so_far) and len(answer) > len(so_far):
            yield StreamPiece(text=answer[len(so_far) :])
        yield StreamPiece(model=model, provider=PROVIDER)
    finally:
        if not asking.done():
            # Stop, or the reply was abandoned: the hub cancels the remote task too.
            asking.cancel()
            with contextlib.suppress(asyncio.CancelledError, NetworkError):
                await asking
