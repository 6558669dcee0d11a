"""One streaming entry point for every model: a litellm Router built from the user's settings.

The Router holds one deployment per model the user configured (keys from the OS keyring or the
environment, per-provider address and timeout), retries 429, 5xx and timeouts with back-off,
and passes any other litellm model name straight through. Around it this module adds what a
chat needs to be trusted:

- the fallback chain the user ordered, tried only when a model cannot answer at all (never
  after the first word, never past a rejected key), and the reply says which model answered;
- a pacer per provider, so a burst waits its turn instead of failing;
- errors in words a user can act on ("Key rejected by OpenAI"), with keys never in them;
- a cut or empty stream told apart from a finished one;
- the cost of each reply from litellm's local price table (0 for local models).

litellm takes seconds to import, so nothing imports it at module level: :meth:`start` does it
on a worker thread after the window is up, with the local cost map so that the import never
reaches for the network.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..ratelimit import Pacer
from ..settings import (
    LOCAL_MODEL,
    LOCAL_MODEL_NAME,
    LOCAL_PROVIDER_ID,
    Provider,
    ProviderKind,
    Settings,
    SettingsStore,
)
from .local_model import LocalModel, LocalModelError, embedded_model_path

if TYPE_CHECKING:
    from ..audit import AuditLog
    from .secrets import KeyStore

log = logging.getLogger(__name__)

LOCAL_PROVIDER = LOCAL_PROVIDER_ID
TEST_PROMPT = [{"role": "user", "content": "Reply with the word ok."}]


@dataclass
class StreamPiece:
    """A piece of a streamed reply. The last piece carries ``usage``, ``cost`` and ``model``."""

    text: str = ""
    usage: dict[str, int] = field(default_factory=dict)
    model: str | None = None
    """The model that answered (another one than asked for after a fallback)."""
    provider: str | None = None
    cost: float | None = None
    """US dollars, from litellm's price table; 0 for local models; None when unknown."""
    notice: str | None = None
    """Something the user should know about this reply (it came from a fallback model)."""


@dataclass(frozen=True)
class KeyCheck:
    ok: bool
    message: str


class ProviderError(RuntimeError):
    """A model could not answer; the message is written for the user and holds no secret."""

    fallback = False
    """Another model may be tried (the failure is about reaching this one, not the request)."""
    unreachable = False
    """The model could not be reached at all: the message may wait in the outbox."""


class KeyRejected(ProviderError):
    pass


class KeyMissing(ProviderError):
    pass


class ModelBusy(ProviderError):
    fallback = True


class ModelUnreachable(ProviderError):
    fallback = True
    unreachable = True


class StreamCut(ProviderError):
    """The reply stopped before its end; what arrived is kept."""


def import_litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    # litellm narrates every call at INFO (with colour codes); the app logs what matters itself.
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return litellm


_LIVE_LOCAL_PROVIDERS: list[Any] = []
"""The local-model providers of the Completions not closed yet, newest last."""


def _serve_local_with(litellm: Any, provider: Any, *, only_if: Any = None) -> None:
    """Route litellm's ``local/`` models to ``provider`` (when ``only_if`` is given: only if
    they are routed to that one now)."""
    current = [p for p in litellm.custom_provider_map if p.get("provider") == LOCAL_PROVIDER]
    if only_if is not None and not any(p.get("custom_handler") is only_if for p in current):
        return
    others = [p for p in litellm.custom_provider_map if p.get("provider") != LOCAL_PROVIDER]
    litellm.custom_provider_map = [
        *others,
        {"provider": LOCAL_PROVIDER, "custom_handler": provider},
    ]
    from litellm.utils import custom_llm_setup

    custom_llm_setup()


class Completions:
    """Streams replies from the models in the user's settings, local or remote.

    Args:
        local_model_path: the GGUF file for the embedded model; the wheel's one by default.
        settings: providers, fallbacks, timeouts, retries; defaults (local model only) if None.
        keys: where API keys are read from; no keys (local and keyless endpoints only) if None.
        audit: where key tests are recorded (with their outcome, never the key).
    """

    def __init__(
        self,
        local_model_path: Path | None = None,
        *,
        settings: SettingsStore | Settings | None = None,
        keys: KeyStore | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self._local_model_path = local_model_path
        self._settings: SettingsStore | Settings = settings or Settings()
        self.keys = keys
        self.audit = audit
        self.pacer = Pacer()
        self._litellm: Any = None
        self._local: Any = None
        self._router: Any = None
        self._router_settings: Settings | None = None
        self._import: asyncio.Future[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._building: asyncio.Future[Any] | None = None
        if isinstance(settings, SettingsStore):
            settings.subscribe(lambda _settings: self.invalidate())

    # -- configuration -------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        if isinstance(self._settings, SettingsStore):
            return self._settings.settings
        return self._settings

    @property
    def default_model(self) -> str:
        model = self.settings.default_model
        return model if model in self.settings.models() else LOCAL_MODEL

    @property
    def ready(self) -> bool:
        return self._litellm is not None

    @property
    def local_model_name(self) -> str:
        return self._local.model.name if self._local else "SmolLM2-135M-Instruct"

    def invalidate(self) -> None:
        """Build the router again before the next request (settings or keys changed)."""
        if self._router is not None:
            # A Router registers callbacks in litellm's global lists; let them go with it.
            self._router.discard()
        self._router = None
        self._router_settings = None

    def label(self, model: str) -> str:
        """What the user calls the provider of ``model``."""
        provider = self.settings.provider_of(model)
        if provider is not None:
            return provider.name
        if model.startswith(LOCAL_PROVIDER + "/"):
            return "the local model"
        return model.partition("/")[0] or model

    # -- start and stop ------------------------------------------------------------------------

    async def start(self) -> None:
        """Import litellm, register the local provider and load the local model, off the loop.

        Safe to call many times; later calls wait for the first one.
        """
        await self._imported()
        if self._ready is None:
            self._ready = asyncio.ensure_future(asyncio.wrap_future(self._local.preload()))
        await asyncio.shield(self._ready)

    async def _imported(self) -> None:
        if self._import is None:
            self._import = asyncio.ensure_future(self._import_litellm())
        await asyncio.shield(self._import)

    async def _import_litellm(self) -> None:
        path = self._local_model_path or await asyncio.to_thread(embedded_model_path)
        self._litellm = await asyncio.to_thread(self._register, LocalModel(path))

    def _register(self, model: LocalModel) -> Any:
        litellm = import_litellm()
        from .litellm_local import LocalModelProvider

        self._local = LocalModelProvider(model)
        _LIVE_LOCAL_PROVIDERS.append(self._local)
        _serve_local_with(litellm, self._local)
        return litellm

    async def close(self) -> None:
        for pending in (self._import, self._ready, self._building):
            if pending is not None and not pending.done():
                pending.cancel()
        if self._router is not None:
            self._router.discard()  # its callbacks leave litellm's global lists
            self._router = self._router_settings = None
        if self._local is not None:
            local = self._local
            if local in _LIVE_LOCAL_PROVIDERS:
                _LIVE_LOCAL_PROVIDERS.remove(local)
            if self._litellm is not None and _LIVE_LOCAL_PROVIDERS:
                # litellm's provider map is global: another Completions still open (a test,
                # an embedding caller) must not be left routed to this one, closed.
                _serve_local_with(self._litellm, _LIVE_LOCAL_PROVIDERS[-1], only_if=local)
            await asyncio.to_thread(local.shutdown)

    # -- the router ----------------------------------------------------------------------------

    async def router(self) -> Any:
        """The Router for the current settings (built off the loop: keys come from the keyring)."""
        await self._imported()
        while True:
            settings = self.settings
            if self._router is not None and self._router_settings is settings:
                return self._router
            if self._building is None or self._building.done():
                self._building = asyncio.ensure_future(asyncio.to_thread(self._build, settings))
            router, built_for = await asyncio.shield(self._building)
            if built_for is not self.settings:
                continue  # the settings changed while it was built: build again
            previous, self._router, self._router_settings = self._router, router, built_for
            if previous is not None and previous is not router:
                # A Router registers callbacks in litellm's global lists; let them go with it.
                previous.discard()
            return router

    def _build(self, settings: Settings) -> tuple[Any, Settings]:
        """One deployment per provider (``<id>/*``, with its address, key and timeout), the
        embedded model, and any other litellm name passed through."""
        from litellm import Router

        deployments: list[dict[str, Any]] = [_local_deployment(LOCAL_MODEL, LOCAL_MODEL_NAME)]
        for provider in settings.providers:
            deployments.append(
                {
                    "model_name": provider.model_id("*"),
                    "litellm_params": _params(provider, "*", self._key(provider)),
                }
            )
        self._serve_gguf(settings)
        # Any other litellm name (an agent built in code with its own model and key) passes
        # through, with the same retries.
        deployments.append({"model_name": "*", "litellm_params": {"model": "*"}})
        router = Router(
            model_list=deployments,
            num_retries=settings.retries,
            retry_after=0,
            disable_cooldowns=True,
        )
        return router, settings

    def _key(self, provider: Provider) -> str | None:
        if self.keys is None:
            return os.environ.get(provider.env_var) if provider.env_var else None
        return self.keys.get(provider.id, provider.env_var)

    def _has_key(self, provider: Provider) -> bool:
        # A bool, not the key: what crosses a thread may be logged by the loop's executor.
        return bool(self._key(provider))

    def _serve_gguf(self, settings: Settings) -> None:
        """Make the GGUF providers' models available to the local provider (each file loads
        on its first use; one that is no longer configured is unloaded)."""
        if self._local is None:
            return
        wanted: dict[str, Path] = {}
        for provider in settings.providers:
            if provider.kind == ProviderKind.GGUF and provider.path:
                path = Path(provider.path)
                for model in provider.models or [path.stem]:
                    wanted[f"{provider.id}/{model}"] = path
        self._local.serve(wanted)

    # -- streaming -----------------------------------------------------------------------------

    async def stream(
        self,
        model: str,
        messages: list[dict[str, str]],
        **params: Any,
    ) -> AsyncIterator[StreamPiece]:
        """Yield the reply's pieces; the last one carries usage, cost and the answering model.

        Tries ``model``, then the user's fallbacks when it cannot answer at all. Raises a
        :class:`ProviderError` (``ModelUnreachable`` when no model in the chain could be
        reached) or :class:`LocalModelError`. Cancelling the consuming task stops the
        generation.
        """
        router = await self.router()
        settings = self.settings
        chain = [model, *(m for m in settings.fallbacks if m != model)]
        failures: list[ProviderError] = []
        for candidate in chain:
            # A key or address given for the chosen model is never sent to a fallback.
            asked = params if candidate == model else without_credentials(params)
            notice = None
            if candidate != model and failures:
                notice = f"{failures[0]} Answered by {candidate} instead."
            started = False
            try:
                response = await self._open(router, candidate, messages, asked)
                mocked = "mock_response" in asked
                async for piece in self._read(response, candidate, notice, mocked=mocked):
                    started = started or bool(piece.text)
                    yield piece
                return
            except ProviderError as error:
                if started:
                    raise  # never two models in one reply
                failures.append(error)
                if error.fallback:
                    log.info("%s could not answer: %s", candidate, error)
                    continue
                if candidate == model:
                    raise
                break
        first = failures[0]
        if len(failures) > 1:
            tried = ", ".join(chain[1 : len(failures)])
            first = type(first)(f"{first} The fallbacks ({tried}) could not answer either.")
        if all(f.unreachable for f in failures):
            raise ModelUnreachable(str(first))
        raise first

    async def _open(
        self, router: Any, model: str, messages: list[dict[str, str]], params: dict[str, Any]
    ) -> Any:
        provider = self.settings.provider_of(model)
        if provider is not None:
            if provider.needs_key and not await asyncio.to_thread(self._has_key, provider):
                raise KeyMissing(
                    f"There is no API key for {provider.name}: add one in Settings ▸ "
                    "Models & providers."
                )
            await self.pacer.wait(provider.id, provider.requests_per_minute)
        try:
            return await router.acompletion(
                model=model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                **params,
            )
        except Exception as exc:
            _raise_local_error(exc)
            raise self._explain(exc, model) from None

    async def _read(
        self, response: Any, model: str, notice: str | None, *, mocked: bool = False
    ) -> AsyncIterator[StreamPiece]:
        # A mocked reply (litellm's mock_response, in tests) has no provider to say it finished.
        inner = None if mocked else _provider_stream(response)
        got_text = False
        usage: dict[str, int] = {}
        try:
            async for chunk in response:
                text = ""
                if chunk.choices:
                    text = chunk.choices[0].delta.content or ""
                found = getattr(chunk, "usage", None)
                if found:
                    usage = {
                        "prompt_tokens": found.prompt_tokens or 0,
                        "completion_tokens": found.completion_tokens or 0,
                    }
                if text:
                    got_text = True
                    yield StreamPiece(text=text, notice=notice)
                    notice = None
        except Exception as exc:
            _raise_local_error(exc)
            error = self._explain(exc, model)
            if isinstance(error, ModelUnreachable):
                # It answered, then went quiet: slow or overloaded, not out of reach.
                error = ModelBusy(str(error))
            if got_text:
                raise StreamCut(f"{error} The reply stopped here; what arrived is kept.") from None
            raise error from None
        finally:
            closer = getattr(response, "aclose", None)
            if closer is not None:
                try:
                    await closer()
                except Exception as exc:  # closing a broken stream must not hide its error
                    log.debug("closing a stream failed: %s", exc)
        finished = "stop"
        if inner is not None:
            # Gemini's parser keeps its finish reason in the "intermittent" slot.
            finished = inner.received_finish_reason or inner.intermittent_finish_reason
        label = self.label(model)
        if not finished and not model.startswith(LOCAL_PROVIDER + "/"):
            if got_text:
                raise StreamCut(
                    f"The connection to {label} closed before the reply was finished; "
                    "what arrived is kept."
                )
            raise ProviderError(
                f"{label} sent back no reply: the address may not be an OpenAI-compatible "
                "API (an HTML page or another service answered)."
            )
        yield StreamPiece(
            usage=usage,
            model=model,
            provider=self._provider_id(model),
            cost=self.cost(model, usage),
            notice=notice,
        )

    def _provider_id(self, model: str) -> str:
        return model.partition("/")[0] or model

    def cost(self, model: str, usage: dict[str, int]) -> float | None:
        """US dollars for ``usage`` on ``model``; 0 on this computer; None when not priced."""
        provider = self.settings.provider_of(model)
        if model.startswith(LOCAL_PROVIDER + "/") or (provider is not None and provider.is_local):
            return 0.0
        if not usage:
            return None
        name = provider.litellm_model(model.partition("/")[2]) if provider else model
        try:
            prompt, completion = self._litellm.cost_per_token(
                model=name,
                prompt_tokens=usage.get("prompt_tokens", 0),
                completion_tokens=usage.get("completion_tokens", 0),
            )
        except Exception:
            return None
        total = float(prompt) + float(completion)
        # A zero price for a cloud model means the table does not really know it.
        return total if total > 0 or not usage.get("completion_tokens") else None

    # -- errors --------------------------------------------------------------------------------

    def _explain(self, exc: BaseException, model: str) -> ProviderError:
        """A litellm exception in words for the user, without any key in them."""
        error = self._classify(exc, model)
        text = str(error)
        return type(error)(text[:1].upper() + text[1:])

    def _classify(self, exc: BaseException, model: str) -> ProviderError:
        label = self.label(model)
        name = type(exc).__name__
        text = _first_sentence(self._redact(str(exc)) or type(exc).__name__)
        if name == "AuthenticationError" or "401" in name:
            return KeyRejected(f"Key rejected by {label}.")
        if name == "PermissionDeniedError":
            return KeyRejected(f"{label} refused the request: the key lacks permission.")
        if name == "RateLimitError":
            retried = " even after retries" if self.settings.retries else ""
            return ModelBusy(f"{label} hit its rate limit (429){retried}.")
        if name == "NotFoundError":
            return ProviderError(f"{label} does not know the model “{model}”.")
        if name in ("BadRequestError", "UnprocessableEntityError", "ContextWindowExceededError"):
            return ProviderError(f"{label} refused the request: {text}")
        if _is_connection_failure(exc):
            return ModelUnreachable(f"{label} cannot be reached.")
        if name == "Timeout" or "timed out" in text.lower() or "timeout" in text.lower():
            return ModelBusy(f"{label} did not answer in time.")
        if name in ("InternalServerError", "ServiceUnavailableError", "BadGatewayError"):
            return ModelBusy(f"{label} had a server error: {text}")
        if name == "APIConnectionError":
            return ProviderError(f"{label} sent something that is not a model reply: {text}")
        return ProviderError(f"{label}: {text}")

    def _redact(self, text: str) -> str:
        if self.keys is None:
            return text
        from .secrets import redact

        return redact(text, self.keys.secrets())

    # -- keys ----------------------------------------------------------------------------------

    async def test_key(
        self, provider: Provider, key: str | None, *, actor: str = "user"
    ) -> KeyCheck:
        """One minimal real request to ``provider`` with ``key`` (or its stored key); the test
        and its outcome are audited (``key.tested``), never the key."""
        try:
            check = await self._test_key(provider, key)
        except Exception as exc:
            failed = KeyCheck(False, f"The test could not run ({type(exc).__name__}).")
            self._record_test(provider, failed, actor)
            raise
        self._record_test(provider, check, actor)
        return check

    def _record_test(self, provider: Provider, check: KeyCheck, actor: str) -> None:
        if self.audit is not None:
            self.audit.record(
                "key.tested",
                actor=actor,
                target=provider.id,
                outcome="ok" if check.ok else "failed",
                detail=check.message,
            )

    async def _test_key(self, provider: Provider, key: str | None) -> KeyCheck:
        await self._imported()
        if key is None:
            found: list[str | None] = []
            await asyncio.to_thread(lambda: found.append(self._key(provider)))
            key = found[0]
        if provider.needs_key and not key:
            return KeyCheck(False, f"There is no key for {provider.name} to test.")
        model = (provider.models or list(provider.info.models) or [""])[0]
        if not model:
            return KeyCheck(False, f"Add a model to {provider.name} first, then test it.")
        started = time.monotonic()
        try:
            response = await self._litellm.acompletion(
                messages=TEST_PROMPT,
                max_tokens=1,
                num_retries=0,
                **_params(provider, model, key, timeout_s=min(provider.timeout_s, 20.0)),
            )
            del response
        except Exception as exc:
            error = self._explain(exc, provider.model_id(model))
            if key:
                from .secrets import redact

                error = type(error)(redact(str(error), [key]))
            return KeyCheck(False, str(error))
        seconds = time.monotonic() - started
        return KeyCheck(True, f"{provider.name} answered in {seconds:.1f} s: the key works.")


def _params(
    provider: Provider, model: str, key: str | None, *, timeout_s: float | None = None
) -> dict[str, Any]:
    """litellm's parameters for ``model`` of ``provider`` (``*`` for all of its models)."""
    timeout = timeout_s or provider.timeout_s
    params: dict[str, Any] = {
        "model": provider.litellm_model(model),
        "timeout": timeout,
        "stream_timeout": timeout,
    }
    if provider.kind == ProviderKind.GGUF:
        params["num_retries"] = 0
        return params
    if provider.base_url or provider.info.base_url:
        params["api_base"] = provider.base_url or provider.info.base_url
    if key:
        params["api_key"] = key
    elif provider.kind == ProviderKind.OPENAI_COMPATIBLE:
        params["api_key"] = "none"  # the OpenAI client insists on one; local servers ignore it
    return params


def without_credentials(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` without a key or address meant for one model only."""
    return {k: v for k, v in params.items() if k not in ("api_key", "api_base", "base_url")}


def _local_deployment(model_name: str, local_name: str) -> dict[str, Any]:
    return {
        "model_name": model_name,
        "litellm_params": {"model": f"{LOCAL_PROVIDER}/{local_name}", "num_retries": 0},
    }


def _provider_stream(response: Any) -> Any:
    """The provider's own stream inside the Router's fallback wrapper, which knows whether the
    provider said the reply was finished (the wrapper reports "stop" even for a cut stream)."""
    generator = getattr(response, "_async_generator", None)
    frame = getattr(generator, "ag_frame", None)
    if frame is not None:
        inner = frame.f_locals.get("model_response")
        if inner is not None and hasattr(inner, "received_finish_reason"):
            return inner
    return response if hasattr(response, "received_finish_reason") else None


def _is_connection_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = type(current).__name__
        if name in ("ConnectError", "ConnectionRefusedError", "ConnectTimeout", "gaierror"):
            return True
        if "Connection error" in str(current) or "Cannot connect" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _first_sentence(text: str) -> str:
    text = text.strip()
    # litellm prefixes class paths and appends router details; keep the provider's words.
    for marker in ("Exception - ", " - "):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    for tail in (". Received Model Group", "Received Model Group", "LiteLLM Retried"):
        text = text.split(tail, 1)[0]
    return text.strip().rstrip(".")[:500] + "."


def _raise_local_error(exc: BaseException) -> None:
    """Re-raise the local model's own error when litellm wrapped it.

    litellm turns an exception from a custom provider's stream into ``MidStreamFallbackError``
    whose text holds two Python tracebacks; the user must see the model's sentence instead.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, LocalModelError):
            raise current from None
        seen.add(id(current))
        current = current.__cause__ or current.__context__
