"""The request pipeline with agents and their memory: what each prompt holds, what each turn
leaves in the context store, and the commands, limits and upkeep around it.

A scripted source stands in for the remote model and records every prompt; the chat history,
the context store and the database are real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from mangaba_desktop.core import events, prompts
from mangaba_desktop.core.chat import ChatService
from mangaba_desktop.core.context import ContextFilter, ContextStore
from mangaba_desktop.core.context.compression import SUMMARY_INSTRUCTION
from mangaba_desktop.core.providers.completions import LOCAL_PROVIDER
from mangaba_desktop.core.ratelimit import RateLimited, RateLimiter
from mangaba_desktop.core.store import ContextType, Message, MessageStatus, Priority
from mangaba_desktop.core.validation import InvalidMessage
from tests.helpers.events import EventLog
from tests.helpers.sources import ScriptedSource

pytestmark = pytest.mark.asyncio

ANA_PERSONA = "Você é Ana, uma assistente que responde em português, com clareza."
SMALL_MODEL = f"{LOCAL_PROVIDER}/tiny-window"
"""A local model name, so that the prompt budget follows ``prompts.LOCAL_CONTEXT_WINDOW``."""

WEATHER_TURNS = [
    (
        f"Pergunta {n}: como fica o clima de Lisboa amanhã de manhã, e devo levar guarda-chuva "
        f"para o passeio pela Baixa e pelo Chiado? Quero detalhes sobre vento e sol, número {n}.",
        f"Resposta {n}: amanhã em Lisboa haverá sol entre nuvens, vento fraco de noroeste e "
        f"pouca probabilidade de chuva; um casaco leve basta para o passeio, número {n}.",
    )
    for n in range(8)
]


@pytest_asyncio.fixture
async def ana(agents):
    return await agents.create("Ana", ANA_PERSONA, agent_id="agent_ana")


@pytest_asyncio.fixture
async def source() -> ScriptedSource:
    return ScriptedSource(["ok"])


@pytest_asyncio.fixture
async def make_chat(
    store, bus, agents, contexts, source
) -> AsyncIterator[Callable[..., ChatService]]:
    """ChatServices on the scripted source; each is shut down, its upkeep done, at the end."""
    made: list[ChatService] = []

    def make(**options: Any) -> ChatService:
        options.setdefault("agents", agents)
        options.setdefault("contexts", contexts)
        chat = ChatService(store, source, bus, **options)
        made.append(chat)
        return chat

    yield make
    for chat in made:
        await chat.wait_upkeep()
        await chat.shutdown()


@pytest_asyncio.fixture
async def chat(make_chat) -> ChatService:
    return make_chat()


async def turn(
    chat: ChatService,
    source: ScriptedSource,
    conversation_id: int,
    text: str,
    reply: str = "ok",
    **options: Any,
) -> Message:
    """One whole turn: send, let the reply stream to its end, let the upkeep finish."""
    source.pieces = [reply]
    await chat.send(conversation_id, text, **options)
    done = await chat.wait(conversation_id)
    await chat.wait_upkeep()
    assert done is not None
    return done


def system_text(request: dict[str, Any]) -> str:
    first = request["messages"][0]
    return first["content"] if first["role"] == "system" else ""


def memory_section(request: dict[str, Any]) -> str:
    """The memory part of a prompt's system message ("" when there is none)."""
    system = system_text(request)
    if prompts.MEMORY_HEADER not in system:
        return ""
    return system.split(prompts.MEMORY_HEADER, 1)[1]


def chat_messages(request: dict[str, Any]) -> list[dict[str, str]]:
    return [m for m in request["messages"] if m["role"] != "system"]


async def session_contexts(contexts: ContextStore, session_id: str, **where: Any):
    return await contexts.page(ContextFilter(session_id=session_id, **where), descending=False)


# -- the headline demo --------------------------------------------------------------------------


async def test_the_name_comes_back_from_memory_after_it_left_the_history(
    chat, source, store, contexts, ana, database, monkeypatch
):
    """The headline demo. Only the turns in the prompt's window are left out of retrieval (the
    turn that left the window must come back as memory), regression of 6e7078e."""
    monkeypatch.setattr(prompts, "LOCAL_CONTEXT_WINDOW", 1200)
    conversation = await store.create(agent_id=ana.id)
    told = await turn(
        chat,
        source,
        conversation.id,
        "Meu nome é João",
        "Prazer em conhecê-lo, João!",
        model=SMALL_MODEL,
    )
    [name_context] = await session_contexts(contexts, conversation.session_id)
    for question, answer in WEATHER_TURNS[:6]:
        await turn(chat, source, conversation.id, question, answer, model=SMALL_MODEL)
    # The first turn has left the history the model sees.
    assert not any("João" in m["content"] for m in chat_messages(source.requests[-1]))

    done = await turn(
        chat,
        source,
        conversation.id,
        "Qual é o meu nome?",
        "Seu nome é João.",
        model=SMALL_MODEL,
    )

    request = source.requests[-1]
    assert system_text(request).startswith(ANA_PERSONA)
    memory = memory_section(request)
    remembered = "User: Meu nome é João\nAssistant: Prazer em conhecê-lo, João!"
    assert f"[1] (conversation) {remembered}" in memory
    assert "Qual é o meu nome" not in memory
    assert chat_messages(request)[-1] == {"role": "user", "content": "Qual é o meu nome?"}
    assert done.used_context_ids == [name_context.id]
    assert name_context.source_message_id == told.id
    await database.write(lambda s: None)
    assert (await contexts.get(name_context.id)).access_count == 1


async def test_a_turn_still_in_the_history_is_not_repeated_as_memory(
    chat, source, store, contexts, ana
):
    conversation = await store.create(agent_id=ana.id)
    await turn(chat, source, conversation.id, "Meu nome é João", "Prazer, João!")

    done = await turn(chat, source, conversation.id, "Qual é o meu nome?", "João.")

    request = source.requests[-1]
    assert request["messages"] == [
        {"role": "system", "content": ANA_PERSONA},
        {"role": "user", "content": "Meu nome é João"},
        {"role": "assistant", "content": "Prazer, João!"},
        {"role": "user", "content": "Qual é o meu nome?"},
    ]
    assert done.used_context_ids == []


async def test_agent_knowledge_reaches_the_prompt_of_any_conversation(
    chat, source, store, contexts, ana, bus, database
):
    knowledge = await contexts.add(
        ana.id, "O nome do usuário é João e ele mora em Braga.", priority=Priority.HIGH
    )
    await contexts.add(ana.id, "Receita de bolo de laranja.", priority=Priority.HIGH)
    conversation = await store.create(agent_id=ana.id)
    log = EventLog(bus)

    done = await turn(chat, source, conversation.id, "Qual é o meu nome?", "João.")

    memory = memory_section(source.requests[-1])
    assert memory == "\n[1] (knowledge) O nome do usuário é João e ele mora em Braga."
    assert done.used_context_ids == [knowledge.id]
    [retrieved] = log.payloads(events.CONTEXTS_RETRIEVED)
    assert (retrieved["message_id"], retrieved["context_ids"]) == (done.id, [knowledge.id])
    assert log.payloads(events.AI_REQUEST_COMPLETED)[0]["context_ids"] == [knowledge.id]
    await database.write(lambda s: None)
    assert (await contexts.get(knowledge.id)).access_count == 1


async def test_another_conversation_does_not_see_this_one(chat, source, store, contexts, ana):
    first = await store.create(agent_id=ana.id)
    second = await store.create(agent_id=ana.id)
    await turn(chat, source, first.id, "Meu nome é João", "Prazer, João!")

    done = await turn(chat, source, second.id, "Qual é o meu nome?", "Não sei.")

    assert memory_section(source.requests[-1]) == ""
    assert done.used_context_ids == []


async def test_the_question_is_never_in_its_own_memory(chat, source, store, contexts, ana):
    await contexts.add(ana.id, "Portugal: a capital é Lisboa, a moeda é o euro.")
    conversation = await store.create(agent_id=ana.id)
    question = "Qual é a capital de Portugal?"

    await turn(chat, source, conversation.id, question, "Lisboa.")
    await chat.regenerate(conversation.id)
    await chat.wait(conversation.id)
    await chat.wait_upkeep()
    history = await store.page(conversation.id)
    await chat.edit_and_resend(conversation.id, history[0].id, question)
    await chat.wait(conversation.id)
    await chat.wait_upkeep()

    assert len(source.requests) == 3
    for request in source.requests:
        memory = memory_section(request)
        assert "Portugal: a capital é Lisboa" in memory
        assert f"User: {question}" not in memory
        assert "{" not in memory and "'content'" not in memory  # text, not a raw record


# -- what a turn leaves behind -----------------------------------------------------------------


async def test_each_turn_is_stored_as_a_context_of_its_session(chat, source, store, contexts, ana):
    conversation = await store.create(agent_id=ana.id)

    first = await turn(chat, source, conversation.id, "Gosto de xadrez.", "Ótimo!")
    second = await turn(chat, source, conversation.id, "//start é um comando?", "Não.")

    stored = await session_contexts(contexts, conversation.session_id)
    assert [(c.content, c.source_message_id, c.context_type, c.agent_id) for c in stored] == [
        ("User: Gosto de xadrez.\nAssistant: Ótimo!", first.id, "conversation", ana.id),
        ("User: /start é um comando?\nAssistant: Não.", second.id, "conversation", ana.id),
    ]
    assert all(c.priority == Priority.LOW and not c.archived for c in stored)


async def test_a_failed_or_stopped_reply_is_not_remembered(store, bus, agents, contexts, ana):
    failing = ScriptedSource(["meio "], error=ConnectionError("connection reset"))
    chat = ChatService(store, failing, bus, agents=agents, contexts=contexts)
    conversation = await store.create(agent_id=ana.id)

    await chat.send(conversation.id, "Uma pergunta")
    done = await chat.wait(conversation.id)
    await chat.wait_upkeep()

    assert done.status == MessageStatus.ERROR
    assert await session_contexts(contexts, conversation.session_id) == []


async def test_regenerate_replaces_the_turn_context(chat, source, store, contexts, ana):
    conversation = await store.create(agent_id=ana.id)
    await turn(chat, source, conversation.id, "Conte uma piada", "Primeira piada.")

    source.pieces = ["Segunda piada."]
    await chat.regenerate(conversation.id)
    second = await chat.wait(conversation.id)
    await chat.wait_upkeep()

    stored = await session_contexts(contexts, conversation.session_id)
    assert [(c.content, c.source_message_id) for c in stored] == [
        ("User: Conte uma piada\nAssistant: Segunda piada.", second.id)
    ]


async def test_edit_and_resend_replaces_the_turn_contexts(chat, source, store, contexts, ana):
    conversation = await store.create(agent_id=ana.id)
    await turn(chat, source, conversation.id, "Primeira pergunta", "Primeira resposta")
    await turn(chat, source, conversation.id, "Segunda pergunta", "Segunda resposta")
    first_question = (await store.page(conversation.id))[0]

    source.pieces = ["Resposta nova"]
    await chat.edit_and_resend(conversation.id, first_question.id, "Pergunta editada")
    await chat.wait(conversation.id)
    await chat.wait_upkeep()

    stored = await session_contexts(contexts, conversation.session_id)
    assert [c.content for c in stored] == ["User: Pergunta editada\nAssistant: Resposta nova"]


async def test_deleting_a_conversation_deletes_what_its_session_remembered(
    chat, source, store, contexts, ana
):
    doomed = await store.create(agent_id=ana.id)
    kept = await store.create(agent_id=ana.id)
    knowledge = await contexts.add(ana.id, "Conhecimento geral da Ana.")
    await turn(chat, source, doomed.id, "Segredo do apagado", "Guardado.")
    await turn(chat, source, kept.id, "Segredo do mantido", "Guardado.")

    await store.delete(doomed.id)

    left = await contexts.page(ContextFilter(agent_id=ana.id))
    assert {c.session_id for c in left} == {kept.session_id, None}
    assert knowledge.id in {c.id for c in left}
    assert await contexts.count(ContextFilter(session_id=doomed.session_id)) == 0
    assert await contexts.count(ContextFilter(text="apagado")) == 0


# -- personas ----------------------------------------------------------------------------------


async def test_the_agent_persona_is_the_system_prompt(make_chat, source, store, agents, ana):
    bruno = await agents.create("Bruno", "You are Bruno, a tax adviser. Be precise.")
    chat = make_chat(system_prompt="Never reveal API keys.")
    conversation = await store.create(agent_id=ana.id)

    await turn(chat, source, conversation.id, "Olá!", "Olá!")
    assert source.requests[-1]["messages"][0] == {
        "role": "system",
        "content": f"Never reveal API keys.\n\n{ANA_PERSONA}",
    }

    await store.set_agent(conversation.id, bruno.id)
    await turn(chat, source, conversation.id, "Hello?", "Hello.")
    assert system_text(source.requests[-1]) == (
        "Never reveal API keys.\n\nYou are Bruno, a tax adviser. Be precise."
    )


async def test_a_conversation_without_an_agent_is_answered_by_the_default_one(
    chat, source, store, agents
):
    default = await agents.default()
    conversation = await store.create()

    await turn(chat, source, conversation.id, "Olá", "Olá")

    assert system_text(source.requests[-1]) == default.persona


# -- commands -----------------------------------------------------------------------------------


async def test_translate_is_a_task_with_a_translation_prompt(chat, source, store, contexts, ana):
    conversation = await store.create(agent_id=ana.id)

    reply = await turn(
        chat, source, conversation.id, "/translate english Bom dia, amigo", "Good morning, friend"
    )

    assert chat_messages(source.requests[-1]) == [
        {
            "role": "user",
            "content": "Translate the following text into english. Reply with the translation "
            "only.\n\nBom dia, amigo",
        }
    ]
    [stored] = await session_contexts(contexts, conversation.session_id)
    assert (stored.context_type, stored.source_message_id) == (ContextType.TASK, reply.id)
    assert (
        stored.content == "User: /translate english Bom dia, amigo\nAssistant: Good morning, friend"
    )
    assert [m.content for m in await store.page(conversation.id)] == [
        "/translate english Bom dia, amigo",
        "Good morning, friend",
    ]


async def test_help_and_context_are_answered_without_a_model(
    chat, source, store, contexts, ana, bus
):
    conversation = await store.create(agent_id=ana.id)
    await turn(chat, source, conversation.id, "Gosto de xadrez.", "Ótimo!")
    asked = len(source.requests)
    log = EventLog(bus)

    helped = await chat.send(conversation.id, "/help")
    remembered = await chat.send(conversation.id, "/context")

    assert len(source.requests) == asked
    assert (helped.status, helped.model) == (MessageStatus.COMPLETE, prompts.COMMAND_MODEL)
    assert helped.content.startswith("Commands:")
    assert "/translate <language> <text>" in helped.content
    assert remembered.content.startswith("What Ana remembers here:")
    assert "User: Gosto de xadrez." in remembered.content
    assert log.names(events.AI_REQUEST_STARTED) == []
    assert [p["message"].id for p in log.payloads(events.MESSAGE_FINISHED)] == [
        helped.id,
        remembered.id,
    ]
    assert await contexts.count(ContextFilter(session_id=conversation.session_id)) == 1
    # Neither the commands nor the app's answers reach the next prompt.
    await turn(chat, source, conversation.id, "E agora?", "Agora nada.")
    assert [m["content"] for m in chat_messages(source.requests[-1])] == [
        "Gosto de xadrez.",
        "Ótimo!",
        "E agora?",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("/foo bar", "There is no command /foo. Type /help for the list"),
        ("/translate", "Usage: /translate <language> <text>"),
        ("/translate english", "Usage: /translate <language> <text>"),
        ("/analyze   ", "Usage: /analyze <text>"),
    ],
)
async def test_a_bad_command_is_refused_and_nothing_is_stored(
    chat, source, store, contexts, ana, text, message
):
    conversation = await store.create(agent_id=ana.id)

    with pytest.raises(InvalidMessage, match=message):
        await chat.send(conversation.id, text)

    assert await store.count(conversation.id) == 0
    assert await contexts.count(ContextFilter()) == 0
    assert source.requests == []


async def test_a_double_slash_sends_the_text_as_typed(chat, source, store, ana):
    conversation = await store.create(agent_id=ana.id)

    await turn(chat, source, conversation.id, "//foo is a path", "Yes.")

    assert chat_messages(source.requests[-1]) == [{"role": "user", "content": "/foo is a path"}]
    assert (await store.page(conversation.id))[0].content == "//foo is a path"


# -- limits and upkeep -------------------------------------------------------------------------


async def test_the_rate_limiter_refuses_bursts_and_stores_nothing(
    make_chat, source, store, contexts, ana
):
    now = [0.0]
    chat = make_chat(rate_limiter=RateLimiter(per_minute=60, burst=2, clock=lambda: now[0]))
    conversation = await store.create(agent_id=ana.id)
    await turn(chat, source, conversation.id, "um", "1")
    await turn(chat, source, conversation.id, "dois", "2")

    with pytest.raises(RateLimited, match="“Ana” is receiving too many requests") as refusal:
        await chat.send(conversation.id, "três")

    assert refusal.value.retry_after == pytest.approx(1.0)
    assert await store.count(conversation.id) == 4
    assert await contexts.count(ContextFilter(session_id=conversation.session_id)) == 2
    assert len(source.requests) == 2
    assert not chat.is_streaming(conversation.id)

    now[0] += 1.0
    await turn(chat, source, conversation.id, "três", "3")
    assert await store.count(conversation.id) == 6


async def test_the_limit_is_per_agent(make_chat, source, store, agents, ana):
    bruno = await agents.create("Bruno", "You are Bruno.")
    chat = make_chat(rate_limiter=RateLimiter(per_minute=60, burst=1, clock=lambda: 0.0))
    with_ana = await store.create(agent_id=ana.id)
    with_bruno = await store.create(agent_id=bruno.id)

    await turn(chat, source, with_ana.id, "olá", "olá")
    await turn(chat, source, with_bruno.id, "olá", "olá")
    with pytest.raises(RateLimited):
        await chat.send(with_ana.id, "de novo")


async def test_a_long_session_is_compressed_into_one_memory(
    chat, source, store, contexts, ana, bus
):
    conversation = await store.create(agent_id=ana.id)
    chat.compress_after = 0  # never, while the session fills up
    turns = [
        (f"Fato número {n}: meu animal favorito {n} é o tigre{n}.", f"Anotado {n}.")
        for n in range(11)
    ]
    for question, answer in turns:
        await turn(chat, source, conversation.id, question, answer)
    assert await contexts.count(ContextFilter(types=frozenset({"memory"}))) == 0
    log = EventLog(bus)

    chat.compress_after = 3
    await turn(chat, source, conversation.id, "E o último fato?", "Resumo: gosta de tigres.")

    summary_request = source.requests[-1]
    assert summary_request["messages"][0] == {"role": "system", "content": SUMMARY_INSTRUCTION}
    assert "Fato número 0" in summary_request["messages"][1]["content"]
    [memory] = await session_contexts(
        contexts, conversation.session_id, types=frozenset({"memory"})
    )
    assert memory.content == (
        "Summary of an earlier part of this conversation: Resumo: gosta de tigres."
    )
    [compressed] = log.payloads(events.CONTEXTS_COMPRESSED)
    assert compressed["memory_id"] == memory.id
    conversation_type = frozenset({"conversation"})
    every = await session_contexts(contexts, conversation.session_id, types=conversation_type)
    archived = [c for c in every if c.archived]
    live = [c for c in every if not c.archived]
    # With a threshold of 3 the newest turn (3 // 2 = 1) stays; the 11 before it went into the
    # memory, and are kept.
    assert [c.content.split("\n")[0] for c in archived] == [
        f"User: {question}" for question, _ in turns
    ]
    assert {c.parent_id for c in archived} == {memory.id}
    assert len(live) == 1 and live[0].parent_id is None
    assert live[0].content.startswith("User: E o último fato?")
    # They are never retrieved again; the live one still is.
    for n in range(11):
        found = await contexts.retrieve(f"tigre{n}", ana.id, conversation.session_id)
        assert found == []
    found = await contexts.retrieve("último fato", ana.id, conversation.session_id)
    assert [r.context.id for r in found] == [live[0].id]
    assert await contexts.count(ContextFilter(text="tigre0")) == 1


async def test_upkeep_evicts_turns_but_keeps_important_knowledge(
    store, bus, agents, database, source, ana
):
    contexts = ContextStore(database, bus, cap_per_agent=3)
    chat = ChatService(store, source, bus, agents=agents, contexts=contexts)
    important = await contexts.add(ana.id, "Regra: sempre citar fontes.", priority=Priority.HIGH)
    pinned = await contexts.add(ana.id, "Responder em português.", priority=Priority.CRITICAL)
    conversation = await store.create(agent_id=ana.id)

    for n in range(4):
        await turn(chat, source, conversation.id, f"Pergunta {n}", f"Resposta {n}")
    await chat.shutdown()

    left = await contexts.page(ContextFilter(agent_id=ana.id), descending=False)
    assert [c.id for c in left][:2] == [important.id, pinned.id]
    assert [c.content for c in left[2:]] == ["User: Pergunta 3\nAssistant: Resposta 3"]


# -- failures around a turn ------------------------------------------------------------------


async def test_deleting_the_agent_while_it_answers_keeps_the_whole_reply(
    chat, source, store, agents, ana, db_path
):
    from tests.helpers.db import query_file

    await agents.create("Spare", "")  # so that Ana is not the last agent
    conversation = await store.create(agent_id=ana.id)
    source.pieces = [f"piece{n} " for n in range(12)]
    source.interval = 0.03
    log = EventLog(chat.bus)
    await chat.send(conversation.id, "Conte uma história")
    while not log.payloads(events.MESSAGE_DELTA):
        await asyncio.sleep(0.01)

    await agents.delete(ana.id)
    done = await chat.wait(conversation.id)

    assert done.status == MessageStatus.COMPLETE
    assert done.content == "".join(source.pieces).strip()
    assert query_file(db_path, "SELECT status, content FROM messages WHERE id = ?", (done.id,)) == [
        ("complete", done.content)
    ]
    assert query_file(db_path, "SELECT count(*) FROM contexts") == [(0,)]
    assert [p["message"].id for p in log.payloads(events.MESSAGE_FINISHED)] == [done.id]


async def test_a_reply_that_cannot_start_is_kept_as_an_error_and_the_question_stays(
    chat, store, contexts, ana, monkeypatch
):
    conversation = await store.create(agent_id=ana.id)

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("disk I/O error")

    monkeypatch.setattr(contexts, "retrieve", broken)

    reply = await chat.send(conversation.id, "Olá")

    assert reply.status == MessageStatus.ERROR
    assert "could not start" in (reply.error or "") and "disk I/O error" in reply.error
    stored = await store.page(conversation.id)
    assert [(m.role, m.status) for m in stored] == [("user", "complete"), ("assistant", "error")]
    assert not chat.is_streaming(conversation.id)


async def test_regenerate_and_edit_are_rate_limited_too(make_chat, source, store, ana):
    clock = [0.0]
    chat = make_chat(rate_limiter=RateLimiter(per_minute=1, burst=1, clock=lambda: clock[0]))
    conversation = await store.create(agent_id=ana.id)
    await turn(chat, source, conversation.id, "Primeira")

    with pytest.raises(RateLimited):
        await chat.regenerate(conversation.id)
    first = (await store.page(conversation.id))[0]
    with pytest.raises(RateLimited):
        await chat.edit_and_resend(conversation.id, first.id, "Outra")
    assert [m.content for m in await store.page(conversation.id)] == ["Primeira", "ok"]
