"""The agent network inside the app: who is there, who is linked, and every message between them.

Each agent (node) has a priority queue and one worker that takes its messages in order of
priority, then arrival. A request waits for exactly one answer, correlated by id: the response,
or an error that reaches the caller as :class:`RequestFailed` (the receiver failed, the message
expired in the queue, the caller stopped waiting). Sending to an unknown or offline agent is an
error at once, never a silent success. Every message is stored, for the timeline and replay,
before it is delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlmodel import Session, col, select

from .. import events
from ..context.passages import InvalidContext, parse_tags
from ..events import EventBus
from ..store import Database
from ..store.models import AgentLink, AgentMessageRow
from .messages import AgentMessage, MessagePriority, MessageStatus, MessageType

log = logging.getLogger(__name__)

MAX_BROADCAST_CHARS = 16_000
"""What a receiver can keep as one memory."""

KEEP_MESSAGES_DAYS = 30.0
KEEP_MESSAGES = 200_000
"""How much of the network's history is kept (pruned at each start)."""

DEFAULT_TIMEOUT_S = 120.0
"""How long a request waits for its answer (a local model can take a while)."""
REMOTE_PARALLEL = 4
"""Requests a remote agent is sent at once; more wait in its queue."""

Handler = Callable[[AgentMessage], Awaitable[dict[str, Any] | None]]
"""Handles a message for a node; a request's answer is the returned content."""


class NodeStatus(StrEnum):
    IDLE = "idle"
    WORKING = "working"
    INPUT_REQUIRED = "input-required"
    ERROR = "error"
    OFFLINE = "offline"


class NodeKind(StrEnum):
    LOCAL = "local"
    """An agent of this app."""
    REMOTE = "remote"
    """An A2A agent elsewhere, reached by URL."""
    MODEL = "model"
    """A model endpoint the agents ask (drawn, never sent network messages)."""


@dataclass
class Node:
    """An agent on the network: what it is called, can do, and where it lives."""

    id: str
    name: str
    kind: NodeKind = NodeKind.LOCAL
    skills: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    location: str = "this app"
    status: NodeStatus = NodeStatus.IDLE
    handled: int = 0
    failed: int = 0


class NetworkError(RuntimeError):
    """A message could not be sent or answered; the text is for the user."""


class UnknownAgent(NetworkError):
    pass


class AgentOffline(NetworkError):
    pass


class RequestFailed(NetworkError):
    """The request was answered with an error (``message`` is that error message)."""

    def __init__(self, text: str, message: AgentMessage | None = None) -> None:
        super().__init__(text)
        self.message = message

    @property
    def unreachable(self) -> bool:
        """Its receiver could not be reached: asking again later may work."""
        return self.message is not None and bool(self.message.content.get("unreachable"))


class RequestTimedOut(RequestFailed):
    pass


class AgentHub:
    """The nodes, their links and queues, and the messages between them.

    Events on the bus: ``network.node`` (``node``: a node joined, changed status or left,
    ``removed``: whether it left), ``network.message`` (``message``: stored or changed status),
    ``network.link`` (``source``, ``target``).

    Args:
        bus: the event bus.
        database: where messages and links are kept; none kept when None.
    """

    def __init__(self, bus: EventBus, database: Database | None = None) -> None:
        self.bus = bus
        self.database = database
        self.nodes: dict[str, Node] = {}
        self.links: set[tuple[str, str]] = set()
        self._handlers: dict[str, Handler] = {}
        self._queues: dict[str, asyncio.PriorityQueue[tuple[int, int, AgentMessage]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._waiting: dict[str, asyncio.Future[AgentMessage]] = {}
        self._handling: dict[str, asyncio.Task[dict[str, Any] | None]] = {}
        self._progress: dict[str, Callable[[str], None]] = {}
        self._order = itertools.count()
        self._closed = False
        self._background: set[asyncio.Task[Any]] = set()
        self._busy: dict[str, int] = {}
        """Messages each node is handling now (a remote agent handles several at once)."""
        self._leaving: dict[str, str] = {}
        """The names of nodes being unregistered, for what their workers leave unfinished."""

    # -- nodes and links -------------------------------------------------------------------------

    def register(self, node: Node, handler: Handler) -> Node:
        """Add (or update) a node with the handler that serves its messages."""
        known = self.nodes.get(node.id)
        if known is not None:
            node.handled, node.failed = known.handled, known.failed
        self.nodes[node.id] = node
        self._handlers[node.id] = handler
        if node.id not in self._queues:
            self._queues[node.id] = asyncio.PriorityQueue()
        worker = self._workers.get(node.id)
        if worker is None or worker.done():
            self._workers[node.id] = asyncio.ensure_future(self._work(node.id))
        self.bus.publish(events.NETWORK_NODE, node=node, removed=False)
        return node

    async def unregister(self, node_id: str) -> None:
        """Remove a node; what waits in its queue fails with a message saying so."""
        node = self.nodes.pop(node_id, None)
        self._handlers.pop(node_id, None)
        worker = self._workers.pop(node_id, None)
        if worker is not None:
            self._leaving[node_id] = node.name if node is not None else node_id
            try:
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)
            finally:
                self._leaving.pop(node_id, None)
        queue = self._queues.pop(node_id, None)
        while queue is not None and not queue.empty():
            _p, _o, message = queue.get_nowait()
            name = node.name if node else node_id
            await self._fail(message, f"{name} left the network before handling this.")
        self.links = {link for link in self.links if node_id not in link}
        if node is not None:
            self.bus.publish(events.NETWORK_NODE, node=node, removed=True)

    def serves(self, node_id: str, handler: Handler) -> bool:
        """Whether ``handler`` is the one serving ``node_id`` now (not replaced, not gone)."""
        return self._handlers.get(node_id) == handler

    def set_status(self, node_id: str, status: NodeStatus) -> None:
        node = self.nodes.get(node_id)
        if node is not None and node.status != status:
            node.status = status
            self.bus.publish(events.NETWORK_NODE, node=node, removed=False)

    async def connect(self, first: str, second: str) -> None:
        """Link two agents both ways (a broadcast goes to the agents its sender is linked to)."""
        for node_id in (first, second):
            self._node(node_id)
        if first == second:
            raise NetworkError("An agent cannot be connected to itself.")
        now = time.time()
        for source, target in ((first, second), (second, first)):
            if (source, target) in self.links:
                continue
            self.links.add((source, target))
            await self._store(lambda s, a=source, b=target: _insert_link(s, a, b, now), wait=True)
            self.bus.publish(events.NETWORK_LINK, source=source, target=target)

    def linked(self, node_id: str) -> list[str]:
        return sorted(target for source, target in self.links if source == node_id)

    async def load_links(self) -> None:
        """Read the links kept from earlier runs."""
        if self.database is None:
            return
        rows = await self.database.read(lambda s: list(s.exec(select(AgentLink)).all()))
        self.links.update((row.source, row.target) for row in rows)

    # -- sending ---------------------------------------------------------------------------------

    async def request(
        self,
        sender: str,
        receiver: str,
        action: str,
        params: dict[str, Any] | None = None,
        *,
        priority: int = MessagePriority.MEDIUM,
        ttl_s: float | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        on_progress: Callable[[str], None] | None = None,
    ) -> AgentMessage:
        """Ask ``receiver`` to do ``action``; returns its one response. ``on_progress``
        receives the answer's text as it is written, when the receiver streams it.

        Raises :class:`UnknownAgent` or :class:`AgentOffline` at once, :class:`RequestFailed`
        when it answers with an error or the request expires in its queue, and
        :class:`RequestTimedOut` after ``timeout_s``.
        """
        target = self._reachable(receiver)
        self._node(sender)
        message = AgentMessage(
            sender=sender,
            receiver=receiver,
            type=MessageType.REQUEST,
            content=dict(params or {}),
            action=action,
            priority=priority,
            ttl_s=ttl_s,
        )
        answer: asyncio.Future[AgentMessage] = asyncio.get_running_loop().create_future()
        self._waiting[message.id] = answer
        if on_progress is not None:
            self._progress[message.id] = on_progress
        try:
            await self._enqueue(message)
            try:
                response = await self._wait(message, answer, timeout_s)
            except TimeoutError:
                message.status = MessageStatus.TIMED_OUT
                message.error = f"{target.name} did not answer within {timeout_s:g} s."
                self._abandon(message)
                await self._update(message)
                raise RequestTimedOut(message.error, message) from None
            except asyncio.CancelledError:
                message.status = MessageStatus.CANCELLED
                message.error = "The request was cancelled."
                self._abandon(message)
                self._later(self._update(message))
                raise
        finally:
            self._waiting.pop(message.id, None)
            self._progress.pop(message.id, None)
        if response.type == MessageType.ERROR:
            raise RequestFailed(response.error or response.text, response)
        return response

    async def broadcast(
        self,
        sender: str,
        content: dict[str, Any],
        tags: Sequence[str] | None = None,
        *,
        priority: int = MessagePriority.MEDIUM,
        ttl_s: float | None = None,
    ) -> list[str]:
        """Send ``content`` to every agent ``sender`` is linked to that has one of ``tags``
        (all of them without tags); returns who it went to. Offline agents are skipped."""
        self._node(sender)
        try:
            wanted = set(parse_tags(list(tags or [])))
        except InvalidContext as exc:
            raise NetworkError(str(exc)) from None
        size = len(json.dumps(content, ensure_ascii=False, default=str))
        if size > MAX_BROADCAST_CHARS:
            raise NetworkError(
                f"A broadcast may hold {MAX_BROADCAST_CHARS:,} characters; this one has {size:,}."
            )
        receivers = []
        for node_id in self.linked(sender):
            node = self.nodes.get(node_id)
            if node is None or node.status == NodeStatus.OFFLINE:
                continue
            if wanted and not wanted & {t.lower() for t in node.tags}:
                continue
            receivers.append(node_id)
        for node_id in receivers:
            await self._enqueue(
                AgentMessage(
                    sender=sender,
                    receiver=node_id,
                    type=MessageType.BROADCAST,
                    content=dict(content),
                    priority=priority,
                    ttl_s=ttl_s,
                    tags=sorted(wanted),
                )
            )
        return receivers

    async def notify(self, sender: str, receiver: str, content: dict[str, Any]) -> None:
        """A one-way message (no answer expected)."""
        self._reachable(receiver)
        self._node(sender)
        await self._enqueue(
            AgentMessage(
                sender=sender, receiver=receiver, type=MessageType.NOTIFICATION, content=content
            )
        )

    def progress(self, message_id: str, text: str) -> None:
        """A handler's piece of the answer to request ``message_id``, for a caller that
        follows it as it is written (ignored when nobody does)."""
        listener = self._progress.get(message_id)
        if listener is not None and text:
            try:
                listener(text)
            except Exception:
                log.exception("a progress listener of %s failed", message_id)

    # -- history ---------------------------------------------------------------------------------

    async def history(
        self,
        *,
        agent_id: str | None = None,
        types: Iterable[str] | None = None,
        since: float | None = None,
        limit: int = 500,
    ) -> list[AgentMessage]:
        """Stored messages, oldest first (the last ``limit``), optionally about one agent."""
        if self.database is None:
            return []
        await self.flush()

        def job(session: Session) -> list[AgentMessageRow]:
            query = select(AgentMessageRow).order_by(col(AgentMessageRow.created_at).desc())
            if agent_id is not None:
                query = query.where(
                    (AgentMessageRow.sender == agent_id) | (AgentMessageRow.receiver == agent_id)
                )
            if types:
                query = query.where(col(AgentMessageRow.type).in_(list(types)))
            if since is not None:
                query = query.where(AgentMessageRow.created_at >= since)
            return list(reversed(session.exec(query.limit(limit)).all()))

        return [_message_of(row) for row in await self.database.read(job)]

    async def exchange(self, message_id: str) -> list[AgentMessage]:
        """A request and what answered it, in order (for replay)."""
        if self.database is None:
            return []
        await self.flush()

        def job(session: Session) -> list[AgentMessageRow]:
            query = (
                select(AgentMessageRow)
                .where(
                    (AgentMessageRow.id == message_id)
                    | (AgentMessageRow.correlation_id == message_id)
                )
                .order_by(col(AgentMessageRow.created_at))
            )
            return list(session.exec(query).all())

        return [_message_of(row) for row in await self.database.read(job)]

    async def close_unfinished(self) -> int:
        """Mark what a previous run left queued or in hand as failed (at start, before any
        message of this run exists); returns how many."""
        if self.database is None:
            return 0
        now = time.time()

        def job(session: Session) -> int:
            return int(
                session.connection()
                .exec_driver_sql(
                    "UPDATE agent_messages SET status = ?, error = ?, finished_at = ? "
                    "WHERE status IN (?, ?)",
                    (
                        MessageStatus.FAILED.value,
                        "The app closed before it was handled.",
                        now,
                        MessageStatus.QUEUED.value,
                        MessageStatus.DELIVERED.value,
                    ),
                )
                .rowcount
            )

        return await self.database.write(job)

    async def prune(
        self, *, older_than_days: float = KEEP_MESSAGES_DAYS, keep_at_most: int = KEEP_MESSAGES
    ) -> int:
        """Delete the finished messages older than ``older_than_days``, and the oldest beyond
        ``keep_at_most``; returns how many went. Messages still queued or being handled stay."""
        if self.database is None:
            return 0
        cutoff = time.time() - older_than_days * 86400

        def job(session: Session) -> int:
            table = _TABLE
            open_states = [MessageStatus.QUEUED.value, MessageStatus.DELIVERED.value]
            finished = table.c.status.not_in(open_states)
            removed = (
                session.connection()
                .execute(table.delete().where(finished).where(table.c.created_at < cutoff))
                .rowcount
            )
            newest = (
                select(table.c.created_at)
                .order_by(table.c.created_at.desc())
                .offset(keep_at_most)
                .limit(1)
                .scalar_subquery()
            )
            removed += (
                session.connection()
                .execute(table.delete().where(finished).where(table.c.created_at <= newest))
                .rowcount
            )
            return int(removed)

        return await self.database.write(job)

    async def forget(self, node_id: str) -> None:
        """Drop a deleted agent's links (its messages stay, for the timeline)."""
        self.links = {link for link in self.links if node_id not in link}
        if self.database is None:
            return

        def job(session: Session) -> None:
            table: Any = AgentLink.__table__
            session.connection().execute(
                table.delete().where((table.c.source == node_id) | (table.c.target == node_id))
            )

        await self._store(job, wait=True)

    def background(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
        """Run ``coroutine`` (a node's own upkeep, such as watching for a lost remote agent)
        until it ends or the network closes; not once it is closed."""
        if self._closed:
            coroutine.close()
            return None
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def close(self) -> None:
        """Stop the workers; requests still waiting fail with a message saying why."""
        self._closed = True
        chores = list(self._background)
        for chore in chores:
            chore.cancel()
        await asyncio.gather(*chores, return_exceptions=True)
        workers = list(self._workers.values())
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._workers.clear()
        for answer in list(self._waiting.values()):
            if not answer.done():
                answer.set_exception(RequestFailed("The app is closing."))

    # -- internals -------------------------------------------------------------------------------

    def _node(self, node_id: str) -> Node:
        node = self.nodes.get(node_id)
        if node is None:
            raise UnknownAgent(f"There is no agent “{node_id}” on the network.")
        return node

    def _reachable(self, node_id: str) -> Node:
        node = self._node(node_id)
        if node.status == NodeStatus.OFFLINE:
            raise AgentOffline(f"{node.name} is offline.")
        return node

    async def _enqueue(self, message: AgentMessage) -> None:
        if self._closed:
            raise NetworkError("The network is closed.")
        await self._store(_insert_job(message))
        self._announce(message)
        queue = self._queues[message.receiver]
        queue.put_nowait((-int(message.priority), next(self._order), message))

    async def _work(self, node_id: str) -> None:
        """Serve a node's queue, by priority: one message at a time for the app's agents (each
        is one agent thinking), up to :data:`REMOTE_PARALLEL` at once for a remote agent (its
        own server takes them in parallel, and two chats with it must not wait in turn)."""
        queue = self._queues[node_id]
        node = self.nodes.get(node_id)
        parallel = REMOTE_PARALLEL if node is not None and node.kind == NodeKind.REMOTE else 1
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                while len(running) >= parallel:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                _priority, _order, message = await queue.get()
                if parallel == 1:
                    await self._serve(node_id, message)
                    continue
                task = asyncio.ensure_future(self._serve(node_id, message))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _serve(self, node_id: str, message: AgentMessage) -> None:
        """Handle one message; whatever happens, its caller gets an answer and the node's
        status says whether it still works."""
        try:
            await self._handle(node_id, message)
        except asyncio.CancelledError:
            if self._closed:
                await self._fail(message, "The app is closing.")
            else:  # unregistered while it worked
                name = self._leaving.get(node_id, node_id)
                await self._fail(message, f"{name} left the network while handling this.")
            raise
        except Exception:
            log.exception("the network worker of %s failed on %s", node_id, message.id)
            await self._fail(message, "The network could not deliver this (internal error).")
        finally:
            self._settle(node_id)

    def _settle(self, node_id: str) -> None:
        """Idle once nothing is queued or being handled (a remote agent found unreachable
        stays offline)."""
        node = self.nodes.get(node_id)
        queue = self._queues.get(node_id)
        if node is None or queue is None or not queue.empty() or self._busy.get(node_id):
            return
        if node.status not in (NodeStatus.OFFLINE, NodeStatus.IDLE):
            self.set_status(node_id, NodeStatus.IDLE)

    async def _wait(
        self, message: AgentMessage, answer: asyncio.Future[AgentMessage], timeout_s: float
    ) -> AgentMessage:
        """The answer within ``timeout_s``; a request still queued when its time to live ends
        expires then, not when its turn comes."""
        if message.ttl_s is None or message.ttl_s >= timeout_s:
            return await asyncio.wait_for(asyncio.shield(answer), timeout_s)
        try:
            return await asyncio.wait_for(asyncio.shield(answer), message.ttl_s)
        except TimeoutError:
            if message.status != MessageStatus.QUEUED:
                return await asyncio.wait_for(asyncio.shield(answer), timeout_s - message.ttl_s)
        receiver = self.nodes.get(message.receiver)
        message.status = MessageStatus.EXPIRED
        message.error = (
            f"Expired after {message.ttl_s:g} s in the queue of "
            f"{receiver.name if receiver else message.receiver} before it was handled."
        )
        await self._update(message)
        raise RequestFailed(message.error, message)

    def _abandon(self, message: AgentMessage) -> None:
        """The caller gave up: the receiver stops working on it (or never starts)."""
        working = self._handling.get(message.id)
        if working is not None and not working.done():
            working.cancel()

    def _later(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _handle(self, node_id: str, message: AgentMessage) -> None:
        node = self.nodes.get(node_id)
        if message.status in (
            MessageStatus.TIMED_OUT,
            MessageStatus.CANCELLED,
            MessageStatus.EXPIRED,
        ):
            return  # its caller gave up, or its time ran out, before it was taken
        if message.expired():
            text = (
                f"Expired after {message.ttl_s:g} s in the queue of "
                f"{node.name if node else node_id} before it was handled."
            )
            await self._conclude_failed(message, text, status=MessageStatus.EXPIRED)
            return
        handler = self._handlers.get(node_id)
        if node is None or handler is None:  # unregistered since it was queued
            name = self._leaving.get(node_id, node_id)
            await self._fail(message, f"{name} left the network before handling this.")
            return
        if node.status == NodeStatus.OFFLINE:
            # Found unreachable while this waited in its queue: not sent, and not marked
            # working (that would read as reached again).
            await self._conclude_failed(message, f"{node.name} is offline.", unreachable=True)
            return
        message.status = MessageStatus.DELIVERED
        self._announce(message)  # stored with its outcome: one write less per message
        if message.id not in self._waiting and message.type == MessageType.REQUEST:
            return  # its caller gave up while it was being marked delivered
        self.set_status(node_id, NodeStatus.WORKING)
        self._busy[node_id] = self._busy.get(node_id, 0) + 1
        working = asyncio.ensure_future(handler(message))
        self._handling[message.id] = working
        try:
            content = await working
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not working.cancelled() or (current is not None and current.cancelling()):
                raise  # the worker itself is stopping
            await self._update(message)  # abandoned by its caller: timed out or cancelled
        except Exception as exc:
            if isinstance(exc, NetworkError | ValueError):
                text = str(exc).strip() or type(exc).__name__  # written for the user
            else:
                # Anything else may name files, SQL or hosts: the asker (maybe remote) gets
                # a plain sentence, the log the details.
                log.exception("%s failed on %s", node_id, message.id)
                text = f"{node.name if node else node_id} could not handle this (internal error)."
            log.info("%s could not handle %s: %s", node_id, message.id, text)
            if node is not None:
                node.failed += 1
            unreachable = isinstance(exc, AgentOffline)
            await self._conclude_failed(message, text, unreachable=unreachable)
        else:
            if node is not None:
                node.handled += 1
            message.status = MessageStatus.DONE
            if message.type == MessageType.REQUEST:
                await self._answer(message, message.reply(content or {}))
            else:
                await self._update(message)
        finally:
            self._handling.pop(message.id, None)
            if not working.done():
                working.cancel()
            busy = self._busy.get(node_id, 1) - 1
            if busy > 0:
                self._busy[node_id] = busy
            else:
                self._busy.pop(node_id, None)

    async def _answer(self, request: AgentMessage, answer: AgentMessage) -> None:
        """Store the request's outcome and its answer together, then deliver the answer."""
        waiting = self._waiting.get(request.id)
        answer.status = MessageStatus.DONE if waiting is not None else MessageStatus.TIMED_OUT
        outcome, stored = _update_job(request), _insert_job(answer)

        def job(session: Session) -> None:
            outcome(session)
            stored(session)

        await self._store(job, wait=True)
        self._announce(request)
        self._announce(answer)
        if waiting is not None and not waiting.done():
            waiting.set_result(answer)

    async def _conclude_failed(
        self,
        message: AgentMessage,
        text: str,
        *,
        status: MessageStatus = MessageStatus.FAILED,
        unreachable: bool = False,
    ) -> None:
        """``message`` was not handled (``status``, why in ``text``): a request is answered
        with the error, anything else is stored as it ends."""
        message.status, message.error = status, text
        if message.type == MessageType.REQUEST:
            await self._answer(message, message.failure(text, unreachable=unreachable))
        else:
            await self._update(message)

    async def _fail(self, message: AgentMessage, text: str) -> None:
        message.status, message.error = MessageStatus.FAILED, text
        with contextlib.suppress(Exception):
            await self._update(message)
        waiting = self._waiting.get(message.id)
        if waiting is not None and not waiting.done():
            waiting.set_exception(RequestFailed(text, message))

    async def _update(self, message: AgentMessage) -> None:
        await self._store(_update_job(message))
        self._announce(message)

    def _announce(self, message: AgentMessage) -> None:
        # A copy: the message changes status later, and listeners batch what they receive.
        self.bus.publish(events.NETWORK_MESSAGE, message=dataclasses.replace(message))

    async def _store(self, job: Callable[[Session], Any], *, wait: bool = False) -> None:
        """Queue a write; wait for it only when asked. The one writer thread runs writes in
        the order they were queued, so a message's row is stored before its status changes,
        and waiting for an answer's row means the whole exchange is on disk: a request waits
        for the disk once, not at every step."""
        if self.database is None:
            return
        if wait:
            await self.database.write(job)
        else:
            self.database.write_soon(job).add_done_callback(_log_failed_write)

    async def flush(self) -> None:
        """Wait until every message queued so far is on disk."""
        if self.database is not None:
            await self.database.write(lambda _s: None)


def _log_failed_write(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("a network message could not be stored: %s", future.exception())


def _insert_link(session: Session, source: str, target: str, now: float) -> None:
    if session.get(AgentLink, (source, target)) is None:
        session.add(AgentLink(source=source, target=target, created_at=now))


# Plain SQL: the hub writes two or three rows per request, and SQLAlchemy's building of a
# statement costs more than SQLite's running it.
_TABLE: Any = AgentMessageRow.__table__
_COLUMNS = (
    "id", "type", "sender", "receiver", "action", "content", "created_at", "priority",
    "ttl_s", "correlation_id", "tags", "status", "error", "finished_at",
)  # fmt: skip
_INSERT_SQL = (
    f"INSERT INTO agent_messages ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
_UPDATE_SQL = "UPDATE agent_messages SET status = ?, error = ?, finished_at = ? WHERE id = ?"


def _update_job(message: AgentMessage) -> Callable[[Session], None]:
    """The write of a message's status as it is now."""
    finished = time.time() if message.status != MessageStatus.DELIVERED else None
    message_id, status, error = message.id, message.status, message.error

    def job(session: Session) -> None:
        session.connection().exec_driver_sql(
            _UPDATE_SQL, (str(status), error, finished, message_id)
        )

    return job


def _insert_job(message: AgentMessage) -> Callable[[Session], None]:
    """The write of a new message (a plain INSERT: every request makes two, so the ORM's
    bookkeeping is left out)."""
    values = _values_of(message)

    def job(session: Session) -> None:
        session.connection().exec_driver_sql(_INSERT_SQL, tuple(values[c] for c in _COLUMNS))

    return job


def _values_of(message: AgentMessage) -> dict[str, Any]:
    """A message's row as plain values (a table model instance costs more to build than the
    INSERT costs to run)."""
    return {
        "id": message.id,
        "type": str(message.type),
        "sender": message.sender,
        "receiver": message.receiver,
        "action": message.action,
        "content": json.dumps(message.content, ensure_ascii=False, default=str),
        "created_at": message.timestamp,
        "priority": int(message.priority),
        "ttl_s": message.ttl_s,
        "correlation_id": message.correlation_id,
        "tags": json.dumps(message.tags),
        "status": str(message.status),
        "error": message.error,
        "finished_at": None,
    }


def _message_of(row: AgentMessageRow) -> AgentMessage:
    return AgentMessage(
        id=row.id,
        sender=row.sender,
        receiver=row.receiver,
        type=MessageType(row.type),
        content=json.loads(row.content),
        action=row.action,
        priority=row.priority,
        ttl_s=row.ttl_s,
        correlation_id=row.correlation_id,
        tags=json.loads(row.tags or "[]"),
        timestamp=row.created_at,
        status=MessageStatus(row.status),
        error=row.error,
    )
