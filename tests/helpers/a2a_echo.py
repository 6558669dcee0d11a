"""A bare a2a-sdk server (not the app's) on 127.0.0.1 whose agent echoes the user's words: the
baseline of the A2A benchmark, and a third-party agent for the app's client to talk to.

With ``interval`` it streams the words one by one, ``interval`` seconds apart, so that several
requests can be seen answered side by side. Its executor is a2a-sdk's: requests are handled
concurrently, as most A2A servers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

from a2a.helpers import new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from starlette.applications import Starlette

from mangaba_desktop.core.network.a2a_server import _EmbeddedServer, _listening_socket


class Echo(AgentExecutor):
    def __init__(self, interval: float = 0.0) -> None:
        self.interval = interval

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        task = new_task_from_user_message(context.message)
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        text = context.get_user_input()
        if not self.interval:
            await updater.add_artifact([new_text_part(text)], last_chunk=True)
            await updater.complete()
            return
        # Streamed: the words appended to one artifact, which its last chunk closes.
        answer = uuid.uuid4().hex
        words = text.split(" ")
        for index, word in enumerate(words):
            await asyncio.sleep(self.interval)
            await updater.add_artifact(
                [new_text_part(word if index == 0 else " " + word)],
                artifact_id=answer,
                append=index > 0,
                last_chunk=index == len(words) - 1,
            )
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None
        assert context.context_id is not None
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


@contextlib.asynccontextmanager
async def echo_server(interval: float = 0.0) -> AsyncIterator[str]:
    """Serve the echo agent until the block ends; yields its URL."""
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
    handler = DefaultRequestHandler(Echo(interval), InMemoryTaskStore(), agent_card=card)
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
