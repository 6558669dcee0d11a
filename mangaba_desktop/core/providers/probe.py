"""Model servers already running on this computer (Ollama, LM Studio, llama.cpp's server).

The app asks each well-known port once at start, all at the same time and with a short time
limit, so a missing server costs nothing and a hung one costs at most ``timeout_s``. Whatever
a server answers is treated as untrusted: anything but a well-formed model list means "not
found", and the list is capped in length and in the length of each name.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ..settings import LOCAL_PROVIDER_ID, Provider, ProviderKind, Settings

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

MAX_MODELS = 200
MAX_MODEL_NAME = 200
MAX_REPLY_BYTES = 2_000_000
"""A model list larger than this is not a model list."""


class ProbeTarget(NamedTuple):
    name: str
    kind: ProviderKind
    port: int
    path: str
    """What is asked: ``/api/tags`` (Ollama) or ``/v1/models`` (OpenAI-compatible)."""


DEFAULT_TARGETS: tuple[ProbeTarget, ...] = (
    ProbeTarget("Ollama", ProviderKind.OLLAMA, 11434, "/api/tags"),
    ProbeTarget("LM Studio", ProviderKind.OPENAI_COMPATIBLE, 1234, "/v1/models"),
    ProbeTarget("llama.cpp server", ProviderKind.OPENAI_COMPATIBLE, 8080, "/v1/models"),
)

_SUGGESTED_IDS = {"Ollama": "ollama", "LM Studio": "lm-studio", "llama.cpp server": "llama-cpp"}


@dataclass(frozen=True)
class FoundServer:
    kind: ProviderKind
    name: str
    base_url: str
    """What the provider is given: the server's root for Ollama, ``…/v1`` for the others."""
    models: list[str]


async def probe_local_servers(
    targets: Iterable[ProbeTarget] = DEFAULT_TARGETS,
    timeout_s: float = 0.6,
    host: str = "127.0.0.1",
) -> list[FoundServer]:
    """Ask every target at once; return those that answered with a model list, in order.

    Never raises: a refused connection, a time-out, an error status or an answer that is not
    the expected JSON all mean that target was not found.
    """
    import httpx  # here, not at the top: keeps its import off the start-up path

    targets = tuple(targets)
    if not targets:
        return []
    limits = httpx.Limits(max_connections=len(targets), max_keepalive_connections=0)
    # trust_env=False: a proxy from the environment must not see requests meant for this host.
    async with httpx.AsyncClient(
        timeout=timeout_s, trust_env=False, follow_redirects=False, limits=limits
    ) as client:
        found = await asyncio.gather(
            *(_probe(client, target, host, timeout_s) for target in targets)
        )
    return [server for server in found if server is not None]


async def _probe(
    client: httpx.AsyncClient, target: ProbeTarget, host: str, timeout_s: float
) -> FoundServer | None:
    root = f"http://{_host_in_url(host)}:{target.port}"
    try:
        async with asyncio.timeout(timeout_s):
            body = await _get(client, root + target.path)
    except Exception as exc:  # any failure at all means "not there"
        log.debug("no %s at %s: %s", target.name, root, type(exc).__name__)
        return None
    if body is None:
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None
    if target.kind == ProviderKind.OLLAMA:
        models = _names(data, "models", ("name", "model"))
        base_url = root
    else:
        models = _names(data, "data", ("id",))
        base_url = root + target.path.removesuffix("/models")
    if models is None:
        return None
    return FoundServer(target.kind, target.name, base_url, models)


async def _get(client: httpx.AsyncClient, url: str) -> bytes | None:
    """The body of a 200 reply, or None; stops reading past :data:`MAX_REPLY_BYTES`."""
    async with client.stream("GET", url) as response:
        if response.status_code != 200:
            return None
        body = bytearray()
        async for piece in response.aiter_bytes():
            body += piece
            if len(body) > MAX_REPLY_BYTES:
                return None
        return bytes(body)


def _names(data: Any, list_key: str, name_keys: tuple[str, ...]) -> list[str] | None:
    """The model names in ``data[list_key]``; None when the shape is not a model list."""
    if not isinstance(data, dict) or not isinstance(data.get(list_key), list):
        return None
    names: dict[str, None] = {}
    for item in data[list_key]:
        if len(names) >= MAX_MODELS:
            break
        if not isinstance(item, dict):
            continue
        name = next((item[k] for k in name_keys if isinstance(item.get(k), str)), None)
        # A cut name would name a model the server does not have, so long names are skipped.
        if name and len(name) <= MAX_MODEL_NAME and name.isprintable() and name.strip():
            names[name] = None
    return list(names)


def _host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def provider_for(found: FoundServer, existing: Settings) -> Provider:
    """A provider for ``found`` that can be added to ``existing`` (its id is not taken)."""
    base = _SUGGESTED_IDS.get(found.name) or _slug(found.name) or found.kind.value
    return Provider(
        id=unique_provider_id(base, (p.id for p in existing.providers)),
        kind=found.kind,
        name=found.name,
        base_url=found.base_url,
        models=list(found.models),
    )


def already_configured(found: FoundServer, settings: Settings) -> bool:
    """Whether a provider of ``settings`` already points at ``found``'s address."""
    url = found.base_url.rstrip("/")
    return any((p.base_url or "").rstrip("/") == url for p in settings.providers)


def unique_provider_id(base: str, taken: Iterable[str]) -> str:
    """``base`` unless taken, else ``base-2``, ``base-3``…; always a valid provider id."""
    base = _slug(base) or "provider"
    used = {*taken, LOCAL_PROVIDER_ID}
    candidate, n = base, 1
    while candidate in used:
        n += 1
        suffix = f"-{n}"
        candidate = base[: 40 - len(suffix)].rstrip("-") + suffix
    return candidate


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:40].rstrip("-")
