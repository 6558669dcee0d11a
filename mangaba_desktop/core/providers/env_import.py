"""The first-run import of the upstream framework's configuration.

Upstream is configured through environment variables, also read from a ``.env`` file:
``LLM_PROVIDER`` (google unless set), ``MODEL_NAME``, one API key variable per provider,
``MODEL_TEMPERATURE``, ``MAX_OUTPUT_TOKENS`` and ``SYSTEM_PROMPT``. On the first start they
become providers, a default model, default parameters and the system prompt.

Keys are never copied into the settings. A key in a real environment variable stays there and
the provider names the variable; a key found only in a ``.env`` file is handed back to the
caller, who offers to keep it in the system keyring.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..settings import KINDS, ModelParams, Provider, ProviderKind, Settings
from .probe import unique_provider_id

MAX_SYSTEM_PROMPT = 16_000
MAX_DOTENV_BYTES = 1_000_000
MAX_MODEL_NAME = 200

KEY_VARIABLES: dict[ProviderKind, tuple[str, ...]] = {
    ProviderKind.GEMINI: ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
    ProviderKind.OPENAI: ("OPENAI_API_KEY",),
    ProviderKind.ANTHROPIC: ("ANTHROPIC_API_KEY",),
    ProviderKind.OPENROUTER: ("OPENROUTER_API_KEY",),
}
"""Where upstream reads each provider's key, in the order it looks."""

UPSTREAM_VARIABLES: tuple[str, ...] = (
    *(v for variables in KEY_VARIABLES.values() for v in variables),
    "LLM_PROVIDER",
    "MODEL_NAME",
    "MODEL_TEMPERATURE",
    "MAX_OUTPUT_TOKENS",
    "SYSTEM_PROMPT",
)
"""Every variable of the upstream configuration this import reads."""

_PROVIDER_IDS = {
    ProviderKind.GEMINI: "gemini",
    ProviderKind.OPENAI: "openai",
    ProviderKind.ANTHROPIC: "anthropic",
    ProviderKind.OPENROUTER: "openrouter",
}

_LLM_PROVIDERS = {
    "google": ProviderKind.GEMINI,
    "gemini": ProviderKind.GEMINI,
    "openai": ProviderKind.OPENAI,
    "gpt": ProviderKind.OPENAI,
    "anthropic": ProviderKind.ANTHROPIC,
    "claude": ProviderKind.ANTHROPIC,
    "openrouter": ProviderKind.OPENROUTER,
}
_UPSTREAM_DEFAULT_PROVIDER = "google"


@dataclass
class EnvImport:
    settings: Settings
    """The new settings, with ``first_run_import_done`` set."""
    keys_from_dotenv: dict[str, str] = field(default_factory=dict, repr=False)
    """Provider id -> key found only in a ``.env`` file, for the caller to offer to the keyring."""
    notes: list[str] = field(default_factory=list)
    """What was imported or skipped, for the user; never a key."""


@dataclass(frozen=True)
class _Value:
    text: str
    variable: str
    dotenv: Path | None
    """The ``.env`` file it came from; None for a real environment variable."""


class _Sources:
    """Real environment variables first, then the ``.env`` files in the order given."""

    def __init__(self, environ: Mapping[str, str], dotenv: dict[str, _Value]) -> None:
        self._environ = environ
        self._dotenv = dotenv

    def get(self, *variables: str) -> _Value | None:
        for variable in variables:
            text = self._environ.get(variable)
            if text is not None and text.strip():
                return _Value(text, variable, None)
        for variable in variables:
            value = self._dotenv.get(variable)
            if value is not None and value.text.strip():
                return value
        return None


def import_environment(
    settings: Settings,
    environ: Mapping[str, str] | None = None,
    dotenv_paths: Sequence[Path] = (),
) -> EnvImport:
    """Import the upstream configuration into ``settings``, once.

    Settings whose import is already done are returned as they are. Never raises for what it
    reads: a ``.env`` file that cannot be read, a missing key or a bad number becomes a note.
    A ``.env`` file that does not exist is skipped silently (the caller passes the places one
    may be). Values in ``.env`` files are taken literally (no ``${VAR}`` expansion).
    """
    if settings.first_run_import_done:
        return EnvImport(settings)
    notes: list[str] = []
    sources = _Sources(
        os.environ if environ is None else environ, _read_dotenv_files(dotenv_paths, notes)
    )

    providers = list(settings.providers)
    keys_from_dotenv: dict[str, str] = {}
    for kind, variables in KEY_VARIABLES.items():
        key = sources.get(*variables)
        if key is None:
            continue
        label = KINDS[kind].label
        if any(p.kind == kind for p in providers):
            notes.append(f"{label} is already set up; {key.variable} was left alone.")
            continue
        provider = Provider(
            id=unique_provider_id(_PROVIDER_IDS[kind], (p.id for p in providers)),
            kind=kind,
            name=label,
            models=list(KINDS[kind].models),
            key_env=key.variable if key.dotenv is None else None,
        )
        providers.append(provider)
        if key.dotenv is None:
            notes.append(f"Added {label}; its key is read from {key.variable}.")
        else:
            keys_from_dotenv[provider.id] = key.text.strip()
            notes.append(f"Added {label}; its key ({key.variable}) was found in {key.dotenv}.")

    default_model = _default_model(sources, providers, notes) or settings.default_model
    return EnvImport(
        settings.model_copy(
            update={
                "providers": providers,
                "default_model": default_model,
                "default_params": _params(sources, settings.default_params, notes),
                "system_prompt": _system_prompt(sources, settings.system_prompt, notes),
                "first_run_import_done": True,
            }
        ),
        keys_from_dotenv,
        notes,
    )


def _read_dotenv_files(paths: Sequence[Path], notes: list[str]) -> dict[str, _Value]:
    from dotenv import dotenv_values  # here: only the first start needs it

    found: dict[str, _Value] = {}
    for path in map(Path, paths):
        try:
            with path.open("rb") as file:
                data = file.read(MAX_DOTENV_BYTES + 1)
        except FileNotFoundError:
            continue
        except OSError as exc:
            notes.append(f"{path} could not be read ({exc.strerror or type(exc).__name__}).")
            continue
        if len(data) > MAX_DOTENV_BYTES:
            notes.append(f"{path} is larger than {MAX_DOTENV_BYTES:,} bytes and was skipped.")
            continue
        try:
            if b"\x00" in data:
                raise ValueError
            text = data.decode("utf-8-sig")
        except ValueError:
            notes.append(f"{path} is not a text file and was skipped.")
            continue
        for name, value in dotenv_values(stream=io.StringIO(text), interpolate=False).items():
            if value is not None and name not in found:
                found[name] = _Value(value, name, path)
    return found


def _default_model(sources: _Sources, providers: list[Provider], notes: list[str]) -> str | None:
    """The default model upstream was using, if it can be used here; None keeps the current one.

    Upstream's default (google) only counts when ``MODEL_NAME`` is set: with neither variable
    the user never chose a model, and the local one stays the default.
    """
    chosen = sources.get("LLM_PROVIDER")
    model_name = sources.get("MODEL_NAME")
    if chosen is None and model_name is None:
        return None
    name = chosen.text.strip().lower() if chosen else _UPSTREAM_DEFAULT_PROVIDER
    if name in ("huggingface", "hf"):
        notes.append(
            "Hugging Face (LLM_PROVIDER) is not supported here; the local model stays the default."
        )
        return None
    kind = _LLM_PROVIDERS.get(name)
    if kind is None:
        shown = f" “{name[:40]}”" if name.isprintable() else ""
        notes.append(
            f"LLM_PROVIDER{shown} is not a provider this app knows; "
            "the local model stays the default."
        )
        return None
    index = next((i for i, p in enumerate(providers) if p.kind == kind), None)
    if index is None:
        notes.append(
            f"LLM_PROVIDER chooses {KINDS[kind].label}, but no key was found in "
            f"{' or '.join(KEY_VARIABLES[kind])}; the local model stays the default."
        )
        return None
    provider = providers[index]
    model = provider.models[0] if provider.models else KINDS[kind].models[0]
    if model_name is not None:
        wanted = model_name.text.strip()
        if len(wanted) <= MAX_MODEL_NAME and wanted.isprintable() and " " not in wanted:
            model = wanted
        else:
            notes.append(f"MODEL_NAME is not a model name; {model} is used instead.")
    if model not in provider.models:
        providers[index] = provider.model_copy(update={"models": [*provider.models, model]})
    notes.append(f"The default model is now {provider.model_id(model)}.")
    return provider.model_id(model)


def _params(sources: _Sources, current: ModelParams, notes: list[str]) -> ModelParams:
    update: dict[str, float | int] = {}
    temperature = sources.get("MODEL_TEMPERATURE")
    if temperature is not None:
        try:
            value = float(temperature.text)
            if not math.isfinite(value):
                raise ValueError
        except ValueError:
            notes.append(
                f"MODEL_TEMPERATURE is not a number; the temperature stays {current.temperature}."
            )
        else:
            update["temperature"] = _clamped("temperature", value, "MODEL_TEMPERATURE", notes)
    max_tokens = sources.get("MAX_OUTPUT_TOKENS")
    if max_tokens is not None:
        try:
            count = int(max_tokens.text.strip())
        except ValueError:
            notes.append(
                f"MAX_OUTPUT_TOKENS is not a whole number; the limit stays {current.max_tokens}."
            )
        else:
            update["max_tokens"] = int(_clamped("max_tokens", count, "MAX_OUTPUT_TOKENS", notes))
    if not update:
        return current
    params = ModelParams.model_validate({**current.model_dump(), **update})
    notes.append(
        f"Default parameters: temperature {params.temperature}, at most {params.max_tokens} tokens."
    )
    return params


def _clamped(field_name: str, value: float, variable: str, notes: list[str]) -> float:
    """``value`` within the range :class:`ModelParams` declares for ``field_name``."""
    low, high = -math.inf, math.inf
    for bound in ModelParams.model_fields[field_name].metadata:
        low = getattr(bound, "ge", low)
        high = getattr(bound, "le", high)
    clamped = min(max(value, low), high)
    if clamped != value:
        notes.append(f"{variable} {value} is outside {low} to {high}; {clamped} is used.")
    return clamped


def _system_prompt(sources: _Sources, current: str, notes: list[str]) -> str:
    prompt = sources.get("SYSTEM_PROMPT")
    if prompt is None:
        return current
    text = prompt.text
    if len(text) > MAX_SYSTEM_PROMPT:
        text = text[:MAX_SYSTEM_PROMPT]
        notes.append(
            f"SYSTEM_PROMPT is longer than {MAX_SYSTEM_PROMPT:,} characters; the rest was left out."
        )
    notes.append("The system prompt was imported from SYSTEM_PROMPT.")
    return text
