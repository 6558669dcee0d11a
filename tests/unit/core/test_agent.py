"""The MangabaAgent API end to end: a real database, real litellm (``mock_response``) for the
capabilities, and the real embedded model for one short reply and the memory demo."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import pytest_asyncio

from mangaba_desktop.core import prompts
from mangaba_desktop.core.agent import MangabaAgent, ReplyFailed, Runtime
from mangaba_desktop.core.store import ContextType
from tests.helpers.db import query_file

pytestmark = pytest.mark.asyncio(loop_scope="session")

MOCK_MODEL = "openai/gpt-4o-mini"


class RecordingCompletions:
    """The real Completions, with every prompt it was given kept for the test to read."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.prompts: list[list[dict[str, str]]] = []

    @property
    def default_model(self) -> str:
        return self.inner.default_model

    def stream(self, model: str, messages: list[dict[str, str]], **params: Any) -> Any:
        self.prompts.append(messages)
        return self.inner.stream(model, messages, **params)


@pytest_asyncio.fixture(loop_scope="session")
async def runtime(database, bus, completions):
    recording = RecordingCompletions(completions)
    runtime = Runtime(database, recording, bus)
    yield runtime
    await runtime.chat.shutdown()


def mocked(runtime: Runtime, reply: str) -> None:
    runtime.chat.params = {"mock_response": reply}


async def test_agent_is_stored_with_its_persona_and_answers_in_its_own_session(runtime, db_path):
    mocked(runtime, "Olá! Como posso ajudar?")
    agent = MangabaAgent(
        model=MOCK_MODEL,
        agent_name="Ana",
        persona="You are Ana, a concise assistant.",
        tags=["finance"],
        runtime=runtime,
    )
    assert agent.agent_id.startswith("mangaba_") and len(agent.agent_id) == len("mangaba_") + 8

    reply = await agent.chat("Oi")

    assert str(reply) == "Olá! Como posso ajudar?"
    assert reply.request_id and reply.latency_ms is not None and reply.agent_id == agent.agent_id
    assert query_file(
        db_path, "SELECT name, persona, tags FROM agents WHERE id = ?", (agent.agent_id,)
    ) == [("Ana", "You are Ana, a concise assistant.", '["finance"]')]
    system = runtime.completions.prompts[-1][0]
    assert system["role"] == "system" and system["content"].startswith("You are Ana")
    # The turn is remembered as a conversation context of this agent's session.
    assert query_file(
        db_path,
        "SELECT context_type, content, session_id FROM contexts WHERE agent_id = ?",
        (agent.agent_id,),
    ) == [
        ("conversation", "User: Oi\nAssistant: Olá! Como posso ajudar?", await agent.session_id())
    ]


@pytest.mark.parametrize(
    ("call", "expected_prompt"),
    [
        (lambda a: a.analyze_text("O mercado subiu 3%."), "Analise este texto:\n\nO mercado subiu"),
        (lambda a: a.analyze_text("Texto", "Find the tone"), "Find the tone:\n\nTexto"),
        (lambda a: a.translate("Bom dia", "english"), "Translate the following text into english"),
        (lambda a: a.summarize("Uma frase. Outra.", 1), "in at most 1 sentences"),
        (lambda a: a.code_review("x = 1/0", "python"), "Review this python code"),
        (lambda a: a.explain_code("print(1)", "python"), "Explain what this python code does"),
    ],
)
async def test_each_capability_streams_a_reply_and_is_stored_as_a_task(
    runtime, db_path, call, expected_prompt
):
    mocked(runtime, "Resposta da tarefa.")
    agent = MangabaAgent(model=MOCK_MODEL, agent_name="Tasks", runtime=runtime)

    pieces = [piece async for piece in call(agent)]

    assert "".join(pieces).strip() == "Resposta da tarefa."
    assert expected_prompt in runtime.completions.prompts[-1][-1]["content"]
    [(kind,)] = query_file(
        db_path, "SELECT context_type FROM contexts WHERE agent_id = ?", (agent.agent_id,)
    )
    assert kind == ContextType.TASK


async def test_explain_code_returns_the_explanation(runtime):
    # Upstream's explain_code returned nothing.
    mocked(runtime, "It prints the number one.")
    agent = MangabaAgent(model=MOCK_MODEL, runtime=runtime)

    reply = await agent.explain_code("print(1)", "python")

    assert reply.text == "It prints the number one."


async def test_context_summary_groups_the_sessions_contexts_by_type(runtime):
    mocked(runtime, "Anotado.")
    agent = MangabaAgent(model=MOCK_MODEL, runtime=runtime)
    await agent.chat("Prefiro respostas curtas")
    await agent.remember("A empresa fecha às 18h.")

    summary = await agent.get_context_summary()

    assert "Conversation (1):" in summary and "Prefiro respostas curtas" in summary
    assert "Knowledge (1):" in summary and "fecha às 18h" in summary


async def test_a_new_session_does_not_see_the_last_ones_conversation(runtime):
    mocked(runtime, "Ok.")
    agent = MangabaAgent(model=MOCK_MODEL, runtime=runtime)
    await agent.chat("Meu número da sorte é 7341")
    first = await agent.session_id()

    second = await agent.new_session()
    await agent.chat("Qual é o meu número da sorte 7341?")

    assert first != second
    system = runtime.completions.prompts[-1][0]["content"]
    assert (
        "7341" not in system.split(prompts.MEMORY_HEADER)[-1] or prompts.MEMORY_HEADER not in system
    )


async def test_a_failed_reply_raises_with_the_providers_sentence(runtime):
    agent = MangabaAgent(model="openai/gpt-4o-mini", runtime=runtime)
    runtime.chat.params = {"mock_response": Exception("The provider is down for maintenance")}

    with pytest.raises(ReplyFailed, match="down for maintenance"):
        await agent.chat("Oi")


# -- the real embedded model ---------------------------------------------------------------------


@pytest.mark.model
async def test_the_local_model_answers_a_short_request(runtime):
    agent = MangabaAgent(agent_name="Local", runtime=runtime)

    reply = await agent.translate("Bom dia", "english")

    assert reply.text.strip()
    assert reply.model and reply.model.startswith("mangaba-local/")
    assert reply.completion_tokens and reply.prompt_tokens


@pytest.mark.model
async def test_memory_demo_puts_the_name_back_into_the_prompt(runtime, monkeypatch):
    # A small window, so that the first message leaves the recent history and only the
    # context store can bring it back.
    monkeypatch.setattr(prompts, "LOCAL_CONTEXT_WINDOW", 900)
    runtime.chat.params = {"max_tokens": 24}
    agent = MangabaAgent(agent_name="Memória", runtime=runtime)

    await agent.chat("Meu nome é João")
    for topic in (
        "rios",
        "montanhas",
        "desertos",
        "florestas",
        "oceanos",
        "vulcões",
        "ilhas",
        "lagos",
    ):
        await agent.chat(f"Escreva uma frase longa sobre {topic} do Brasil e da sua geografia.")
    reply = await agent.chat("Qual é o meu nome?")

    prompt = runtime.completions.prompts[-1]
    history = [m["content"] for m in prompt[1:]]
    assert not any("João" in text for text in history), "the name is still in the history"
    assert prompt[0]["role"] == "system" and "João" in prompt[0]["content"]
    [remembered] = [
        row
        for row in query_file(
            runtime.database.path,
            "SELECT id, content FROM contexts WHERE content LIKE 'User: Meu nome%'",
        )
    ]
    assert remembered[0] in reply.context_ids


async def test_agents_started_together_share_one_database(tmp_path, monkeypatch):
    monkeypatch.setenv("MANGABA_DATA_DIR", str(tmp_path / "shared"))
    first, second = MangabaAgent(), MangabaAgent()

    runtimes = await asyncio.gather(first.runtime(), second.runtime())

    try:
        assert runtimes[0] is runtimes[1]
        assert runtimes[0].database.path == tmp_path / "shared" / "mangaba.sqlite3"
    finally:
        await runtimes[0].close()
