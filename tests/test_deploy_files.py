"""The files operators copy from: every setting the bot reads is in .env.example, and nothing else is."""

from __future__ import annotations

import re
from pathlib import Path

from bot.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_lists_every_setting_once_with_its_default() -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    listed = re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=(.*)$", text, flags=re.MULTILINE)
    names = [name for name, _ in listed]
    known = {field.alias for field in Settings.model_fields.values() if field.alias}

    assert sorted(names) == sorted(known), "every variable of bot/settings.py, and only those"
    assert len(names) == len(set(names))
    for name, value in listed:
        field = next(field for field in Settings.model_fields.values() if field.alias == name)
        default = field.default
        if field.is_required() or default is None:
            assert value == "", f"{name} has no default: no value in the example"
        elif isinstance(default, bool):
            assert value == str(default).lower(), name
        elif isinstance(default, int | float):
            assert float(value) == default, name
        else:  # strings, enums, and values that print as their setting (DISCORD_MEDIA_HOSTS)
            assert value == str(getattr(default, "value", default)), name
