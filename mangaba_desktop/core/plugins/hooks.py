"""What a plugin is and what its hooks receive.

A plugin is an object with a ``name``, a ``version`` and a ``description`` that offers hooks
and slash commands. Subclass :class:`Plugin` and define the hooks you need as methods, plain or
``async``:

    class Shout(Plugin):
        name = "shout"
        version = "1.0"
        description = "Replies in capitals."

        def after_response(self, response: Response) -> None:
            response.text = response.text.upper()

The hooks, called in the order the plugins were loaded:

``before_request(request: Request)``
    The prompt is about to go to a model: change ``request.messages`` (in place, or assign a
    new list). Called for chat replies and for the app's own requests (summaries).
``after_response(response: Response)``
    A complete reply is about to be stored and shown: change ``response.text``. Not called for
    a reply that failed or was stopped.
``on_message(message: StoredMessage)``
    A user message was stored, or a reply ended (any status). Observe only.
``on_context_added(context: AddedContext)``
    A context was added to an agent's memory (a turn, a note, a summary). Observe only.

Each hook gets its own copy of what it may change: if it raises, its changes are dropped.
Async hooks have a few seconds (:data:`HOOK_TIMEOUT_S`); a plain hook runs on the app's loop
and must return quickly.

A plugin adds slash commands with :meth:`Plugin.commands`; the app answers ``/name text`` with
what the command's ``run(text)`` returns, and no model is asked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

HOOK_TIMEOUT_S = 3.0
"""How long a hook or a command may take before its plugin is turned off for the run."""

BEFORE_REQUEST = "before_request"
AFTER_RESPONSE = "after_response"
ON_MESSAGE = "on_message"
ON_CONTEXT_ADDED = "on_context_added"
HOOKS = (BEFORE_REQUEST, AFTER_RESPONSE, ON_MESSAGE, ON_CONTEXT_ADDED)

Purpose = Literal["reply", "summary"]
"""Why the app asks a model: a chat reply, or a summary of older turns for the memory."""


@dataclass
class Request:
    """A prompt about to leave for a model. Hooks change :attr:`messages`."""

    messages: list[dict[str, str]]
    """``{"role": ..., "content": ...}`` dicts, the system message first when there is one."""
    model: str
    remote: bool
    """The prompt may leave this computer: the model, or a fallback it may go to, is not
    run locally."""
    request_id: str
    purpose: Purpose = "reply"
    conversation_id: int | None = None
    agent_id: str | None = None


@dataclass
class Response:
    """A complete reply about to be stored. Hooks change :attr:`text`."""

    text: str
    model: str
    request_id: str
    purpose: Purpose = "reply"
    conversation_id: int | None = None
    message_id: int | None = None
    agent_id: str | None = None


@dataclass(frozen=True)
class StoredMessage:
    """A message as stored: a user's when it is saved, a reply's when it ends."""

    message_id: int
    conversation_id: int
    role: str
    content: str
    status: str
    """``complete``, ``interrupted``, ``error`` or ``queued`` (waiting for its model)."""
    model: str | None = None


@dataclass(frozen=True)
class AddedContext:
    """A context just added to an agent's memory."""

    context_id: int
    agent_id: str
    session_id: str | None
    context_type: str
    content: str


CommandRun = Callable[[str], "str | Awaitable[str]"]


@dataclass(frozen=True)
class PluginCommand:
    """A slash command a plugin answers.

    Attributes:
        name: what follows the ``/``: letters only, not one of the app's commands.
        usage: how it is typed, as ``/help`` shows it (``"/redact <text>"``).
        summary: what it does, in a few words.
        run: called with the text after the command (may be empty); returns the reply shown.
    """

    name: str
    usage: str
    summary: str
    run: CommandRun


class Plugin:
    """Base class of plugins: set the three attributes, define hooks as methods.

    Attributes:
        name: a short, stable identifier (the entry point's name for installed plugins).
        version: the plugin's version.
        description: one sentence for the Settings dialog.
    """

    name: str = ""
    version: str = "0"
    description: str = ""

    def hooks(self) -> dict[str, Callable[[Any], Any]]:
        """The hooks this plugin offers, by name: the methods named after a hook."""
        return hook_methods(self)

    def commands(self) -> Sequence[PluginCommand]:
        """The slash commands this plugin answers."""
        return ()

    def initialize(self) -> None:
        """Called once, when the plugin is loaded; raise to refuse to start."""

    def cleanup(self) -> None:
        """Called once, when the app stops."""


def hook_methods(plugin: Any) -> dict[str, Callable[[Any], Any]]:
    """The methods of ``plugin`` named after a hook, by name."""
    return {hook: method for hook in HOOKS if callable(method := getattr(plugin, hook, None))}
