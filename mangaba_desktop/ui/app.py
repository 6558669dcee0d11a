"""The application: Qt, the qasync loop, ordered start-up and a clean shutdown.

Start-up paints the window first and only then imports the event loop, the database layer and
(in the background) litellm and the local model, so the user sees the app at once. Services
start in order and stop in reverse; the process leaves no thread or task behind and exits 0 on
window close, Quit and Ctrl+C (SIGINT/SIGTERM) alike.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QSocketNotifier, Qt
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from .. import APP_NAME, DESKTOP_ID, __version__
from ..core.paths import data_dir

if TYPE_CHECKING:
    import asyncio

    from ..core.agent import Runtime
    from ..core.chat import ChatService
    from ..core.events import EventBus
    from ..core.providers.completions import Completions
    from ..core.store import ConversationStore, Database
    from .main_window import MainWindow

_PROCESS_START = time.perf_counter()
log = logging.getLogger(__name__)


def _app_icon() -> QIcon:
    folder = Path(__file__).with_name("icons")
    icon = QIcon()
    for size in (32, 64, 256):
        icon.addFile(str(folder / f"mangaba-desktop-{size}.png"))
    return icon


def _make_application() -> QApplication:
    app = QApplication.instance()
    if app is None:
        QApplication.setHighDpiScaleFactorRoundingPolicy(
            Qt.HighDpiScaleFactorRoundingPolicy.PassThrough
        )
        app = QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName(APP_NAME)
    app.setApplicationVersion(__version__)
    app.setOrganizationName("Mangaba")
    app.setDesktopFileName(DESKTOP_ID)
    app.setWindowIcon(_app_icon())
    app.setStyle("Fusion")
    app.setQuitOnLastWindowClosed(False)  # the loop, not Qt, decides when to end
    return app


class Application:
    """Owns the services and their order of start and stop."""

    def __init__(self, app: QApplication, window: MainWindow, directory: Path) -> None:
        self.app = app
        self.window = window
        self.directory = directory
        self.bus: EventBus | None = None
        self.database: Database | None = None
        self.store: ConversationStore | None = None
        self.completions: Completions | None = None
        self.chat: ChatService | None = None
        self.runtime: Runtime | None = None
        self._quit: asyncio.Future[int] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._signal_pipe: tuple[socket.socket, socket.socket] | None = None
        self._signal_notifier: QSocketNotifier | None = None

    # -- the loop ------------------------------------------------------------------------------

    async def main(self) -> int:
        import asyncio

        self._quit = asyncio.get_running_loop().create_future()
        self.window.closed.connect(lambda: self.quit(0))
        self._install_signal_handlers()
        try:
            if await self._start_services():
                return await self._quit
            return 1
        finally:
            await self._stop_services()
            self._remove_signal_handlers()

    def quit(self, code: int = 0) -> None:
        if self._quit is not None and not self._quit.done():
            self._quit.set_result(code)

    def spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        """Run ``coroutine`` in the background, keeping a reference until it ends."""
        import asyncio

        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- services, in order --------------------------------------------------------------------

    async def _start_services(self) -> bool:
        import asyncio

        from ..core.agent import Runtime
        from ..core.events import EventBus
        from ..core.logs import setup_logging
        from ..core.providers.completions import Completions
        from ..core.providers.secrets import KeyStore
        from ..core.settings import SettingsStore
        from .database_dialog import open_database

        self.bus = EventBus()
        keys = KeyStore()
        await asyncio.to_thread(setup_logging, self.directory, keys)
        # qasync's executor logs each call's arguments and result at DEBUG: never let a key
        # that crosses a thread reach a handler that way.
        logging.getLogger("qasync").setLevel(logging.INFO)
        settings = await asyncio.to_thread(SettingsStore, self.directory)
        log.info("%s %s starting in %s", APP_NAME, __version__, self.directory)
        self.database = await open_database(self.window, self.directory)
        if self.database is None:
            return False
        self.completions = Completions(settings=settings, keys=keys)
        self.runtime = Runtime(self.database, self.completions, self.bus, settings=settings)
        # After the runtime: it hands the audit log to the settings and keys, so that what the
        # first run imports is recorded.
        notes = await first_run_import(settings, keys, self.directory)
        self.store = self.runtime.conversations
        self.chat = self.runtime.chat
        self.window.keys = keys
        # Before any message can be sent: a redacting plugin must see the first prompt too.
        await self.runtime.plugins.load_installed()
        interrupted = await self.store.recover_interrupted()
        await self.runtime.metrics.start()
        await self.window.attach(self.runtime, self.spawn)
        problems = [settings.problem] if settings.problem else []
        if interrupted:
            problems.append(
                f"{interrupted} reply(s) were cut off when the app last stopped; "
                "they are kept and marked interrupted."
            )
        for text in problems + notes[:1]:
            self.window.show_status(text, 15000)
        self.spawn(self.window.load_models(self.completions))
        self.spawn(self._start_outbox())
        self.spawn(self.window.probe_local_servers())
        self.spawn(asyncio.to_thread(self.database.daily_backup))
        self.spawn(self.runtime.audit.prune())
        self.spawn(self.runtime.contexts.cleanup_expired())
        self._start_a2a(keys)
        return True

    def _start_a2a(self, keys: Any) -> None:
        """In the background: the remote agents the user added, and the A2A server when the
        settings share the agents. Neither holds up start-up; a failure is a status message."""
        runtime = self.runtime
        if runtime is None or runtime.settings is None:
            return
        settings = runtime.settings.settings
        for url in settings.remote_agents:
            self.spawn(self._reconnect(url, keys))
        if settings.a2a_server and self.window.sharing is not None:
            self.spawn(self.window.share(settings, actor="app"))

    async def _reconnect(self, url: str, keys: Any) -> None:
        from .agent_network.remote import reconnect_until_reachable

        runtime = self.runtime
        assert runtime is not None
        assert runtime.settings is not None
        store = runtime.settings

        def failed(reason: str) -> None:
            self.window.show_status(
                f"Remote agent {url} could not be reached ({reason}); it is tried again.", 15000
            )

        await reconnect_until_reachable(
            runtime,
            keys,
            url,
            wanted=lambda: url in store.settings.remote_agents,
            on_failure=failed,
        )

    async def _start_outbox(self) -> None:
        assert self.runtime is not None
        await self.runtime.local_agents.start()
        waiting = await self.runtime.outbox.start()
        if waiting:
            self.window.show_status(
                f"{waiting} message(s) are waiting for their model; they are sent as soon as "
                "it can be reached (right-click one to cancel or use another model).",
                15000,
            )

    async def _stop_services(self) -> None:
        import asyncio

        from ..core.logs import shutdown_logging

        if self.window.sharing is not None:
            await self.window.sharing.stop()
        if self.runtime is not None:
            await self.runtime.local_agents.stop()
            await self.runtime.network.close()
            await self.runtime.outbox.stop()
        if self.chat is not None:
            await self.chat.shutdown()
        if self.runtime is not None:
            await self.runtime.plugins.close()
        await self.window.detach()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.completions is not None:
            await self.completions.close()
        if self.runtime is not None:
            await self.runtime.metrics.close()  # the current minute, before the file closes
        if self.database is not None:
            await asyncio.to_thread(self.database.close)
        log.info("%s stopped", APP_NAME)
        shutdown_logging()

    # -- signals -------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        """Turn SIGINT/SIGTERM into an orderly quit, even while Qt waits in C++.

        Python runs signal handlers only when it gets control; the wake-up socket makes Qt hand
        it control as soon as a signal lands.
        """
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._signal_pipe = (reader, writer)
        signal.set_wakeup_fd(writer.fileno())
        notifier = QSocketNotifier(reader.fileno(), QSocketNotifier.Type.Read)
        notifier.activated.connect(self._drain_signal_pipe)
        self._signal_notifier = notifier
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, lambda *_: self.window.close())

    def _drain_signal_pipe(self) -> None:
        if self._signal_pipe is not None:
            with contextlib.suppress(OSError):
                self._signal_pipe[0].recv(64)

    def _remove_signal_handlers(self) -> None:
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, signal.SIG_DFL)
        if self._signal_notifier is not None:
            self._signal_notifier.setEnabled(False)
            self._signal_notifier.deleteLater()
        if self._signal_pipe is not None:
            for end in self._signal_pipe:
                end.close()


async def first_run_import(settings: Any, keys: Any, directory: Path) -> list[str]:
    """On the first start, take the upstream configuration from the environment and ``.env``
    (in the working folder or the data folder). Keys found only in a ``.env`` file go to the
    keyring when it is a safe one; keys in environment variables are read from there, never
    copied. Returns notes for the user."""
    import asyncio

    from ..core.providers.env_import import import_environment
    from ..core.providers.secrets import InsecureKeyring, InvalidKey

    if settings.settings.first_run_import_done:
        return []
    result = await asyncio.to_thread(
        import_environment,
        settings.settings,
        dotenv_paths=[Path.cwd() / ".env", directory / ".env"],
    )
    notes = list(result.notes)
    for provider_id, key in result.keys_from_dotenv.items():
        # One key at a time, each failure a note: a placeholder in .env must not stop the app.
        try:
            await asyncio.to_thread(keys.set, provider_id, key, actor="app")
        except InvalidKey as exc:
            notes.append(f"The {provider_id} key in .env was not used: {exc}")
        except (InsecureKeyring, RuntimeError) as exc:
            try:
                await asyncio.to_thread(keys.set, provider_id, key, session_only=True, actor="app")
                notes.append(f"The {provider_id} key from .env is used for this run only: {exc}")
            except (InvalidKey, RuntimeError) as again:
                notes.append(f"The {provider_id} key in .env was not used: {again}")
    await asyncio.to_thread(settings.update, result.settings, actor="app")
    return notes


def run(args: argparse.Namespace) -> int:
    """Open the window, then run the loop until the user quits; returns the exit code."""
    directory = data_dir(args.data_dir)
    app = _make_application()

    from .main_window import MainWindow

    window = MainWindow(directory)
    window.restore_layout()
    window.show()
    if args.quit_after_paint:
        window.painted.connect(lambda: _report_paint_and_quit(app))
        return app.exec()
    # Let the first frame reach the screen before anything heavy is imported.
    app.processEvents()

    import asyncio

    import qasync

    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    application = Application(app, window, directory)
    try:
        with loop:
            code = loop.run_until_complete(application.main())
    finally:
        asyncio.set_event_loop(None)
    window.deleteLater()
    return code


def _report_paint_and_quit(app: QApplication) -> None:
    print(f"first-paint-ms {(time.perf_counter() - _PROCESS_START) * 1000:.1f}", flush=True)
    app.quit()
