"""An API key lives in the OS keyring and nowhere else.

The whole app runs a conversation with a provider that needs a key (a real OpenAI-compatible
server on 127.0.0.1 that refuses requests without it), with the key in the real Secret Service.
The reply arrives, a request with a rejected key fails in plain words, the chat and the memory
are exported; then every file the app wrote (the database and its WAL, the log files, the
settings, the window state, the exports) is searched for the key's text: it is nowhere.
"""

from __future__ import annotations

import asyncio
import gc
import json
import secrets
from pathlib import Path

from mangaba_desktop.core import events, export
from mangaba_desktop.core.context.transfer import export_to_file
from mangaba_desktop.core.providers.secrets import KeyStore
from tests.helpers.app import running_app, until
from tests.helpers.openai_server import OpenAIServer
from tests.helpers.providers import configure, local_provider


def test_a_configured_key_is_used_but_never_written_anywhere(loop, tmp_path, default_keyring):
    key = "sk-test-" + secrets.token_hex(16)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    exports = tmp_path / "exports"
    exports.mkdir()
    server = OpenAIServer(reply="The answer is forty-two.", api_key=key).start()
    try:
        secure = local_provider(
            server.base_url, "echo", "unauthorized", id="secure", name="Secure server", timeout_s=10
        )
        configure(data_dir, secure, default_model="secure/echo")
        assert KeyStore(default_keyring).set("secure", key).value == "keyring"

        async def scenario() -> None:
            async with running_app(data_dir) as app:
                pane = app.pane
                finished = app.reply_finished()
                await pane.send("What is the answer?")
                reply = (await asyncio.wait_for(finished, 30))["message"]
                assert reply.status == "complete"
                assert reply.content == "The answer is forty-two."
                assert reply.provider == "secure" and reply.cost_usd == 0.0

                # The same provider with a model the server refuses: a sentence, no key.
                conversation = pane.current
                await app.application.store.set_model(conversation.id, "secure/unauthorized")
                finished = app.next_event(
                    events.MESSAGE_FINISHED, lambda p: p["message"].status == "error"
                )
                await until(lambda: not app.application.chat.is_streaming(conversation.id))
                await pane.send("And again?")
                failed = (await asyncio.wait_for(finished, 30))["message"]
                assert failed.error == "Key rejected by Secure server."

                runtime = app.application.runtime
                chat, messages = await runtime.conversations.export(conversation.id)
                (exports / "chat.md").write_text(export.to_markdown(chat, messages))
                (exports / "chat.json").write_text(export.to_json(chat, messages))
                await export_to_file(runtime.contexts, exports / "memory.json")

        loop.run_until_complete(scenario())
        gc.collect()
    finally:
        server.stop()

    # The key was really used: the server saw it on every request.
    assert server.requests and all(
        {k.lower(): v for k, v in r.headers.items()}.get("authorization") == f"Bearer {key}"
        for r in server.requests
    )
    memory = json.loads((exports / "memory.json").read_text())
    assert memory["contexts"], "the export holds the remembered turn"
    written = [p for p in (*data_dir.rglob("*"), *exports.rglob("*")) if p.is_file()]
    names = {p.name for p in written}
    assert {"mangaba.sqlite3", "settings.json", "mangaba-desktop.log"} <= names
    assert any("Key rejected" in p.read_text(errors="replace") for p in _logs(data_dir))
    for path in written:
        data = path.read_bytes()
        assert key.encode() not in data, f"the key is in {path.relative_to(tmp_path)}"
        assert key.encode("utf-16-le") not in data, f"the key is in {path}"
    # ...and it is still in the keyring, where it belongs.
    assert default_keyring.get_password("mangaba-desktop", "secure") == key


def _logs(directory: Path) -> list[Path]:
    return sorted((directory / "logs").glob("mangaba-desktop.log*"))
