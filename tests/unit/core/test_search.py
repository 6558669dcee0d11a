"""Searching the whole history as the user types."""

from __future__ import annotations

import pytest
import pytest_asyncio

from mangaba_desktop.core.store import Role
from mangaba_desktop.core.store.search import HIT_END, HIT_START, match_expression

HOSTILE_QUERIES = [
    "AND",
    "OR",
    "NOT",
    "cats AND",
    "OR dogs",
    "NOT cats",
    "NEAR(cats dogs)",
    "NEAR(cats dogs, 2)",
    "cats NEAR/2 dogs",
    '"',
    '""',
    '"unclosed phrase',
    'say "hi',
    "*",
    "cat*",
    "*cat",
    "(",
    ")",
    "(cats OR",
    "content:cats",
    "messages_fts:cats",
    "{content}: cats",
    "^cats",
    "cats + dogs - birds",
    "'; DROP TABLE messages; --",
    "\\",
    "%_%",
    "\x00",
    "a" * 5000,
]


@pytest_asyncio.fixture
async def history(store):
    """Two conversations of messages, oldest first; returns {name: message}."""
    pets = await store.create(title="Pets")
    trips = await store.create(title="Trips")
    made = {}
    for key, conversation, role, text in [
        ("cats", pets, Role.USER, "cats are great companions"),
        ("dogs", pets, Role.ASSISTANT, "dogs are loyal"),
        ("either", pets, Role.USER, "cats OR dogs, who wins?"),
        ("drill", pets, Role.ASSISTANT, "this is NOT a drill"),
        ("hello", trips, Role.USER, "hello world from Lisbon"),
        ("quote", trips, Role.ASSISTANT, 'she said "quoted phrase" twice'),
        ("cafe", trips, Role.USER, "Café da manhã in Lisbon"),
        ("party", trips, Role.USER, "party 🎉 tonight in Lisbon"),
    ]:
        made[key] = await store.add_message(conversation.id, role, text)
    return made


def ids(hits):
    return [hit.message_id for hit in hits]


# -- what reaches FTS5 ------------------------------------------------------------------------


def test_every_word_is_quoted_and_the_last_is_a_prefix():
    assert match_expression("cats OR dogs") == '"cats" "OR" "dogs"*'
    assert match_expression('NEAR("a" b*)') == '"NEAR" "a" "b"'
    assert match_expression("🎉 !!") is None


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
def test_match_expression_never_lets_syntax_through(query):
    expression = match_expression(query)

    if expression is not None:
        terms = expression.split(" ")
        assert all(t.startswith('"') and t.rstrip("*").endswith('"') for t in terms)
        assert all('"' not in t.rstrip("*")[1:-1] for t in terms)


@pytest.mark.asyncio
@pytest.mark.parametrize("query", HOSTILE_QUERIES)
async def test_search_with_fts_syntax_in_the_query_never_raises(store, history, query):
    hits = await store.search(query)

    assert isinstance(hits, list)
    assert await store.count(history["cats"].conversation_id) == 4  # nothing was dropped


@pytest.mark.asyncio
async def test_operator_words_are_plain_words(store, history):
    assert ids(await store.search("cats OR dogs")) == [history["either"].id]
    assert ids(await store.search("NOT")) == [history["drill"].id]
    assert ids(await store.search("cats AND")) == []  # no message has the word "and"


@pytest.mark.asyncio
async def test_quotes_in_the_query_are_ignored(store, history):
    assert ids(await store.search('"quoted phrase')) == [history["quote"].id]


# -- matching ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_last_word_matches_as_a_prefix_while_typing(store, history):
    assert ids(await store.search("hel")) == [history["hello"].id]
    assert ids(await store.search("hello wor")) == [history["hello"].id]
    assert ids(await store.search("hel world")) == []  # only the last word is a prefix


@pytest.mark.asyncio
async def test_accents_do_not_matter(store, history):
    assert ids(await store.search("cafe manha")) == [history["cafe"].id]


@pytest.mark.asyncio
async def test_results_are_newest_first_across_conversations(store, history):
    hits = await store.search("lisbon")

    assert ids(hits) == [history["party"].id, history["cafe"].id, history["hello"].id]
    assert {(h.conversation_title, h.role) for h in hits} == {("Trips", "user")}
    assert [h.created_at for h in hits] == sorted((h.created_at for h in hits), reverse=True)

    both = await store.search("are")
    assert [(h.conversation_title, h.message_id) for h in both] == [
        ("Pets", history["dogs"].id),
        ("Pets", history["cats"].id),
    ]


@pytest.mark.asyncio
async def test_search_spans_conversations(store, history):
    extra = await store.create(title="More pets")
    newest = await store.add_message(extra.id, Role.USER, "my cats sleep all day")

    hits = await store.search("cats")

    assert ids(hits) == [newest.id, history["either"].id, history["cats"].id]
    assert [h.conversation_id for h in hits] == [
        extra.id,
        history["cats"].conversation_id,
        history["cats"].conversation_id,
    ]


@pytest.mark.asyncio
async def test_snippet_marks_the_matched_words(store, history):
    [hit] = await store.search("loyal")

    assert f"{HIT_START}loyal{HIT_END}" in hit.snippet


@pytest.mark.asyncio
async def test_emoji_only_query_falls_back_to_a_scan(store, history):
    [hit] = await store.search("🎉")

    assert hit.message_id == history["party"].id
    assert hit.snippet == f"party {HIT_START}🎉{HIT_END} tonight in Lisbon"
    assert await store.search("🦄") == []


@pytest.mark.asyncio
async def test_blank_query_finds_nothing_and_limit_is_kept(store, history):
    assert await store.search("   ") == []
    assert len(await store.search("lisbon", limit=2)) == 2


@pytest.mark.asyncio
async def test_edited_message_is_found_by_its_new_text_only(store, history):
    await store.update_message(history["dogs"].id, content="dogs are noisy")

    assert ids(await store.search("noisy")) == [history["dogs"].id]
    assert await store.search("loyal") == []
