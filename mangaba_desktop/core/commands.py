"""Slash commands typed in the chat, and the prompts of the agent's tasks.

A message is stored as the user typed it (``/translate english Olá``); the prompt the model
sees is built from it each time, so regenerating or editing a command works like any message.
``//text`` sends ``/text`` as plain text. Plugins add commands of their own
(:mod:`.plugins`), answered like ``/help``, without a model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .store.models import ContextType
from .validation import InvalidMessage


@dataclass(frozen=True)
class CommandSpec:
    name: str
    usage: str
    summary: str
    arguments: tuple[str, ...] = ()
    local: bool = False
    """Answered by the app itself, without a model."""
    plugin: str | None = None
    """The plugin that answers it; None for the app's own commands."""


COMMANDS: dict[str, CommandSpec] = {
    spec.name: spec
    for spec in (
        CommandSpec("analyze", "/analyze <text>", "analyse a text"),
        CommandSpec("translate", "/translate <language> <text>", "translate a text", ("language",)),
        CommandSpec(
            "summarize", "/summarize [sentences] <text>", "summarise a text in a few sentences"
        ),
        CommandSpec("review", "/review <language> <code>", "review code", ("language",)),
        CommandSpec("explain", "/explain <language> <code>", "explain code", ("language",)),
        CommandSpec("context", "/context", "what this agent remembers here", local=True),
        CommandSpec("help", "/help", "list the commands", local=True),
    )
}

DEFAULT_ANALYSIS = "Analise este texto"
DEFAULT_SENTENCES = 3
MAX_SENTENCES = 50

_COMMAND = re.compile(r"^/([A-Za-z]+)(?=\s|$)")


@dataclass(frozen=True)
class Command:
    name: str
    arguments: dict[str, str] = field(default_factory=dict)
    body: str = ""
    plugin_spec: CommandSpec | None = field(default=None, compare=False, repr=False)
    """The spec of a plugin's command (the app's own are in :data:`COMMANDS`)."""

    @property
    def spec(self) -> CommandSpec:
        return self.plugin_spec or COMMANDS[self.name]

    @property
    def local(self) -> bool:
        return self.spec.local

    @property
    def context_type(self) -> str:
        return ContextType.TASK.value

    def prompt(self) -> str:
        """What the model is asked."""
        body = self.body
        language = self.arguments.get("language", "")
        if self.name == "analyze":
            return f"{self.arguments.get('instruction') or DEFAULT_ANALYSIS}:\n\n{body}"
        if self.name == "translate":
            return (
                f"Translate the following text into {language}. Reply with the translation "
                f"only.\n\n{body}"
            )
        if self.name == "summarize":
            sentences = self.arguments.get("sentences", str(DEFAULT_SENTENCES))
            return f"Summarise the following text in at most {sentences} sentences.\n\n{body}"
        if self.name == "review":
            return (
                f"Review this {language} code. List bugs, risks and improvements, the most "
                f"important first, and quote the lines you mean.\n\n```{language}\n{body}\n```"
            )
        if self.name == "explain":
            return (
                f"Explain what this {language} code does, step by step, for a programmer who "
                f"has not seen it before.\n\n```{language}\n{body}\n```"
            )
        return body

    def retrieval_text(self) -> str:
        """What to look up in the context store for this task."""
        return self.body


def _take_argument(rest: str) -> tuple[str, str]:
    """The first argument of ``rest`` (a word, or a quoted phrase) and what follows it."""
    rest = rest.lstrip()
    if rest[:1] in {'"', "“"}:
        closing = '"' if rest[0] == '"' else "”"
        end = rest.find(closing, 1)
        if end > 0:
            return rest[1:end].strip(), rest[end + 1 :]
    match = re.match(r"(\S+)", rest)
    if not match:
        return "", rest
    return match.group(1), rest[match.end() :]


def parse(text: str, plugin_commands: Mapping[str, CommandSpec] | None = None) -> Command | None:
    """The command in ``text``, ``None`` for plain text.

    ``plugin_commands`` are the plugins' commands, by name (the app's own take precedence).
    Raises :class:`InvalidMessage` for an unknown command or a command missing what it needs,
    with its usage.
    """
    if text.startswith("//") or not text.startswith("/"):
        return None
    match = _COMMAND.match(text)
    if match is None:
        return None  # "/usr/bin …", "/ 2": not a command
    name = match.group(1).lower()
    spec = COMMANDS.get(name)
    plugin_spec = None
    if spec is None and plugin_commands:
        spec = plugin_spec = plugin_commands.get(name)
    if spec is None:
        raise InvalidMessage(
            f"There is no command /{name}. Type /help for the list; start with “//” to send "
            "text that begins with “/”."
        )
    rest = text[match.end() :]
    arguments: dict[str, str] = {}
    for argument in spec.arguments:
        value, rest = _take_argument(rest)
        if not value:
            raise InvalidMessage(f"Usage: {spec.usage}")
        arguments[argument] = value
    if name == "summarize":
        value, after = _take_argument(rest)
        if value.isdigit() and 1 <= int(value) <= MAX_SENTENCES:
            arguments["sentences"] = str(int(value))
            rest = after
    if name == "analyze":
        first, newline, after = rest.partition("\n")
        if newline and first.strip().endswith(":") and after.strip():
            arguments["instruction"] = first.strip()[:-1].strip()
            rest = "\n" + after
    # Code keeps its indentation: the body starts after the command's line when it breaks there.
    body = rest[1:] if rest.startswith("\n") else rest.lstrip(" \t")
    body = body.rstrip() if name in {"review", "explain"} else body.strip()
    if not spec.local and not body.strip():
        raise InvalidMessage(f"Usage: {spec.usage}")
    return Command(name, arguments, body, plugin_spec)


def escape(text: str) -> str:
    """Text to be sent as it is, even when it begins with ``/`` (the reverse of unescape)."""
    return "/" + text if text.startswith("/") else text


def unescape(text: str) -> str:
    """Plain text as the model should see it (``//x`` becomes ``/x``)."""
    return text[1:] if text.startswith("//") else text


def as_typed(name: str, body: str, **arguments: str) -> str:
    """The message a user would type for a task (how the agent API stores its calls)."""
    if name == "analyze":
        instruction = arguments.get("instruction", DEFAULT_ANALYSIS).replace("\n", " ")
        return f"/analyze {instruction.rstrip(':')}:\n{body}"
    parts = [f"/{name}"]
    for value in arguments.values():
        parts.append(f'"{value}"' if re.search(r"\s", value) or not value else value)
    head = " ".join(parts)
    return f"{head}\n{body}"


def help_text(plugin_commands: Mapping[str, CommandSpec] | None = None) -> str:
    lines = ["Commands:"]
    lines += [f"  {spec.usage} — {spec.summary}" for spec in COMMANDS.values()]
    if plugin_commands:
        lines.append("From plugins:")
        lines += [
            f"  {spec.usage} — {spec.summary} ({spec.plugin})" for spec in plugin_commands.values()
        ]
    lines.append("Start a message with // to send text that begins with /.")
    return "\n".join(lines)
