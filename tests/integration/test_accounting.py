"""What replies cost, as the usage view shows it: replies from the test server (a model on this
computer: free) and from litellm's mock of priced and unpriced cloud models, through the real
ChatService into a real SQLite file, summed by ``ConversationStore.usage``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from mangaba_desktop.core.chat import ChatService
from mangaba_desktop.core.providers.completions import Completions
from mangaba_desktop.core.store import MessageStatus, Usage
from tests.helpers.db import query_file
from tests.helpers.openai_server import OpenAIServer
from tests.helpers.providers import ask, completions_for, local_provider, refused_url

pytestmark = pytest.mark.asyncio(loop_scope="session")

PRICED = "openai/gpt-4o-mini"
UNPRICED = "openai/a-fine-tune-nobody-priced"
MOCK_REPLY = "Lisbon is the capital of Portugal."
OFFLINE = "offline/echo"


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(reply="Four, as always.") as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def completions(server: OpenAIServer) -> AsyncIterator[Completions]:
    source = completions_for(
        local_provider(server.base_url, "echo", "echo-2", timeout_s=5.0),
        local_provider(refused_url(), "echo", id="offline", name="Offline server"),
        retries=0,
    )
    yield source
    await source.close()


@pytest_asyncio.fixture(loop_scope="session")
async def chat(store, completions, bus) -> AsyncIterator[ChatService]:
    service = ChatService(store, completions, bus)
    yield service
    await service.shutdown()


def by_model(usage: list[Usage]) -> dict[tuple[str, str], Usage]:
    return {(u.provider, u.model): u for u in usage}


def words_sent(server: OpenAIServer, model: str) -> int:
    """The prompt tokens the test server reports for ``model``: the words it was sent."""
    return sum(
        len(str(m["content"]).split())
        for r in server.requests
        if r.model == model
        for m in r.body["messages"]
    )


async def test_usage_sums_replies_tokens_and_cost_per_provider_and_model(
    store, chat, completions, server, db_path
):
    first = await store.create()
    second = await store.create()
    await ask(chat, first.id, "What is two plus two?", "test/echo")
    await ask(chat, first.id, "And three plus one?", "test/echo")
    await ask(chat, first.id, "What is the capital of Portugal?", PRICED, mock_response=MOCK_REPLY)
    await ask(chat, second.id, "Two plus two again?", "test/echo-2")
    unpriced = await ask(chat, second.id, "Tell me something.", UNPRICED, mock_response="Hi.")

    usage = await store.usage()

    found = by_model(usage)
    assert set(found) == {
        ("test", "test/echo"),
        ("test", "test/echo-2"),
        ("openai", PRICED),
        ("openai", UNPRICED),
    }
    reply_words = len(server.reply.split())
    echo = found[("test", "test/echo")]
    assert (echo.replies, echo.cost_usd, echo.unpriced) == (2, 0.0, 0)
    assert echo.prompt_tokens == words_sent(server, "echo")
    assert echo.completion_tokens == 2 * reply_words
    echo_2 = found[("test", "test/echo-2")]
    assert (echo_2.replies, echo_2.cost_usd, echo_2.unpriced) == (1, 0.0, 0)
    assert echo_2.prompt_tokens == words_sent(server, "echo-2")

    priced = found[("openai", PRICED)]
    assert (priced.replies, priced.unpriced) == (1, 0)
    assert priced.prompt_tokens > 0 and priced.completion_tokens > 0
    tokens = {"prompt_tokens": priced.prompt_tokens, "completion_tokens": priced.completion_tokens}
    assert priced.cost_usd == pytest.approx(completions.cost(PRICED, tokens))
    assert priced.cost_usd > 0
    assert usage[0].model == PRICED  # the dearest first

    nobody = found[("openai", UNPRICED)]
    assert (nobody.replies, nobody.cost_usd, nobody.unpriced) == (1, None, 1)
    assert nobody.completion_tokens == unpriced.completion_tokens

    # One conversation's usage holds only its own replies.
    in_second = by_model(await store.usage(second.id))
    assert set(in_second) == {("test", "test/echo-2"), ("openai", UNPRICED)}
    assert in_second[("test", "test/echo-2")].replies == 1
    in_first = by_model(await store.usage(first.id))
    assert in_first[("test", "test/echo")] == echo
    assert in_first[("openai", PRICED)] == priced


async def test_each_reply_row_keeps_its_provider_tokens_and_cost(
    store, chat, completions, server, db_path
):
    conversation = await store.create()
    await ask(chat, conversation.id, "What is two plus two?", "test/echo")
    await ask(chat, conversation.id, "Capital of Portugal?", PRICED, mock_response=MOCK_REPLY)
    await ask(chat, conversation.id, "Anything?", UNPRICED, mock_response="Hi.")

    stored = query_file(
        db_path,
        "SELECT model, provider, prompt_tokens, completion_tokens, cost_usd FROM messages "
        "WHERE role = 'assistant' ORDER BY id",
    )

    local, priced, unpriced = stored
    assert local == (
        "test/echo",
        "test",
        words_sent(server, "echo"),
        len(server.reply.split()),
        0.0,
    )
    assert priced[:2] == (PRICED, "openai")
    assert priced[2] > 0 and priced[3] > 0
    assert priced[4] == pytest.approx(
        completions.cost(PRICED, {"prompt_tokens": priced[2], "completion_tokens": priced[3]})
    )
    assert priced[4] > 0
    assert unpriced[:2] == (UNPRICED, "openai")
    assert unpriced[4] is None


async def test_replies_no_model_gave_are_not_counted(store, chat, server):
    conversation = await store.create()
    await ask(chat, conversation.id, "What is two plus two?", "test/echo")
    await chat.send(conversation.id, "/help")  # the app answers, no model is asked
    await chat.wait(conversation.id)
    await ask(chat, conversation.id, "Are you there?", OFFLINE, MessageStatus.QUEUED)

    usage = await store.usage(conversation.id)

    assert [(u.provider, u.model, u.replies) for u in usage] == [("test", "test/echo", 1)]
    assert usage == await store.usage()
