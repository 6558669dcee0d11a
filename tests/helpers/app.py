"""The real application started inside a test, on a qasync loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from mangaba_desktop.core import events
from mangaba_desktop.ui.app import Application, _make_application
from mangaba_desktop.ui.main_window import MainWindow

MOCK_MODEL = "openai/gpt-4o-mini"


class Running:
    """An application started on a data folder, with its main task."""

    def __init__(self, application: Application, main: asyncio.Task[int]) -> None:
        self.application = application
        self.main = main

    @property
    def window(self) -> MainWindow:
        return self.application.window

    @property
    def pane(self) -> Any:
        assert self.window.chat_pane is not None
        return self.window.chat_pane

    def next_event(
        self, name: str, when: Callable[[dict[str, Any]], bool] = lambda p: True
    ) -> asyncio.Future[dict[str, Any]]:
        """A future for the next event ``name`` whose payload satisfies ``when``."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        assert self.application.bus is not None

        def handler(_name: str, payload: dict[str, Any]) -> None:
            if not future.done() and when(payload):
                future.set_result(payload)
                unsubscribe()

        unsubscribe = self.application.bus.subscribe(name, handler)
        return future

    def reply_finished(self) -> asyncio.Future[dict[str, Any]]:
        return self.next_event(events.MESSAGE_FINISHED)

    def use_mock(self, reply: str) -> None:
        chat = self.application.chat
        assert chat is not None
        chat.model = MOCK_MODEL
        chat.params = {"mock_response": reply}


@contextlib.asynccontextmanager
async def running_app(directory: Path, *, wait_ready: bool = True) -> AsyncIterator[Running]:
    """Start the whole app as ``mangaba-desktop --data-dir directory`` would; close it after."""
    app = _make_application()
    window = MainWindow(directory)
    window.restore_layout()
    window.show()
    application = Application(app, window, directory)
    main = asyncio.ensure_future(application.main())
    running = Running(application, main)
    if wait_ready:
        async with asyncio.timeout(60):
            while not (window.chat_pane and window.chat_pane.started) and not main.done():
                await asyncio.sleep(0.02)
        assert not main.done(), "the app stopped during start-up"
    try:
        yield running
    finally:
        if not main.done():
            window.close()
        code = await asyncio.wait_for(main, 60)
        assert code in (0, 1)
        window.deleteLater()
        await asyncio.sleep(0)
        # Collect the closed window's Python wrappers here, on the GUI thread: left to a
        # collection that happens to run on a worker thread, Qt warns about their timers.
        gc.collect()


async def until(predicate: Callable[[], Any], limit: float = 20.0) -> None:
    """Wait until ``predicate()`` is true, letting the loop run (start-up imports can hold the
    interpreter for a while, so fixed sleeps would be flaky)."""
    async with asyncio.timeout(limit):
        while not predicate():
            await asyncio.sleep(0.01)
