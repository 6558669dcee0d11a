"""Vector similarity in retrieval: the embedded model's embeddings, fused with the word ranking;
retrieval without them is covered in test_context_store.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio

from mangaba_desktop.core.context import ContextStore
from mangaba_desktop.core.context.embeddings import LocalEmbedder, fuse, pack, unpack
from mangaba_desktop.core.store import AgentStore

FACTS = [
    "The weather is sunny and warm this afternoon.",
    "Invoices are paid on the fifth business day.",
    "My daughter plays the violin in the school orchestra.",
    "The server backup runs every night at two.",
]


def test_a_vector_is_read_back_only_for_the_model_that_made_it():
    vector = np.array([0.6, 0.8], dtype=np.float32)
    blob = pack("mangaba-local/smollm2", vector)

    assert np.array_equal(unpack(blob, "mangaba-local/smollm2"), vector)
    assert unpack(blob, "openai/text-embedding-3-small") is None
    assert unpack(b"not an embedding", "mangaba-local/smollm2") is None
    assert unpack(None, "mangaba-local/smollm2") is None


def test_fusion_rewards_agreement_between_the_rankings():
    fused = fuse([10, 20, 30], [30, 40])

    assert max(fused, key=fused.__getitem__) == 30  # in both lists
    assert fused[10] > fused[20] == fused[40] > 0  # rank 1 beats rank 2, wherever it is


@pytest_asyncio.fixture
async def ana(database, bus):
    return await AgentStore(database, bus).create("Ana", "")


@pytest_asyncio.fixture
async def embedder() -> AsyncIterator[LocalEmbedder]:
    local = LocalEmbedder()
    yield local
    local.close()


@pytest.mark.model
@pytest.mark.asyncio
async def test_embeddings_find_a_context_that_shares_no_word_with_the_question(
    database, bus, ana, embedder
):
    contexts = ContextStore(database, bus)
    added = await contexts.add_many(ana.id, FACTS)
    invoices, backup = added[1], added[3]
    assert await contexts.retrieve("When do bills get settled?", ana.id, None) == []

    contexts.embedder = embedder
    assert await contexts.index_embeddings() == len(FACTS)
    assert await contexts.index_embeddings() == 0  # nothing left to embed

    bills = await contexts.retrieve("When do bills get settled?", ana.id, None, touch=False)
    copies = await contexts.retrieve("nightly database copies", ana.id, None, touch=False)
    assert bills[0].context.id == invoices.id
    assert copies[0].context.id == backup.id
    assert len(bills) < len(FACTS)  # only the near-best similarities count as a match
    # The word ranking still counts: a shared word puts its context first.
    violin = await contexts.retrieve("violin practice", ana.id, None, touch=False)
    assert violin[0].context.content == FACTS[2]


@pytest.mark.model
@pytest.mark.asyncio
async def test_new_contexts_are_embedded_and_another_model_re_embeds_them(
    database, bus, ana, embedder
):
    contexts = ContextStore(database, bus, embedder=embedder)
    added = await contexts.add(ana.id, "The backup server is in Porto.")
    await contexts.wait_indexing()

    stored = await contexts.get(added.id)
    assert unpack(stored.embeddings, embedder.name) is not None

    class Renamed(LocalEmbedder):
        name = "mangaba-local/another-model"

    other = Renamed()
    contexts.embedder = other
    try:
        assert await contexts.index_embeddings() == 1
        again = await contexts.get(added.id)
        assert unpack(again.embeddings, embedder.name) is None
        assert unpack(again.embeddings, "mangaba-local/another-model") is not None
    finally:
        other.close()
