"""Fixtures for the core tests that go through litellm and the embedded model."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from mangaba_desktop.core.providers.completions import Completions


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def completions() -> AsyncIterator[Completions]:
    """The real Completions, started once: litellm imported and the embedded model loaded.

    Tests that use it run on the session's event loop (``loop_scope="session"``), the loop it
    was started on.
    """
    source = Completions()
    await source.start()
    yield source
    await source.close()
