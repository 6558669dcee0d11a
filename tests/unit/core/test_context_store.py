"""The context store on a real SQLite file: what is retrieved for a prompt, in what order, what
is kept, evicted and browsed, and what is refused."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text

from mangaba_desktop.core import events
from mangaba_desktop.core.context import (
    AGENT_WIDE,
    ContextFilter,
    ContextStore,
    InvalidContext,
    parse_tags,
    split_passages,
)
from mangaba_desktop.core.context import passages as passages_module
from mangaba_desktop.core.context.passages import MAX_CONTEXT_CHARS, PASSAGE_CHARS
from mangaba_desktop.core.context.store import MAX_PINNED_IN_PROMPT
from mangaba_desktop.core.store import ContextType, Priority
from tests.helpers.events import EventLog

pytestmark = pytest.mark.asyncio

DAY = 24 * 3600.0

HOSTILE_QUERIES = [
    '"',
    '""',
    '"unclosed phrase',
    'say "parrot',
    "*",
    "parrot*",
    "*parrot",
    "OR",
    "AND",
    "NOT",
    "parrot OR",
    "AND parrot",
    "NOT parrot",
    "parrot AND OR NOT",
    "NEAR(",
    "NEAR(parrot",
    "NEAR(parrot mango, 2)",
    "parrot NEAR/2 mango",
    "(",
    ")",
    "(()",
    "parrot)",
    "((parrot OR",
    "content:parrot",
    "scope:parrot",
    "contexts_fts:parrot",
    "{content tags}: parrot",
    "^parrot",
    "parrot + mango - kiwi",
    "'; DROP TABLE contexts; --",
    "!!! ??? ... ,,, ;;;",
    "\\",
    "%_%",
    "\x00",
    "🦜",
    "🦜🥭 🔥",
    "parrot 🦜 emoji",
    "a" * 5000,
]


@pytest_asyncio.fixture
async def ana(agents):
    return await agents.create("Ana", "You are Ana.", agent_id="agent_ana")


@pytest_asyncio.fixture
async def bruno(agents):
    return await agents.create("Bruno", "You are Bruno.", agent_id="agent_bruno")


async def run_sql(database, statement: str, **params: Any) -> None:
    """Change rows behind the store's back (ages, use counts), through the writer thread."""
    await database.write(lambda s: s.connection().execute(text(statement), params))


async def age(database, context_id: int, days: float) -> None:
    """Make a context look created (and last touched) ``days`` ago."""
    then = time.time() - days * DAY
    await run_sql(
        database,
        "UPDATE contexts SET created_at = :then, last_accessed = NULL WHERE id = :id",
        then=then,
        id=context_id,
    )


async def flush_writes(database) -> None:
    """Wait for everything queued on the writer (the touch after a retrieve) to be done."""
    await database.write(lambda s: None)


def assert_index_consistent(database) -> None:
    """The full-text index agrees with the contexts table (raises if it does not)."""
    database.read_sync(
        lambda s: s.connection().exec_driver_sql(
            "INSERT INTO contexts_fts(contexts_fts, rank) VALUES ('integrity-check', 1)"
        )
    )


def contents(found) -> list[str]:
    return [r.context.content for r in found]


def ids(found) -> list[int]:
    return [r.context.id for r in found]


# -- ranking ------------------------------------------------------------------------------------


async def test_relevance_beats_priority_alone(contexts, ana):
    """Upstream ranked every context as relevant by its priority: a HIGH context that shares no
    word with the question must not come back; a LOW one that does must."""
    await contexts.add(ana.id, "The garden needs watering every morning.", priority=Priority.HIGH)
    low = await contexts.add(ana.id, "My favourite colour is teal.", priority=Priority.LOW)

    found = await contexts.retrieve("What is my favourite colour?", ana.id, None, touch=False)

    assert ids(found) == [low.id]
    assert found[0].relevance > 0
    assert not found[0].pinned


async def test_nothing_relevant_gives_nothing(contexts, ana):
    for priority in (Priority.LOW, Priority.MEDIUM, Priority.HIGH):
        await contexts.add(ana.id, f"Quarterly sales figures, level {priority}.", priority=priority)

    assert await contexts.retrieve("Where do penguins live?", ana.id, None) == []


async def test_among_equal_matches_priority_breaks_the_tie(contexts, ana):
    low = await contexts.add(ana.id, "alpha report week", priority=Priority.LOW)
    high = await contexts.add(ana.id, "alpha report year", priority=Priority.HIGH)
    medium = await contexts.add(ana.id, "alpha report date", priority=Priority.MEDIUM)

    found = await contexts.retrieve("alpha report", ana.id, None, touch=False)

    assert ids(found) == [high.id, medium.id, low.id]
    # The same words, the same lengths: the same relevance; only the priority differs.
    assert len({round(r.relevance, 9) for r in found}) == 1
    assert found[0].score > found[1].score > found[2].score


async def test_among_equal_matches_and_priority_the_recent_one_comes_first(contexts, ana, database):
    old = await contexts.add(ana.id, "beta invoice weekly")
    new = await contexts.add(ana.id, "beta invoice monthly")
    await age(database, old.id, 60)

    found = await contexts.retrieve("beta invoice", ana.id, None, touch=False)

    assert ids(found) == [new.id, old.id]
    # Recency weighs at least half: an old context is demoted, never dropped.
    assert found[1].score >= 0.5 * found[0].score * 0.99


async def test_recency_counts_from_the_last_use(contexts, ana, database):
    used = await contexts.add(ana.id, "gamma ledger weekly")
    unused = await contexts.add(ana.id, "gamma ledger monthly")
    await age(database, used.id, 60)
    await age(database, unused.id, 30)
    await run_sql(
        database,
        "UPDATE contexts SET last_accessed = :now WHERE id = :id",
        now=time.time(),
        id=used.id,
    )

    found = await contexts.retrieve("gamma ledger", ana.id, None, touch=False)

    assert ids(found) == [used.id, unused.id]


async def test_limit_keeps_the_best(contexts, ana):
    for n in range(12):
        await contexts.add(ana.id, f"delta note number {n}")

    found = await contexts.retrieve("delta note", ana.id, None, limit=5, touch=False)

    assert len(found) == 5
    assert [r.score for r in found] == sorted((r.score for r in found), reverse=True)


# -- scope --------------------------------------------------------------------------------------


async def test_retrieval_stays_in_the_session_and_the_agent(contexts, ana, bruno):
    here = await contexts.add(
        ana.id, "The launch code is pelican.", ContextType.CONVERSATION, session_id="s1"
    )
    await contexts.add(
        ana.id, "The launch code is flamingo.", ContextType.CONVERSATION, session_id="s2"
    )
    everywhere = await contexts.add(ana.id, "Launch code policy: never share it.")
    await contexts.add(bruno.id, "The launch code is albatross.", session_id="s1")
    await contexts.add(bruno.id, "Launch code rules of Bruno.")

    found = await contexts.retrieve("what is the launch code", ana.id, "s1", touch=False)

    assert set(ids(found)) == {here.id, everywhere.id}
    for result in found:
        assert result.context.agent_id == ana.id
        assert result.context.session_id in {"s1", None}


async def test_without_a_session_only_the_agent_wide_knowledge_comes_back(contexts, ana):
    await contexts.add(ana.id, "kiwi fruit in session", session_id="s1")
    everywhere = await contexts.add(ana.id, "kiwi fruit everywhere")

    found = await contexts.retrieve("kiwi", ana.id, None, touch=False)

    assert ids(found) == [everywhere.id]


async def test_an_unknown_session_sees_only_the_agent_wide_knowledge(contexts, ana):
    await contexts.add(ana.id, "mango season in session one", session_id="s1")
    everywhere = await contexts.add(ana.id, "mango season everywhere")

    found = await contexts.retrieve("mango season", ana.id, "never-seen", touch=False)

    assert ids(found) == [everywhere.id]


async def test_similar_session_ids_do_not_leak(contexts, ana):
    """Scope tokens are exact: session "s1" does not see "s10" nor "s1/x"."""
    await contexts.add(ana.id, "papaya in s10", session_id="s10")
    await contexts.add(ana.id, "papaya in s1/x", session_id="s1/x")
    mine = await contexts.add(ana.id, "papaya in s1", session_id="s1")

    assert ids(await contexts.retrieve("papaya", ana.id, "s1", touch=False)) == [mine.id]


async def test_archived_contexts_are_never_retrieved_yet_kept(contexts, ana, database):
    archived = await contexts.add(ana.id, "The safe combination is 4-8-15.", session_id="s1")
    pinned_archived = await contexts.add(
        ana.id, "Pinned but archived rule.", session_id="s1", priority=Priority.CRITICAL
    )
    await run_sql(
        database,
        "UPDATE contexts SET archived = 1 WHERE id IN (:a, :b)",
        a=archived.id,
        b=pinned_archived.id,
    )

    assert await contexts.retrieve("safe combination", ana.id, "s1") == []
    assert await contexts.get(archived.id) is not None
    assert await contexts.count(ContextFilter(text="combination")) == 1
    assert await contexts.count(ContextFilter(text="combination", include_archived=False)) == 0
    assert_index_consistent(database)


async def test_expired_contexts_are_never_retrieved(contexts, ana):
    past = time.time() - 1
    await contexts.add(ana.id, "The coupon code is SPRING.", expires_at=past)
    await contexts.add(ana.id, "Expired pinned rule.", priority=Priority.CRITICAL, expires_at=past)
    live = await contexts.add(ana.id, "The coupon code is SUMMER.", expires_at=time.time() + DAY)

    found = await contexts.retrieve("coupon code", ana.id, None, touch=False)

    assert ids(found) == [live.id]


async def test_pinned_contexts_are_always_included_first(contexts, ana, bruno):
    pinned = await contexts.add(ana.id, "Always answer in Portuguese.", priority=Priority.CRITICAL)
    pinned_here = await contexts.add(
        ana.id, "The user is a vegetarian.", session_id="s1", priority=Priority.CRITICAL
    )
    await contexts.add(ana.id, "Other session rule.", session_id="s2", priority=Priority.CRITICAL)
    await contexts.add(bruno.id, "Bruno's own rule.", priority=Priority.CRITICAL)
    relevant = await contexts.add(ana.id, "Paris is the capital of France.", session_id="s1")

    found = await contexts.retrieve("capital of France", ana.id, "s1", touch=False)

    assert set(ids(found[:2])) == {pinned.id, pinned_here.id}
    assert all(r.pinned for r in found[:2])
    assert ids(found[2:]) == [relevant.id]
    # Even when nothing matches, or nothing can be searched for.
    for query in ("penguins", "!!!", "🦜"):
        again = await contexts.retrieve(query, ana.id, "s1", touch=False)
        assert set(ids(again)) == {pinned.id, pinned_here.id}


async def test_pinned_contexts_are_capped_and_count_within_the_limit(contexts, ana):
    made = [
        await contexts.add(ana.id, f"Rule number {n}.", priority=Priority.CRITICAL)
        for n in range(MAX_PINNED_IN_PROMPT + 2)
    ]
    for n in range(5):
        await contexts.add(ana.id, f"zebra fact {n}")

    found = await contexts.retrieve("zebra", ana.id, None, limit=7, touch=False)

    pinned = [r for r in found if r.pinned]
    assert [r.context.id for r in pinned] == [c.id for c in reversed(made)][:MAX_PINNED_IN_PROMPT]
    assert len(found) == 7


async def test_retrieve_leaves_out_contexts_of_excluded_messages(contexts, ana, database):
    from_turn = await contexts.add(ana.id, "User: hello otter", ContextType.CONVERSATION)
    other = await contexts.add(ana.id, "otter facts")
    await run_sql(
        database, "UPDATE contexts SET source_message_id = 77 WHERE id = :id", id=from_turn.id
    )

    found = await contexts.retrieve("otter", ana.id, None, exclude_message_ids=[77], touch=False)

    assert ids(found) == [other.id]


async def test_retrieve_counts_each_use(contexts, ana, database):
    hit = await contexts.add(ana.id, "Lisbon is on the Tagus.")
    miss = await contexts.add(ana.id, "Porto is on the Douro.")
    before = time.time()

    await contexts.retrieve("Lisbon", ana.id, None)
    await contexts.retrieve("Lisbon Tagus", ana.id, None)
    await flush_writes(database)

    touched = await contexts.get(hit.id)
    untouched = await contexts.get(miss.id)
    assert touched.access_count == 2
    assert touched.last_accessed >= before
    assert (untouched.access_count, untouched.last_accessed) == (0, None)

    await contexts.retrieve("Lisbon", ana.id, None, touch=False)
    await flush_writes(database)
    assert (await contexts.get(hit.id)).access_count == 2


# -- hostile search text -----------------------------------------------------------------------


@pytest_asyncio.fixture
async def parrots(contexts, ana):
    return [
        await contexts.add(ana.id, "The parrot eats mango.", session_id="s1"),
        await contexts.add(ana.id, 'She said "parrot" twice (loudly).', tags="birds"),
        await contexts.add(ana.id, "Pinned rule.", priority=Priority.CRITICAL),
    ]


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
async def test_typed_search_syntax_never_raises(contexts, ana, parrots, query):
    found = await contexts.retrieve(query, ana.id, "s1", touch=False)
    assert parrots[2].id in ids(found)  # the pinned one, whatever was typed

    where = ContextFilter(text=query)
    total = await contexts.count(where)
    page = await contexts.page(where)
    assert total == len(page)


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
async def test_typed_tag_filter_never_raises(contexts, parrots, query):
    tagged = ContextFilter(tag=query)
    assert await contexts.count(tagged) == len(await contexts.page(tagged))


async def test_typed_search_syntax_still_finds_the_words(contexts, ana, parrots):
    parrot, quoted, _ = parrots
    for query in ('"parrot', "NEAR(parrot", "parrot)", "parrot*", "parrot 🦜 emoji"):
        found = await contexts.retrieve(query, ana.id, "s1", touch=False)
        assert {parrot.id, quoted.id} <= set(ids(found)), query
    assert {c.id for c in await contexts.page(ContextFilter(text='"mango'))} == {parrot.id}
    assert await contexts.count(ContextFilter(text="🦜🥭 🔥")) == 3  # no words: no text filter


async def test_browsing_text_is_all_words_the_last_one_a_prefix(contexts, ana, parrots):
    parrot, quoted, _ = parrots

    assert {c.id for c in await contexts.page(ContextFilter(text="parr"))} == {
        parrot.id,
        quoted.id,
    }
    assert {c.id for c in await contexts.page(ContextFilter(text="parrot man"))} == {parrot.id}
    assert await contexts.count(ContextFilter(text="parrot kiwi")) == 0


# -- eviction -----------------------------------------------------------------------------------


async def test_eviction_removes_low_before_medium_least_used_and_oldest_first(
    database, bus, ana, bruno
):
    store = ContextStore(database, bus)
    used_low = await store.add(ana.id, "low, often used", priority=Priority.LOW)
    old_low = await store.add(ana.id, "low, old", priority=Priority.LOW)
    new_low = await store.add(ana.id, "low, new", priority=Priority.LOW)
    medium = await store.add(ana.id, "medium", priority=Priority.MEDIUM)
    high = await store.add(ana.id, "high", priority=Priority.HIGH)
    critical = await store.add(ana.id, "critical", priority=Priority.CRITICAL)
    other_agent = await store.add(bruno.id, "Bruno's low", priority=Priority.LOW)
    await age(database, old_low.id, 30)
    await age(database, new_low.id, 1)
    await run_sql(database, "UPDATE contexts SET access_count = 5 WHERE id = :id", id=used_low.id)

    store.cap_per_agent = 4
    assert await store.evict(ana.id) == 2

    left = {c.id for c in await store.page(ContextFilter(agent_id=ana.id))}
    assert left == {used_low.id, medium.id, high.id, critical.id}

    # Over the cap again: LOW goes before MEDIUM, however much it was used.
    store.cap_per_agent = 2
    assert await store.evict(ana.id) == 2
    left = {c.id for c in await store.page(ContextFilter(agent_id=ana.id))}
    assert left == {high.id, critical.id}
    assert await store.get(other_agent.id) is not None


async def test_high_and_critical_are_never_evicted_even_above_the_cap(database, bus, ana):
    store = ContextStore(database, bus, cap_per_agent=1)
    kept = [
        await store.add(ana.id, f"important {n}", priority=priority)
        for n, priority in enumerate([Priority.HIGH, Priority.CRITICAL] * 3)
    ]
    log = EventLog(bus)

    assert await store.evict(ana.id) == 0

    assert await store.live_count(ana.id) == len(kept)
    assert log.payloads(events.CONTEXTS_CHANGED) == []


async def test_archived_contexts_neither_count_nor_get_evicted(database, bus, ana):
    store = ContextStore(database, bus, cap_per_agent=2)
    archived = [await store.add(ana.id, f"archived {n}") for n in range(2)]
    await run_sql(database, "UPDATE contexts SET archived = 1")
    archived.append(await store.add(ana.id, "archived 2"))
    await run_sql(database, "UPDATE contexts SET archived = 1")
    live = [await store.add(ana.id, f"live {n}") for n in range(2)]

    assert await store.evict(ana.id) == 0
    assert await store.count(ContextFilter(agent_id=ana.id)) == len(archived) + len(live)


async def test_adding_beyond_the_cap_evicts_at_once_and_says_so(database, bus, ana):
    store = ContextStore(database, bus, cap_per_agent=3)
    log = EventLog(bus)
    kept = await store.add(ana.id, "important", priority=Priority.HIGH)
    await store.add_many(ana.id, [f"note {n}" for n in range(5)])

    assert await store.count(ContextFilter(agent_id=ana.id)) == 3
    assert await store.get(kept.id) is not None
    assert sum(p.get("evicted", 0) for p in log.payloads(events.CONTEXTS_CHANGED)) == 3


async def test_an_evicted_memory_takes_its_archived_sources_with_it(database, bus, ana):
    from mangaba_desktop.core.context.compression import compress_session

    store = ContextStore(database, bus)
    for n in range(4):
        await store.add(ana.id, f"User: the puma number {n}", "conversation", session_id="s9")

    async def summarize(_text: str) -> str:
        return "pumas"

    memory = await compress_session(store, ana.id, "s9", summarize, threshold=2, keep_recent=1)
    store.cap_per_agent = 1
    await run_sql(
        database, "UPDATE contexts SET priority = 3 WHERE archived = 0 AND id != :id", id=memory.id
    )

    assert await store.evict(ana.id) == 1
    assert await store.get(memory.id) is None
    assert await store.count(ContextFilter(agent_id=ana.id)) == 1  # the live turn only


# -- adding: duplicates, tags, sizes -----------------------------------------------------------


async def test_the_same_text_is_stored_once(contexts, ana, bruno):
    first = await contexts.add(ana.id, "Ana likes green tea.", session_id="s1")
    again = await contexts.add(ana.id, "  Ana likes green tea.\n", session_id="s1")
    many = await contexts.add_many(
        ana.id, ["Ana likes green tea.", "Ana likes green tea."], session_id="s1"
    )

    assert again.id == first.id
    assert {c.id for c in many} == {first.id}
    assert await contexts.count(ContextFilter(agent_id=ana.id)) == 1
    # The same text elsewhere is another context: another session, agent-wide, another agent,
    # another type.
    others = [
        await contexts.add(ana.id, "Ana likes green tea.", session_id="s2"),
        await contexts.add(ana.id, "Ana likes green tea."),
        await contexts.add(bruno.id, "Ana likes green tea.", session_id="s1"),
        await contexts.add(ana.id, "Ana likes green tea.", ContextType.MEMORY, session_id="s1"),
    ]
    assert len({c.id for c in others} | {first.id}) == 5
    # Agent-wide duplicates are caught too (NULL session).
    assert (await contexts.add(ana.id, "Ana likes green tea.")).id == others[1].id


async def test_tags_are_normalised(contexts, ana):
    stored = await contexts.add(ana.id, "tagged", tags="#Finance, finance  Legal,,")

    assert stored.tag_list == ["finance", "legal"]
    assert parse_tags(["Ação", "q1.report", "tax_2024", "x-y"]) == [
        "ação",
        "q1.report",
        "tax_2024",
        "x-y",
    ]
    assert parse_tags(None) == [] and parse_tags("") == [] and parse_tags(" , ") == []


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ("bad!", "“bad!” may hold only letters, digits, “-”, “_” and “.”"),
        (["two words"], "“two words” may hold only letters"),
        (["-leading"], "“-leading” may hold only letters"),
        (["semi;colon"], "“semi;colon” may hold only"),
        ([f"t{n}" for n in range(21)], "at most 20 tags (21 given)"),
        (["x" * 41], "longer than 40 characters"),
        ([3], "A tag must be text, not int"),
    ],
)
async def test_bad_tags_are_refused_with_a_clear_message(contexts, ana, tags, message):
    with pytest.raises(InvalidContext) as refused:
        await contexts.add(ana.id, "tagged text", tags=tags)

    assert message in str(refused.value)
    assert await contexts.count(ContextFilter()) == 0


async def test_the_longest_tags_that_are_allowed_are_kept(contexts, ana):
    tags = [f"t{n}" for n in range(20)] + ["x" * 40]
    with pytest.raises(InvalidContext):
        await contexts.add(ana.id, "too many", tags=tags)

    stored = await contexts.add(ana.id, "just enough", tags=tags[1:])

    assert stored.tag_list == tags[1:]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"context_type": "note"}, "“note” is not a context type; use one of conversation"),
        ({"priority": 5}, "“5” is not a priority; use 1 (low)"),
        ({"priority": "high"}, "“high” is not a priority"),
    ],
)
async def test_bad_type_or_priority_is_refused(contexts, ana, kwargs, message):
    with pytest.raises(InvalidContext, match=re.escape(message)):
        await contexts.add(ana.id, "text", **kwargs)


async def test_empty_and_oversized_contexts_are_refused(contexts, ana):
    with pytest.raises(InvalidContext, match="needs some text"):
        await contexts.add(ana.id, " \n\t ")
    with pytest.raises(InvalidContext, match="16,001 characters; one context holds at most 16,000"):
        await contexts.add(ana.id, "x" * (MAX_CONTEXT_CHARS + 1))
    with pytest.raises(InvalidContext, match="no text to add"):
        await contexts.add_text(ana.id, "  \n\n ")

    biggest = await contexts.add(ana.id, "y" * MAX_CONTEXT_CHARS)

    assert len(biggest.content) == MAX_CONTEXT_CHARS
    assert await contexts.count(ContextFilter()) == 1


def long_document() -> str:
    paragraphs = []
    for p in range(30):
        sentences = [
            f"Paragraph {p} sentence {s} talks about topic{p}x{s} and more words here."
            for s in range(p % 7 + 1)
        ]
        paragraphs.append(" ".join(sentences))
    # A paragraph that is one long sentence, and a word longer than a passage.
    paragraphs.insert(5, " ".join(f"runon{n}" for n in range(600)))
    paragraphs.insert(12, "unbroken" + "z" * (PASSAGE_CHARS * 2 + 17) + "end")
    paragraphs.append("Last words: çedilha, 中文, emoji 🦜.")
    return "\n\n".join(paragraphs)


async def test_add_text_splits_into_passages_without_losing_text(contexts, ana):
    document = long_document()

    stored = await contexts.add_text(ana.id, document, tags="manual")

    passages = split_passages(document)
    assert [c.content for c in stored] == passages
    assert len(stored) > 5
    assert all(len(c.content) <= PASSAGE_CHARS for c in stored)
    assert "".join("".join(c.content for c in stored).split()) == "".join(document.split())
    assert {(c.context_type, c.priority, c.session_id) for c in stored} == {
        (ContextType.KNOWLEDGE, Priority.MEDIUM, None)
    }
    assert all(c.tag_list == ["manual"] for c in stored)
    # Every passage is retrievable by its own words.
    found = await contexts.retrieve("topic17x3", ana.id, None, touch=False)
    assert ["topic17x3" in c for c in contents(found)] == [True]
    found = await contexts.retrieve("runon599", ana.id, "any-session", touch=False)
    assert len(found) == 1


async def test_text_too_large_to_split_at_once_is_refused(contexts, ana, monkeypatch):
    monkeypatch.setattr(passages_module, "MAX_IMPORT_CHARS", 1000)

    with pytest.raises(InvalidContext, match="at most 1,000 can be added at once"):
        await contexts.add_text(ana.id, "word " * 300)

    assert await contexts.count(ContextFilter()) == 0


# -- browsing ----------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def shelf(contexts, ana, bruno, database):
    """A small, known set of contexts of two agents; returns {name: context}."""
    made = {
        "budget": await contexts.add(
            ana.id, "Orçamento anual da empresa", priority=Priority.HIGH, tags="finance"
        ),
        "hello": await contexts.add(
            ana.id, "User: olá\nAssistant: olá!", ContextType.CONVERSATION, session_id="s1"
        ),
        "weather": await contexts.add(
            ana.id, "User: weather?\nAssistant: rain", ContextType.CONVERSATION, session_id="s2"
        ),
        "contract": await contexts.add(
            ana.id,
            "Contract review for the lease",
            ContextType.TASK,
            session_id="s1",
            priority=Priority.MEDIUM,
            tags="legal",
        ),
        "summary": await contexts.add(
            ana.id,
            "Summary: the user is Ana",
            ContextType.MEMORY,
            session_id="s1",
            priority=Priority.CRITICAL,
        ),
        "bruno": await contexts.add(bruno.id, "Bruno's budget notes", tags=["finance", "personal"]),
        "bruno_chat": await contexts.add(
            bruno.id, "User: hi\nAssistant: hi", ContextType.CONVERSATION, session_id="s3"
        ),
    }
    await run_sql(database, "UPDATE contexts SET archived = 1 WHERE id = :id", id=made["hello"].id)
    return made


async def browse(contexts, **where) -> set[str]:
    found = await contexts.page(ContextFilter(**where))
    assert await contexts.count(ContextFilter(**where)) == len(found)
    return {c.content for c in found}


async def test_browse_filters(contexts, shelf, ana, bruno):
    def names(*keys: str) -> set[str]:
        return {shelf[k].content for k in keys}

    assert await browse(contexts) == names(*shelf)
    assert await browse(contexts, types=frozenset({"conversation"})) == names(
        "hello", "weather", "bruno_chat"
    )
    assert await browse(contexts, types=frozenset({"task", "memory"})) == names(
        "contract", "summary"
    )
    assert await browse(contexts, priorities=frozenset({3, 4})) == names("budget", "summary")
    assert await browse(contexts, tag="finance") == names("budget", "bruno")
    assert await browse(contexts, tag="Legal") == names("contract")
    assert await browse(contexts, agent_id=bruno.id) == names("bruno", "bruno_chat")
    assert await browse(contexts, session_id="s1") == names("hello", "contract", "summary")
    assert await browse(contexts, session_id=AGENT_WIDE) == names("budget", "bruno")
    assert await browse(contexts, agent_id=ana.id, session_id=AGENT_WIDE) == names("budget")
    assert await browse(contexts, ids=frozenset({shelf["hello"].id, shelf["bruno"].id})) == names(
        "hello", "bruno"
    )
    assert await browse(contexts, ids=frozenset()) == set()
    assert await browse(contexts, session_id="s1", include_archived=False) == names(
        "contract", "summary"
    )
    assert await browse(contexts, text="orçamento") == names("budget")
    assert await browse(contexts, text="orcamento") == names("budget")  # accents optional
    assert await browse(contexts, text="budget") == names("bruno")
    assert await browse(contexts, text="finance") == names("budget", "bruno")  # tags too
    assert await browse(contexts, text="assistant", agent_id=ana.id, tag=None) == names(
        "hello", "weather"
    )
    assert await browse(contexts, text="user", tag="finance") == set()
    assert await browse(contexts, agent_id="nobody") == set()


async def test_the_tag_filter_matches_whole_tags_only(contexts, ana):
    exact = await contexts.add(ana.id, "exact tag", tags="finance")
    await contexts.add(ana.id, "longer tag", tags="personal-finance")
    await contexts.add(ana.id, "dotted tag", tags="finance.2024")

    assert [c.id for c in await contexts.page(ContextFilter(tag="finance"))] == [exact.id]


async def test_browse_sorting_and_pages(contexts, shelf):
    everything = await contexts.page(ContextFilter())
    assert [c.id for c in everything] == sorted((c.id for c in everything), reverse=True)

    by_priority = await contexts.page(ContextFilter(), sort="priority")
    assert [(c.priority, c.id) for c in by_priority] == sorted(
        ((c.priority, c.id) for c in everything), reverse=True
    )
    ascending = await contexts.page(ContextFilter(), sort="priority", descending=False)
    assert [(c.priority, c.id) for c in ascending] == sorted((c.priority, c.id) for c in everything)

    by_content = await contexts.page(ContextFilter(), sort="content", descending=False)
    assert [c.content for c in by_content] == sorted(c.content for c in everything)
    by_type = await contexts.page(ContextFilter(), sort="context_type", descending=False)
    assert [c.context_type for c in by_type] == sorted(c.context_type for c in everything)

    unknown = await contexts.page(ContextFilter(), sort="nonsense; DROP TABLE contexts")
    assert [c.id for c in unknown] == [c.id for c in everything]

    pages = [
        await contexts.page(ContextFilter(), sort="priority", offset=offset, limit=3)
        for offset in range(0, len(everything), 3)
    ]
    assert [c.id for page in pages for c in page] == [c.id for c in by_priority]
    assert await contexts.page(ContextFilter(), offset=len(everything)) == []


async def test_sort_by_use(contexts, ana, database):
    made = [await contexts.add(ana.id, f"used {n} times") for n in range(4)]
    for n, context in enumerate(made):
        await run_sql(
            database,
            "UPDATE contexts SET access_count = :n, last_accessed = :t WHERE id = :id",
            n=(n * 3) % 4,
            t=1000.0 + n,
            id=context.id,
        )

    by_use = await contexts.page(ContextFilter(), sort="access_count")
    by_time = await contexts.page(ContextFilter(), sort="last_accessed", descending=False)

    assert [c.access_count for c in by_use] == [3, 2, 1, 0]
    assert [c.id for c in by_time] == [c.id for c in made]


async def test_sessions_lists_each_session_with_its_count(contexts, shelf, ana, store):
    await store.create(title="Chat with Ana", agent_id=ana.id, session_id="s1")

    sessions = {s.session_id: s for s in await contexts.sessions(ana.id)}

    assert {k: s.contexts for k, s in sessions.items()} == {"s1": 3, "s2": 1}
    assert (sessions["s1"].title, sessions["s2"].title) == ("Chat with Ana", None)
    assert {s.session_id for s in await contexts.sessions()} == {"s1", "s2", "s3"}


# -- changing, expiring, deleting --------------------------------------------------------------


async def test_update_and_set_priority_are_reindexed(contexts, ana, database):
    context = await contexts.add(ana.id, "The meeting is on Monday.", tags="work")

    changed = await contexts.update(
        context.id, content="The meeting is on Friday.", tags="calendar", context_type="task"
    )
    assert await contexts.set_priority([context.id], Priority.HIGH) == 1

    assert (changed.content, changed.tag_list, changed.context_type) == (
        "The meeting is on Friday.",
        ["calendar"],
        "task",
    )
    assert (await contexts.get(context.id)).priority == Priority.HIGH
    assert await contexts.retrieve("Monday", ana.id, None) == []
    assert ids(await contexts.retrieve("Friday", ana.id, None)) == [context.id]
    assert await contexts.count(ContextFilter(tag="work")) == 0
    assert await contexts.count(ContextFilter(tag="calendar")) == 1
    with pytest.raises(InvalidContext):
        await contexts.update(context.id, priority=7)
    with pytest.raises(LookupError):
        await contexts.update(123456, content="nothing")
    assert_index_consistent(database)


async def test_cleanup_expired_deletes_only_what_has_expired(contexts, ana, database):
    now = time.time()
    gone = await contexts.add(ana.id, "expired walrus", expires_at=now - 10)
    later = await contexts.add(ana.id, "later walrus", expires_at=now + 3600)
    forever = await contexts.add(ana.id, "forever walrus")

    assert await contexts.cleanup_expired() == 1

    assert await contexts.get(gone.id) is None
    assert {c.id for c in await contexts.page(ContextFilter(text="walrus"))} == {
        later.id,
        forever.id,
    }
    assert await contexts.cleanup_expired(now=now + 3600) == 1
    assert {c.id for c in await contexts.page(ContextFilter())} == {forever.id}
    assert await contexts.cleanup_expired(now=now + 10 * 365 * DAY) == 0
    assert_index_consistent(database)


async def test_delete_then_restore_keeps_the_ids(contexts, ana, database, bus):
    first = await contexts.add(ana.id, "heron lives by the river", tags="birds")
    second = await contexts.add(ana.id, "heron eats fish", session_id="s1", priority=Priority.HIGH)
    kept = await contexts.add(ana.id, "heron is grey")
    log = EventLog(bus)

    removed = await contexts.delete([first.id, second.id])

    assert {c.id for c in removed} == {first.id, second.id}
    assert await contexts.get(first.id) is None
    assert ids(await contexts.retrieve("heron", ana.id, "s1", touch=False)) == [kept.id]

    assert await contexts.restore(removed) == 2

    for original in (first, second):
        back = await contexts.get(original.id)
        assert (back.content, back.priority, back.tags, back.session_id, back.created_at) == (
            original.content,
            original.priority,
            original.tags,
            original.session_id,
            original.created_at,
        )
    found = await contexts.retrieve("heron", ana.id, "s1", touch=False)
    assert set(ids(found)) == {first.id, second.id, kept.id}
    assert await contexts.count(ContextFilter(tag="birds")) == 1
    # A new context after the undo does not take a restored id.
    newer = await contexts.add(ana.id, "heron nests high")
    assert newer.id > max(first.id, second.id, kept.id)
    assert log.names(events.CONTEXTS_CHANGED)
    assert_index_consistent(database)


async def test_deleting_a_memory_brings_its_sources_back_and_undo_archives_them_again(
    contexts, ana, database
):
    from mangaba_desktop.core.context.compression import compress_session

    for n in range(5):
        await contexts.add(ana.id, f"User: the otter number {n}", "conversation", session_id="s1")

    async def summarize(_text: str) -> str:
        return "five otters were discussed"

    memory = await compress_session(contexts, ana.id, "s1", summarize, threshold=3, keep_recent=1)
    sources = [c for c in await contexts.page(ContextFilter(session_id="s1")) if c.archived]
    assert len(sources) == 4 and {c.parent_id for c in sources} == {memory.id}

    removed = await contexts.delete([memory.id])

    # Nothing the memory stood for is lost: its sources are live again and retrievable.
    back = [await contexts.get(c.id) for c in sources]
    assert [(c.archived, c.parent_id) for c in back] == [(False, None)] * 4
    assert len(await contexts.retrieve("otter", ana.id, "s1", touch=False)) == 5

    # Undo (sources and memory restored together, sources listed first) relinks them.
    await contexts.restore(removed)
    again = [await contexts.get(c.id) for c in sources]
    assert [(c.archived, c.parent_id) for c in again] == [(True, memory.id)] * 4
    found = await contexts.retrieve("otter", ana.id, "s1", touch=False)
    archived_ids = {c.id for c in sources}
    assert len(found) == 1 and found[0].context.id not in archived_ids  # the newest, kept live
    assert_index_consistent(database)


async def test_a_memory_and_its_sources_deleted_together_come_back_together(contexts, ana):
    from mangaba_desktop.core.context.compression import compress_session

    for n in range(4):
        await contexts.add(ana.id, f"User: the lynx number {n}", "conversation", session_id="s2")

    async def summarize(_text: str) -> str:
        return "lynxes"

    memory = await compress_session(contexts, ana.id, "s2", summarize, threshold=2, keep_recent=1)
    everything = await contexts.page(ContextFilter(session_id="s2"))
    sources_first = sorted(everything, key=lambda c: c.parent_id is None)

    removed = await contexts.delete([c.id for c in sources_first])
    assert await contexts.count(ContextFilter(session_id="s2")) == 0
    assert await contexts.restore(sorted(removed, key=lambda c: c.parent_id is None)) == 5

    restored = await contexts.page(ContextFilter(session_id="s2"))
    assert {(c.id, c.archived, c.parent_id) for c in restored} == {
        (c.id, c.archived, c.parent_id) for c in everything
    }
    assert memory.id in {c.id for c in restored}


async def test_delete_session_removes_only_that_session(contexts, ana, bruno, database):
    doomed = [await contexts.add(ana.id, f"session note {n}", session_id="s1") for n in range(3)]
    kept = [
        await contexts.add(ana.id, "session note elsewhere", session_id="s2"),
        await contexts.add(ana.id, "agent-wide session note"),
        await contexts.add(bruno.id, "Bruno's session note", session_id="s3"),
    ]

    assert await contexts.delete_session("s1") == len(doomed)

    assert {c.id for c in await contexts.page(ContextFilter())} == {c.id for c in kept}
    assert await contexts.retrieve("session note", ana.id, "s1", touch=False) != []  # agent-wide
    assert await contexts.delete_session("s1") == 0
    assert_index_consistent(database)


async def test_summary_groups_the_session_by_type(contexts, ana):
    await contexts.add(
        ana.id, "User: hi\nAssistant: hello", ContextType.CONVERSATION, session_id="s1"
    )
    await contexts.add(ana.id, "Translate: bom dia", ContextType.TASK, session_id="s1")
    await contexts.add(ana.id, "Ana works in finance.")
    await contexts.add(ana.id, "Other session secret", session_id="s2")

    summary = await contexts.summary(ana.id, "s1")

    assert "Conversation (1):" in summary and "Task (1):" in summary
    assert "Knowledge (" in summary
    assert "Ana works in finance." in summary
    assert "Other session secret" not in summary
    assert await contexts.summary(ana.id, "nothing") != ""
