"""Remote models over a real socket: the app's provider path (settings → Router → litellm →
HTTP) against the OpenAI-compatible test server on 127.0.0.1, checked for what a user relies on:
the reply streams, failures are retried or explained in plain words, a fallback answers when a
model cannot, keys go only where they belong, and a burst waits its turn."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import pytest_asyncio

from mangaba_desktop.core.providers.completions import (
    Completions,
    KeyMissing,
    KeyRejected,
    ModelBusy,
    ModelUnreachable,
    ProviderError,
    StreamCut,
    StreamPiece,
)
from mangaba_desktop.core.ratelimit import Pacer
from mangaba_desktop.core.settings import Provider, ProviderKind
from tests.helpers.openai_server import OpenAIServer
from tests.helpers.providers import completions_for, local_provider, refused_url

pytestmark = pytest.mark.asyncio(loop_scope="session")

TIMEOUT_S = 1.0
"""The shortest timeout a provider accepts: a stalled stream fails within about a second."""
PROMPT = [{"role": "user", "content": "hello there"}]
RIGHT_KEY = "sk-test-right-4f1c9a"
WRONG_KEY = "sk-test-wrong-77d2e0"
KEY_ENV = "MANGABA_TEST_SERVER_KEY"


def provider_at(server_or_url: OpenAIServer | str, *models: str, **fields: object) -> Provider:
    """An OpenAI-compatible provider for ``server_or_url`` offering ``models``, with the
    shortest timeout unless ``fields`` give another."""
    url = server_or_url if isinstance(server_or_url, str) else server_or_url.base_url
    return local_provider(url, *models, **{"timeout_s": TIMEOUT_S, **fields})


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(stall_s=5.0) as running:
        yield running


@pytest.fixture
def keyed_server() -> Iterator[OpenAIServer]:
    """A server that answers 401 unless the request carries ``RIGHT_KEY``."""
    with OpenAIServer(api_key=RIGHT_KEY) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def make() -> AsyncIterator[Callable[..., Completions]]:
    """Build the app's Completions from settings; no local fallback and no retries unless
    asked, so that each test sees exactly the requests it causes."""
    made: list[Completions] = []

    def build(
        *providers: Provider, fallbacks: tuple[str, ...] = (), retries: int = 0
    ) -> Completions:
        completions = completions_for(*providers, fallbacks=list(fallbacks), retries=retries)
        made.append(completions)
        return completions

    yield build
    for completions in made:
        await completions.close()


async def collect(completions: Completions, model: str, **params: object) -> list[StreamPiece]:
    return [piece async for piece in completions.stream(model, PROMPT, **params)]


async def failure(
    completions: Completions, model: str, **params: object
) -> tuple[ProviderError, list[StreamPiece]]:
    """The error a stream ends with, and the pieces that arrived before it."""
    pieces: list[StreamPiece] = []

    async def read() -> None:
        async for piece in completions.stream(model, PROMPT, **params):
            pieces.append(piece)

    with pytest.raises(ProviderError) as raised:
        await read()
    return raised.value, pieces


def text_of(pieces: list[StreamPiece]) -> str:
    return "".join(piece.text for piece in pieces)


def assert_plain(message: str, *secrets: str) -> None:
    """A message for the user: one line, no traceback, no class paths, no secret."""
    assert message and "\n" not in message
    for leak in ("Traceback", 'File "', "litellm.", "Exception -", "Received Model Group"):
        assert leak not in message
    for secret in secrets:
        assert secret not in message


def header(request: object, name: str) -> str | None:
    headers = request.headers  # type: ignore[attr-defined]
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


# -- a reply -----------------------------------------------------------------------------------


async def test_a_reply_streams_in_pieces_and_the_last_one_says_who_answered_and_the_cost(
    server, make
):
    completions = make(provider_at(server, "echo"))

    pieces = await collect(completions, "test/echo")

    texts = [p.text for p in pieces if p.text]
    assert len(texts) == len(server.reply.split()) > 1
    assert text_of(pieces) == server.reply
    last = pieces[-1]
    assert last.text == ""
    assert (last.model, last.provider, last.cost) == ("test/echo", "test", 0.0)
    words_asked = len(PROMPT[0]["content"].split())
    assert last.usage == {"prompt_tokens": words_asked, "completion_tokens": len(texts)}
    assert all(p.model is None and p.notice is None for p in pieces[:-1])
    [request] = server.requests
    assert request.model == "echo"  # the provider's own name for it, without "test/"
    assert request.body["stream"] is True
    assert request.body["messages"] == PROMPT


async def test_a_cloud_model_is_priced_from_the_local_table_and_an_unknown_one_is_not(make):
    openai = Provider(id="openai", kind=ProviderKind.OPENAI, name="OpenAI", models=["gpt-4o-mini"])
    completions = make(openai)
    await completions.router()  # imports litellm and its price table, sends nothing
    usage = {"prompt_tokens": 1000, "completion_tokens": 500}
    price = completions._litellm.model_cost["gpt-4o-mini"]

    cost = completions.cost("openai/gpt-4o-mini", usage)

    assert cost is not None and cost > 0
    expected = 1000 * price["input_cost_per_token"] + 500 * price["output_cost_per_token"]
    assert cost == pytest.approx(expected)
    assert completions.cost("openai/no-such-model-anywhere", usage) is None
    assert completions.cost("openai/gpt-4o-mini", {}) is None  # nothing was counted


# -- retries -----------------------------------------------------------------------------------


async def test_a_server_error_is_retried_until_the_model_answers(server, make):
    completions = make(provider_at(server, "flaky-2"), retries=2)

    pieces = await collect(completions, "test/flaky-2")

    assert text_of(pieces) == server.reply
    assert server.counts["flaky-2"] == 3  # two 503s, then the reply


async def test_a_rate_limit_that_lasts_fails_as_busy_in_plain_words(server, make):
    completions = make(provider_at(server, "rate-limit"), retries=1)

    error, pieces = await failure(completions, "test/rate-limit")

    assert isinstance(error, ModelBusy)
    assert pieces == []
    assert server.counts["rate-limit"] == 2  # the request and one retry
    assert "429" in str(error) and "rate limit" in str(error)
    assert str(error).startswith("Test server")
    assert_plain(str(error))


# -- keys --------------------------------------------------------------------------------------


async def test_a_key_the_server_rejects_is_reported_and_no_fallback_is_asked(server, make):
    completions = make(
        provider_at(server, "unauthorized"),
        provider_at(server, "echo", id="backup", name="Backup"),
        fallbacks=("backup/echo",),
        retries=2,
    )

    error, pieces = await failure(completions, "test/unauthorized")

    assert isinstance(error, KeyRejected)
    assert str(error) == "Key rejected by Test server."
    assert pieces == []
    # Neither retried (the key will not get better) nor handed to the fallback.
    assert server.counts == {"unauthorized": 1}


async def test_a_wrong_key_from_the_environment_is_rejected_without_a_fallback(
    keyed_server, make, monkeypatch
):
    monkeypatch.setenv(KEY_ENV, WRONG_KEY)
    completions = make(
        provider_at(keyed_server, "echo", key_env=KEY_ENV),
        provider_at(keyed_server, "echo-2", id="backup", name="Backup", key_env=KEY_ENV),
        fallbacks=("backup/echo-2",),
        retries=2,
    )

    error, pieces = await failure(completions, "test/echo")

    assert isinstance(error, KeyRejected)
    assert str(error) == "Key rejected by Test server."
    assert pieces == []
    assert_plain(str(error), WRONG_KEY)
    [request] = keyed_server.requests
    assert (request.model, header(request, "authorization")) == ("echo", f"Bearer {WRONG_KEY}")


async def test_the_right_key_from_the_environment_is_sent_and_answered(
    keyed_server, make, monkeypatch
):
    monkeypatch.setenv(KEY_ENV, RIGHT_KEY)
    completions = make(provider_at(keyed_server, "echo", key_env=KEY_ENV))

    pieces = await collect(completions, "test/echo")

    assert text_of(pieces) == keyed_server.reply
    assert header(keyed_server.requests[0], "authorization") == f"Bearer {RIGHT_KEY}"


async def test_a_provider_that_needs_a_key_and_has_none_says_where_to_add_it(
    server, make, monkeypatch
):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    # Pointed at the test server, so that a request sent by mistake would be seen.
    openai = Provider(
        id="openai",
        kind=ProviderKind.OPENAI,
        name="OpenAI",
        base_url=server.base_url,
        models=["gpt-4o-mini"],
        key_env=KEY_ENV,
    )
    completions = make(openai, provider_at(server, "echo"), fallbacks=("test/echo",))

    error, pieces = await failure(completions, "openai/gpt-4o-mini")

    assert isinstance(error, KeyMissing)
    assert "OpenAI" in str(error) and "Settings" in str(error)
    assert pieces == []
    assert server.requests == []
    assert_plain(str(error))


# -- broken streams ----------------------------------------------------------------------------


async def test_a_stream_that_stalls_is_cut_at_the_timeout_and_keeps_what_arrived(server, make):
    completions = make(provider_at(server, "stall"), retries=2)
    started = time.monotonic()

    error, pieces = await failure(completions, "test/stall")

    elapsed = time.monotonic() - started
    assert isinstance(error, StreamCut)
    assert text_of(pieces) == "Hello from"  # the two pieces sent before the stall
    assert "what arrived is kept" in str(error)
    assert_plain(str(error))
    assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + 4.0
    assert server.counts["stall"] == 1  # a stream that started is never sent again


@pytest.mark.parametrize(
    ("model", "kind", "words", "arrived"),
    [
        ("cut", StreamCut, "closed before the reply was finished", "Hello from"),
        ("html", ProviderError, "not be an OpenAI-compatible API", ""),
        ("garbage", ProviderError, "not a model reply", ""),
    ],
)
async def test_a_broken_reply_is_explained_without_a_traceback(
    server, make, model, kind, words, arrived
):
    completions = make(provider_at(server, model), retries=2)

    error, pieces = await failure(completions, f"test/{model}")

    assert type(error) is kind
    assert words in str(error)
    assert "Test server" in str(error)
    assert_plain(str(error))
    assert text_of(pieces) == arrived
    assert not error.unreachable  # the outbox must not wait for it to get better
    assert server.counts[model] == 1


# -- unreachable models and the fallback chain -------------------------------------------------


async def test_a_refused_connection_without_fallbacks_is_unreachable(make):
    completions = make(provider_at(refused_url(), "echo", id="offline", name="Offline server"))

    error, pieces = await failure(completions, "offline/echo")

    assert isinstance(error, ModelUnreachable)
    assert error.unreachable
    assert str(error) == "Offline server cannot be reached."
    assert pieces == []


async def test_an_unreachable_model_falls_back_and_the_reply_says_so(server, make):
    completions = make(
        provider_at(refused_url(), "echo", id="offline", name="Offline server"),
        provider_at(server, "echo"),
        fallbacks=("test/echo",),
    )

    pieces = await collect(completions, "offline/echo")

    assert text_of(pieces) == server.reply
    first = pieces[0]
    assert first.text and first.notice is not None
    assert "Offline server cannot be reached" in first.notice
    assert "test/echo" in first.notice
    assert all(p.notice is None for p in pieces[1:])
    assert (pieces[-1].model, pieces[-1].provider) == ("test/echo", "test")
    assert server.counts == {"echo": 1}


async def test_the_fallbacks_that_fail_too_are_named(server, make):
    completions = make(
        provider_at(refused_url(), "echo", id="offline", name="Offline server"),
        provider_at(refused_url(), "echo", id="offline-2", name="Second offline server"),
        fallbacks=("offline-2/echo",),
    )

    error, _ = await failure(completions, "offline/echo")

    assert isinstance(error, ModelUnreachable)
    assert str(error).startswith("Offline server cannot be reached.")
    assert "offline-2/echo" in str(error)
    assert_plain(str(error))


async def test_a_key_given_for_the_chosen_model_is_not_sent_to_the_fallback(server, make):
    chosen_key = "sk-only-for-the-chosen-model-91b3"
    completions = make(
        provider_at(server, "rate-limit"),
        provider_at(server, "echo", id="backup", name="Backup"),
        fallbacks=("backup/echo",),
    )

    pieces = await collect(completions, "test/rate-limit", api_key=chosen_key)

    assert text_of(pieces) == server.reply
    assert pieces[-1].model == "backup/echo"
    assert "rate limit" in (pieces[0].notice or "")
    asked = {r.model: header(r, "authorization") for r in server.requests}
    assert asked == {"rate-limit": f"Bearer {chosen_key}", "echo": "Bearer none"}
    assert not any(chosen_key in str(r.headers) + str(r.body) for r in server.requests[1:])


# -- pacing ------------------------------------------------------------------------------------


class RecordingPacer(Pacer):
    """The app's pacer, remembering when each request asked to start and when it could."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[float] = []
        self.starts: list[float] = []

    def reserve(self, key: str, per_minute: float) -> float:
        asked = self.clock()
        delay = super().reserve(key, per_minute)
        self.asked.append(asked)
        self.starts.append(asked + delay)
        return delay


async def test_a_burst_over_the_provider_rate_waits_its_turn_and_none_fails(server, make):
    per_minute = 600.0  # 10 a second, in bursts of 60
    burst = int(Pacer.burst_for(per_minute))
    count = burst + 10
    completions = make(provider_at(server, "echo", requests_per_minute=per_minute, timeout_s=30))
    completions.pacer = RecordingPacer()
    await completions.router()  # built before the clock starts
    started = time.monotonic()

    replies = await asyncio.gather(*(collect(completions, "test/echo") for _ in range(count)))

    elapsed = time.monotonic() - started
    assert [text_of(r) for r in replies] == [server.reply] * count
    assert server.counts["echo"] == count
    pacer = completions.pacer
    first = pacer.asked[0]
    assert pacer.starts[:burst] == pacer.asked[:burst]  # the burst goes at once
    # The rest start a tenth of a second apart from the burst, in the order they asked (the
    # time spent asking counts towards the wait); the last one had to wait.
    for k, (asked, start) in enumerate(
        zip(pacer.asked[burst:], pacer.starts[burst:], strict=True), 1
    ):
        assert start == pytest.approx(max(asked, first + k / 10.0), abs=0.005)
    assert pacer.starts[-1] > pacer.asked[-1]
    # None reached the server before its turn: the k-th beyond the burst arrived k/10 s late.
    arrived = sorted(r.at - started for r in server.requests)
    for k, at in enumerate(arrived[burst:], start=1):
        assert at >= k / 10.0 - 0.06
    assert (count - burst) / 10.0 - 0.06 <= elapsed < 20.0


# -- testing a key -----------------------------------------------------------------------------


async def test_testing_a_key_says_whether_it_works_without_showing_it(keyed_server, make):
    provider = provider_at(keyed_server, "echo")
    completions = make(provider)

    right = await completions.test_key(provider, RIGHT_KEY)
    wrong = await completions.test_key(provider, WRONG_KEY)

    assert right.ok and "the key works" in right.message
    assert not wrong.ok and "Key rejected" in wrong.message
    for check in (right, wrong):
        assert_plain(check.message, RIGHT_KEY, WRONG_KEY)
    sent = [header(r, "authorization") for r in keyed_server.requests]
    assert sent == [f"Bearer {RIGHT_KEY}", f"Bearer {WRONG_KEY}"]


async def test_testing_a_key_on_an_unreachable_server_says_so(make):
    provider = provider_at(refused_url(), "echo", name="Offline server")
    completions = make(provider)

    check = await completions.test_key(provider, WRONG_KEY)

    assert not check.ok
    assert "cannot be reached" in check.message
    assert_plain(check.message, WRONG_KEY)


async def test_testing_a_key_needs_a_key_and_a_model_first(server, make, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    openai = Provider(
        id="openai", kind=ProviderKind.OPENAI, name="OpenAI", base_url=server.base_url
    )
    modelless = provider_at(server)
    completions = make(openai, modelless)

    no_key = await completions.test_key(openai, None)
    no_model = await completions.test_key(modelless, None)

    assert not no_key.ok and "no key for OpenAI" in no_key.message
    assert not no_model.ok and "Add a model" in no_model.message
    assert server.requests == []
