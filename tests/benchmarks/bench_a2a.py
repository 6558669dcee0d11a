"""A2A round trips over loopback: the app's server against a bare a2a-sdk echo server, plus the
in-process hub request/response.

Both servers run in this process, on uvicorn in this loop, on 127.0.0.1 sockets made the same
way, and are driven by the same a2a-sdk client (non-streaming SendMessage over one keep-alive
httpx client). The echo server is the baseline: Task, working, artifact, completed, nothing
else. The app's path adds, per request: the caller node and a hub request (stored in SQLite,
queued, delivered, answered, stored again), the chat pipeline (the user message and the reply
written to SQLite, context retrieval, the persona prompt), and the model, here a ScriptedSource
that answers at once.

    python tests/benchmarks/bench_a2a.py            # 300 round trips each
    python tests/benchmarks/bench_a2a.py --quick    # 60

Goal: app p50 <= 1.2 x echo p50.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.helpers import new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import Message, Part, Role, SendMessageRequest, TaskState
from benchlib import emit, log, summary_ms
from starlette.applications import Starlette

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mangaba_desktop.core.agent import Runtime  # noqa: E402
from mangaba_desktop.core.events import EventBus  # noqa: E402
from mangaba_desktop.core.network import AgentHub, Node  # noqa: E402
from mangaba_desktop.core.network.a2a_server import (  # noqa: E402
    A2AServer,
    _EmbeddedServer,
    _listening_socket,
)
from mangaba_desktop.core.store import Database  # noqa: E402
from tests.helpers.sources import ScriptedSource  # noqa: E402

GOAL_RATIO = 1.2


class Echo(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        task = new_task_from_user_message(context.message)
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        await updater.add_artifact([new_text_part(context.get_user_input())], last_chunk=True)
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None
        assert context.context_id is not None
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[str]:
    import uvicorn
    from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill

    sock = _listening_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    card = AgentCard(
        name="Echo",
        description="Echoes.",
        version="1",
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="echo", name="Echo", description="Echo", tags=["echo"])],
    )
    handler = DefaultRequestHandler(Echo(), InMemoryTaskStore(), agent_card=card)
    app = Starlette(
        routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, rpc_url="/")],
    )
    server = _EmbeddedServer(uvicorn.Config(app, log_config=None, log_level="warning"))
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield url
    finally:
        server.should_exit = True
        await serving
        await handler.aclose()


async def round_trips(url: str, count: int) -> list[float]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None)) as http:
        card = await A2ACardResolver(http, url.rstrip("/")).get_agent_card()
        client = ClientFactory(ClientConfig(streaming=False, httpx_client=http)).create(card)
        times = []
        for i in range(count + 10):
            request = SendMessageRequest(
                message=Message(
                    role=Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=[Part(text=f"ping {i}")]
                )
            )
            started = time.perf_counter()
            async for event in client.send_message(request):
                assert event.task.status.state == TaskState.TASK_STATE_COMPLETED, event
            if i >= 10:  # the first ones warm up connections and caches
                times.append(time.perf_counter() - started)
        await client.close()
        return times


async def hub_round_trips(folder: Path, count: int) -> tuple[list[float], float]:
    database = Database(folder / "hub.sqlite3")
    hub = AgentHub(EventBus(), database)

    async def answer(message):
        return {"text": message.text}

    hub.register(Node(id="a", name="A"), answer)
    hub.register(Node(id="b", name="B"), answer)
    times = []
    try:
        for i in range(count + 10):
            started = time.perf_counter()
            await hub.request("a", "b", "chat", {"message": f"m{i}"})
            if i >= 10:
                times.append(time.perf_counter() - started)
        burst = count
        started = time.perf_counter()
        await asyncio.gather(
            *(hub.request("a", "b", "chat", {"message": f"x{i}"}) for i in range(burst))
        )
        per_second = burst / (time.perf_counter() - started)
    finally:
        await hub.close()
        database.close()
    return times, per_second


async def main(count: int, quick: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        runtime = await Runtime.open(Path(folder), completions=ScriptedSource(["pong"]))
        # The app's per-agent rate limit would refuse a benchmark's pace (as it should a
        # real caller's); lift it here.
        assert runtime.settings is not None
        current = runtime.settings.settings
        runtime.settings.update(
            current.model_copy(
                update={"agent_requests_per_minute": 100_000.0, "agent_burst": 10_000}
            )
        )
        app_server = A2AServer(runtime)
        await app_server.start()
        try:
            async with echo_server() as echo_url:
                # Interleave the two, so that neither gets a quieter moment of the machine.
                app, echo = [], []
                for _ in range(5):
                    log(f"round: app then echo, {count // 5} each")
                    app += await round_trips(app_server.url, count // 5)
                    echo += await round_trips(echo_url, count // 5)
        finally:
            await app_server.stop()
            await runtime.close()
        log("hub round trips")
        hub, per_second = await hub_round_trips(Path(folder), count)
    app_ms, echo_ms = summary_ms(app), summary_ms(echo)
    emit(
        "a2a",
        quick=quick,
        parameters={"round_trips": count, "binding": "JSONRPC SendMessage, not streaming"},
        app_send_message_ms=app_ms,
        echo_send_message_ms=echo_ms,
        ratio_p50=round(app_ms["p50_ms"] / echo_ms["p50_ms"], 2),
        ratio_p95=round(app_ms["p95_ms"] / echo_ms["p95_ms"], 2),
        goal_ratio=GOAL_RATIO,
        hub_request_ms=summary_ms(hub),
        hub_messages_per_second=round(per_second, 1),
        notes=(
            "app = A2A server + hub request (SQLite writes for request and response) + chat "
            "pipeline (user message and reply stored, context retrieval, prompt) + an instant "
            "scripted model; echo = a2a-sdk alone. Same process, loop, socket setup and client."
        ),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    asyncio.run(main(60 if options.quick else 300, options.quick))
