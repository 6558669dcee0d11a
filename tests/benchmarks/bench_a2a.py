"""A2A round trips over loopback: the app's server against a bare a2a-sdk echo server, the same
chat turn with and without A2A, and the in-process hub request/response.

Both servers run in this process, on uvicorn in this loop, on 127.0.0.1 sockets made the same
way, and are driven by the same a2a-sdk client (non-streaming SendMessage over one keep-alive
httpx client, continuing one A2A context as a client in a conversation does). Four paths:

- ``echo``: a bare a2a-sdk server whose executor echoes (Task, working, artifact, completed).
- ``app_echo``: the app's A2A server (guard, card routes, task store, caller node, a hub request
  kept in SQLite) to an agent whose hub handler echoes: the protocol layer the app adds.
  Goal: p50 <= 1.2 x echo.
- ``app_chat``: the same server to an app agent answering through the whole chat pipeline (the
  question and the reply stored, context retrieval, the persona prompt, the turn remembered)
  with an instant scripted model.
- ``local_chat``: that same chat turn asked in-process over the hub, without A2A: the
  difference ``app_chat - local_chat`` is what A2A adds to a chat turn.

    python tests/benchmarks/bench_a2a.py            # 300 round trips each
    python tests/benchmarks/bench_a2a.py --quick    # 60
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import Message, Part, Role, SendMessageRequest, TaskState
from benchlib import emit, log, summary_ms

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mangaba_desktop.core.agent import Runtime  # noqa: E402
from mangaba_desktop.core.events import EventBus  # noqa: E402
from mangaba_desktop.core.network import AgentHub, Node  # noqa: E402
from mangaba_desktop.core.network.a2a_server import (  # noqa: E402
    A2AServer,
)
from mangaba_desktop.core.store import Database  # noqa: E402
from tests.helpers.a2a_echo import echo_server  # noqa: E402
from tests.helpers.sources import ScriptedSource  # noqa: E402

GOAL_RATIO = 1.2


async def round_trips(url: str, count: int) -> list[float]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None)) as http:
        card = await A2ACardResolver(http, url.rstrip("/")).get_agent_card()
        client = ClientFactory(ClientConfig(streaming=False, httpx_client=http)).create(card)
        times = []
        context_id = uuid.uuid4().hex  # one conversation, as a client that keeps talking
        for i in range(count + 10):
            request = SendMessageRequest(
                message=Message(
                    role=Role.ROLE_USER,
                    message_id=uuid.uuid4().hex,
                    context_id=context_id,
                    parts=[Part(text=f"ping {i}")],
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


async def local_round_trips(runtime: Runtime, agent_id: str, count: int) -> list[float]:
    """The chat turn behind an A2A request, asked over the hub from a node in this app."""
    hub = runtime.network
    hub.register(Node(id="bench-caller", name="Bench"), _never_asked)
    times = []
    for i in range(count + 10):
        started = time.perf_counter()
        await hub.request("bench-caller", agent_id, "chat", {"message": f"ping {i}"})
        if i >= 10:
            times.append(time.perf_counter() - started)
    return times


async def _never_asked(message):
    raise RuntimeError("not served")


async def _echo(message):
    return {"text": message.text}


async def main(count: int, quick: bool) -> None:
    rounds = 5
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
        chatting = await runtime.agents.default()
        echoing = await runtime.agents.create("Echo", "Echoes.")
        await asyncio.sleep(0.2)  # the app registers the new agent on the network
        await runtime.local_agents.sync()
        # The echo agent's hub handler answers at once: no chat turn behind it.
        runtime.network.register(Node(id=echoing.id, name="Echo"), _echo)
        app_server = A2AServer(runtime)
        await app_server.start()
        samples: dict[str, list[float]] = {"echo": [], "app_echo": [], "app_chat": []}
        samples["local_chat"] = []
        try:
            async with echo_server() as echo_url:
                # Interleaved, so that none gets a quieter moment of the machine.
                for _ in range(rounds):
                    log(f"round: echo, app echo, app chat, local chat; {count // rounds} each")
                    samples["echo"] += await round_trips(echo_url, count // rounds)
                    samples["app_echo"] += await round_trips(
                        app_server.agent_url(echoing.id), count // rounds
                    )
                    samples["app_chat"] += await round_trips(
                        app_server.agent_url(chatting.id), count // rounds
                    )
                    samples["local_chat"] += await local_round_trips(
                        runtime, chatting.id, count // rounds
                    )
        finally:
            await app_server.stop()
            await runtime.close()
        log("hub round trips")
        hub, per_second = await hub_round_trips(Path(folder), count)
    ms = {name: summary_ms(values) for name, values in samples.items()}
    p50 = {name: summary["p50_ms"] for name, summary in ms.items()}
    emit(
        "a2a",
        quick=quick,
        parameters={"round_trips": count, "binding": "JSONRPC SendMessage, not streaming"},
        echo_send_message_ms=ms["echo"],
        app_echo_send_message_ms=ms["app_echo"],
        app_chat_send_message_ms=ms["app_chat"],
        local_chat_request_ms=ms["local_chat"],
        protocol_ratio_p50=round(p50["app_echo"] / p50["echo"], 2),
        protocol_ratio_p95=round(ms["app_echo"]["p95_ms"] / ms["echo"]["p95_ms"], 2),
        goal_protocol_ratio=GOAL_RATIO,
        a2a_added_to_a_chat_turn_p50_ms=round(p50["app_chat"] - p50["local_chat"], 2),
        chat_turn_over_echo_p50=round(p50["app_chat"] / p50["echo"], 2),
        hub_request_ms=summary_ms(hub),
        hub_messages_per_second=round(per_second, 1),
        notes=(
            "echo = a2a-sdk alone; app_echo = the app's A2A server and hub to an echoing agent "
            "(the protocol layer); app_chat = the same to a chat turn (stored, retrieved, "
            "prompted, remembered) with an instant model; local_chat = that turn over the hub "
            "without A2A. Same process, loop, socket setup and client."
        ),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    asyncio.run(main(60 if options.quick else 300, options.quick))
