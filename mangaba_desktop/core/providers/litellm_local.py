"""The local model as a litellm custom provider, so that every model goes through one path."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from litellm import CustomLLM
from litellm.types.utils import GenericStreamingChunk, ModelResponse

from .local_model import Generation, LocalModel, LocalModelError

PROVIDER = "mangaba-local"

_END = object()


class LocalModelProvider(CustomLLM):
    """Serves ``mangaba-local/<name>`` from :class:`LocalModel` files on one worker thread.

    ``model`` is the embedded one; :meth:`add` makes other GGUF files available by name. One
    thread runs them all, so two local models never compete for the same cores.
    """

    def __init__(self, model: LocalModel) -> None:
        super().__init__()
        self.model = model
        self.others: dict[str, LocalModel] = {}
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="local-model")

    def serve(self, files: dict[str, Path]) -> None:
        """Serve ``mangaba-local/<name>`` from each file (names are ``<provider>/<model>``).
        A file already loaded under its name stays loaded; names no longer wanted are freed,
        on the model thread, after any generation in progress."""
        for name in list(self.others):
            if files.get(name) != self.others[name].path:
                self.executor.submit(self.others.pop(name).close)
        for name, path in files.items():
            if name not in self.others:
                self.others[name] = LocalModel(path)

    def model_for(self, name: str) -> LocalModel:
        """The model for litellm's ``name`` (with or without the provider prefix)."""
        return self.others.get(name.removeprefix(PROVIDER + "/"), self.model)

    def preload(self) -> concurrent.futures.Future[None]:
        return self.executor.submit(self.model.load)

    def shutdown(self) -> None:
        """Stop taking work, let the current generation see its stop flag, free the models."""
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.model.close()
        for other in self.others.values():
            other.close()

    async def astreaming(  # type: ignore[override]
        self, model: str, messages: list, *args: Any, **kwargs: Any
    ) -> AsyncIterator[GenericStreamingChunk]:
        params = kwargs.get("optional_params") or {}
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stopped = threading.Event()
        generation = Generation()
        local = self.model_for(model)

        def produce() -> None:
            try:
                for piece in local.stream(
                    [{"role": m["role"], "content": m["content"]} for m in messages],
                    max_tokens=int(params.get("max_tokens") or 512),
                    temperature=float(params.get("temperature", 0.7)),
                    stopped=stopped,
                    generation=generation,
                ):
                    loop.call_soon_threadsafe(queue.put_nowait, piece)
            except BaseException as exc:
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        self.executor.submit(produce)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield _chunk(item)
            yield _chunk(
                "",
                finished=True,
                finish_reason=generation.finish_reason,
                usage={
                    "prompt_tokens": generation.prompt_tokens,
                    "completion_tokens": generation.completion_tokens,
                    "total_tokens": generation.prompt_tokens + generation.completion_tokens,
                },
            )
        finally:
            # Reached on completion, on error, and when the consumer is cancelled or closes the
            # stream: the worker sees the flag before its next token.
            stopped.set()

    async def acompletion(  # type: ignore[override]
        self, model: str, messages: list, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        started = time.monotonic()
        parts: list[str] = []
        usage: dict[str, int] = {}
        async for chunk in self.astreaming(model, messages, *args, **kwargs):
            parts.append(chunk["text"])
            usage = dict(chunk.get("usage") or usage)
        response = kwargs.get("model_response") or ModelResponse()
        response.choices[0].message.content = "".join(parts)  # type: ignore[union-attr]
        response.model = model
        if usage:
            response.usage = usage  # type: ignore[attr-defined]
        response._response_ms = (time.monotonic() - started) * 1000  # type: ignore[attr-defined]
        return response


def _chunk(
    text: str,
    *,
    finished: bool = False,
    finish_reason: str = "",
    usage: dict[str, int] | None = None,
) -> GenericStreamingChunk:
    return {
        "text": text,
        "tool_use": None,
        "is_finished": finished,
        "finish_reason": finish_reason,
        "usage": usage,  # type: ignore[typeddict-item]
        "index": 0,
    }


__all__ = ["PROVIDER", "LocalModelError", "LocalModelProvider"]
