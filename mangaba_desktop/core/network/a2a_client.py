"""Remote A2A agents as nodes of the app's network (protocol 1.0, a2a-sdk client).

The user adds an agent by URL (the agent's base URL or its card's); its card is read, checked
and summarised, and the agent joins the hub as a REMOTE node. A request to it is sent as an
A2A message (streamed when the card allows), the skill and parameters in the message's metadata;
the artifacts' text is the answer. When the asking side stops waiting, the remote task is
cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import ssl
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.client.errors import A2AClientError, A2AClientTimeoutError, AgentCardResolutionError
from a2a.helpers import get_artifact_text, get_message_text
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH
from google.protobuf.struct_pb2 import Struct

from .hub import AgentHub, AgentOffline, NetworkError, Node, NodeKind, NodeStatus
from .messages import AgentMessage, MessageType

log = logging.getLogger(__name__)

CANCEL_TIMEOUT_S = 5.0
"""How long cancelling a remote task may take before it is left to the remote."""
RECONNECT_DELAYS_S: tuple[float, ...] = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0)
"""After a remote agent stops answering, its card is read again after each of these (the
last repeats) until it answers."""

_FAILED = {
    TaskState.TASK_STATE_FAILED: "failed",
    TaskState.TASK_STATE_REJECTED: "refused the request",
    TaskState.TASK_STATE_CANCELED: "cancelled the task",
    TaskState.TASK_STATE_INPUT_REQUIRED: "needs more input",
    TaskState.TASK_STATE_AUTH_REQUIRED: "needs authentication",
}


@dataclass(frozen=True)
class RemoteAgentInfo:
    """What the user is shown of a remote agent's card."""

    name: str
    description: str
    url: str
    """Where its card was read."""
    skills: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    protocol_versions: list[str] = field(default_factory=list)
    needs_auth: bool = False
    streaming: bool = False

    @property
    def protocol_version(self) -> str:
        return self.protocol_versions[0] if self.protocol_versions else ""


def card_summary(card: AgentCard, url: str) -> RemoteAgentInfo:
    ids = {skill.id for skill in card.skills}
    # A tag that only repeats its skill's id says nothing about the agent.
    tags = sorted({tag for skill in card.skills for tag in skill.tags} - ids)
    return RemoteAgentInfo(
        name=card.name,
        description=card.description,
        url=url,
        skills=[skill.id for skill in card.skills],
        tags=tags,
        protocol_versions=[i.protocol_version for i in card.supported_interfaces],
        needs_auth=bool(card.security_requirements),
        streaming=card.capabilities.streaming,
    )


def _card_location(url: str) -> tuple[str, str]:
    """The base URL and card path of a base URL or a full card URL."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise NetworkError(f"“{url}” is not an http(s) address of an A2A agent.")
    if parts.path.endswith(".json"):
        return f"{parts.scheme}://{parts.netloc}", parts.path
    return url.rstrip("/"), AGENT_CARD_WELL_KNOWN_PATH


def _http_client(token: str | None, timeout_s: float, *, read: float | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return httpx.AsyncClient(
        headers=headers, timeout=httpx.Timeout(timeout_s, read=read), follow_redirects=True
    )


async def resolve_card(
    url: str, *, token: str | None = None, timeout_s: float = 10.0
) -> tuple[AgentCard, RemoteAgentInfo]:
    """Read and check the card at ``url``; raises :class:`NetworkError` saying what is wrong."""
    base, path = _card_location(url)
    card_url = f"{base}{path}"
    async with _http_client(token, timeout_s, read=timeout_s) as http:
        try:
            card = await A2ACardResolver(http, base, agent_card_path=path).get_agent_card()
        except AgentCardResolutionError as exc:
            raise NetworkError(f"No agent card at {card_url}: {_card_problem(exc)}.") from None
        except httpx.HTTPError as exc:
            raise NetworkError(f"No agent card at {card_url}: {exc}.") from None
    if not card.name:
        raise NetworkError(f"The agent card at {card_url} has no name.")
    if not any(i.protocol_binding == "JSONRPC" for i in card.supported_interfaces):
        raise NetworkError(f"The agent at {card_url} offers no JSON-RPC interface.")
    return card, card_summary(card, card_url)


def _card_problem(exc: AgentCardResolutionError) -> str:
    cause = exc.__cause__
    if isinstance(cause, httpx.TimeoutException):
        return "it did not answer in time"
    if isinstance(cause, httpx.ConnectError):
        return "nothing answers there (connection refused or host unreachable)"
    if isinstance(cause, httpx.HTTPStatusError):
        status = cause.response.status_code
        if status in (401, 403):
            return f"the server refused access (HTTP {status}); it needs a token"
        return f"the server answered HTTP {status}"
    if isinstance(cause, json.JSONDecodeError):
        if cause.doc.lstrip()[:1] == "<":
            return "the address answers an HTML page, not an agent card"
        return "the answer is not valid JSON"
    if isinstance(cause, httpx.RequestError):
        return f"the request failed ({type(cause).__name__})"
    return "the answer is not a valid agent card"


class RemoteAgent:
    """Sends the hub's requests for one remote agent over A2A."""

    def __init__(
        self,
        hub: AgentHub,
        card: AgentCard,
        *,
        token: str | None,
        timeout_s: float,
        url: str = "",
    ) -> None:
        self.hub = hub
        self.card = card
        self.token = token
        self.timeout_s = timeout_s
        self.url = url
        """The address it was added by, where its card is read again after it was lost."""
        self.node_id: str | None = None
        self._watching: asyncio.Task[None] | None = None

    async def handle(self, message: AgentMessage) -> dict[str, Any] | None:
        """Serve a hub message: a request's answer is the remote task's text. The hub cancels
        this when the caller gives up, and that cancels the remote task too."""
        return await self._send(message)

    def _context_of(self, sender: str, thread: str | None = None) -> str:
        where = self.card.supported_interfaces[0].url if self.card.supported_interfaces else ""
        asker = f"{sender}#{thread}" if thread else sender
        return uuid.uuid5(uuid.NAMESPACE_URL, f"{where}#{asker}").hex

    async def _send(self, message: AgentMessage) -> dict[str, Any]:
        metadata = Struct()
        # A broadcast or a notification is for the remote agent to remember, not to answer.
        skill = message.action or ("remember" if message.type != MessageType.REQUEST else "chat")
        # The chat's own thread id stays here: only the context id derived from it is sent.
        params = {k: v for k, v in message.content.items() if k != "thread"}
        metadata.update({"skill": skill, **_jsonable(params)})
        request = SendMessageRequest(
            message=Message(
                role=Role.ROLE_USER,
                message_id=uuid.uuid4().hex,
                # One thread per asker (and per chat, for a chat with the remote agent): the
                # remote agent keeps a conversation with each, and remembers what was said.
                context_id=self._context_of(message.sender, _thread_of(message)),
                parts=[Part(text=_text_of(message))],
                metadata=metadata,
            ),
            configuration=SendMessageConfiguration(accepted_output_modes=["text/plain"]),
        )
        # No read timeout: a remote model may think for a long while; the hub's timeout and
        # the caller's cancellation bound the wait.
        async with _http_client(self.token, self.timeout_s, read=None) as http:
            config = ClientConfig(streaming=self.card.capabilities.streaming, httpx_client=http)
            client = ClientFactory(config).create(self.card)
            answer = _Answer()
            known = asyncio.Event()

            async def read() -> None:
                async for event in client.send_message(request):
                    answer.take(event)
                    update = event.artifact_update
                    if event.WhichOneof("payload") == "artifact_update" and not update.last_chunk:
                        # Pieces written so far reach whoever follows this request.
                        self.hub.progress(message.id, get_artifact_text(update.artifact))
                    if answer.task_id:
                        known.set()

            reading = asyncio.ensure_future(read())
            try:
                await asyncio.shield(reading)
                return answer.result(self.card.name)
            except asyncio.CancelledError:
                # Stopped before the task's first event arrived: wait for its id (briefly),
                # or the remote would go on working for nobody.
                if not reading.done():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(known.wait(), CANCEL_TIMEOUT_S)
                    if answer.task_id is not None:
                        await self._cancel(client, answer.task_id)
                    reading.cancel()
                    await asyncio.gather(reading, return_exceptions=True)
                raise
            except A2AClientError as exc:
                if _connection_failed(exc):
                    self._lost()
                    raise AgentOffline(f"{self.card.name} could not be reached: {exc}") from None
                if isinstance(exc, A2AClientTimeoutError):
                    raise NetworkError(f"{self.card.name} did not answer in time.") from None
                raise NetworkError(f"The request to {self.card.name} failed: {exc}") from None
            except NetworkError:
                raise
            except Exception as exc:  # an A2A error answered by the remote (JSON-RPC error)
                raise NetworkError(f"{self.card.name} answered with an error: {exc}") from None
            finally:
                await client.close()

    def _lost(self) -> None:
        """It stopped answering (its server is down, or the way to it): it is drawn offline,
        asking it fails at once (a chat's message waits), and its card is read again until it
        answers."""
        node = self.hub.nodes.get(self.node_id or "")
        # Not when this agent was replaced (added again) or removed meanwhile.
        if node is None or not self.url or not self._still_mine(node):
            return
        self.hub.set_status(node.id, NodeStatus.OFFLINE)
        if self._watching is None or self._watching.done():
            self._watching = self.hub.background(self._watch(node))

    async def _watch(self, node: Node) -> None:
        delays = RECONNECT_DELAYS_S
        for attempt in itertools.count():
            await asyncio.sleep(delays[min(attempt, len(delays) - 1)])
            if not self._still_mine(node):
                return  # removed, or added again
            try:
                card, _info = await _usable_card(
                    self.url, token=self.token, timeout_s=self.timeout_s
                )
            except NetworkError as exc:
                log.info("%s is still unreachable: %s", self.url, exc)
                continue
            if not self._still_mine(node):
                return
            self.card = card
            if node.status == NodeStatus.OFFLINE:
                self.hub.set_status(node.id, NodeStatus.IDLE)
            return

    def _still_mine(self, node: Node) -> bool:
        return self.hub.nodes.get(node.id) is node and self.hub.serves(node.id, self.handle)

    async def _cancel(self, client: Any, task_id: str) -> None:
        try:
            request = CancelTaskRequest(id=task_id)
            await asyncio.wait_for(client.cancel_task(request), CANCEL_TIMEOUT_S)
        except Exception as exc:
            log.warning("Could not cancel the remote task %s: %s", task_id, exc)


class _Answer:
    """Collects a task's events into its text and final state."""

    def __init__(self) -> None:
        self.task_id: str | None = None
        self.state = TaskState.TASK_STATE_UNSPECIFIED
        self.status_text = ""
        self.artifacts: dict[str, str] = {}
        self.message_text: str | None = None

    def take(self, event: StreamResponse) -> None:
        kind = event.WhichOneof("payload")
        if kind == "task":
            self._task(event.task)
        elif kind == "message":
            self.message_text = get_message_text(event.message)
        elif kind == "status_update":
            self.task_id = event.status_update.task_id
            self._status(event.status_update.status)
        elif kind == "artifact_update":
            self.task_id = event.artifact_update.task_id
            artifact = event.artifact_update.artifact
            text = get_artifact_text(artifact)
            if event.artifact_update.append:
                self.artifacts[artifact.artifact_id] = self.artifacts.get(artifact.artifact_id, "")
                self.artifacts[artifact.artifact_id] += text
            else:
                self.artifacts[artifact.artifact_id] = text

    def _task(self, task: Task) -> None:
        self.task_id = task.id
        self._status(task.status)
        for artifact in task.artifacts:
            self.artifacts[artifact.artifact_id] = get_artifact_text(artifact)

    def _status(self, status: Any) -> None:
        self.state = status.state
        if status.HasField("message"):
            self.status_text = get_message_text(status.message)

    def result(self, name: str) -> dict[str, Any]:
        if self.message_text is not None:
            return {"text": self.message_text, "task_id": None}
        if self.state in _FAILED:
            why = self.status_text or "no reason given"
            raise NetworkError(f"{name} {_FAILED[self.state]}: {why}")
        if self.state != TaskState.TASK_STATE_COMPLETED:
            state = TaskState.Name(self.state).removeprefix("TASK_STATE_").lower()
            raise NetworkError(f"{name} stopped answering (the task is {state}).")
        return {"text": "\n".join(self.artifacts.values()), "task_id": self.task_id}


def _connection_failed(exc: BaseException) -> bool:
    """Whether the request failed for want of a connection (refused, host unreachable or
    silent) rather than in the remote's answer. TLS and protocol failures do not count: they
    will not mend by waiting, and their own message says more."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and not any(seen is known for known in chain):
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(link, ssl.SSLError) for link in chain):
        return False
    return any(isinstance(link, httpx.ConnectError | httpx.ConnectTimeout) for link in chain)


def _thread_of(message: AgentMessage) -> str | None:
    thread = message.content.get("thread")
    return str(thread) if thread else None


def _text_of(message: AgentMessage) -> str:
    for key in ("message", "text"):
        value = message.content.get(key)
        if isinstance(value, str) and value:
            return value
    return message.text


def _jsonable(content: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(content, default=str))
    return loaded


async def _usable_card(
    url: str, *, token: str | None, timeout_s: float
) -> tuple[AgentCard, RemoteAgentInfo]:
    """The card at ``url`` (see :func:`resolve_card`). With a token, a card whose requests
    would go to another server than the one at ``url`` is refused: a token given for that
    server is never sent elsewhere.

    Raises:
        NetworkError: the card cannot be read, is not usable, or an interface of it is on
            another host or port.
    """
    card, info = await resolve_card(url, token=token, timeout_s=timeout_s)
    if token is not None:
        asked = urlsplit(info.url).netloc.lower()
        for interface in card.supported_interfaces:
            if urlsplit(interface.url).netloc.lower() != asked:
                raise NetworkError(
                    f"The card at {info.url} sends requests to {interface.url}, another "
                    "server: the token is not sent there. Add the agent by that address."
                )
    return card, info


async def add_remote_agent(
    runtime: Any, url: str, *, token: str | None = None, timeout_s: float = 10.0
) -> Node:
    """Add the A2A agent at ``url`` to the runtime's network; returns its node.

    Raises:
        NetworkError: the card cannot be read or is not usable (the message says why).
    """
    card, info = await _usable_card(url, token=token, timeout_s=timeout_s)
    remote = RemoteAgent(runtime.network, card, token=token, timeout_s=timeout_s, url=url)
    node = Node(
        id=f"a2a:{info.url}",
        name=card.name,
        kind=NodeKind.REMOTE,
        skills=list(info.skills),
        tags=list(info.tags),
        location=url,
    )
    registered = runtime.network.register(node, remote.handle)
    remote.node_id = registered.id
    return registered
