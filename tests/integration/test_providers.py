"""Remote models over a real socket: the app's provider path (settings → Router → litellm →
HTTP) against the OpenAI-compatible test server on 127.0.0.1, checked for what a user relies on:
the reply streams, failures are retried or explained in plain words, a fallback answers when a
model cannot, keys go only where they belong, and a burst waits its turn."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from mangaba_desktop.core.chat import ChatService
from mangaba_desktop.core.providers.completions import (
    Completions,
    KeyMissing,
    KeyRejected,
    ModelBusy,
    ModelUnreachable,
    ProviderError,
    StreamCut,
    StreamPiece,
    import_litellm,
)
from mangaba_desktop.core.providers.local_model import Generation
from mangaba_desktop.core.providers.secrets import KeyStore
from mangaba_desktop.core.ratelimit import Pacer
from mangaba_desktop.core.settings import Provider, ProviderKind, SettingsStore
from mangaba_desktop.core.store import MessageStatus
from tests.helpers.openai_server import OpenAIServer
from tests.helpers.providers import (
    ask,
    completions_for,
    local_provider,
    plaintext_keyring,
    refused_url,
    settings_with,
)

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
        *providers: Provider,
        fallbacks: tuple[str, ...] = (),
        retries: int = 0,
        keys: KeyStore | None = None,
    ) -> Completions:
        completions = completions_for(
            *providers, fallbacks=list(fallbacks), retries=retries, keys=keys
        )
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


# -- Gemini and Anthropic ----------------------------------------------------------------------

CLOUD = {
    # kind: (the model asked for, the header its key goes in)
    ProviderKind.GEMINI: ("gemini-2.5-flash", "x-goog-api-key"),
    ProviderKind.ANTHROPIC: ("claude-haiku-4-5", "x-api-key"),
}
CLOUD_KEY = "test-cloud-key-8d41f2"


def cloud_provider(server: OpenAIServer, kind: ProviderKind) -> Provider:
    """A Gemini or Anthropic provider whose API is the test server (its key from KEY_ENV)."""
    return Provider(
        id=kind.value,
        kind=kind,
        name=kind.value.title(),
        base_url=server.root_url,
        models=[CLOUD[kind][0], "cut"],
        key_env=KEY_ENV,
        timeout_s=TIMEOUT_S,
    )


@pytest.mark.parametrize("kind", list(CLOUD))
async def test_a_gemini_or_anthropic_reply_that_ends_is_finished_with_its_usage(
    server, make, monkeypatch, kind
):
    monkeypatch.setenv(KEY_ENV, CLOUD_KEY)
    model, key_header = CLOUD[kind]
    completions = make(cloud_provider(server, kind))

    pieces = await collect(completions, f"{kind.value}/{model}")

    assert text_of(pieces) == server.reply
    last = pieces[-1]
    assert (last.model, last.provider) == (f"{kind.value}/{model}", kind.value)
    words_asked = len(PROMPT[0]["content"].split())
    assert last.usage == {
        "prompt_tokens": words_asked,
        "completion_tokens": len(server.reply.split()),
    }
    [request] = server.requests
    assert (request.model, header(request, key_header)) == (model, CLOUD_KEY)


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(
            ProviderKind.GEMINI,
            marks=pytest.mark.xfail(
                strict=True,
                reason="litellm's Gemini parser gives every chunk without a finishReason the "
                "finish reason 'stop', so Completions._read takes a cut Gemini stream for a "
                "finished one (intermittent_finish_reason is 'stop' from the first chunk on)",
            ),
        ),
        ProviderKind.ANTHROPIC,
    ],
)
async def test_a_gemini_or_anthropic_stream_cut_before_its_end_is_a_cut_reply(
    server, make, monkeypatch, kind
):
    monkeypatch.setenv(KEY_ENV, CLOUD_KEY)
    completions = make(cloud_provider(server, kind))

    error, pieces = await failure(completions, f"{kind.value}/cut")

    assert isinstance(error, StreamCut)
    assert "closed before the reply was finished" in str(error)
    assert text_of(pieces) == "Hello from"
    assert_plain(str(error), CLOUD_KEY)
    assert server.counts["cut"] == 1


# -- a model that goes quiet before its first word ---------------------------------------------


async def test_a_model_silent_before_its_first_word_hands_over_to_the_fallback(server, make):
    completions = make(
        provider_at(server, "prestall"),
        provider_at(server, "echo", id="backup", name="Backup"),
        fallbacks=("backup/echo",),
    )

    pieces = await collect(completions, "test/prestall")

    assert text_of(pieces) == server.reply
    notice = pieces[0].notice or ""
    assert "Test server did not answer in time" in notice and "backup/echo" in notice
    assert (pieces[-1].model, pieces[-1].provider) == ("backup/echo", "backup")
    assert server.counts == {"prestall": 1, "echo": 1}


async def test_a_model_silent_before_its_first_word_is_busy_and_its_reply_is_not_queued(
    server, make, store, bus
):
    completions = make(provider_at(server, "prestall"))

    error, pieces = await failure(completions, "test/prestall")

    assert type(error) is ModelBusy  # it took the request: slow, not out of reach
    assert str(error) == "Test server did not answer in time."
    assert not error.unreachable
    assert pieces == []

    chat = ChatService(store, completions, bus)
    conversation = await store.create()
    reply = await ask(chat, conversation.id, "hello there", "test/prestall", MessageStatus.ERROR)
    assert "did not answer in time" in (reply.error or "")
    assert "It will be sent" not in (reply.error or "")
    assert await store.queued() == []


# -- keys in long errors, models not listed ----------------------------------------------------

STORED_KEY = "sk-live-Q7f3Zp9LkW2mNx8RtY4vBc6HdJ1sGe5A"
ERROR_CUT = 500
"""Where the words of a provider's error are cut."""


def keys_with(directory: Path, provider_id: str, key: str) -> KeyStore:
    """A key store holding ``key`` for ``provider_id`` for this run (a plain-text keyring
    behind it, that holds no key of the app)."""
    keys = KeyStore(plaintext_keyring(directory))
    keys.set(provider_id, key, session_only=True)
    return keys


async def test_a_key_echoed_across_the_cut_of_a_long_error_is_redacted_whole(
    server, make, tmp_path
):
    completions = make(
        provider_at(server, "refuse-key"), keys=keys_with(tmp_path, "test", STORED_KEY)
    )
    # Where an echoed key lands in the error: found with a key of the same length that the
    # app does not know (so not redacted), then padded to start 12 characters before the cut.
    probe = "sk-probe-" + "p" * (len(STORED_KEY) - len("sk-probe-"))
    prefix = "Test server refused the request: "
    server.refusal_padding = 1
    error, _ = await failure(completions, "test/refuse-key", api_key=probe)
    assert str(error).startswith(prefix)
    server.refusal_padding += ERROR_CUT - 12 - (str(error).index(probe) - len(prefix))
    error, _ = await failure(completions, "test/refuse-key", api_key=probe)
    assert probe[:12] in str(error) and probe[:13] not in str(error)  # the cut is inside it

    error, pieces = await failure(completions, "test/refuse-key")

    assert header(server.requests[-1], "authorization") == f"Bearer {STORED_KEY}"
    assert type(error) is ProviderError and str(error).startswith(prefix)
    assert pieces == []
    assert STORED_KEY[:12] not in str(error)
    assert_plain(str(error), STORED_KEY)


async def test_a_model_the_provider_does_not_list_goes_to_its_address_with_its_key(
    keyed_server, make, tmp_path
):
    completions = make(
        provider_at(keyed_server, "echo"), keys=keys_with(tmp_path, "test", RIGHT_KEY)
    )

    pieces = await collect(completions, "test/echo-2")  # not in the provider's models

    assert text_of(pieces) == keyed_server.reply
    assert (pieces[-1].model, pieces[-1].provider) == ("test/echo-2", "test")
    [request] = keyed_server.requests
    assert (request.model, header(request, "authorization")) == ("echo-2", f"Bearer {RIGHT_KEY}")


# -- the Router's lifetime ---------------------------------------------------------------------

CALLBACK_LISTS = (
    "callbacks",
    "input_callback",
    "success_callback",
    "_async_success_callback",
    "failure_callback",
    "_async_failure_callback",
    "service_callback",
)
"""litellm's global lists a Router adds itself to (and ``Router.discard`` takes it out of)."""


def callbacks() -> dict[str, int]:
    litellm = import_litellm()
    return {name: len(getattr(litellm, name)) for name in CALLBACK_LISTS}


async def test_closing_the_completions_takes_its_router_out_of_litellms_lists(server):
    before = callbacks()
    completions = completions_for(provider_at(server, "echo"), retries=0)
    try:
        assert text_of(await collect(completions, "test/echo")) == server.reply
        assert callbacks() != before  # the Router is in them while it is used
    finally:
        await completions.close()

    assert callbacks() == before


@pytest.mark.parametrize("change", ["settings saved", "keys changed"])
async def test_rebuilding_the_router_leaves_no_callbacks_behind(server, tmp_path, change):
    before = callbacks()
    settings = SettingsStore(tmp_path)
    settings.update(settings_with(provider_at(server, "echo"), retries=0))
    completions = Completions(settings=settings)
    try:
        await collect(completions, "test/echo")
        first = callbacks()
        for n in range(4):
            if change == "settings saved":
                settings.update(settings.settings.model_copy(update={"retries": n % 2}))
            else:
                completions.invalidate()
            assert text_of(await collect(completions, "test/echo")) == server.reply
            assert callbacks() == first
    finally:
        await completions.close()
    assert callbacks() == before


# -- GGUF files --------------------------------------------------------------------------------


def gguf(provider_id: str, path: Path, *models: str) -> Provider:
    return Provider(
        id=provider_id,
        kind=ProviderKind.GGUF,
        name=provider_id.upper(),
        path=str(path),
        models=list(models),
    )


def answering(text: str) -> Callable[..., Iterator[str]]:
    """A stand-in for ``LocalModel.stream`` that answers ``text`` without loading weights."""

    def stream(
        messages: list[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float,
        stopped: threading.Event,
        generation: Generation,
    ) -> Iterator[str]:
        generation.prompt_tokens, generation.completion_tokens = 1, 1
        yield text

    return stream


async def test_gguf_files_are_served_per_provider_and_freed_when_no_longer_configured(tmp_path):
    # Paths only: a LocalModel loads its file on first use, which these tests never reach.
    a, b, c = (tmp_path / f"{name}.gguf" for name in "abc")
    settings = SettingsStore(tmp_path)
    settings.update(settings_with(gguf("a", a, "tiny"), gguf("b", b, "tiny"), retries=0))
    completions = Completions(settings=settings)
    try:
        await completions.router()
        local = completions._local
        first_a = local.model_for("mangaba-local/a/tiny")
        first_b = local.model_for("mangaba-local/b/tiny")
        # Two providers, one model name: each its own file.
        assert (first_a.path, first_b.path) == (a, b)
        first_a.stream = answering("from a")
        first_b.stream = answering("from b")
        assert text_of(await collect(completions, "a/tiny")) == "from a"
        assert text_of(await collect(completions, "b/tiny")) == "from b"
        closed: list[Path] = []
        first_b.close = lambda: closed.append(b)

        # Another change of the settings: a kept file stays the same model (loaded once).
        settings.update(settings.settings.model_copy(update={"retries": 1}))
        await completions.router()
        assert local.model_for("mangaba-local/a/tiny") is first_a
        assert local.model_for("mangaba-local/b/tiny") is first_b

        # b removed, a pointed at another file: b is freed, a served from its new file.
        first_a.close = lambda: closed.append(a)
        settings.update(settings_with(gguf("a", c, "tiny"), retries=1))
        await completions.router()
        await asyncio.wrap_future(local.executor.submit(lambda: None))  # after the frees
        assert sorted(closed) == [a, b]
        assert local.model_for("mangaba-local/a/tiny").path == c
        assert set(local.others) == {"a/tiny"}
    finally:
        await completions.close()
