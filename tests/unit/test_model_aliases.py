"""MODEL_ALIASES glob patterns: a pattern takes a family of client names, an exact name
always wins over it, patterns are tried in order, and none is listed."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError
from shared.models import ModelTable, is_pattern
from shared.settings import DEFAULT_MODELS, Settings


def test_patterns_resolve_after_every_exact_name() -> None:
    table = ModelTable(
        DEFAULT_MODELS,
        {
            "claude-*-haiku-*": "decopy-gpt-4o-mini",
            "claude-*": "decopy-deepseek-v3",
            "claude-exact": "decopy-deepseek-r1",
            "gpt-4*": "decopy-gemini-2.0-flash",
        },
    )
    assert table.resolve("claude-exact").id == "decopy-deepseek-r1"  # type: ignore[union-attr]
    assert table.resolve("claude-3-5-haiku-latest").id == "decopy-gpt-4o-mini"  # type: ignore[union-attr]
    assert table.resolve("Claude-Opus-5-5").id == "decopy-deepseek-v3"  # type: ignore[union-attr]
    assert table.resolve("gpt-4o").id == "decopy-gemini-2.0-flash"  # type: ignore[union-attr]
    assert table.resolve("deepseek") is None and table.resolve("gpt-3.5") is None
    # decopy's own name (any case) is an exact name: it beats the pattern that would match it
    assert table.resolve("gpt-4o-mini").id == "decopy-gpt-4o-mini"  # type: ignore[union-attr]
    assert table.resolve("DeepSeek-R1").id == "decopy-deepseek-r1"  # type: ignore[union-attr]
    assert not any(is_pattern(n) for n in table.accepted())
    entry = table.entry("claude-sonnet-4")
    assert entry is not None and entry.name == "claude-sonnet-4" and not entry.is_id


def test_settings_take_patterns_and_cors_origins() -> None:
    settings = Settings.from_env(
        {"MODEL_ALIASES": '{"claude-*": "decopy-deepseek-v3"}', "CORS_ALLOW_ORIGINS": "https://a.test/, *"}
    )
    assert settings.model_aliases == {"claude-*": "decopy-deepseek-v3"}
    assert settings.cors_allow_origins == ("https://a.test", "*")
    with pytest.raises(ConfigError):
        Settings.from_env({"MODEL_ALIASES": '{"claude-*": "nope"}'})
    with pytest.raises(ConfigError):
        Settings.from_env({"CORS_ALLOW_ORIGINS": "https://a.test/path"})
    with pytest.raises(ConfigError):
        Settings.from_env({"RESPONSES_TTL_SECONDS": "0"})
