"""One streaming entry point for every model, through litellm.

litellm takes seconds to import, so nothing imports it at module level: :meth:`Completions.start`
does it on a worker thread after the window is up, with the local cost map so that the import
never reaches for the network.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .local_model import LocalModel, LocalModelError, embedded_model_path

LOCAL_PROVIDER = "mangaba-local"


@dataclass
class StreamPiece:
    """A piece of a streamed reply; ``usage`` arrives with the last piece when known."""

    text: str = ""
    usage: dict[str, int] = field(default_factory=dict)


def import_litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm


class Completions:
    """Streams replies from any model litellm knows, the embedded one included.

    Args:
        local_model_path: the GGUF file for ``mangaba-local``; the embedded one by default.
    """

    def __init__(self, local_model_path: Path | None = None) -> None:
        self._local_model_path = local_model_path
        self._litellm: Any = None
        self._local: Any = None
        self._import: asyncio.Future[None] | None = None
        self._ready: asyncio.Future[None] | None = None

    @property
    def default_model(self) -> str:
        return f"{LOCAL_PROVIDER}/smollm2-135m-instruct"

    @property
    def ready(self) -> bool:
        return self._litellm is not None

    async def start(self) -> None:
        """Import litellm, register the local provider and load the local model, off the loop.

        Safe to call many times; later calls wait for the first one.
        """
        await self._imported()
        if self._ready is None:
            self._ready = asyncio.ensure_future(asyncio.wrap_future(self._local.preload()))
        await asyncio.shield(self._ready)

    async def _imported(self) -> None:
        """Wait until litellm is imported and the local provider registered (the model itself
        loads on the provider's worker, before its first generation)."""
        if self._import is None:
            self._import = asyncio.ensure_future(self._import_litellm())
        await asyncio.shield(self._import)

    async def _import_litellm(self) -> None:
        path = self._local_model_path or await asyncio.to_thread(embedded_model_path)
        self._litellm = await asyncio.to_thread(self._register, LocalModel(path))

    def _register(self, model: LocalModel) -> Any:
        litellm = import_litellm()
        from .litellm_local import LocalModelProvider

        self._local = LocalModelProvider(model)
        others = [p for p in litellm.custom_provider_map if p.get("provider") != LOCAL_PROVIDER]
        litellm.custom_provider_map = [
            *others,
            {"provider": LOCAL_PROVIDER, "custom_handler": self._local},
        ]
        from litellm.utils import custom_llm_setup

        custom_llm_setup()
        return litellm

    @property
    def local_model_name(self) -> str:
        return self._local.model.name if self._local else "SmolLM2-135M-Instruct"

    async def stream(
        self,
        model: str,
        messages: list[dict[str, str]],
        **params: Any,
    ) -> AsyncIterator[StreamPiece]:
        """Yield the reply's pieces. Cancelling the consuming task stops the generation."""
        await self._imported()
        try:
            response = await self._litellm.acompletion(
                model=model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                **params,
            )
        except Exception as exc:
            _raise_local_error(exc)
            raise
        try:
            async for chunk in response:
                piece = StreamPiece()
                if chunk.choices:
                    piece.text = chunk.choices[0].delta.content or ""
                usage = getattr(chunk, "usage", None)
                if usage:
                    piece.usage = {
                        "prompt_tokens": usage.prompt_tokens,
                        "completion_tokens": usage.completion_tokens,
                    }
                if piece.text or piece.usage:
                    yield piece
        except Exception as exc:
            _raise_local_error(exc)
            raise
        finally:
            closer = getattr(response, "aclose", None)
            if closer is not None:
                await closer()

    async def close(self) -> None:
        for pending in (self._import, self._ready):
            if pending is not None and not pending.done():
                pending.cancel()
        if self._local is not None:
            await asyncio.to_thread(self._local.shutdown)


def _raise_local_error(exc: BaseException) -> None:
    """Re-raise the local model's own error when litellm wrapped it.

    litellm turns an exception from a custom provider's stream into ``MidStreamFallbackError``
    whose text holds two Python tracebacks; the user must see the model's sentence instead.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, LocalModelError):
            raise current from None
        seen.add(id(current))
        current = current.__cause__ or current.__context__
