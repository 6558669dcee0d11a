"""Plugins: found through their real entry points, their hooks called on real chat turns (a
scripted source stands in for the remote model and records every prompt), each plugin kept
apart so that one that breaks, hangs or fails to load never takes a turn down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from mangaba_desktop import __version__
from mangaba_desktop.core import events, prompts
from mangaba_desktop.core.chat import ChatService
from mangaba_desktop.core.plugins import (
    ENTRY_POINT_GROUP,
    AddedContext,
    Plugin,
    PluginCommand,
    PluginManager,
    PluginState,
    Request,
    Response,
    StoredMessage,
)
from mangaba_desktop.core.settings import LOCAL_MODEL, Settings, SettingsStore
from mangaba_desktop.core.store import MessageStatus, Role
from mangaba_desktop.core.validation import InvalidMessage
from tests.helpers.db import query_file
from tests.helpers.events import EventLog
from tests.helpers.sources import ScriptedSource

pytestmark = pytest.mark.asyncio

REMOTE_MODEL = "openai/gpt-4o-mini"
PERSONAL = "I am Ana, ana.souza@example.com.br, phone +55 11 91234-5678, card 4111 1111 1111 1111."


# -- plugins made for these tests --------------------------------------------------------------


class Recorder(Plugin):
    """Records every hook call; ``before_request`` and ``after_response`` tag what they see."""

    name = "recorder"
    version = "1.2"
    description = "Records what it sees."

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.responses: list[str] = []
        self.messages: list[StoredMessage] = []
        self.contexts: list[AddedContext] = []

    def before_request(self, request: Request) -> None:
        self.requests.append(request)
        request.messages[-1]["content"] += " [seen]"

    async def after_response(self, response: Response) -> None:
        await asyncio.sleep(0)
        self.responses.append(response.text)
        response.text += " [checked]"

    def on_message(self, message: StoredMessage) -> None:
        self.messages.append(message)

    async def on_context_added(self, context: AddedContext) -> None:
        self.contexts.append(context)


class Breaking(Plugin):
    """Changes the prompt, then raises, in ``before_request``."""

    name = "breaking"

    def __init__(self) -> None:
        self.calls = 0

    def before_request(self, request: Request) -> None:
        self.calls += 1
        request.messages[-1]["content"] = "CHANGED"
        raise KeyError("no such field: model_name")


class Hanging(Plugin):
    name = "hanging"

    def __init__(self) -> None:
        self.cancelled = False

    async def before_request(self, request: Request) -> None:
        request.messages[-1]["content"] = "CHANGED"
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled = True
            raise


class Blocking(Plugin):
    """A plain hook that holds the loop longer than a hook may."""

    name = "blocking"

    def after_response(self, response: Response) -> None:
        time.sleep(0.3)
        response.text = "CHANGED"


class NotStarting(Plugin):
    name = "not-starting"
    description = "Needs a licence it does not have."

    def initialize(self) -> None:
        raise RuntimeError("no licence key found")

    def before_request(self, request: Request) -> None:
        raise AssertionError("a plugin that did not start is never called")


class Echo(Plugin):
    name = "echo"

    def __init__(self) -> None:
        self.calls = 0

    def commands(self) -> list[PluginCommand]:
        return [
            PluginCommand("echo", "/echo <text>", "say it back", self.echo),
            PluginCommand("fail", "/fail", "always fails", self.fail),
            PluginCommand("help", "/help", "tries to take the app's /help", self.echo),
        ]

    async def echo(self, text: str) -> str:
        self.calls += 1
        return f"echo: {text}"

    def fail(self, text: str) -> str:
        raise ValueError("the echo chamber is closed")


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> SettingsStore:
    return SettingsStore(tmp_path)


@pytest_asyncio.fixture
async def plugins(bus, settings, contexts) -> AsyncIterator[PluginManager]:
    manager = PluginManager(bus, settings=settings, contexts=contexts, timeout_s=0.2)
    yield manager
    await manager.close()


@pytest_asyncio.fixture
async def source() -> ScriptedSource:
    return ScriptedSource(["ok"])


@pytest_asyncio.fixture
async def ana(agents):
    return await agents.create("Ana", "You are Ana.", agent_id="agent_ana")


@pytest_asyncio.fixture
async def make_chat(
    store, bus, agents, contexts, source, plugins
) -> AsyncIterator[Callable[..., ChatService]]:
    made: list[ChatService] = []

    def make(**options: Any) -> ChatService:
        options.setdefault("plugins", plugins)
        chat = ChatService(store, source, bus, agents=agents, contexts=contexts, **options)
        made.append(chat)
        return chat

    yield make
    for chat in made:
        await chat.wait_upkeep()
        await chat.shutdown()


@pytest_asyncio.fixture
async def chat(make_chat) -> ChatService:
    return make_chat()


async def turn(chat: ChatService, conversation_id: int, text: str, **options: Any):
    await chat.send(conversation_id, text, **options)
    done = await chat.wait(conversation_id)
    assert done is not None
    return done


def sent(source: ScriptedSource, index: int = -1) -> str:
    """The last message of the prompt ``index`` as the model received it."""
    return source.requests[index]["messages"][-1]["content"]


def stored_user_messages(db_path, conversation_id) -> list[str]:
    rows = query_file(
        db_path,
        "SELECT content FROM messages WHERE conversation_id = ? AND role = 'user' ORDER BY id",
        (conversation_id,),
    )
    return [content for (content,) in rows]


# -- discovery ---------------------------------------------------------------------------------


async def test_the_shipped_plugin_is_found_through_its_entry_point(plugins):
    assert "pii-redaction" in {e.name for e in entry_points(group=ENTRY_POINT_GROUP)}

    found = await plugins.load_installed()

    [redaction] = [p for p in found if p.name == "pii-redaction"]
    assert redaction.state == PluginState.ACTIVE
    assert redaction.version == __version__
    assert "phone numbers" in redaction.description
    assert redaction.commands == ("/redact <text>",)
    assert plugins.wants("before_request") and plugins.wants("after_response")
    # Loading twice finds the same plugins, not doubles.
    assert [p.name for p in await plugins.load_installed()] == [p.name for p in found]


def write_distribution(folder: Path, name: str, entry_point: str, module: str) -> None:
    """An installed package as importlib.metadata sees one: a dist-info with entry points."""
    info = folder / f"{name}-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3\nSummary: A plugin that breaks.\n"
    )
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_point}\n")
    (folder / f"{name}.py").write_text(module)


async def test_a_plugin_that_fails_to_import_is_reported_and_the_others_load(
    plugins, bus, tmp_path, monkeypatch
):
    folder = tmp_path / "site"
    write_distribution(
        folder,
        "broken_plugin",
        "broken = broken_plugin:Plugin",
        'raise ImportError("needs the package extra-magic")\n',
    )
    monkeypatch.syspath_prepend(str(folder))
    log = EventLog(bus)

    found = {p.name: p for p in await plugins.load_installed()}

    broken = found["broken"]
    assert broken.state == PluginState.FAILED
    assert (broken.version, broken.description) == ("0.3", "A plugin that breaks.")
    assert broken.error == "It could not be loaded: ImportError: needs the package extra-magic"
    assert log.payloads(events.PLUGIN_FAILED) == [{"plugin": "broken", "error": broken.error}]
    assert found["pii-redaction"].state == PluginState.ACTIVE


async def test_a_plugin_that_fails_to_start_is_reported_and_never_called(
    plugins, bus, chat, source, store
):
    log = EventLog(bus)

    info = await plugins.register(NotStarting())

    assert info.state == PluginState.FAILED
    assert info.error == "It could not be loaded: RuntimeError: no licence key found"
    assert log.payloads(events.PLUGIN_FAILED)[0]["plugin"] == "not-starting"
    conversation = await store.create()
    done = await turn(chat, conversation.id, "Hello")
    assert (done.status, sent(source)) == (MessageStatus.COMPLETE, "Hello")


async def test_a_second_plugin_with_a_taken_name_is_refused(plugins):
    await plugins.register(Recorder())
    with pytest.raises(ValueError, match="already a plugin called “recorder”"):
        await plugins.register(Recorder())


# -- the PII redaction plugin ------------------------------------------------------------------


async def test_a_remote_model_gets_the_masked_prompt_and_the_user_keeps_what_they_typed(
    plugins, chat, source, store, db_path
):
    await plugins.load_installed()
    conversation = await store.create()
    source.pieces = ["I will write to ", "[email 1]", " and call [phone 1]."]

    done = await turn(chat, conversation.id, PERSONAL, model=REMOTE_MODEL)

    assert sent(source) == "I am Ana, [email 1], phone [phone 1], card [card 1]."
    assert stored_user_messages(db_path, conversation.id) == [PERSONAL]
    # The reply names the real values again, on screen and on disk.
    assert done.status == MessageStatus.COMPLETE
    assert done.content == "I will write to ana.souza@example.com.br and call +55 11 91234-5678."
    # Earlier turns are masked too when they go out again as history.
    source.pieces = ["ok"]
    await turn(chat, conversation.id, "And my e-mail?", model=REMOTE_MODEL)
    history = [m["content"] for m in source.requests[-1]["messages"] if m["role"] != "system"]
    assert history[0] == "I am Ana, [email 1], phone [phone 1], card [card 1]."
    assert history[1] == "I will write to [email 1] and call [phone 1]."


async def test_the_local_model_gets_the_prompt_as_typed(plugins, make_chat, source, store):
    await plugins.load_installed()
    chat = make_chat()
    conversation = await store.create()

    await turn(chat, conversation.id, PERSONAL, model=LOCAL_MODEL)

    assert sent(source) == PERSONAL


async def test_a_remote_fallback_makes_a_local_prompt_masked(
    plugins, make_chat, source, store, settings
):
    settings.update(Settings(fallbacks=[LOCAL_MODEL, REMOTE_MODEL]))
    await plugins.load_installed()
    chat = make_chat(settings=settings)
    conversation = await store.create()

    await turn(chat, conversation.id, "Mail ana@example.com", model=LOCAL_MODEL)

    assert sent(source) == "Mail [email 1]"


async def test_redact_shows_what_would_be_masked_without_asking_a_model(
    plugins, chat, source, store
):
    await plugins.load_installed()
    conversation = await store.create()

    reply = await chat.send(conversation.id, "/redact Mail ana@example.com, 4111111111111111")
    helped = await chat.send(conversation.id, "/help")
    empty = await chat.send(conversation.id, "/redact")

    assert source.requests == []
    assert (reply.status, reply.model) == (MessageStatus.COMPLETE, prompts.COMMAND_MODEL)
    assert reply.content == (
        "A remote model would read:\n\nMail [email 1], [card 1]\n\n"
        "Masked: 1 e-mail address, 1 card number."
    )
    assert "/redact <text> — show what is masked" in helped.content
    assert "(pii-redaction)" in helped.content
    assert empty.content.startswith("Usage: /redact <text>")
    # The command and its answer are no part of what a model reads next.
    await turn(chat, conversation.id, "Hello", model=REMOTE_MODEL)
    asked = [m["content"] for m in source.requests[-1]["messages"] if m["role"] != "system"]
    assert asked == ["Hello"]


# -- isolation ---------------------------------------------------------------------------------


async def test_a_hook_that_raises_is_turned_off_and_the_turn_goes_on_without_it(
    plugins, chat, source, store, bus
):
    breaking = Breaking()
    await plugins.register(breaking)
    recorder = Recorder()
    await plugins.register(recorder)
    log = EventLog(bus)
    conversation = await store.create()

    done = await turn(chat, conversation.id, "Hello")

    # Its change before it raised is dropped; the plugin after it still runs.
    assert sent(source) == "Hello [seen]"
    assert done.status == MessageStatus.COMPLETE
    assert done.content == "ok [checked]"
    error = "before_request failed: KeyError: 'no such field: model_name'"
    assert plugins.info("breaking").state == PluginState.FAILED
    assert plugins.info("breaking").error == error
    assert log.payloads(events.PLUGIN_FAILED) == [{"plugin": "breaking", "error": error}]

    await turn(chat, conversation.id, "Again")

    assert breaking.calls == 1  # off for the rest of the run
    assert sent(source) == "Again [seen]"
    assert len(log.payloads(events.PLUGIN_FAILED)) == 1


class ProtectiveBreaking(Breaking):
    name = "protective-breaking"
    protective = True


async def test_a_failing_protective_plugin_stops_a_remote_prompt_instead_of_letting_it_leave(
    plugins, chat, make_chat, source, store, settings
):
    await plugins.register(ProtectiveBreaking())
    conversation = await store.create()

    done = await turn(chat, conversation.id, PERSONAL)

    # Not sent, and the reply says why and what to do.
    assert source.requests == []
    assert done.status == MessageStatus.ERROR
    assert "protects what leaves this computer" in (done.error or "")
    assert "nothing was sent" in (done.error or "")
    # Still failed on the next remote prompt (it did not come back on its own).
    again = await turn(chat, conversation.id, "Hello")
    assert again.status == MessageStatus.ERROR and source.requests == []
    # A model on this computer is not protected from: the prompt goes as typed.
    local = await turn(make_chat(), conversation.id, "Local", model=LOCAL_MODEL)
    assert local.status == MessageStatus.COMPLETE and sent(source) == "Local"
    # Turned off by the user: remote prompts go again.
    plugins.apply_disabled(["protective-breaking"])
    sent_anyway = await turn(chat, conversation.id, "Now")
    assert sent_anyway.status == MessageStatus.COMPLETE and sent(source) == "Now"


async def test_a_slow_async_hook_is_cut_by_the_timeout(plugins, chat, source, store, bus):
    hanging = Hanging()
    await plugins.register(hanging)
    log = EventLog(bus)
    conversation = await store.create()
    started = time.monotonic()

    done = await turn(chat, conversation.id, "Hello")

    assert time.monotonic() - started < 5
    assert hanging.cancelled
    assert (done.status, sent(source)) == (MessageStatus.COMPLETE, "Hello")
    assert log.payloads(events.PLUGIN_FAILED) == [
        {"plugin": "hanging", "error": "before_request took longer than the 0.2 s it may take."}
    ]


async def test_a_plain_hook_that_holds_the_loop_is_turned_off_and_its_change_dropped(
    plugins, chat, store
):
    await plugins.register(Blocking())
    conversation = await store.create()

    done = await turn(chat, conversation.id, "Hello")

    assert done.content == "ok"
    assert plugins.info("blocking").state == PluginState.FAILED
    assert plugins.info("blocking").error.startswith("after_response held the app for 0.")


async def test_after_response_is_not_called_for_a_reply_that_failed(plugins, store):
    recorder = Recorder()
    await plugins.register(recorder)
    failing = ScriptedSource(["half "], error=ConnectionResetError("connection reset"))
    chat = ChatService(store, failing, plugins.bus, plugins=plugins)
    conversation = await store.create()

    done = await turn(chat, conversation.id, "Hello")

    assert done.status == MessageStatus.ERROR
    assert done.content == "half "
    assert len(recorder.requests) == 1
    assert recorder.responses == []
    await chat.shutdown()


# -- turning plugins off -----------------------------------------------------------------------


async def test_a_disabled_plugin_is_not_loaded_and_its_hooks_do_not_run(
    plugins, chat, source, store, settings
):
    settings.update(Settings(disabled_plugins=["pii-redaction", "recorder"]))
    recorder = Recorder()
    found = {p.name: p for p in await plugins.load_installed()}
    await plugins.register(recorder)
    conversation = await store.create()

    await turn(chat, conversation.id, "Mail ana@example.com", model=REMOTE_MODEL)

    assert found["pii-redaction"].state == PluginState.OFF
    assert plugins.info("recorder").state == PluginState.OFF
    assert sent(source) == "Mail ana@example.com"
    assert recorder.requests == [] and recorder.messages == []
    # Never loaded: its command is not known either.
    with pytest.raises(InvalidMessage, match="There is no command /redact"):
        await chat.send(conversation.id, "/redact ana@example.com")


async def test_turning_plugins_on_and_off_in_the_settings_takes_effect_at_once(
    plugins, chat, source, store, settings
):
    await plugins.load_installed()
    conversation = await store.create()

    settings.update(Settings(disabled_plugins=["pii-redaction"]))
    await turn(chat, conversation.id, "Mail ana@example.com", model=REMOTE_MODEL)
    answer = await chat.send(conversation.id, "/redact ana@example.com")

    assert sent(source) == "Mail ana@example.com"
    assert answer.content == (
        "/redact belongs to the plugin “pii-redaction”, turned off in Settings → Plugins."
    )
    assert "/redact" not in (await chat.send(conversation.id, "/help")).content

    settings.update(Settings(disabled_plugins=[]))
    await turn(chat, conversation.id, "Mail ana@example.com", model=REMOTE_MODEL)

    assert sent(source) == "Mail [email 1]"


async def test_a_plugin_off_since_the_start_is_loaded_when_turned_on(
    plugins, chat, source, store, settings
):
    settings.update(Settings(disabled_plugins=["pii-redaction"]))
    await plugins.load_installed()
    assert plugins.command_specs() == {}

    settings.update(Settings(disabled_plugins=[]))
    await plugins.drain()

    assert plugins.info("pii-redaction").state == PluginState.ACTIVE
    conversation = await store.create()
    await turn(chat, conversation.id, "Mail ana@example.com", model=REMOTE_MODEL)
    assert sent(source) == "Mail [email 1]"


# -- commands and observers --------------------------------------------------------------------


async def test_a_plugin_command_answers_without_a_model_and_a_failing_one_is_explained(
    plugins, chat, source, store, bus
):
    echo = Echo()
    info = await plugins.register(echo)
    log = EventLog(bus)
    conversation = await store.create()

    said = await chat.send(conversation.id, "/echo   Olá, mundo  ")
    helped = await chat.send(conversation.id, "/help")
    failed = await chat.send(conversation.id, "/fail")
    again = await chat.send(conversation.id, "/echo still there?")

    assert source.requests == []
    assert info.commands == ("/echo <text>", "/fail")  # /help stays the app's
    assert (said.content, said.model) == ("echo: Olá, mundo", prompts.COMMAND_MODEL)
    assert helped.content.startswith("Commands:")
    assert "/echo <text> — say it back (echo)" in helped.content
    error = "/fail failed: ValueError: the echo chamber is closed"
    assert log.payloads(events.PLUGIN_FAILED) == [{"plugin": "echo", "error": error}]
    assert failed.content == (
        f"/fail belongs to the plugin “echo”, which failed and is off until the app restarts: "
        f"{error}"
    )
    assert again.content.startswith("/echo belongs to the plugin “echo”, which failed")
    assert echo.calls == 1


async def test_observers_see_stored_messages_and_added_contexts(
    plugins, chat, store, ana, contexts
):
    recorder = Recorder()
    await plugins.register(recorder)
    conversation = await store.create(agent_id=ana.id)

    done = await turn(chat, conversation.id, "I like chess")
    await chat.wait_upkeep()
    await contexts.add(ana.id, "Ana speaks Portuguese.")
    await plugins.drain()

    assert [(m.role, m.content, m.status) for m in recorder.messages] == [
        (Role.USER, "I like chess", MessageStatus.COMPLETE),
        (Role.ASSISTANT, "ok [checked]", MessageStatus.COMPLETE),
    ]
    assert recorder.messages[1].message_id == done.id
    assert [(c.agent_id, c.context_type, c.content) for c in recorder.contexts] == [
        (ana.id, "conversation", "User: I like chess\nAssistant: ok [checked]"),
        (ana.id, "knowledge", "Ana speaks Portuguese."),
    ]
    assert recorder.contexts[0].session_id == conversation.session_id


async def test_a_runtime_loads_the_installed_plugins_and_closes_them(tmp_path):
    from mangaba_desktop.core.agent import Runtime

    runtime = await Runtime.open(tmp_path, completions=ScriptedSource(["ok"]))
    try:
        assert runtime.chat.plugins is runtime.plugins
        assert runtime.plugins.info("pii-redaction").state == PluginState.ACTIVE
    finally:
        await runtime.close()
