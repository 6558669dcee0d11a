"""The plugins of one run: found through entry points or registered in code, their hooks and
commands called so that none of them can take a turn, or the app, down.

Installed plugins are found in the entry point group :data:`ENTRY_POINT_GROUP`; the entry
point names a plugin class, a function returning a plugin, or a plugin object. A plugin that
cannot be imported or started, or a hook or command that raises or takes longer than its time,
is logged, announced on the bus as ``plugin.failed`` (``plugin``: its name, ``error``: what went
wrong, in words) and turned off until the app restarts; the turn goes on as if it were not
installed. A plugin the user turned off (``disabled_plugins`` in the settings) is not imported
at all, so that turning off a plugin that breaks at import is enough.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from sqlmodel import col, select

from .. import commands, events
from ..context.store import ContextStore
from ..events import EventBus
from ..settings import LOCAL_MODEL, Settings, SettingsStore
from ..store.models import Context, Message, Role
from .hooks import (
    AFTER_RESPONSE,
    BEFORE_REQUEST,
    HOOK_TIMEOUT_S,
    HOOKS,
    ON_CONTEXT_ADDED,
    ON_MESSAGE,
    AddedContext,
    PluginCommand,
    Request,
    Response,
    StoredMessage,
    hook_methods,
)

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mangaba_desktop.plugins"

_FAILED: Any = object()
"""What :meth:`PluginManager._call` returns for a hook or command that failed."""

_COMMAND_NAME = re.compile(r"^[A-Za-z]+$")
_LOCAL_PREFIX = LOCAL_MODEL.partition("/")[0] + "/"


class PluginState(StrEnum):
    ACTIVE = "active"
    OFF = "off"
    """Turned off by the user."""
    FAILED = "failed"
    """Turned off for this run after an error."""


@dataclass(frozen=True)
class PluginInfo:
    """What the Settings dialog shows of a plugin."""

    name: str
    version: str
    description: str
    state: PluginState
    error: str | None = None
    """Why it failed, in words."""
    commands: tuple[str, ...] = ()
    """Its slash commands' usages."""


@dataclass
class _Slot:
    """One plugin of this run, loaded or not."""

    name: str
    version: str = ""
    description: str = ""
    entry_point: EntryPoint | None = None
    plugin: Any = None
    loaded: bool = False
    loading: bool = False
    hooks: dict[str, Callable[[Any], Any]] = field(default_factory=dict)
    commands: dict[str, PluginCommand] = field(default_factory=dict)
    off: bool = False
    error: str | None = None

    @property
    def active(self) -> bool:
        return self.loaded and not self.off and self.error is None

    @property
    def state(self) -> PluginState:
        if self.off:
            return PluginState.OFF
        return PluginState.FAILED if self.error is not None else PluginState.ACTIVE


class PluginManager:
    """Loads plugins and calls their hooks and commands, each in isolation.

    Args:
        bus: where ``plugin.failed`` is published, and the messages and contexts are observed.
        settings: the user's settings; the plugins in ``disabled_plugins`` stay off, and a
            change there turns plugins on or off at once.
        contexts: the context store, to tell ``on_context_added`` what was added.
        timeout_s: how long an async hook or command may take; a plain one that holds the
            loop longer is turned off after the fact.
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        settings: SettingsStore | None = None,
        contexts: ContextStore | None = None,
        timeout_s: float = HOOK_TIMEOUT_S,
    ) -> None:
        self.bus = bus
        self.contexts = contexts
        self.timeout_s = timeout_s
        self._slots: dict[str, _Slot] = {}
        self._disabled: set[str] = set()
        self._active: dict[str, tuple[tuple[_Slot, Callable[[Any], Any]], ...]] = {
            hook: () for hook in HOOKS
        }
        self._commands: dict[str, tuple[_Slot, PluginCommand]] = {}
        self._specs: dict[str, commands.CommandSpec] = {}
        self._active_specs: dict[str, commands.CommandSpec] = {}
        self._closed = False
        self._background: set[asyncio.Task[Any]] = set()
        self._unsubscribe = [
            bus.subscribe(events.MESSAGE_ADDED, self._on_message_event),
            bus.subscribe(events.MESSAGE_FINISHED, self._on_message_event),
            bus.subscribe(events.CONTEXTS_CHANGED, self._on_contexts_changed),
        ]
        if settings is not None:
            self._disabled = set(settings.settings.disabled_plugins)
            settings.subscribe(self._on_settings)

    # -- loading -------------------------------------------------------------------------------

    async def load_installed(self) -> list[PluginInfo]:
        """Find the installed plugins and load those the user did not turn off."""
        found = await asyncio.to_thread(_installed)
        for entry_point in found:
            known = self._slots.get(entry_point.name)
            if known is not None:
                if known.entry_point != entry_point:
                    log.warning(
                        "two plugins are called %s; the second is ignored", entry_point.name
                    )
                continue
            slot = _Slot(entry_point.name, entry_point=entry_point)
            slot.version, slot.description = _distribution_of(entry_point)
            slot.off = slot.name in self._disabled
            self._slots[slot.name] = slot
            if not slot.off:
                await self._load(slot)
        self._refresh()
        return self.plugins()

    async def register(self, plugin: Any) -> PluginInfo:
        """Add a plugin made in code (an embedding app, a test). Raises ``ValueError`` for a
        plugin without a name or with the name of one already there."""
        name = str(getattr(plugin, "name", "") or "")
        if not name:
            raise ValueError("A plugin needs a name.")
        if name in self._slots:
            raise ValueError(f"There is already a plugin called “{name}”.")
        slot = _Slot(name, plugin=plugin, off=name in self._disabled)
        slot.version = str(getattr(plugin, "version", "") or "")
        slot.description = str(getattr(plugin, "description", "") or "")
        self._slots[name] = slot
        if not slot.off:
            await self._load(slot)
        self._refresh()
        return self._info(slot)

    async def _load(self, slot: _Slot) -> None:
        """Import (off the loop), make and start the plugin; a failure turns it off."""
        if slot.loading or slot.loaded:
            return
        slot.loading = True
        try:
            await self._start(slot)
        finally:
            slot.loading = False

    async def _start(self, slot: _Slot) -> None:
        try:
            if slot.plugin is None and slot.entry_point is not None:
                target = await asyncio.to_thread(slot.entry_point.load)
                slot.plugin = target() if callable(target) else target
            plugin = slot.plugin
            started = getattr(plugin, "initialize", None)
            if callable(started):
                await self._bounded(started())
            # hooks() here, get_hooks() in the original design, or plain methods.
            offers = getattr(plugin, "hooks", None) or getattr(plugin, "get_hooks", None)
            hooks = offers() if callable(offers) else None
            if hooks is None:
                hooks = hook_methods(plugin)
            offered = getattr(plugin, "commands", None)
            plugin_commands: Sequence[PluginCommand] = offered() if callable(offered) else ()
        except Exception as exc:
            self._fail(slot, f"It could not be loaded: {_describe(exc)}", exc)
            return
        for hook in set(hooks) - set(HOOKS):
            log.warning("plugin %s offers an unknown hook %s; it is ignored", slot.name, hook)
        slot.hooks = {h: hooks[h] for h in HOOKS if h in hooks}
        slot.commands = {}
        for command in plugin_commands:
            name = command.name.lower()
            taken = name in commands.COMMANDS or name in self._commands or name in slot.commands
            if not _COMMAND_NAME.match(command.name) or taken:
                log.warning("plugin %s: the command /%s is refused", slot.name, command.name)
                continue
            slot.commands[name] = command
        slot.version = str(getattr(plugin, "version", "") or slot.version)
        slot.description = str(getattr(plugin, "description", "") or slot.description)
        slot.loaded = True

    # -- state ---------------------------------------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        """Every plugin of this run, in the order they were found."""
        return [self._info(slot) for slot in self._slots.values()]

    def info(self, name: str) -> PluginInfo | None:
        slot = self._slots.get(name)
        return self._info(slot) if slot is not None else None

    def wants(self, hook: str) -> bool:
        """Whether any active plugin offers ``hook`` (nothing to do otherwise); before a
        request, also whether a protective plugin failed (the request may not leave)."""
        if hook == BEFORE_REQUEST and self._failed_protector() is not None:
            return True
        return bool(self._active[hook])

    def _failed_protector(self) -> _Slot | None:
        """A protective plugin that failed (and is not turned off), if any."""
        for slot in self._slots.values():
            protective = getattr(slot.plugin, "protective", False)
            if protective and slot.error is not None and not slot.off:
                return slot
        return None

    def apply_disabled(self, names: Iterable[str]) -> None:
        """Turn off the plugins in ``names`` and on the others; a plugin that was off since
        the start is loaded now."""
        self._disabled = set(names)
        for slot in self._slots.values():
            slot.off = slot.name in self._disabled
            if not slot.off and not slot.loaded and slot.error is None:
                self._spawn(self._load_late(slot))
        self._refresh()

    async def _load_late(self, slot: _Slot) -> None:
        await self._load(slot)
        self._refresh()

    def _on_settings(self, settings: Settings) -> None:
        if not self._closed and set(settings.disabled_plugins) != self._disabled:
            self.apply_disabled(settings.disabled_plugins)

    def _refresh(self) -> None:
        active = [slot for slot in self._slots.values() if slot.active]
        self._active = {
            hook: tuple((slot, slot.hooks[hook]) for slot in active if hook in slot.hooks)
            for hook in HOOKS
        }
        # A command stays known while its plugin is off, to say so instead of "no such".
        self._commands = {
            name: (slot, command)
            for slot in self._slots.values()
            if slot.loaded
            for name, command in slot.commands.items()
        }
        self._specs = {
            name: commands.CommandSpec(
                name, command.usage, command.summary, local=True, plugin=slot.name
            )
            for name, (slot, command) in self._commands.items()
        }
        self._active_specs = {
            name: spec for name, spec in self._specs.items() if self._commands[name][0].active
        }

    def _info(self, slot: _Slot) -> PluginInfo:
        return PluginInfo(
            name=slot.name,
            version=slot.version,
            description=slot.description,
            state=slot.state,
            error=slot.error,
            commands=tuple(c.usage for c in slot.commands.values()),
        )

    def _fail(self, slot: _Slot, error: str, exc: BaseException | None = None) -> None:
        if slot.error is not None:
            return
        slot.error = error
        log.warning("plugin %s is off until the app restarts: %s", slot.name, error, exc_info=exc)
        self._refresh()
        self.bus.publish(events.PLUGIN_FAILED, plugin=slot.name, error=error)

    # -- hooks ---------------------------------------------------------------------------------

    async def before_request(self, request: Request) -> list[dict[str, str]]:
        """The messages to send after every active plugin's ``before_request``.

        Raises:
            PluginRefused: a protective plugin (one that keeps data from leaving, such as the
                PII redaction) failed, now or earlier in this run, and the request is for a
                remote model: it is not sent unprotected.
        """
        if request.remote:
            self._refuse_if_unprotected(request)
        messages = request.messages
        for slot, hook in self._active[BEFORE_REQUEST]:
            if not slot.active:
                continue  # failed in this very call, through another of its hooks
            attempt = replace(request, messages=[dict(m) for m in messages])
            if await self._call(slot, BEFORE_REQUEST, hook, attempt) is _FAILED:
                if request.remote:
                    self._refuse_if_unprotected(request)
                continue
            if not _are_messages(attempt.messages):
                self._fail(slot, "before_request left messages a model cannot take.")
                continue
            messages = attempt.messages
        return messages

    def _refuse_if_unprotected(self, request: Request) -> None:
        slot = self._failed_protector()
        if slot is not None:
            raise PluginRefused(
                f"The plugin “{slot.name}” protects what leaves this computer and it "
                f"failed ({slot.error}), so nothing was sent to {request.model}. Turn "
                "the plugin off in Settings ▸ Plugins to send anyway, or use a model on "
                "this computer."
            )

    async def after_response(self, response: Response) -> str:
        """The reply's text after every active plugin's ``after_response``."""
        text = response.text
        for slot, hook in self._active[AFTER_RESPONSE]:
            if not slot.active:
                continue
            attempt = replace(response, text=text)
            if await self._call(slot, AFTER_RESPONSE, hook, attempt) is _FAILED:
                continue
            if not isinstance(attempt.text, str):
                self._fail(slot, "after_response left a reply that is not text.")
                continue
            text = attempt.text
        return text

    def _on_message_event(self, name: str, payload: dict[str, Any]) -> None:
        if not self._active[ON_MESSAGE]:
            return
        message = payload.get("message")
        if not isinstance(message, Message) or message.id is None:
            return
        # A user's message when it is stored; a reply when it ends (it is stored empty first).
        if (name == events.MESSAGE_ADDED) != (message.role == Role.USER):
            return
        stored = StoredMessage(
            message_id=message.id,
            conversation_id=message.conversation_id,
            role=str(message.role),
            content=message.content,
            status=str(message.status),
            model=message.model,
        )
        self._spawn(self._observe(ON_MESSAGE, stored))

    def _on_contexts_changed(self, _name: str, payload: dict[str, Any]) -> None:
        added = payload.get("added")
        if not added or not self._active[ON_CONTEXT_ADDED] or self.contexts is None:
            return
        self._spawn(self._observe_contexts([i for i in added if i is not None]))

    async def _observe_contexts(self, ids: list[int]) -> None:
        assert self.contexts is not None
        try:
            rows = await self.contexts.db.read(
                lambda s: list(s.exec(select(Context).where(col(Context.id).in_(ids))).all())
            )
        except Exception as exc:  # the database closed meanwhile (shutdown)
            log.debug("the contexts added could not be read for plugins: %s", exc)
            return
        for row in rows:
            assert row.id is not None
            context = AddedContext(
                context_id=row.id,
                agent_id=row.agent_id,
                session_id=row.session_id,
                context_type=row.context_type,
                content=row.content,
            )
            await self._observe(ON_CONTEXT_ADDED, context)

    async def _observe(self, hook: str, payload: Any) -> None:
        for slot, handler in self._active[hook]:
            if slot.active:
                await self._call(slot, hook, handler, payload)

    # -- commands ------------------------------------------------------------------------------

    def command_specs(self, *, active_only: bool = False) -> Mapping[str, commands.CommandSpec]:
        """The plugins' slash commands, for :func:`~mangaba_desktop.core.commands.parse`
        (every loaded plugin's, so that an off one can say so) and ``/help`` (the active)."""
        return self._active_specs if active_only else self._specs

    async def run_command(self, name: str, text: str) -> str:
        """The reply to ``/name text``, from the plugin that offers it."""
        found = self._commands.get(name)
        if found is None:
            return f"No plugin answers /{name}."
        slot, command = found
        if slot.off:
            return f"/{name} belongs to the plugin “{slot.name}”, turned off in Settings → Plugins."
        if slot.error is None:
            answer = await self._call(slot, f"/{name}", command.run, text)
            if isinstance(answer, str):
                return answer
            if answer is not _FAILED:
                self._fail(slot, f"/{name} answered with something that is not text.")
        return (
            f"/{name} belongs to the plugin “{slot.name}”, which failed and is off until the "
            f"app restarts: {slot.error}"
        )

    # -- calling -------------------------------------------------------------------------------

    async def _call(
        self,
        slot: _Slot,
        what: str,
        handler: Callable[[Any], Any],
        payload: Any,
    ) -> Any:
        """Run one hook or command: what it returned, or ``_FAILED`` (and the plugin
        is off)."""
        started = time.monotonic()
        try:
            result = handler(payload)
            if inspect.isawaitable(result):
                result = await self._bounded(result)
            elif (held := time.monotonic() - started) > self.timeout_s:
                self._fail(
                    slot,
                    f"{what} held the app for {held:.1f} s; a hook may take {self.timeout_s:g} s.",
                )
                return _FAILED
        except _TookTooLong:
            self._fail(slot, f"{what} took longer than the {self.timeout_s:g} s it may take.")
            return _FAILED
        except Exception as exc:
            self._fail(slot, f"{what} failed: {_describe(exc)}", exc)
            return _FAILED
        return result

    async def _bounded(self, awaitable: Any) -> Any:
        """Await a plugin's coroutine for at most ``timeout_s``."""
        if not inspect.isawaitable(awaitable):
            return awaitable
        deadline = asyncio.timeout(self.timeout_s)
        try:
            async with deadline:
                return await awaitable
        except TimeoutError:
            if deadline.expired():
                raise _TookTooLong(f"it took longer than {self.timeout_s:g} s") from None
            raise

    def _spawn(self, coroutine: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coroutine)
        except RuntimeError:  # no loop runs here: nothing to observe with
            coroutine.close()
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the end -------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until the observers started so far (``on_message``, ...) are done."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def close(self) -> None:
        """Stop observing, wait for the observers, and clean every loaded plugin up."""
        self._closed = True
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        await self.drain()
        for slot in self._slots.values():
            cleanup = getattr(slot.plugin, "cleanup", None)
            if not slot.loaded or not callable(cleanup):
                continue
            try:
                await self._bounded(cleanup())
            except Exception as exc:
                log.warning("plugin %s did not clean up: %s", slot.name, _describe(exc))


class PluginRefused(RuntimeError):
    """A request was not sent because a plugin protecting it failed (the text says so)."""


class _TookTooLong(Exception):
    pass


def may_leave_this_computer(model: str, settings: Settings | None) -> bool:
    """Whether a prompt for ``model`` may be sent off this computer: the model, or one of the
    fallbacks it may go to, is not run locally. Unknown models count as remote."""
    fallbacks = settings.fallbacks if settings is not None else [LOCAL_MODEL]
    for name in (model, *fallbacks):
        if name.startswith(_LOCAL_PREFIX):
            continue
        provider = settings.provider_of(name) if settings is not None else None
        if provider is None or not provider.is_local:
            return True
    return False


def _installed() -> list[EntryPoint]:
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)


def _distribution_of(entry_point: EntryPoint) -> tuple[str, str]:
    """The version and summary of the package that installed ``entry_point``."""
    dist = entry_point.dist
    if dist is None:
        return "", ""
    return dist.version or "", dist.metadata.get("Summary") or ""


def _are_messages(messages: Any) -> bool:
    return isinstance(messages, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _TookTooLong):
        return str(exc)
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
