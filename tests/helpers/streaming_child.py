"""A child process for tests/integration/test_kill_midstream.py: open the history in
``$MANGABA_DATA_DIR`` as the app does, send one message whose reply streams for minutes, and
wait there to be killed.

Usage: python -m tests.helpers.streaming_child
"""

from __future__ import annotations

import asyncio

from mangaba_desktop.core.chat import ChatService
from mangaba_desktop.core.events import EventBus
from mangaba_desktop.core.paths import data_dir, database_path
from mangaba_desktop.core.store import ConversationStore, Database
from tests.helpers.sources import ScriptedSource, words

QUESTION = "Tell me everything about the Tagus river."


async def main() -> None:
    database = Database(database_path(data_dir()))
    bus = EventBus()
    store = ConversationStore(database, bus)
    # 100,000 pieces, 10 ms apart: about 17 minutes of reply.
    chat = ChatService(store, ScriptedSource(words(100_000), interval=0.01), bus)
    conversation = await store.create()
    await chat.send(conversation.id, QUESTION)
    print("streaming", flush=True)
    await chat.wait(conversation.id)
    print("finished: the test should have killed this process by now", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
