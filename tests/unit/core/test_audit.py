"""The audit log: keys, settings, exports and imports, and the A2A server are recorded with
their time, actor and outcome, in order, append-only, across restarts, and never with a secret
(the raw bytes of the database file and its WAL are searched for them)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import socket
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import keyring.errors
import pytest
import pytest_asyncio

from mangaba_desktop.core.agent import Runtime
from mangaba_desktop.core.audit import (
    MIN_RETENTION_DAYS,
    Action,
    AuditLog,
    RepeatedRefusals,
)
from mangaba_desktop.core.context import ContextStore
from mangaba_desktop.core.context.transfer import InvalidImport, export_to_file, import_file
from mangaba_desktop.core.export import export_conversation
from mangaba_desktop.core.network.a2a_server import A2AServer
from mangaba_desktop.core.providers.completions import Completions
from mangaba_desktop.core.providers.secrets import SERVICE, InvalidKey, KeyStore
from mangaba_desktop.core.settings import Settings, SettingsStore
from mangaba_desktop.core.store import AgentStore, ConversationStore, Database, Role
from tests.helpers.db import execute_file, query_file
from tests.helpers.openai_server import OpenAIServer
from tests.helpers.providers import local_provider, settings_with
from tests.helpers.sources import ScriptedSource

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

KEY = "sk-audit-" + uuid.uuid4().hex
"""A key of this run only, so that finding it in a file cannot be a leftover."""
WRONG_KEY = "sk-audit-wrong-" + uuid.uuid4().hex[:12]
TOKEN = "audit-token-" + uuid.uuid4().hex
SEND = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage"}
MESSAGE = {"message": {"role": "ROLE_USER", "messageId": "m1", "parts": [{"text": "Olá?"}]}}


def raw_bytes(db_path: Path) -> bytes:
    """The database file and its write-ahead log, as they are on disk."""
    wal = Path(f"{db_path}-wal")
    return db_path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def rows(db_path: Path, where: str = "1", params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """(actor, action, target, outcome, detail) of the entries, oldest first."""
    return query_file(
        db_path,
        f"SELECT actor, action, target, outcome, detail FROM audit_log WHERE {where} ORDER BY id",
        params,
    )


@pytest.fixture
def audit(database: Database) -> AuditLog:
    return AuditLog(database)


@pytest.fixture
def provider_id(secret_service: Any) -> Iterator[str]:
    """A provider id of this test's own; its key is taken out of the shared keyring after."""
    chosen = f"audit-{uuid.uuid4().hex[:8]}"
    yield chosen
    with contextlib.suppress(keyring.errors.PasswordDeleteError):
        secret_service.delete_password(SERVICE, chosen)


# -- keys ------------------------------------------------------------------------------------------


async def test_a_key_added_tested_and_removed_is_recorded_and_is_nowhere_in_the_file(
    database, db_path, tmp_path, secret_service, provider_id
):
    with OpenAIServer(api_key=KEY) as server:
        provider = local_provider(server.base_url, "echo", id=provider_id, timeout_s=10)
        store = SettingsStore(tmp_path)
        store.update(settings_with(provider))
        keys = KeyStore(secret_service)
        completions = Completions(settings=store, keys=keys)
        # The app's wiring: the runtime hands its audit log to the settings, models and keys.
        runtime = Runtime(database, completions, settings=store)
        try:
            assert keys.audit is runtime.audit and completions.audit is runtime.audit
            with pytest.raises(InvalidKey):
                keys.set(provider_id, f"{KEY} {KEY}")  # pasted twice: refused, not saved
            keys.set(provider_id, f"  {KEY}\n")
            saved = await completions.test_key(provider, None)  # the saved key
            wrong = await completions.test_key(provider, WRONG_KEY)  # one typed, not saved
            keys.delete(provider_id)
            # A careless caller: the key the store has seen is still taken out.
            runtime.audit.record("key.tested", target=provider_id, detail=f"sent {KEY} twice")
            await runtime.audit.flush()
            on_disk = raw_bytes(db_path)
        finally:
            await completions.close()

    assert saved.ok and not wrong.ok
    assert secret_service.get_password(SERVICE, provider_id) is None
    entries = rows(db_path, "action LIKE 'key.%'")
    assert [(a, act, t, o) for a, act, t, o, _ in entries] == [
        ("user", "key.added", provider_id, "refused"),
        ("user", "key.added", provider_id, "ok"),
        ("user", "key.tested", provider_id, "ok"),
        ("user", "key.tested", provider_id, "failed"),
        ("user", "key.removed", provider_id, "ok"),
        ("app", "key.tested", provider_id, "ok"),
    ]
    details = [detail for *_, detail in entries]
    assert "spaces" in details[0]
    assert "Secret Service" in details[1]
    assert "the key works" in details[2]
    assert "Key rejected" in details[3]
    assert details[5] == "sent [redacted] twice"
    for secret in (KEY, WRONG_KEY):
        assert secret.encode() not in on_disk
        assert secret.encode() not in raw_bytes(db_path)
        assert secret.encode("utf-16-le") not in on_disk


async def test_credential_shaped_text_and_bad_names_are_refused(audit, db_path):
    with pytest.raises(ValueError, match="action name"):
        audit.record("Key Added")
    with pytest.raises(ValueError, match="maybe"):
        audit.record("key.added", outcome="maybe")
    token = "Zq8" + uuid.uuid4().hex + "Xy9"  # random-looking, not known to any key store
    await audit.append(
        "settings.changed",
        target="https://bob:hunter22@models.example/v1",
        detail=f"Authorization: Bearer {token}\nand api_key=abc123 and {token}",
    )

    [(_actor, _action, target, _outcome, detail)] = rows(db_path)
    assert target == "https://[redacted]@models.example/v1"
    assert detail == "Authorization: Bearer [redacted] and api_key=[redacted] and [redacted]"
    assert b"hunter22" not in raw_bytes(db_path)
    assert token.encode() not in raw_bytes(db_path)


# -- settings -----------------------------------------------------------------------------------


async def test_a_settings_change_names_its_fields_and_never_their_text(audit, db_path, tmp_path):
    store = SettingsStore(tmp_path, audit=audit)
    secret_prompt = "Never reveal the launch code 7788"
    lan = local_provider("http://bob:hunter22@192.168.1.5:1234/v1", "echo", id="lan")

    store.update(Settings(a2a_port=9000, a2a_server=True, system_prompt=secret_prompt))
    store.update(store.settings)  # nothing changed: nothing recorded
    store.update(store.settings.model_copy(update={"providers": [lan]}), actor="app")
    await audit.flush()

    first, second = rows(db_path)
    assert first[:4] == ("user", "settings.changed", "system_prompt, a2a_server, a2a_port", "ok")
    assert "a2a_server = true" in first[4] and "a2a_port = 9000" in first[4]
    assert "system_prompt" in first[4]
    assert second[:3] == ("app", "settings.changed", "providers")
    assert "added lan" in second[4]
    on_disk = raw_bytes(db_path)
    assert secret_prompt.encode() not in on_disk
    assert b"hunter22" not in on_disk


# -- exports and imports ------------------------------------------------------------------------


async def test_exports_and_imports_are_recorded_with_their_outcome(
    audit, database, db_path, bus, tmp_path
):
    contexts = ContextStore(database, bus)
    agent = await AgentStore(database, bus).default()
    await contexts.add(agent.id, "The user lives in Recife", "user_profile")
    conversations = ConversationStore(database, bus)
    chat = await conversations.create(title="Trip")
    await conversations.add_message(chat.id, Role.USER, "Where is Olinda?")

    memory = tmp_path / "memory.json"
    assert await export_to_file(contexts, memory, audit=audit) == 1
    with pytest.raises(FileNotFoundError):
        await export_to_file(contexts, tmp_path / "missing" / "memory.json", audit=audit)
    await import_file(contexts, memory, audit=audit)
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "something else"}')
    with pytest.raises(InvalidImport):
        await import_file(contexts, broken, audit=audit)
    await export_conversation(conversations, chat.id, tmp_path / "trip.md", "md", audit=audit)
    written = await audit.export(tmp_path / "audit.csv", actor="user")
    await audit.flush()

    assert [entry[1:4] for entry in rows(db_path)] == [
        ("data.exported", "contexts", "ok"),
        ("data.exported", "contexts", "failed"),
        ("data.imported", "contexts", "ok"),
        ("data.imported", "contexts", "refused"),
        ("data.exported", f"conversation {chat.id}", "ok"),
        ("data.exported", "audit log", "ok"),
    ]
    details = [entry[4] for entry in rows(db_path)]
    assert details[0] == f"1 contexts to {memory}."
    assert details[2].startswith("0 contexts added, 1 already there")
    assert "not a contexts export" in details[3]
    assert details[5] == f"5 entries as CSV to {tmp_path / 'audit.csv'}."
    assert written == 5
    with (tmp_path / "audit.csv").open(newline="", encoding="utf-8") as exported:
        table = list(csv.DictReader(exported))
    assert [r["action"] for r in table] == ["data.exported"] * 2 + ["data.imported"] * 2 + [
        "data.exported"
    ]
    assert [int(r["id"]) for r in table] == sorted(int(r["id"]) for r in table)


async def test_a_json_export_of_one_outcome_holds_those_entries(audit, tmp_path):
    for outcome in ("ok", "refused", "ok", "failed"):
        audit.record("a2a.refused", actor="a2a:10.0.0.9", outcome=outcome, detail="=cmd|' /C")
    path = tmp_path / "refused.json"

    assert await audit.export(path, "json", outcome="refused") == 1

    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["format"] == "mangaba-desktop.audit-log"
    [entry] = document["entries"]
    assert (entry["actor"], entry["outcome"], entry["detail"]) == (
        "a2a:10.0.0.9",
        "refused",
        "=cmd|' /C",
    )
    # In CSV the same detail cannot become a spreadsheet formula.
    await audit.export(tmp_path / "all.csv", action="a2a.refused")
    with (tmp_path / "all.csv").open(newline="", encoding="utf-8") as exported:
        assert {r["detail"] for r in csv.DictReader(exported)} == {"'=cmd|' /C"}


# -- order, restarts, append-only ---------------------------------------------------------------


async def test_entries_are_ordered_and_survive_reopening(database, db_path):
    audit = AuditLog(database)
    for number in range(5):
        audit.record("key.added", target=f"provider-{number}")
    await audit.flush()
    database.close()

    again = Database(db_path)
    try:
        reopened = AuditLog(again)
        await reopened.append("key.removed", target="provider-0")
        newest_first = await reopened.entries()
        only_added = await reopened.entries(action="key.added", limit=2)
        assert await reopened.count() == 6
        assert await reopened.actions() == ["key.added", "key.removed"]
    finally:
        again.close()

    assert [e.target for e in newest_first] == ["provider-0"] + [
        f"provider-{n}" for n in (4, 3, 2, 1, 0)
    ]
    ids = [e.id for e in newest_first]
    assert ids == sorted(ids, reverse=True)
    times = [e.time for e in newest_first]
    assert times == sorted(times, reverse=True)
    assert [e.target for e in only_added] == ["provider-4", "provider-3"]


async def test_the_table_refuses_changes_and_young_deletes_and_prune_keeps_recent_entries(
    audit, db_path
):
    await audit.append("key.added", target="openai")
    now = time.time()
    for days in (400, 40):
        execute_file(
            db_path,
            "INSERT INTO audit_log (time, actor, action, target, outcome, detail) "
            "VALUES (?, 'user', 'key.added', ?, 'ok', '')",
            (now - days * 86400, f"{days} days ago"),
        )

    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        execute_file(db_path, "UPDATE audit_log SET outcome = 'refused'")
    with pytest.raises(sqlite3.IntegrityError, match="at least 30 days"):
        execute_file(db_path, "DELETE FROM audit_log")
    with pytest.raises(ValueError, match="at least 30 days"):
        await audit.prune(MIN_RETENTION_DAYS - 1)
    assert await audit.prune() == 1
    await audit.flush()

    assert [(target, action) for _, action, target, *_ in rows(db_path)] == [
        ("openai", "key.added"),
        ("40 days ago", "key.added"),
        ("audit log", "audit.pruned"),
    ]


async def test_an_entry_recorded_after_the_database_closed_fails_at_once(database):
    audit = AuditLog(database)
    database.close()

    with pytest.raises(RuntimeError, match="closed"):
        await asyncio.wait_for(audit.append("key.added"), 5)


# -- the A2A server -------------------------------------------------------------------------------


def this_computers_address() -> str | None:
    """An IPv4 address of this computer other than loopback, that it can connect to itself."""
    found: list[str] = []
    with contextlib.suppress(OSError):
        found += [i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    for probe in ("192.0.2.1", "10.255.255.255"):
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))  # UDP: picks the outgoing address, sends nothing
            found.append(s.getsockname()[0])
    for address in found:
        if not address.startswith("127.") and address != "0.0.0.0":
            return str(address)
    return None


@pytest_asyncio.fixture
async def runtime(tmp_path) -> AsyncIterator[Runtime]:
    opened = await Runtime.open(tmp_path, completions=ScriptedSource(["Bom ", "dia!"]))
    yield opened
    await opened.close()


async def post(http: httpx.AsyncClient, url: str, token: str | None = None) -> httpx.Response:
    headers = {"A2A-Version": "1.0"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return await http.post(url, json={**SEND, "params": MESSAGE}, headers=headers)


async def test_a_server_beyond_this_computer_audits_refusals_once_and_remote_tasks(runtime):
    address = this_computers_address()
    if address is None:
        pytest.skip("this computer has no address but loopback to be called on")
    db_path = runtime.database.path
    server = A2AServer(runtime, host="0.0.0.0", token=TOKEN)
    await server.start(actor="user")
    port = urlsplit(server.url).port
    remote = f"http://{address}:{port}/"
    try:
        async with httpx.AsyncClient(timeout=20) as http:
            assert (await post(http, remote)).status_code == 401
            for _ in range(4):  # a client retrying with a wrong token
                assert (await post(http, remote, "wrong-token-4417")).status_code == 401
            await runtime.audit.flush()
            refused_while_running = rows(db_path, "action = 'a2a.refused'")
            answered = await post(http, remote, TOKEN)
            local = await post(http, f"http://127.0.0.1:{port}/", TOKEN)
    finally:
        await server.stop()
    await runtime.audit.flush()

    assert answered.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    assert local.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    caller = f"a2a:{address}"
    # The first refusal at once; the four retries as one entry, when the server stopped.
    assert refused_while_running == [
        (caller, "a2a.refused", "/", "refused", "No bearer token (401).")
    ]
    entries = rows(db_path, "action LIKE 'a2a.%'")
    assert [e[:4] for e in entries] == [
        ("user", "a2a.started", f"0.0.0.0:{port}", "ok"),
        ("user", "a2a.exposed", f"0.0.0.0:{port}", "ok"),
        (caller, "a2a.refused", "/", "refused"),
        (caller, "a2a.request", server.primary, "ok"),  # the one from 127.0.0.1 is not
        (caller, "a2a.refused", "/", "refused"),
        ("app", "a2a.stopped", f"0.0.0.0:{port}", "ok"),
    ]
    assert entries[3][4] == "Skill “chat”: answered."
    assert entries[4][4].startswith("4 more refused in ")
    assert entries[4][4].endswith("the last: Wrong bearer token (401).")
    on_disk = raw_bytes(db_path)
    assert TOKEN.encode() not in on_disk
    assert b"wrong-token-4417" not in on_disk


async def test_a_loopback_server_audits_requests_refused_for_their_token(runtime):
    server = A2AServer(runtime, token=TOKEN)
    await server.start()
    try:
        async with httpx.AsyncClient(timeout=20) as http:
            assert (await post(http, server.url, "nope")).status_code == 401
            answered = await post(http, server.url, TOKEN)
    finally:
        await server.stop()
    await runtime.audit.flush()

    assert answered.status_code == 200
    entries = rows(runtime.database.path, "action LIKE 'a2a.%'")
    assert [e[:2] for e in entries] == [
        ("app", "a2a.started"),
        ("a2a:127.0.0.1", "a2a.refused"),
        ("app", "a2a.stopped"),
    ]
    assert entries[1][3:] == ("refused", "Wrong bearer token (401).")


async def test_refusals_from_many_callers_are_bounded_and_none_is_lost(audit, db_path):
    refusals = RepeatedRefusals(audit, Action.A2A_REFUSED, max_actors=2)
    for caller in ("a2a:10.0.0.1", "a2a:10.0.0.2", "a2a:10.0.0.1", "a2a:10.0.0.3"):
        refusals.refused(caller, "/", "No bearer token (401).")
    refusals.flush()
    await audit.flush()

    # 10.0.0.1 was forgotten to make room for 10.0.0.3, its one retry recorded then.
    assert [(actor, detail.split(" in ")[0]) for actor, _, _, _, detail in rows(db_path)] == [
        ("a2a:10.0.0.1", "No bearer token (401)."),
        ("a2a:10.0.0.2", "No bearer token (401)."),
        ("a2a:10.0.0.3", "No bearer token (401)."),
        ("a2a:10.0.0.1", "1 more refused"),
    ]
