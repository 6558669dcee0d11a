"""A small OpenAI-compatible server on 127.0.0.1 for provider tests.

It speaks ``POST /v1/chat/completions`` (whole replies and SSE streams) and ``GET /v1/models``
over a real socket, so litellm, retries, fallback, timeouts and the outbox are exercised the way
they meet a real endpoint. It also streams the way Google's Gemini API does
(``POST .../models/<model>:streamGenerateContent``, at :attr:`OpenAIServer.root_url`) and the
way Anthropic's Messages API does (``POST /v1/messages``, same address). The model name picks
the behaviour:

- ``echo`` (or any other name): streams ``reply`` word by word, then usage;
- ``rate-limit``: 429 with ``Retry-After: 0``; ``error-500``: 500; ``unauthorized``: 401;
- ``flaky-N``: 503 for the first N requests of that model, then like ``echo``;
- ``stall``: sends two pieces, then holds the stream open without a byte for ``stall_s``;
- ``cut``: sends two pieces, then closes the socket without the final chunk or ``[DONE]``
  (Gemini: without a ``finishReason``; Anthropic: without ``message_delta``/``message_stop``);
- ``prestall``: 200 and the stream's headers, then not a byte for ``stall_s`` (a model that took
  the request and went quiet before its first word);
- ``refuse-key``: 400 whose message repeats the request's ``Authorization`` header after
  ``refusal_padding`` characters (a provider that echoes what it refused);
- ``html``: 200 with an HTML page; ``garbage``: 200 ``text/event-stream`` of non-JSON lines.

A server built with ``api_key`` answers 401 to a request without that bearer key. A server whose
``gate`` is a ``threading.Event`` holds every chat request, before any answer, until the event
is set (or the server stops). Every request is recorded (model, messages, headers, arrival time)
for the test to inspect. ``start(port)`` listens on a chosen port (a model coming back where the
app last saw it).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    model: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float = 0.0
    """When it arrived (``time.monotonic()``)."""


@dataclass
class OpenAIServer:
    reply: str = "Hello from the test server."
    api_key: str | None = None
    stall_s: float = 30.0
    delay_s: float = 0.0
    """Pause before each streamed piece (a slow model)."""
    gate: threading.Event | None = None
    """When set to an event, chat requests are recorded, then wait for it before any answer."""
    refusal_padding: int = 0
    """Characters before the echoed ``Authorization`` header in ``refuse-key``'s message."""
    requests: list[Request] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    _server: _Server | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        """The address without ``/v1``: litellm's Gemini and Anthropic clients add their paths
        (``/models/...:streamGenerateContent``, ``/v1/messages``) to it."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> OpenAIServer:
        """Listen on ``port`` of 127.0.0.1 (0: a free one) and serve on a daemon thread."""
        handler = type("Handler", (_Handler,), {"owner": self})
        self._server = _Server(("127.0.0.1", port), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(0.05,),  # polls for shutdown this often: a test's teardown waits for it
            name="openai-test-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    """A burst of connections waits to be accepted instead of being dropped (and retried by
    the client a second later), so that a test's timings are the app's."""


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- routes --------------------------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._authorised():
            return
        if self.path.rstrip("/").endswith("/models"):
            models = ["echo", "echo-2"]
            self._json(
                200, {"object": "list", "data": [{"id": m, "object": "model"} for m in models]}
            )
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        path = self.path.partition("?")[0].rstrip("/")
        gemini = re.search(r"/models/([^/:]+):streamGenerateContent$", path)
        anthropic = path.endswith("/v1/messages")
        if not (gemini or anthropic or path.endswith("/chat/completions")):
            self._json(404, {"error": {"message": "not found"}})
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._json(400, {"error": {"message": "bad json"}})
            return
        model = gemini.group(1) if gemini else str(body.get("model", ""))
        owner = self.owner
        owner.requests.append(Request(model, body, dict(self.headers.items()), time.monotonic()))
        owner.counts[model] += 1
        if not self._held():
            return
        if gemini:
            self._stream_gemini(model, body)
            return
        if anthropic:
            self._stream_anthropic(model, body)
            return
        if not self._authorised():
            return
        if model == "refuse-key":
            sent = self.headers.get("Authorization") or ""
            message = "x" * owner.refusal_padding + f" The header {sent} was refused"
            self._json(400, {"error": {"message": message, "type": "invalid_request_error"}})
        elif model == "unauthorized":
            self._json(401, {"error": {"message": "Incorrect API key provided", "code": 401}})
        elif model == "rate-limit":
            self._json(429, {"error": {"message": "Rate limit reached"}}, {"Retry-After": "0"})
        elif model == "error-500":
            self._json(500, {"error": {"message": "The server had an error"}})
        elif model.startswith("flaky-") and owner.counts[model] <= int(model.split("-")[1]):
            self._json(503, {"error": {"message": "Service unavailable, try again"}})
        elif model == "html":
            page = b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"
            self._send(200, "text/html", page)
        elif model == "garbage":
            self._send(200, "text/event-stream", b"data: {not json\n\ndata: ???\n\n")
        elif body.get("stream"):
            self._stream(model, body)
        else:
            self._whole(model, body)

    # -- replies -------------------------------------------------------------------------------

    def _held(self) -> bool:
        """Wait for the gate, if any; False when the server stopped first."""
        gate = self.owner.gate
        while gate is not None and not gate.wait(0.05):
            if self.owner._stop.is_set():
                return False
        return True

    def _authorised(self) -> bool:
        key = self.owner.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._json(401, {"error": {"message": "Incorrect API key provided", "code": 401}})
        return False

    def _words(self) -> list[str]:
        words = self.owner.reply.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    def _usage(self, body: dict[str, Any]) -> dict[str, int]:
        prompt = _prompt_words(body)
        completion = len(self._words())
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _whole(self, model: str, body: dict[str, Any]) -> None:
        self._json(
            200,
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self.owner.reply},
                        "finish_reason": "stop",
                    }
                ],
                "usage": self._usage(body),
            },
        )

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True

    def _pieces(self, model: str) -> list[str] | None:
        """The words to stream for ``model``; None after holding a ``prestall`` stream."""
        if model == "prestall":
            self.owner._stop.wait(self.owner.stall_s)
            return None
        words = self._words()
        return words[:2] if model in ("stall", "cut") else words

    def _stream(self, model: str, body: dict[str, Any]) -> None:
        self._start_stream()
        words = self._pieces(model)
        if words is None:
            return
        try:
            for word in words:
                if self.owner.delay_s:
                    time.sleep(self.owner.delay_s)
                self._event(_chunk(model, {"content": word}))
            if model == "stall":
                self.owner._stop.wait(self.owner.stall_s)
                return
            if model == "cut":
                return
            self._event(_chunk(model, {}, finish_reason="stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = _chunk(model, None)
                usage["usage"] = self._usage(body)
                self._event(usage)
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _stream_gemini(self, model: str, body: dict[str, Any]) -> None:
        """Gemini's SSE: one candidate per piece; the last one has ``finishReason``."""
        self._start_stream()
        words = self._pieces(model)
        if words is None:
            return
        prompt = _prompt_words(body)
        try:
            for i, word in enumerate(words, 1):
                candidate: dict[str, Any] = {
                    "content": {"parts": [{"text": word}], "role": "model"},
                    "index": 0,
                }
                if i == len(words) and model != "cut":
                    candidate["finishReason"] = "STOP"
                usage = {
                    "promptTokenCount": prompt,
                    "candidatesTokenCount": i,
                    "totalTokenCount": prompt + i,
                }
                self._event({"candidates": [candidate], "usageMetadata": usage})
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _stream_anthropic(self, model: str, body: dict[str, Any]) -> None:
        """Anthropic's Messages SSE: named events; ``message_delta`` says why it stopped."""
        self._start_stream()
        words = self._pieces(model)
        if words is None:
            return
        message = {
            "id": "msg_test",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": _prompt_words(body), "output_tokens": 1},
        }
        block = {"type": "text", "text": ""}
        try:
            self._event({"type": "message_start", "message": message}, "message_start")
            start = {"type": "content_block_start", "index": 0, "content_block": block}
            self._event(start, "content_block_start")
            for word in words:
                delta = {"type": "text_delta", "text": word}
                piece = {"type": "content_block_delta", "index": 0, "delta": delta}
                self._event(piece, "content_block_delta")
            if model == "cut":
                return
            self._event({"type": "content_block_stop", "index": 0}, "content_block_stop")
            end = {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(words)},
            }
            self._event(end, "message_delta")
            self._event({"type": "message_stop"}, "message_stop")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _event(self, payload: dict[str, Any], name: str | None = None) -> None:
        named = f"event: {name}\n".encode() if name else b""
        self.wfile.write(named + b"data: " + json.dumps(payload).encode() + b"\n\n")
        self.wfile.flush()

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, "application/json", json.dumps(payload).encode(), headers)

    def _send(
        self, status: int, content_type: str, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


def _chunk(model: str, delta: dict[str, Any] | None, finish_reason: str | None = None) -> Any:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def _prompt_words(body: dict[str, Any]) -> int:
    """Words in the request's messages, in any of the three shapes (OpenAI's ``messages``,
    Gemini's ``contents`` of ``parts``, Anthropic's content blocks)."""

    def texts(value: Any) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list):
            return [t for item in value for t in texts(item)]
        if isinstance(value, dict):
            found = [value["text"]] if isinstance(value.get("text"), str) else []
            for key in ("content", "parts"):
                found += texts(value.get(key))
            return found
        return []

    messages = body.get("messages", body.get("contents", []))
    return sum(len(text.split()) for text in texts(messages))


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (for "connection refused")."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
