"""Finding model servers on this computer, against real servers on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from mangaba_desktop.core.providers.probe import (
    DEFAULT_TARGETS,
    MAX_MODEL_NAME,
    MAX_MODELS,
    FoundServer,
    ProbeTarget,
    already_configured,
    probe_local_servers,
    provider_for,
    unique_provider_id,
)
from mangaba_desktop.core.settings import LOCAL_PROVIDER_ID, Provider, ProviderKind, Settings
from tests.helpers.openai_server import OpenAIServer, free_port

TIMEOUT_S = 0.5
OLLAMA_TAGS = {
    "models": [
        {"name": "llama3.2:latest", "model": "llama3.2:latest", "size": 2019393189},
        {"name": "qwen2.5:7b", "model": "qwen2.5:7b", "size": 4683087332},
    ]
}


class _FixedReply(BaseHTTPRequestHandler):
    """Answers every GET on ``path`` with the same reply, 404 elsewhere."""

    path_served = "/api/tags"
    status = 200
    content_type = "application/json"
    body = b"{}"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == self.path_served:
            status, content_type, body = self.status, self.content_type, self.body
        else:
            status, content_type, body = 404, "application/json", b'{"error": "not found"}'
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def serve() -> Iterator[Callable[..., int]]:
    """Start a one-reply HTTP server on 127.0.0.1; returns its port."""
    servers: list[ThreadingHTTPServer] = []

    def start(
        body: Any,
        path: str = "/api/tags",
        status: int = 200,
        content_type: str = "application/json",
    ) -> int:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        attributes = {
            "path_served": path,
            "status": status,
            "content_type": content_type,
            "body": raw,
        }
        handler = type("Handler", (_FixedReply,), attributes)
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel does) but never answers a byte."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def openai_server() -> Iterator[OpenAIServer]:
    """An LM Studio stand-in: ``GET /v1/models`` lists ``echo`` and ``echo-2``."""
    with OpenAIServer() as server:
        yield server


def ollama(port: int) -> ProbeTarget:
    return ProbeTarget("Ollama", ProviderKind.OLLAMA, port, "/api/tags")


def lm_studio(port: int) -> ProbeTarget:
    return ProbeTarget("LM Studio", ProviderKind.OPENAI_COMPATIBLE, port, "/v1/models")


def found(name: str = "Ollama", kind: ProviderKind = ProviderKind.OLLAMA) -> FoundServer:
    return FoundServer(kind, name, "http://127.0.0.1:11434", ["llama3.2:latest"])


# -- finding servers ---------------------------------------------------------------------------


def test_default_targets_are_the_well_known_local_servers():
    assert [(t.name, t.kind, t.port, t.path) for t in DEFAULT_TARGETS] == [
        ("Ollama", ProviderKind.OLLAMA, 11434, "/api/tags"),
        ("LM Studio", ProviderKind.OPENAI_COMPATIBLE, 1234, "/v1/models"),
        ("llama.cpp server", ProviderKind.OPENAI_COMPATIBLE, 8080, "/v1/models"),
    ]


@pytest.mark.asyncio
async def test_finds_an_ollama_and_an_openai_compatible_server_with_their_models(
    serve, openai_server
):
    ollama_port = serve(OLLAMA_TAGS)

    servers = await probe_local_servers(
        [ollama(ollama_port), lm_studio(openai_server.port)], timeout_s=TIMEOUT_S
    )

    assert servers == [
        FoundServer(
            ProviderKind.OLLAMA,
            "Ollama",
            f"http://127.0.0.1:{ollama_port}",
            ["llama3.2:latest", "qwen2.5:7b"],
        ),
        FoundServer(
            ProviderKind.OPENAI_COMPATIBLE, "LM Studio", openai_server.base_url, ["echo", "echo-2"]
        ),
    ]


@pytest.mark.asyncio
async def test_a_port_nothing_listens_on_is_not_found():
    assert await probe_local_servers([ollama(free_port())], timeout_s=TIMEOUT_S) == []


@pytest.mark.asyncio
async def test_a_server_answering_html_is_not_found(serve):
    page = b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"
    port = serve(page, path="/v1/models", content_type="text/html")

    assert await probe_local_servers([lm_studio(port)], timeout_s=TIMEOUT_S) == []


@pytest.mark.asyncio
async def test_an_error_status_is_not_found_even_with_a_model_list(serve):
    port = serve(OLLAMA_TAGS, status=500)

    assert await probe_local_servers([ollama(port)], timeout_s=TIMEOUT_S) == []


@pytest.mark.asyncio
async def test_a_server_without_the_path_is_not_found(serve):
    port = serve({"data": [{"id": "x"}]}, path="/somewhere/else")

    assert await probe_local_servers([lm_studio(port)], timeout_s=TIMEOUT_S) == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "body",
    [
        [{"name": "llama3"}],
        {"models": "llama3"},
        {"models": None},
        {"data": [{"id": "an OpenAI list on Ollama's port"}]},
        "models",
        None,
    ],
)
async def test_json_of_another_shape_is_not_found(serve, body):
    port = serve(body)

    assert await probe_local_servers([ollama(port)], timeout_s=TIMEOUT_S) == []


@pytest.mark.asyncio
async def test_absurdly_nested_json_is_not_found(serve):
    port = serve(b"[" * 200_000 + b"]" * 200_000)

    assert await probe_local_servers([ollama(port)], timeout_s=2.0) == []


@pytest.mark.asyncio
async def test_ollama_shape_on_an_openai_port_is_not_found(serve):
    port = serve(OLLAMA_TAGS, path="/v1/models")

    assert await probe_local_servers([lm_studio(port)], timeout_s=TIMEOUT_S) == []


@pytest.mark.asyncio
async def test_a_server_with_no_models_is_found_with_an_empty_list(serve):
    port = serve({"models": []})

    servers = await probe_local_servers([ollama(port)], timeout_s=TIMEOUT_S)

    assert [s.models for s in servers] == [[]]


@pytest.mark.asyncio
async def test_a_server_that_never_answers_is_given_up_within_the_timeout(silent_port):
    started = time.perf_counter()

    servers = await probe_local_servers([ollama(silent_port)], timeout_s=TIMEOUT_S)

    assert servers == []
    assert time.perf_counter() - started < TIMEOUT_S + 0.5


@pytest.mark.asyncio
async def test_probes_run_at_the_same_time(silent_port, serve, openai_server):
    """Three hung servers and two live ones take one timeout, not three."""
    targets = [
        ollama(silent_port),
        lm_studio(silent_port),
        ollama(serve(OLLAMA_TAGS)),
        ProbeTarget("llama.cpp server", ProviderKind.OPENAI_COMPATIBLE, silent_port, "/v1/models"),
        lm_studio(openai_server.port),
    ]
    started = time.perf_counter()

    servers = await probe_local_servers(targets, timeout_s=TIMEOUT_S)

    assert time.perf_counter() - started < TIMEOUT_S + 0.5
    assert [s.kind for s in servers] == [ProviderKind.OLLAMA, ProviderKind.OPENAI_COMPATIBLE]


@pytest.mark.asyncio
async def test_odd_model_lists_are_capped_and_cleaned(serve):
    models: list[Any] = [
        {"name": "x" * (MAX_MODEL_NAME + 1)},
        {"name": 42},
        "not an object",
        {"size": 1},
        {"name": ""},
        {"name": "bad\nname"},
        {"name": "llama3.2:latest"},
        {"name": "llama3.2:latest"},
        {"model": "only-model-key:1b"},
        *({"name": f"model-{i}"} for i in range(3 * MAX_MODELS)),
    ]
    port = serve({"models": models})

    (server,) = await probe_local_servers([ollama(port)], timeout_s=TIMEOUT_S)

    assert len(server.models) == MAX_MODELS
    assert server.models[:3] == ["llama3.2:latest", "only-model-key:1b", "model-0"]
    assert all(len(m) <= MAX_MODEL_NAME for m in server.models)


@pytest.mark.asyncio
async def test_a_huge_reply_is_not_read_to_the_end(serve):
    port = serve({"models": [{"name": "m" * 100}] * 40_000})

    assert await probe_local_servers([ollama(port)], timeout_s=2.0) == []


@pytest.mark.asyncio
async def test_a_proxy_in_the_environment_is_not_used(monkeypatch, serve):
    port = serve(OLLAMA_TAGS)
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    servers = await probe_local_servers([ollama(port)], timeout_s=TIMEOUT_S)

    assert [s.name for s in servers] == ["Ollama"]


@pytest.mark.asyncio
async def test_a_bad_host_or_no_target_does_not_raise():
    assert (
        await probe_local_servers([ollama(11434)], timeout_s=TIMEOUT_S, host="no such host") == []
    )
    assert await probe_local_servers([], timeout_s=TIMEOUT_S) == []


def test_importing_the_probe_does_not_import_httpx():
    code = "import sys, mangaba_desktop.core.providers.probe; print('httpx' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert result.stdout.strip() == "False"


# -- turning a found server into a provider ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "expected_id"),
    [
        ("Ollama", ProviderKind.OLLAMA, "ollama"),
        ("LM Studio", ProviderKind.OPENAI_COMPATIBLE, "lm-studio"),
        ("llama.cpp server", ProviderKind.OPENAI_COMPATIBLE, "llama-cpp"),
        ("My Odd Server!", ProviderKind.OPENAI_COMPATIBLE, "my-odd-server"),
    ],
)
def test_provider_for_a_found_server(name, kind, expected_id):
    server = FoundServer(kind, name, "http://127.0.0.1:1234/v1", ["a", "b"])

    provider = provider_for(server, Settings())

    assert provider.id == expected_id
    assert (provider.kind, provider.name, provider.base_url, provider.models) == (
        kind,
        name,
        "http://127.0.0.1:1234/v1",
        ["a", "b"],
    )
    assert provider.is_local
    assert provider.models is not server.models


def test_provider_ids_stay_unique_as_servers_are_added():
    settings = Settings()
    for _ in range(3):
        provider = provider_for(found(), settings)
        settings = settings.model_copy(update={"providers": [*settings.providers, provider]})

    assert [p.id for p in settings.providers] == ["ollama", "ollama-2", "ollama-3"]
    settings.check()


def test_an_id_taken_by_a_provider_of_another_kind_is_not_reused():
    other = Provider(id="lm-studio", kind=ProviderKind.OPENAI, name="Mine")

    provider = provider_for(
        found("LM Studio", ProviderKind.OPENAI_COMPATIBLE), Settings(providers=[other])
    )

    assert provider.id == "lm-studio-2"


@pytest.mark.parametrize(
    ("base", "taken"),
    [
        ("x" * 60, ["x" * 40]),
        ("a" * 39, ["a" * 39, *(f"{'a' * 37}-{n}" for n in range(2, 10))]),
        (LOCAL_PROVIDER_ID, []),
        ("!!!", []),
    ],
)
def test_unique_ids_are_always_valid_provider_ids(base, taken):
    provider_id = unique_provider_id(base, taken)

    assert provider_id not in taken
    Provider(id=provider_id, kind=ProviderKind.OLLAMA, name="ok")  # validates the id


def test_already_configured_compares_addresses():
    server = FoundServer(
        ProviderKind.OPENAI_COMPATIBLE, "LM Studio", "http://127.0.0.1:1234/v1", []
    )
    mine = Provider(
        id="lms",
        kind=ProviderKind.OPENAI_COMPATIBLE,
        name="LMS",
        base_url="http://127.0.0.1:1234/v1/",
    )

    assert already_configured(server, Settings(providers=[mine]))
    assert not already_configured(server, Settings())
