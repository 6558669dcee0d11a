"""Building a prompt: persona, remembered contexts, recent history and the request, within the
model's context window."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import commands
from .context.retrieval import RetrievedContext, format_for_prompt
from .store.models import COMMAND_MODEL, Message, Role

CHARS_PER_TOKEN = 3.5
"""A cautious estimate; the local provider trims exactly if the estimate was short."""

LOCAL_CONTEXT_WINDOW = 4096
DEFAULT_CONTEXT_WINDOW = 8192
REPLY_TOKENS = 512
CONTEXT_SHARE = 0.25
"""Part of the prompt budget for remembered contexts."""
MAX_CONTEXT_TOKENS = 1500

MEMORY_HEADER = (
    "What you remember from earlier (use it when it helps answer; it may be incomplete):"
)


@dataclass
class Budget:
    """How many characters each part of a prompt may take."""

    history_chars: int
    context_chars: int

    @classmethod
    def for_window(cls, window_tokens: int, persona_chars: int = 0) -> Budget:
        prompt_tokens = max(256, window_tokens - REPLY_TOKENS)
        context_tokens = min(MAX_CONTEXT_TOKENS, int(prompt_tokens * CONTEXT_SHARE))
        persona_tokens = int(persona_chars / CHARS_PER_TOKEN)
        history_tokens = max(128, prompt_tokens - context_tokens - persona_tokens)
        return cls(
            history_chars=int(history_tokens * CHARS_PER_TOKEN),
            context_chars=int(context_tokens * CHARS_PER_TOKEN),
        )


def context_window(model: str) -> int:
    from .providers.completions import LOCAL_PROVIDER

    return LOCAL_CONTEXT_WINDOW if model.startswith(LOCAL_PROVIDER) else DEFAULT_CONTEXT_WINDOW


def is_app_reply(message: Message) -> bool:
    return message.role == Role.ASSISTANT and message.model == COMMAND_MODEL


def model_text(message: Message) -> str:
    """A stored message as the model should read it (commands become their prompts)."""
    if message.role != Role.USER:
        return message.content
    try:
        command = commands.parse(message.content)
    except ValueError:
        return message.content
    if command is None:
        return commands.unescape(message.content)
    return command.prompt()


def is_local_command(message: Message) -> bool:
    if message.role != Role.USER:
        return False
    try:
        command = commands.parse(message.content)
    except ValueError:
        return False
    return command is not None and command.local


def history_window(history: Sequence[Message], budget_chars: int) -> list[Message]:
    """The most recent messages that fit in ``budget_chars``, oldest first, without the app's
    own command replies. The newest message is always kept."""
    usable = [m for m in history if not is_app_reply(m) and not is_local_command(m)]
    window: list[Message] = []
    used = 0
    for message in reversed(usable):
        size = len(model_text(message)) + 16
        if window and used + size > budget_chars:
            break
        window.append(message)
        used += size
    window.reverse()
    return window


def build(
    persona: str,
    contexts: list[RetrievedContext],
    window: Sequence[Message],
    budget: Budget,
) -> tuple[list[dict[str, str]], list[RetrievedContext]]:
    """The messages for the model and the contexts that made it into them."""
    memory, used = format_for_prompt(contexts, budget.context_chars)
    system_parts = [persona.strip()] if persona.strip() else []
    if memory:
        system_parts.append(f"{MEMORY_HEADER}\n{memory}")
    messages: list[dict[str, str]] = []
    if system_parts:
        messages.append({"role": "system", "content": "\n\n".join(system_parts)})
    messages += [{"role": m.role, "content": model_text(m)} for m in window]
    return messages, used
