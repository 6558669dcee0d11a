"""The first-run import of the upstream environment: variables, ``.env`` files and their keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from mangaba_desktop.core.providers.env_import import (
    MAX_SYSTEM_PROMPT,
    UPSTREAM_VARIABLES,
    EnvImport,
    import_environment,
)
from mangaba_desktop.core.settings import (
    KINDS,
    LOCAL_MODEL,
    ModelParams,
    Provider,
    ProviderKind,
    Settings,
)

GOOGLE_KEY = "AIzaSy-test-google-key-0001"
GEMINI_KEY = "AIzaSy-test-gemini-key-0002"
OPENAI_KEY = "sk-test-openai-key-0003"
ANTHROPIC_KEY = "sk-ant-test-anthropic-key-0004"
OPENROUTER_KEY = "sk-or-test-openrouter-key-0005"
DOTENV_OPENAI_KEY = "sk-test-openai-key-from-dotenv-0006"
ALL_KEYS = (GOOGLE_KEY, GEMINI_KEY, OPENAI_KEY, ANTHROPIC_KEY, OPENROUTER_KEY, DOTENV_OPENAI_KEY)


def dotenv(tmp_path: Path, content: str | bytes, name: str = ".env") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def assert_no_key_leaks(result: EnvImport) -> None:
    shown = "\n".join([*result.notes, result.settings.model_dump_json(), repr(result)])
    for key in ALL_KEYS:
        assert key not in shown


# -- nothing to import -------------------------------------------------------------------------


def test_without_any_configuration_only_the_first_run_is_marked_done():
    result = import_environment(Settings(), environ={})

    assert result.settings == Settings(first_run_import_done=True)
    assert result.settings.default_model == LOCAL_MODEL
    assert (result.keys_from_dotenv, result.notes) == ({}, [])


def test_settings_already_imported_are_returned_unchanged():
    done = Settings(first_run_import_done=True, system_prompt="mine")
    environ = {"OPENAI_API_KEY": OPENAI_KEY, "LLM_PROVIDER": "openai", "SYSTEM_PROMPT": "theirs"}

    result = import_environment(done, environ=environ)

    assert result.settings is done
    assert (result.keys_from_dotenv, result.notes) == ({}, [])


def test_a_second_import_changes_nothing(tmp_path):
    environ = {"OPENAI_API_KEY": OPENAI_KEY, "LLM_PROVIDER": "openai", "MODEL_NAME": "gpt-4o"}
    paths = [dotenv(tmp_path, f"ANTHROPIC_API_KEY={ANTHROPIC_KEY}\n")]
    first = import_environment(Settings(), environ=environ, dotenv_paths=paths)

    second = import_environment(first.settings, environ=environ, dotenv_paths=paths)

    assert second.settings == first.settings
    assert (second.keys_from_dotenv, second.notes) == ({}, [])


def test_reads_the_process_environment_by_default(monkeypatch):
    for variable in UPSTREAM_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)

    result = import_environment(Settings())

    assert [(p.id, p.key_env) for p in result.settings.providers] == [
        ("anthropic", "ANTHROPIC_API_KEY")
    ]


# -- providers and their keys ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "key", "kind", "provider_id"),
    [
        ("GOOGLE_API_KEY", GOOGLE_KEY, ProviderKind.GEMINI, "gemini"),
        ("GEMINI_API_KEY", GEMINI_KEY, ProviderKind.GEMINI, "gemini"),
        ("OPENAI_API_KEY", OPENAI_KEY, ProviderKind.OPENAI, "openai"),
        ("ANTHROPIC_API_KEY", ANTHROPIC_KEY, ProviderKind.ANTHROPIC, "anthropic"),
        ("OPENROUTER_API_KEY", OPENROUTER_KEY, ProviderKind.OPENROUTER, "openrouter"),
    ],
)
def test_a_key_in_the_environment_adds_its_provider_naming_the_variable(
    variable, key, kind, provider_id
):
    result = import_environment(Settings(), environ={variable: key})

    (provider,) = result.settings.providers
    assert (provider.id, provider.kind, provider.name) == (provider_id, kind, KINDS[kind].label)
    assert provider.key_env == variable
    assert provider.env_var == variable
    assert provider.models == list(KINDS[kind].models)
    assert result.keys_from_dotenv == {}
    assert result.settings.default_model == LOCAL_MODEL
    assert any(variable in note for note in result.notes)
    assert_no_key_leaks(result)


def test_every_provider_with_a_key_is_added_and_the_result_is_valid():
    environ = {
        "GOOGLE_API_KEY": GOOGLE_KEY,
        "OPENAI_API_KEY": OPENAI_KEY,
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "OPENROUTER_API_KEY": OPENROUTER_KEY,
    }

    result = import_environment(Settings(), environ=environ)

    assert [p.id for p in result.settings.providers] == [
        "gemini",
        "openai",
        "anthropic",
        "openrouter",
    ]
    Settings.model_validate_json(result.settings.model_dump_json()).check()
    assert_no_key_leaks(result)


def test_google_api_key_is_preferred_to_gemini_api_key():
    result = import_environment(
        Settings(), environ={"GEMINI_API_KEY": GEMINI_KEY, "GOOGLE_API_KEY": GOOGLE_KEY}
    )

    assert [p.key_env for p in result.settings.providers] == ["GOOGLE_API_KEY"]


def test_blank_variables_count_as_unset():
    result = import_environment(
        Settings(), environ={"OPENAI_API_KEY": "  ", "LLM_PROVIDER": "", "SYSTEM_PROMPT": "\n"}
    )

    assert result.settings == Settings(first_run_import_done=True)


def test_a_provider_of_the_same_kind_is_not_added_twice():
    mine = Provider(id="work-openai", kind=ProviderKind.OPENAI, name="Work", models=["gpt-4o"])

    result = import_environment(Settings(providers=[mine]), environ={"OPENAI_API_KEY": OPENAI_KEY})

    assert result.settings.providers == [mine]
    assert any("already set up" in note for note in result.notes)


def test_a_new_provider_never_takes_an_id_already_used():
    mine = Provider(
        id="openai",
        kind=ProviderKind.OPENAI_COMPATIBLE,
        name="Local vLLM",
        base_url="http://127.0.0.1:8000/v1",
    )

    result = import_environment(Settings(providers=[mine]), environ={"OPENAI_API_KEY": OPENAI_KEY})

    assert [p.id for p in result.settings.providers] == ["openai", "openai-2"]
    result.settings.check()


# -- .env files --------------------------------------------------------------------------------


def test_a_key_only_in_a_dotenv_file_is_handed_back_not_stored(tmp_path):
    path = dotenv(tmp_path, f'# upstream\nexport OPENAI_API_KEY="{DOTENV_OPENAI_KEY}"\n')

    result = import_environment(Settings(), environ={}, dotenv_paths=[path])

    (provider,) = result.settings.providers
    assert provider.id == "openai"
    assert provider.key_env is None
    assert result.keys_from_dotenv == {"openai": DOTENV_OPENAI_KEY}
    assert any(str(path) in note for note in result.notes)
    assert_no_key_leaks(result)


def test_the_gemini_key_from_dotenv_goes_to_the_gemini_provider(tmp_path):
    path = dotenv(tmp_path, f"GEMINI_API_KEY={GEMINI_KEY}\nLLM_PROVIDER=gemini\n")

    result = import_environment(Settings(), environ={}, dotenv_paths=[path])

    assert result.keys_from_dotenv == {"gemini": GEMINI_KEY}
    assert result.settings.default_model == "gemini/gemini-2.5-flash"
    assert_no_key_leaks(result)


def test_real_environment_variables_win_over_dotenv(tmp_path):
    path = dotenv(
        tmp_path,
        f"OPENAI_API_KEY={DOTENV_OPENAI_KEY}\nLLM_PROVIDER=anthropic\nMODEL_NAME=claude-x\n"
        "MODEL_TEMPERATURE=0.1\nSYSTEM_PROMPT=from the file\n",
    )
    environ = {
        "OPENAI_API_KEY": OPENAI_KEY,
        "LLM_PROVIDER": "openai",
        "MODEL_NAME": "gpt-4o",
        "MODEL_TEMPERATURE": "0.3",
        "SYSTEM_PROMPT": "from the environment",
    }

    result = import_environment(Settings(), environ=environ, dotenv_paths=[path])

    (provider,) = result.settings.providers
    assert provider.key_env == "OPENAI_API_KEY"
    assert result.keys_from_dotenv == {}
    assert result.settings.default_model == "openai/gpt-4o"
    assert result.settings.default_params.temperature == 0.3
    assert result.settings.system_prompt == "from the environment"
    assert_no_key_leaks(result)


def test_dotenv_fills_in_what_the_environment_lacks(tmp_path):
    path = dotenv(tmp_path, "LLM_PROVIDER=openai\nMODEL_NAME=gpt-4.1\nMAX_OUTPUT_TOKENS=4096\n")

    result = import_environment(
        Settings(), environ={"OPENAI_API_KEY": OPENAI_KEY}, dotenv_paths=[path]
    )

    assert result.settings.default_model == "openai/gpt-4.1"
    assert result.settings.default_params.max_tokens == 4096


def test_the_first_dotenv_file_wins(tmp_path):
    first = dotenv(tmp_path, "MODEL_TEMPERATURE=0.2\n", "first.env")
    second = dotenv(tmp_path, "MODEL_TEMPERATURE=0.9\nMAX_OUTPUT_TOKENS=77\n", "second.env")

    result = import_environment(Settings(), environ={}, dotenv_paths=[first, second])

    assert result.settings.default_params.temperature == 0.2
    assert result.settings.default_params.max_tokens == 77


def test_garbage_lines_in_a_dotenv_file_are_skipped(tmp_path):
    path = dotenv(
        tmp_path,
        "this is not a setting\n=== !!! ===\nOPENAI_API_KEY\n\x01\x02 control\n"
        f"ANTHROPIC_API_KEY='{ANTHROPIC_KEY}'\nSYSTEM_PROMPT=\"Be brief.\\nBe kind.\"\n",
    )

    result = import_environment(Settings(), environ={}, dotenv_paths=[path])

    assert [p.id for p in result.settings.providers] == ["anthropic"]
    assert result.keys_from_dotenv == {"anthropic": ANTHROPIC_KEY}
    assert result.settings.system_prompt == "Be brief.\nBe kind."


@pytest.mark.parametrize(
    "content",
    [
        b"\x7fELF\x02\x01\x01\x00\x00\x00OPENAI_API_KEY=" + OPENAI_KEY.encode(),
        b"OPENAI_API_KEY=" + OPENAI_KEY.encode() + b"\n\xff\xfe\xfa not utf-8\n",
        bytes(range(256)) * 4,
    ],
)
def test_a_binary_dotenv_file_is_skipped_with_a_note(tmp_path, content):
    binary = dotenv(tmp_path, content, "binary.env")
    good = dotenv(tmp_path, "MODEL_TEMPERATURE=1.1\n", "good.env")

    result = import_environment(Settings(), environ={}, dotenv_paths=[binary, good])

    assert result.settings.providers == []
    assert result.settings.default_params.temperature == 1.1
    assert any(str(binary) in note and "not a text file" in note for note in result.notes)
    assert_no_key_leaks(result)


def test_a_dotenv_file_with_a_byte_order_mark_is_read(tmp_path):
    path = dotenv(tmp_path, b"\xef\xbb\xbfMODEL_TEMPERATURE=0.4\n")

    result = import_environment(Settings(), environ={}, dotenv_paths=[path])

    assert result.settings.default_params.temperature == 0.4


def test_a_missing_dotenv_file_is_skipped_quietly(tmp_path):
    result = import_environment(Settings(), environ={}, dotenv_paths=[tmp_path / "nope" / ".env"])

    assert result.settings == Settings(first_run_import_done=True)
    assert result.notes == []


def test_an_unreadable_dotenv_path_is_skipped_with_a_note(tmp_path):
    folder = tmp_path / "a-folder.env"
    folder.mkdir()

    result = import_environment(Settings(), environ={}, dotenv_paths=[folder])

    assert result.settings == Settings(first_run_import_done=True)
    assert [str(folder) in note for note in result.notes] == [True]


def test_an_oversized_dotenv_file_is_skipped_with_a_note(tmp_path):
    path = dotenv(tmp_path, "A=1\n" * 300_000)

    result = import_environment(Settings(), environ={}, dotenv_paths=[path])

    assert any("larger than" in note for note in result.notes)


# -- the default model -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("llm_provider", "variable", "expected"),
    [
        ("google", "GOOGLE_API_KEY", "gemini/gemini-2.5-flash"),
        ("Gemini", "GEMINI_API_KEY", "gemini/gemini-2.5-flash"),
        ("openai", "OPENAI_API_KEY", "openai/gpt-4o-mini"),
        ("GPT", "OPENAI_API_KEY", "openai/gpt-4o-mini"),
        ("anthropic", "ANTHROPIC_API_KEY", "anthropic/claude-haiku-4-5"),
        (" claude ", "ANTHROPIC_API_KEY", "anthropic/claude-haiku-4-5"),
        ("openrouter", "OPENROUTER_API_KEY", "openrouter/openai/gpt-4o-mini"),
    ],
)
def test_llm_provider_alone_chooses_the_providers_first_model(llm_provider, variable, expected):
    result = import_environment(Settings(), environ={"LLM_PROVIDER": llm_provider, variable: "k"})

    assert result.settings.default_model == expected
    assert result.settings.default_model in result.settings.models()


def test_llm_provider_and_model_name_choose_the_default_model():
    environ = {"LLM_PROVIDER": "openai", "MODEL_NAME": "gpt-4o", "OPENAI_API_KEY": OPENAI_KEY}

    result = import_environment(Settings(), environ=environ)

    assert result.settings.default_model == "openai/gpt-4o"
    assert result.settings.providers[0].models == list(KINDS[ProviderKind.OPENAI].models)
    assert result.settings.fallbacks == [LOCAL_MODEL]


def test_a_model_name_the_provider_does_not_list_is_added_to_it():
    environ = {"LLM_PROVIDER": "openai", "MODEL_NAME": "gpt-5-nano", "OPENAI_API_KEY": OPENAI_KEY}

    result = import_environment(Settings(), environ=environ)

    assert result.settings.default_model == "openai/gpt-5-nano"
    assert result.settings.providers[0].models[-1] == "gpt-5-nano"
    assert "openai/gpt-5-nano" in result.settings.models()


def test_model_name_without_llm_provider_means_google_as_upstream():
    environ = {"MODEL_NAME": "gemini-2.0-flash", "GOOGLE_API_KEY": GOOGLE_KEY}

    result = import_environment(Settings(), environ=environ)

    assert result.settings.default_model == "gemini/gemini-2.0-flash"


def test_keys_without_llm_provider_or_model_name_keep_the_local_default():
    result = import_environment(Settings(), environ={"GOOGLE_API_KEY": GOOGLE_KEY})

    assert result.settings.default_model == LOCAL_MODEL


@pytest.mark.parametrize("llm_provider", ["openai", "anthropic", "google", "openrouter"])
def test_llm_provider_without_its_key_keeps_the_local_default_with_a_note(llm_provider):
    environ = {"LLM_PROVIDER": llm_provider, "MODEL_NAME": "some-model"}

    result = import_environment(Settings(), environ=environ)

    assert result.settings.default_model == LOCAL_MODEL
    assert result.settings.providers == []
    assert any("no key was found" in note for note in result.notes)


def test_the_missing_key_note_names_the_variable_to_set():
    result = import_environment(
        Settings(), environ={"LLM_PROVIDER": "claude", "OPENAI_API_KEY": "k"}
    )

    assert result.settings.default_model == LOCAL_MODEL
    assert any("ANTHROPIC_API_KEY" in note for note in result.notes)


def test_huggingface_is_not_supported_and_the_local_default_is_kept():
    environ = {"LLM_PROVIDER": "huggingface", "MODEL_NAME": "gpt2", "OPENAI_API_KEY": OPENAI_KEY}

    result = import_environment(Settings(), environ=environ)

    assert result.settings.default_model == LOCAL_MODEL
    assert any("not supported" in note for note in result.notes)


def test_an_unknown_llm_provider_keeps_the_local_default_with_a_note():
    result = import_environment(Settings(), environ={"LLM_PROVIDER": "mistral"})

    assert result.settings.default_model == LOCAL_MODEL
    assert any("mistral" in note for note in result.notes)


@pytest.mark.parametrize("model_name", ["two words", "x" * 500, "bad\x00name"])
def test_an_unusable_model_name_falls_back_to_the_providers_first_model(model_name):
    environ = {"LLM_PROVIDER": "openai", "MODEL_NAME": model_name, "OPENAI_API_KEY": OPENAI_KEY}

    result = import_environment(Settings(), environ=environ)

    assert result.settings.default_model == "openai/gpt-4o-mini"
    assert any("MODEL_NAME" in note for note in result.notes)


def test_llm_provider_uses_an_existing_provider_of_that_kind():
    mine = Provider(id="work", kind=ProviderKind.ANTHROPIC, name="Work", models=["claude-x"])
    environ = {"LLM_PROVIDER": "anthropic", "MODEL_NAME": "claude-sonnet-4-5"}

    result = import_environment(Settings(providers=[mine]), environ=environ)

    assert result.settings.default_model == "work/claude-sonnet-4-5"
    assert result.settings.providers[0].models == ["claude-x", "claude-sonnet-4-5"]
    assert mine.models == ["claude-x"]


# -- parameters and the system prompt ----------------------------------------------------------


@pytest.mark.parametrize(
    ("temperature", "max_tokens", "expected"),
    [
        ("0.9", "2048", (0.9, 2048)),
        (" 0 ", " 1 ", (0.0, 1)),
        ("5", "99999999", (2.0, 1_000_000)),
        ("-1", "0", (0.0, 1)),
        ("-0.5", "-10", (0.0, 1)),
    ],
)
def test_temperature_and_max_tokens_are_imported_within_their_ranges(
    temperature, max_tokens, expected
):
    environ = {"MODEL_TEMPERATURE": temperature, "MAX_OUTPUT_TOKENS": max_tokens}

    params = import_environment(Settings(), environ=environ).settings.default_params

    assert (params.temperature, params.max_tokens) == expected
    ModelParams.model_validate(params.model_dump())


def test_values_out_of_range_say_so():
    result = import_environment(Settings(), environ={"MODEL_TEMPERATURE": "3"})

    assert any("MODEL_TEMPERATURE" in note and "2.0 is used" in note for note in result.notes)


@pytest.mark.parametrize(
    ("temperature", "max_tokens"),
    [("hot", "lots"), ("nan", "1.5"), ("inf", "1e3"), ("0,7", "")],
)
def test_invalid_numbers_keep_the_defaults_with_a_note(temperature, max_tokens):
    environ = {"MODEL_TEMPERATURE": temperature, "MAX_OUTPUT_TOKENS": max_tokens}

    result = import_environment(Settings(), environ=environ)

    assert result.settings.default_params == ModelParams()
    assert any("MODEL_TEMPERATURE is not a number" in note for note in result.notes)


def test_an_invalid_max_tokens_is_noted():
    result = import_environment(Settings(), environ={"MAX_OUTPUT_TOKENS": "lots"})

    assert result.settings.default_params.max_tokens == 1024
    assert any("MAX_OUTPUT_TOKENS" in note for note in result.notes)


def test_existing_parameters_are_kept_where_nothing_is_imported():
    settings = Settings(default_params=ModelParams(temperature=0.2, max_tokens=300, top_p=0.9))

    params = import_environment(
        settings, environ={"MAX_OUTPUT_TOKENS": "500"}
    ).settings.default_params

    assert params == ModelParams(temperature=0.2, max_tokens=500, top_p=0.9)


def test_system_prompt_is_imported():
    prompt = "Você é um assistente útil.\nResponda em português."

    result = import_environment(Settings(), environ={"SYSTEM_PROMPT": prompt})

    assert result.settings.system_prompt == prompt


def test_a_long_system_prompt_is_capped_with_a_note():
    result = import_environment(Settings(), environ={"SYSTEM_PROMPT": "x" * 20_000})

    assert result.settings.system_prompt == "x" * MAX_SYSTEM_PROMPT
    assert any("SYSTEM_PROMPT is longer" in note for note in result.notes)


# -- keys never leak ---------------------------------------------------------------------------


def test_no_key_appears_in_notes_settings_or_repr_whatever_the_mix(tmp_path):
    path = dotenv(
        tmp_path,
        f"OPENAI_API_KEY={DOTENV_OPENAI_KEY}\nGEMINI_API_KEY={GEMINI_KEY}\n"
        f"OPENROUTER_API_KEY={OPENROUTER_KEY}\nLLM_PROVIDER=openrouter\n",
    )
    environ = {"OPENAI_API_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY}

    result = import_environment(Settings(), environ=environ, dotenv_paths=[path])

    assert result.keys_from_dotenv == {"gemini": GEMINI_KEY, "openrouter": OPENROUTER_KEY}
    assert [(p.id, p.key_env) for p in result.settings.providers] == [
        ("gemini", None),
        ("openai", "OPENAI_API_KEY"),
        ("anthropic", "ANTHROPIC_API_KEY"),
        ("openrouter", None),
    ]
    assert result.settings.default_model == "openrouter/openai/gpt-4o-mini"
    assert result.notes
    assert_no_key_leaks(result)
