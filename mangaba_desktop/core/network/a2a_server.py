"""The app's agents as A2A agents (protocol 1.0, a2a-sdk), served by uvicorn in the app's loop.

Each local agent answers at ``/agents/<agent_id>`` (JSON-RPC) with its card at
``/agents/<agent_id>/.well-known/agent-card.json``; one of them, the *primary*, also answers at
the root (``/`` and ``/.well-known/agent-card.json``), where A2A clients look first. A request
becomes a request on the hub from a node standing for the caller (``a2a-caller:<host>``), so the
network pane draws who asked whom and the exchange is kept like any other.

Cards are public: a client needs one to learn that a token is required (the card says so), and
a card holds only what the agent offers (its name, the first line of its persona, its skills).
Everything else needs ``Authorization: Bearer <token>`` when a token is set, and a token is
required to listen beyond this computer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import uvicorn
from a2a.helpers import get_data_parts, new_task_from_user_message, new_text_part
from a2a.server.agent_execution import (
    AgentExecutor,
    RequestContext,
    SimpleRequestContextBuilder,
)
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.id_generator import IDGenerator, IDGeneratorContext
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import (
    DefaultServerCallContextBuilder,
    create_agent_card_routes,
    create_jsonrpc_routes,
)
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH
from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import BaseRoute

from ... import __version__
from ..audit import APP, Action, AuditLog, Outcome, RepeatedRefusals, a2a_caller
from ..providers.secrets import InsecureKeyring, KeyStore
from ..store import Agent
from .hub import NetworkError, Node, NodeKind
from .local import ACTIONS

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
"""Request bodies above this are refused (413, or a JSON-RPC error for a chunked body)."""

TOKEN_ID = "a2a-server"
TOKEN_ENV = "MANGABA_A2A_TOKEN"
"""A fixed token for headless nodes without a safe keyring."""
"""The keyring entry (provider id) of the server's bearer token."""

REQUEST_TIMEOUT_S = 600.0
"""How long an A2A task may wait for its agent (a local model can be slow, and the caller
can always cancel)."""

LOOPBACK_NAMES = {"localhost"}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this computer."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def server_token(keys: KeyStore) -> str:
    """The server's bearer token: the one in the keyring, or a new one stored there (for this
    run only when the keyring cannot keep it safely)."""
    token = keys.get(TOKEN_ID, TOKEN_ENV)
    if token:
        return token
    token = secrets.token_urlsafe(32)
    try:
        keys.set(TOKEN_ID, token, actor=APP)
    except (InsecureKeyring, RuntimeError) as exc:
        log.warning("The A2A token is kept for this run only: %s", exc)
        keys.set(TOKEN_ID, token, session_only=True, actor=APP)
    return token


def skill_request(text: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The hub action and its parameters for a message: ``chat`` with the text, unless its
    metadata or a data part names a ``skill`` (its other fields are the parameters)."""
    params = {key: value for key, value in data.items() if key != "skill"}
    action = str(data.get("skill") or "chat")
    if text:
        params.setdefault("message", text)
        params.setdefault("text", text)
    return action, params


class A2AServer:
    """Serves the app's agents over A2A until :meth:`stop`.

    Args:
        runtime: the core whose agents answer (its ``network`` and ``agents``).
        host: the interface to listen on; anything but loopback needs ``token``.
        port: the port; a free one when 0 (see :attr:`url`).
        token: the bearer token requests must carry; none needed when None.
        primary: the agent also served at the root; the default agent when None.
        audit: where starts, stops, tasks from other computers and refused requests are
            recorded; the runtime's (``runtime.audit``) when None.

    Raises:
        ValueError: a non-loopback ``host`` without a token.
    """

    def __init__(
        self,
        runtime: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        primary: str | None = None,
        only: list[str] | None = None,
        public_url: str | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        if not is_loopback(host) and not token:
            raise ValueError(
                f"Listening on {host} makes the agents reachable from other computers: "
                "a bearer token is required."
            )
        self.runtime = runtime
        self.host = host
        self.port = port
        self.token = token
        self.primary = primary
        self.only = only
        """Serve only these agents (ids); every agent of the data folder when None."""
        self.public_url = public_url.rstrip("/") + "/" if public_url else None
        """The address other computers reach it at, for the cards (a wildcard host is not)."""
        self._url: str | None = None
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self._handlers: list[DefaultRequestHandler] = []
        self.cards: dict[str, AgentCard] = {}
        """The card of each served agent, by agent id."""
        self.audit: AuditLog | None = audit or getattr(runtime, "audit", None)
        # A client retrying with a wrong token must not flood the log: one entry per caller
        # a minute at most, with the number refused meanwhile.
        self._refusals = RepeatedRefusals(self.audit) if self.audit is not None else None

    @property
    def url(self) -> str:
        """The root URL (``http://host:port/``), once started."""
        if self._url is None:
            raise RuntimeError("The A2A server is not started.")
        return self._url

    def _allowed_hosts(self, port: int) -> set[str] | None:
        """The Host headers a loopback server answers (a web page that rebinds its own name
        to 127.0.0.1 sends its name and is refused); any host beyond loopback, where the
        token guards."""
        if not is_loopback(self.host):
            return None
        names = {"127.0.0.1", "localhost", "[::1]", self.host}
        return {f"{name}:{port}" for name in names} | names

    def agent_url(self, agent_id: str) -> str:
        return f"{self.url}agents/{agent_id}"

    async def start(self, *, actor: str = APP) -> None:
        """Listen and serve, in the running loop; returns once requests are accepted.

        The start (or why it failed), and listening beyond this computer, are audited as done
        by ``actor``.
        """
        try:
            await self._listen()
        except Exception as exc:
            where = f"{self.host}:{self.port}"
            self._record(Action.A2A_STARTED, actor, where, Outcome.FAILED, f"Not started: {exc}")
            raise
        where = f"{self.host}:{self._port}"
        access = "every request needs the bearer token" if self.token else "no token needed"
        served = f"{len(self.cards)} agents" if len(self.cards) != 1 else "1 agent"
        self._record(
            Action.A2A_STARTED,
            actor,
            where,
            Outcome.OK,
            f"Serving {served} at {self.url}; {access}.",
        )
        if not is_loopback(self.host):
            self._record(
                Action.A2A_EXPOSED,
                actor,
                where,
                Outcome.OK,
                f"Listening on {self.host}: the agents are reachable from other computers, "
                "with the bearer token.",
            )

    def _record(self, action: str, actor: str, target: str, outcome: str, detail: str) -> None:
        if self.audit is not None:
            self.audit.record(action, actor=actor, target=target, outcome=outcome, detail=detail)

    def _on_refused(self, host: str, path: str, reason: str) -> None:
        if self._refusals is not None:
            self._refusals.refused(a2a_caller(host), path, reason)

    async def _listen(self) -> None:
        agents: list[Agent] = await self.runtime.agents.list()
        if not agents:
            agents = [await self.runtime.agents.default()]
        if self.only is not None:
            agents = [a for a in agents if a.id in self.only]
        primary = next((a for a in agents if a.id == self.primary), None)
        if self.primary is not None and primary is None:
            raise ValueError(f"There is no agent “{self.primary}” to serve.")
        primary = primary or agents[0]
        self.primary = primary.id

        sock = _listening_socket(self.host, self.port)
        port = sock.getsockname()[1]
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            # A wildcard address is not one a client can reach; the name may take a DNS
            # lookup, so not on the loop.
            host = await asyncio.to_thread(socket.getfqdn)
        shown = f"[{host}]" if ":" in host else host
        self._url = self.public_url or f"http://{shown}:{port}/"
        self._port = port

        routes: list[BaseRoute] = []
        for agent in agents:
            routes += self._agent_routes(agent, f"/agents/{agent.id}", self.agent_url(agent.id))
        routes += self._agent_routes(primary, "", self.url)
        app = Starlette(routes=routes, max_body_size=MAX_BODY_BYTES, lifespan=self._lifespan)
        config = uvicorn.Config(
            _Guard(app, self.token, self._allowed_hosts(port), self._on_refused),
            log_config=None,  # the app's logging stays as it is
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=3,
        )
        self._server = _EmbeddedServer(config)
        self._serving = asyncio.ensure_future(self._server.serve(sockets=[sock]))
        try:
            while not self._server.started:
                if self._serving.done():
                    await self._serving  # uvicorn reports a failed start with SystemExit
                    raise RuntimeError("The A2A server stopped while starting.")
                await asyncio.sleep(0.01)
        except SystemExit:
            sock.close()
            raise RuntimeError(f"The A2A server could not start on {self._url}.") from None
        except BaseException:
            await self.stop()
            raise

    async def stop(self, *, actor: str = APP) -> None:
        """Stop accepting requests, end the running ones and close the socket; a server that
        was serving is audited as stopped by ``actor``."""
        serving = self._server is not None and self._server.started
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            with contextlib.suppress(SystemExit, Exception):
                await self._serving
        self._server = self._serving = None
        await _stop_sse_watcher()
        for node_id in [n for n in self.runtime.network.nodes if n.startswith(CALLER_PREFIX)]:
            await self.runtime.network.unregister(node_id)
        if self._refusals is not None:
            self._refusals.flush()
        if serving:
            where = f"{self.host}:{self._port}"
            self._record(
                Action.A2A_STOPPED, actor, where, Outcome.OK, f"Stopped serving at {self._url}."
            )

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> Any:
        yield
        for handler in self._handlers:
            await handler.aclose()
        self._handlers.clear()

    def _agent_routes(self, agent: Agent, prefix: str, url: str) -> list[BaseRoute]:
        card = self.cards.get(agent.id) if prefix else None
        if card is None:
            card = agent_card(agent, url, secured=self.token is not None)
            if prefix:
                self.cards[agent.id] = card
        store = InMemoryTaskStore()
        handler = DefaultRequestHandler(
            agent_executor=HubExecutor(self.runtime, agent.id, audit=self.audit),
            task_store=store,
            agent_card=card,
            request_context_builder=SimpleRequestContextBuilder(
                task_store=store, context_id_generator=_ServerContextIds()
            ),
        )
        self._handlers.append(handler)
        return [
            *create_agent_card_routes(card, card_url=f"{prefix}{AGENT_CARD_WELL_KNOWN_PATH}"),
            *create_jsonrpc_routes(
                handler,
                rpc_url=prefix or "/",
                context_builder=_CallerContextBuilder(),
                enable_v0_3_compat=True,
            ),
        ]


def agent_card(agent: Agent, url: str, *, secured: bool) -> AgentCard:
    """The A2A card of ``agent`` served at ``url``."""
    lines = [line.strip() for line in agent.persona.splitlines() if line.strip()]
    card = AgentCard(
        name=agent.name,
        description=lines[0] if lines else f"{agent.name}, an agent of Mangaba Desktop.",
        version=__version__,
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=["text/plain", "application/json"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(
                id=action,
                name=action.replace("_", " ").capitalize(),
                description=description,
                # The spec wants tags on every skill; the skill's id when the agent has none.
                tags=agent.tag_list or [action],
            )
            for action, description in ACTIONS.items()
        ],
    )
    if secured:
        card.security_schemes["bearer"].CopyFrom(
            SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(
                    scheme="Bearer", bearer_format="opaque"
                )
            )
        )
        card.security_requirements.append(
            SecurityRequirement(schemes={"bearer": StringList(list=[])})
        )
    return card


CALLER_PREFIX = "a2a-caller:"


class HubExecutor(AgentExecutor):
    """Runs an A2A task as a request on the hub to one local agent.

    Events: the task, working, the answer as an artifact, completed; or failed (rejected for
    a skill the agent does not have) with the reason as the status message. A task from
    another computer is audited once, when it ends, with its outcome (never its text).
    """

    def __init__(self, runtime: Any, agent_id: str, *, audit: AuditLog | None = None) -> None:
        self.runtime = runtime
        self.agent_id = agent_id
        self.audit = audit
        self._running: dict[str, tuple[asyncio.Task[Any], str]] = {}
        """The hub request of each running task, and the caller node it comes from."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        task = context.current_task
        if task is None:
            task = new_task_from_user_message(context.message)
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)

        data: dict[str, Any] = dict(context.metadata or {})
        if context.message.HasField("metadata"):
            data.update(MessageToDict(context.message.metadata))
        for part in get_data_parts(list(context.message.parts)):
            if isinstance(part, dict):
                data.update(part)
        action, params = skill_request(context.get_user_input().strip(), data)
        host = _client_host(context.call_context)
        context_id = context.message.context_id
        if context_id and not context_id.startswith(SERVER_CONTEXT_PREFIX):
            # The caller keeps this thread apart: its own conversation with the agent. A
            # context this server named (the caller sent none) is the caller's one
            # conversation with the agent, however many requests start one.
            params["thread"] = context_id
        if action not in ACTIONS:
            known = ", ".join(ACTIONS)
            reason = f"There is no skill “{action}” here; the skills are: {known}."
            await updater.reject(updater.new_agent_message([new_text_part(reason)]))
            self._audit_task(host, action, Outcome.REFUSED, "there is no such skill.")
            return

        caller = self._caller(context.call_context)
        hub = self.runtime.network
        # The answer streams as appends to one artifact while the agent writes it: each
        # piece is sent after the one before it; an answer that does not stream costs nothing.
        artifact_id = uuid.uuid4().hex
        appends: list[asyncio.Task[None]] = []

        working: list[asyncio.Task[None]] = []

        def start_working() -> asyncio.Task[None]:
            # "working" is said once, when the answer takes a while or starts to stream: an
            # answer ready at once goes from submitted to completed (one event less to send).
            if not working:
                working.append(asyncio.ensure_future(updater.start_work()))
            return working[0]

        async def append(piece: str, before: asyncio.Task[None] | None) -> None:
            await start_working()
            if before is not None:
                await before
            await updater.add_artifact(
                [new_text_part(piece)],
                artifact_id=artifact_id,
                name="answer",
                append=before is not None,
                last_chunk=False,
            )

        def progress(piece: str) -> None:
            before = appends[-1] if appends else None
            appends.append(asyncio.ensure_future(append(piece, before)))

        request = asyncio.ensure_future(
            hub.request(
                caller,
                self.agent_id,
                action,
                params,
                timeout_s=REQUEST_TIMEOUT_S,
                on_progress=progress,
            )
        )
        self._running[task.id] = (request, caller)
        try:
            await asyncio.wait({request}, timeout=WORKING_AFTER_S)
            if not request.done():
                await start_working()
            response = await request
            if appends:
                await appends[-1]
        except NetworkError as exc:
            await _stop(appends)  # no piece may follow the task's last word
            await updater.failed(updater.new_agent_message([new_text_part(str(exc))]))
            self._audit_task(host, action, Outcome.FAILED, str(exc))
            return
        except asyncio.CancelledError:
            self._audit_task(host, action, Outcome.FAILED, "canceled before the answer.")
            task_now = asyncio.current_task()
            if task_now is not None and task_now.cancelling():
                raise
            return  # cancel() stopped the request and reported the task canceled
        except Exception:
            log.exception("A2A task %s failed", task.id)
            await _stop(appends)
            text = "The agent could not answer because of an internal error."
            await updater.failed(updater.new_agent_message([new_text_part(text)]))
            self._audit_task(host, action, Outcome.FAILED, "an internal error.")
            return
        finally:
            self._running.pop(task.id, None)
            for sending in appends:
                if not sending.done():
                    sending.cancel()  # cancelled: no more pieces
        if appends:
            # The streamed pieces are the raw text; the final artifact is the answer as kept.
            await updater.add_artifact(
                [new_text_part(response.text)],
                artifact_id=artifact_id,
                name="answer",
                append=False,
                last_chunk=True,
            )
        else:
            await updater.add_artifact(
                [new_text_part(response.text)], name="answer", last_chunk=True
            )
        await updater.complete()
        self._audit_task(host, action, Outcome.OK, "answered.")

    def _audit_task(self, host: str, action: str, outcome: str, detail: str) -> None:
        """One entry per task from another computer (this computer's own are not audited)."""
        if self.audit is not None and not is_loopback(host):
            self.audit.record(
                Action.A2A_REQUEST,
                actor=a2a_caller(host),
                target=self.agent_id,
                outcome=outcome,
                detail=f"Skill “{action[:80]}”: {detail}",  # the name is the caller's text
            )

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None
        assert context.context_id is not None
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()
        running = self._running.pop(context.task_id, None)
        if running is not None:
            request, _caller = running
            request.cancel()  # the hub stops the agent's work on it, and only on it

    def _caller(self, call: ServerCallContext | None) -> str:
        host = _client_host(call)
        node_id = f"{CALLER_PREFIX}{host}"
        hub = self.runtime.network
        if node_id not in hub.nodes:
            node = Node(id=node_id, name=f"A2A client {host}", kind=NodeKind.REMOTE, location=host)
            hub.register(node, _refuse)
        return node_id


def _client_host(call: ServerCallContext | None) -> str:
    return str((call.state if call else {}).get("client_host") or "unknown")


WORKING_AFTER_S = 0.05
"""A task not answered within this long is reported working (a quick answer skips it)."""

SERVER_CONTEXT_PREFIX = "mangaba-"
"""Context ids this server makes for requests that came without one."""


class _ServerContextIds(IDGenerator):
    def generate(self, context: IDGeneratorContext) -> str:
        return f"{SERVER_CONTEXT_PREFIX}{uuid.uuid4().hex}"


async def _stop(sending: list[asyncio.Task[None]]) -> None:
    """Cancel the pieces not sent yet, and wait until none can still be sent."""
    for task in sending:
        task.cancel()
    await asyncio.gather(*sending, return_exceptions=True)


async def _refuse(message: Any) -> dict[str, Any] | None:
    raise NetworkError("An A2A client only asks; it cannot be sent requests.")


class _CallerContextBuilder(DefaultServerCallContextBuilder):
    """Adds the caller's address, which names its node on the hub."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state["client_host"] = request.client.host if request.client else None
        return context


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the app (or ``serve``) owns SIGINT and SIGTERM and
    stops the server itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _Guard:
    """Refuses, before the A2A routes see them, requests without the bearer token (401) and
    POSTs whose body is not JSON (415). Agent cards stay public. ``on_refused`` hears of each
    request refused for its token or its Host (the caller's address, the path, why)."""

    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        hosts: set[str] | None = None,
        on_refused: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.hosts = {h.lower().encode("latin-1") for h in hosts} if hosts else None
        self.on_refused = on_refused

    def _refused(self, scope: Scope, reason: str) -> None:
        if self.on_refused is not None:
            client = scope.get("client")
            host = str(client[0]) if client else "unknown"
            self.on_refused(host, str(scope.get("path", "")), reason)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        if self.hosts is not None and headers.get("host", b"").lower() not in self.hosts:
            self._refused(scope, "The Host header did not name this computer (421).")
            await _error(send, 421, "This server answers only on this computer's own address.")
            return
        if self.token is not None and not path.endswith(AGENT_CARD_WELL_KNOWN_PATH):
            scheme, _, given = headers.get("authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
                # Why, never what was sent: a wrong token may be another secret of the caller.
                missing = scheme.lower() != b"bearer" or not given.strip()
                self._refused(scope, f"{'No' if missing else 'Wrong'} bearer token (401).")
                await _error(
                    send, 401, "A bearer token is required.", {"www-authenticate": "Bearer"}
                )
                return
        if scope.get("method") == "POST":
            kind = headers.get("content-type", b"").split(b";")[0].strip().lower()
            if kind != b"application/json" and not kind.endswith(b"+json"):
                await _error(send, 415, "The body must be JSON (Content-Type: application/json).")
                return
        await self.app(scope, receive, send)


async def _error(send: Send, status: int, text: str, extra: dict[str, str] | None = None) -> None:
    """A JSON-RPC error response with an HTTP status (the request never reached JSON-RPC)."""
    code = -32600
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": text}})
    headers = [(b"content-type", b"application/json")]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body.encode()})


async def _stop_sse_watcher() -> None:
    # sse-starlette starts one task per loop that polls, every 0.5 s and for as long as the
    # loop runs, for a uvicorn it finds through the SIGTERM handler, which an embedded server
    # does not install; end it with the server (the next stream starts it again).
    watchers = [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "") == "_shutdown_watcher"
    ]
    for task in watchers:
        task.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)


def _listening_socket(host: str, port: int) -> socket.socket:
    """A bound socket for uvicorn. IPPROTO_TCP matters: asyncio turns Nagle off only on
    connections accepted from a socket created with it, and with Nagle on every response
    waits ~40 ms for a delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    address = host if host.lower() != "localhost" else "127.0.0.1"
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
