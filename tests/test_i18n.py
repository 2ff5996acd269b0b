"""The bot in Simplified Chinese, Spanish, Brazilian Portuguese, Russian, Japanese and German.

The catalogs are checked against what the bot really shows: every text of its command tree (walked as
discord.py walks it when it syncs) and every ``tr``/``N_``/``localized`` call in the code must be translated
in every language, with the same placeholders as the English text; command and option names must be names
Discord accepts (checked with Discord's own pattern) and stay unique among their siblings in every language.
The end-to-end tests read the commands the bot syncs to the loopback Discord.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import discord
import pytest
import regex
from babel.messages.pofile import read_po
from discord import app_commands
from hypothesis import example, given
from hypothesis import strategies as st

from bot import i18n
from bot.i18n import (
    LANGUAGES,
    LOCALES_DIR,
    NAME_CONTEXT,
    CommandTranslator,
    is_valid_command_name,
    localized,
    placeholders,
    tr,
)
from bot.locales.extract import catalog_entries, command_tree_texts, missing, offline_bot, texts_in_code
from tests.fluxbot_harness import FluxbotHarness

#: Discord's pattern for the name of a slash command, a group or an option (in every language).
DISCORD_NAME = regex.compile(r"^[-_\p{L}\p{N}\p{sc=Deva}\p{sc=Thai}]{1,32}$")
SHIPPED = sorted(set(LANGUAGES.values()))
DISCORD_LOCALES = {"zh-CN", "es-ES", "es-419", "pt-BR", "ru", "ja", "de"}
PO_FILES = sorted(LOCALES_DIR.glob("*/LC_MESSAGES/*.po"))
COMMANDS_ROUTE = "/applications/{application_id}/commands"


def accepted_by_discord(name: str) -> bool:
    return DISCORD_NAME.match(name) is not None and name == name.lower()


@pytest.fixture
def catalogs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty folder the bot reads its catalogs from instead of its own (loaded anew for the test)."""
    monkeypatch.setattr(i18n, "LOCALES_DIR", tmp_path)
    i18n._translations.cache_clear()
    yield tmp_path
    i18n._translations.cache_clear()


def write_po(folder: Path, language: str, domain: str, *entries: str) -> None:
    """A ``.po`` file of ``entries`` (each the lines of one message) for ``language``."""
    path = folder / language / "LC_MESSAGES" / f"{domain}.po"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = 'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=utf-8\\n"\n\n'
    path.write_text(header + "\n\n".join(entries) + "\n", encoding="utf-8")


# -- the catalogs ----------------------------------------------------------------------------------


def test_every_language_has_catalogs_and_every_locale_is_discords() -> None:
    assert {locale.value for locale in discord.Locale} >= set(LANGUAGES)
    assert SHIPPED == ["de", "es_ES", "ja", "pt_BR", "ru", "zh_CN"]
    for language in SHIPPED:
        assert list((LOCALES_DIR / language / "LC_MESSAGES").glob("*.po")), language


async def test_every_text_of_the_command_tree_is_translated_in_every_language() -> None:
    texts = await command_tree_texts()
    keys = {text.key for text in texts}
    assert {(NAME_CONTEXT, "imagine"), (NAME_CONTEXT, "limits"), ("menu", "Edit image")} <= keys
    lacking = {
        language: [f"[{text.context or ''}] {text.msgid} ({text.where})" for text in missing(texts, language)]
        for language in SHIPPED
    }
    assert {language: lacks for language, lacks in lacking.items() if lacks} == {}


def test_every_text_in_the_code_is_translated_in_every_language() -> None:
    texts = texts_in_code()
    lacking = {language: [f"{text.msgid} ({text.where})" for text in missing(texts, language)] for language in SHIPPED}
    assert {language: lacks for language, lacks in lacking.items() if lacks} == {}


def test_the_texts_in_code_are_the_arguments_of_tr_n_and_localized(tmp_path: Path) -> None:
    (tmp_path / "bot").mkdir()
    (tmp_path / "cogs").mkdir()
    (tmp_path / "bot" / "engine.py").write_text('LABEL = N_("queued")\nOTHER = other("not a text")\n')
    (tmp_path / "cogs" / "face.py").write_text(
        "def answer(locale, n):\n"
        '    first = tr(locale, "Page {page}", page=n)\n'
        "    second = tr(locale, variable)\n"
        '    return localized("Which model (default {model})", model="x"), first, second\n'
    )
    found = {(text.msgid, text.where) for text in texts_in_code(tmp_path)}
    assert found == {
        ("queued", "bot/engine.py:1"),
        ("Page {page}", "cogs/face.py:2"),
        ("Which model (default {model})", "cogs/face.py:4"),
    }


@pytest.mark.parametrize("path", PO_FILES, ids=lambda path: str(path.relative_to(LOCALES_DIR)))
def test_every_translation_is_complete_and_keeps_the_placeholders(path: Path) -> None:
    with path.open("rb") as file:
        catalog = read_po(file)
    assert len(catalog) > 0
    for message in catalog:
        assert isinstance(message.id, str) and isinstance(message.string, str), message.id
        assert message.string.strip(), f"{message.id!r} is not translated"
        assert not message.fuzzy, f"{message.id!r} is marked fuzzy"
        assert placeholders(message.string) == placeholders(message.id), message.id


@pytest.mark.parametrize("language", SHIPPED)
def test_a_text_in_several_domains_is_translated_the_same_in_each(language: str) -> None:
    seen: dict[tuple[str | None, str], tuple[str, str]] = {}
    for path in sorted((LOCALES_DIR / language / "LC_MESSAGES").glob("*.po")):
        with path.open("rb") as file:
            for message in read_po(file):
                key = (message.context, str(message.id))
                if message.id and key in seen:
                    domain, translated = seen[key]
                    assert translated == message.string, f"{key} in {domain} and {path.stem}"
                seen[key] = (path.stem, str(message.string))


@pytest.mark.parametrize("language", SHIPPED)
def test_name_translations_are_names_discord_accepts(language: str) -> None:
    names = {msgid: text for (context, msgid), text in catalog_entries(language).items() if context == NAME_CONTEXT}
    assert names
    assert [f"{msgid} -> {text}" for msgid, text in names.items() if not accepted_by_discord(text)] == []


@pytest.mark.parametrize("locale", sorted(DISCORD_LOCALES))
def test_tr_shows_every_translation_of_the_catalogs(locale: str) -> None:
    entries = catalog_entries(LANGUAGES[locale])
    texts = {msgid: translated for (context, msgid), translated in entries.items() if context is None}
    assert texts
    for msgid, translated in texts.items():
        values = {name: f"<{name}>" for name in placeholders(msgid)}
        assert tr(locale, msgid, **values) == (translated.format(**values) if values else translated)


# -- the synced commands ---------------------------------------------------------------------------


def check_options(options: list[dict[str, Any]], where: str, problems: list[str]) -> None:
    """Discord's rules for the options (or subcommands) of one command, in every language."""
    check_siblings(options, where, problems)
    for option in options:
        here = f"{where} {option['name']}"
        for locale, name in option.get("name_localizations", {}).items():
            if not accepted_by_discord(name):
                problems.append(f"{here}: {locale} name {name!r}")
        check_descriptions(option, here, problems)
        for choice in option.get("choices", []):
            for locale, name in (choice.get("name_localizations") or {}).items():
                if not 1 <= len(name) <= 100:
                    problems.append(f"{here}: {locale} choice {name!r}")
        check_options(option.get("options", []), here, problems)


def check_descriptions(command: dict[str, Any], where: str, problems: list[str]) -> None:
    for locale, description in command.get("description_localizations", {}).items():
        if not 1 <= len(description) <= 100:
            problems.append(f"{where}: {locale} description of {len(description)} characters")


def check_siblings(siblings: list[dict[str, Any]], where: str, problems: list[str]) -> None:
    """No two siblings have the same name in any language (a sibling without a translation keeps its own)."""
    locales = {locale for sibling in siblings for locale in sibling.get("name_localizations", {})}
    for locale in sorted(locales):
        names = Counter(sibling.get("name_localizations", {}).get(locale, sibling["name"]) for sibling in siblings)
        problems.extend(f"{where}: {locale} name {name!r} {count} times" for name, count in names.items() if count > 1)


async def translated_commands() -> list[dict[str, Any]]:
    async with offline_bot() as bot:
        translator = CommandTranslator()
        return [await command.get_translated_payload(bot.tree, translator) for command in bot.tree.get_commands()]


async def test_localized_commands_follow_discords_rules_in_every_language() -> None:
    commands = await translated_commands()
    problems: list[str] = []
    for kind in {command["type"] for command in commands}:
        check_siblings([command for command in commands if command["type"] == kind], "/", problems)
    for command in commands:
        where = f"/{command['name']}"
        if command["type"] == discord.AppCommandType.chat_input.value:
            for locale, name in command["name_localizations"].items():
                if not accepted_by_discord(name):
                    problems.append(f"{where}: {locale} name {name!r}")
            check_descriptions(command, where, problems)
            check_options(command["options"], where, problems)
        else:  # a context menu's name may have spaces and capitals
            problems.extend(
                f"{where}: {locale} name {name!r}"
                for locale, name in command["name_localizations"].items()
                if not 1 <= len(name) <= 32
            )
    assert problems == []
    imagine = next(command for command in commands if command["name"] == "imagine")
    assert set(imagine["name_localizations"]) == DISCORD_LOCALES
    assert set(imagine["description_localizations"]) == DISCORD_LOCALES


async def test_the_synced_commands_carry_their_translations(fluxbot: FluxbotHarness) -> None:
    async with fluxbot.running():
        synced = fluxbot.discord.calls("PUT", COMMANDS_ROUTE)[-1].json
    by_name = {command["name"]: command for command in synced}
    imagine = by_name["imagine"]
    assert imagine["name_localizations"]["de"] == "bild"
    assert imagine["name_localizations"]["ja"] == "画像生成"
    assert imagine["name_localizations"]["es-419"] == imagine["name_localizations"]["es-ES"] == "imaginar"
    assert imagine["description_localizations"]["zh-CN"] == "根据文字提示词生成图片"
    prompt = next(option for option in imagine["options"] if option["name"] == "prompt")
    assert prompt["name_localizations"]["ru"] == "промпт"
    assert not {"en-US", "en-GB", "fr", "zh-TW", "uk"} & set(imagine["name_localizations"])
    limits = by_name["limits"]
    show = next(option for option in limits["options"] if option["name"] == "show")
    assert show["name_localizations"]["pt-BR"] == "ver"
    assert show["description_localizations"]["de"] == "Die aktuellen Limits dieses Servers"
    assert by_name["Edit image"]["name_localizations"]["de"] == "Bild bearbeiten"


async def test_a_changed_translation_syncs_the_commands_again(
    fluxbot: FluxbotHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fluxbot.running():
        pass
    async with fluxbot.running():  # nothing changed: no sync (Discord rate limits it)
        pass
    assert len(fluxbot.discord.command_syncs) == 1

    changed = tmp_path / "locales"
    shutil.copytree(LOCALES_DIR, changed)
    for path in changed.glob("de/LC_MESSAGES/*.po"):
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace('msgstr "bild"', 'msgstr "malen"'), encoding="utf-8")
    monkeypatch.setattr(i18n, "LOCALES_DIR", changed)
    i18n._translations.cache_clear()
    try:
        async with fluxbot.running():
            pass
    finally:
        i18n._translations.cache_clear()
    assert len(fluxbot.discord.command_syncs) == 2
    synced = fluxbot.discord.calls("PUT", COMMANDS_ROUTE)[-1].json
    imagine = next(command for command in synced if command["name"] == "imagine")
    assert imagine["name_localizations"]["de"] == "malen"


# -- tr(), localized() and the translator ----------------------------------------------------------

GERMAN = (
    'msgid "Page {page} of {pages}"\nmsgstr "Seite {page} von {pages}"',
    'msgid "Next"\nmsgstr "Weiter"',
    'msgid "Hello {name}"\nmsgstr "Hallo {nmae}"',  # a translator's typo: never shown
    '#, fuzzy\nmsgid "Open"\nmsgstr "Offen"',
    'msgctxt "name"\nmsgid "imagine"\nmsgstr "bild"',
    'msgctxt "name"\nmsgid "prompt"\nmsgstr "Ein Prompt"',  # not a name Discord accepts
    'msgid "Which model (default {model})"\nmsgstr "Welches Modell (Standard: {model})"',
)


def test_tr_translates_then_fills_in_the_values_untranslated(catalogs: Path) -> None:
    write_po(catalogs, "de", "history", *GERMAN)
    assert tr(discord.Locale.german, "Page {page} of {pages}", page=2, pages=5) == "Seite 2 von 5"
    assert tr("de", "Next") == "Weiter"
    # A value is never translated, even one that is a text of the catalog.
    assert tr("de", "Page {page} of {pages}", page="Next", pages=1) == "Seite Next von 1"


def test_tr_falls_back_to_english(catalogs: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_po(catalogs, "de", "history", *GERMAN)
    assert tr(None, "Page {page} of {pages}", page=1, pages=2) == "Page 1 of 2"
    assert tr(discord.Locale.american_english, "Next") == "Next"
    assert tr(discord.Locale.french, "Next") == "Next"
    assert tr("xx-YY", "Next") == "Next"
    assert tr("de", "Not in the catalog {n}", n=3) == "Not in the catalog 3"
    assert tr("de", "Open") == "Open"  # a fuzzy translation is a guess: not used
    # A translation whose placeholders differ from the English text's is left out when the catalog loads.
    assert tr("de", "Hello {name}", name="Ada") == "Hello Ada"
    assert "other placeholders" in caplog.text
    # A name for commands only is not a translation of the same text shown in a message.
    assert tr("de", "imagine") == "imagine"


def test_every_domain_of_a_language_is_used(catalogs: Path) -> None:
    write_po(catalogs, "ja", "history", 'msgid "Next"\nmsgstr "次へ"')
    write_po(catalogs, "ja", "settings", 'msgid "Your defaults"\nmsgstr "あなたの既定値"')
    assert tr(discord.Locale.japanese, "Next") == "次へ"
    assert tr(discord.Locale.japanese, "Your defaults") == "あなたの既定値"


def test_latin_american_spanish_reads_the_spanish_catalog(catalogs: Path) -> None:
    write_po(catalogs, "es_ES", "history", 'msgid "Next"\nmsgstr "Siguiente"')
    assert tr(discord.Locale.latin_american_spanish, "Next") == "Siguiente"
    assert tr(discord.Locale.spain_spanish, "Next") == "Siguiente"


async def test_the_translator_gives_valid_names_and_nothing_for_other_locales(catalogs: Path) -> None:
    write_po(catalogs, "de", "imagine", *GERMAN)

    @app_commands.command(name="imagine", description="Next")
    @app_commands.describe(prompt=localized("Which model (default {model})", model="flux-dev"))
    async def imagine(interaction: discord.Interaction, prompt: str) -> None: ...

    tree: app_commands.CommandTree[Any] = app_commands.CommandTree(discord.Client(intents=discord.Intents.default()))
    payload = await imagine.get_translated_payload(tree, CommandTranslator())
    assert payload["name_localizations"] == {"de": "bild"}
    assert payload["description_localizations"] == {"de": "Weiter"}
    (prompt,) = payload["options"]
    assert prompt["description"] == "Which model (default flux-dev)"
    assert prompt["description_localizations"] == {"de": "Welches Modell (Standard: flux-dev)"}
    assert prompt.get("name_localizations", {}) == {}  # "Ein Prompt" would make Discord refuse every command


# -- Discord's name rule ---------------------------------------------------------------------------


@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=40))
@example("bild")
@example("画像生成")
@example("в_день_на_участника")
@example("नमस्ते")  # Devanagari's vowel signs and virama are marks, allowed
@example("ภาพ")
@example("Bild")
@example("zwei wörter")
@example("a" * 33)
@example("")
def test_a_name_the_bot_accepts_is_one_discord_accepts(name: str) -> None:
    if is_valid_command_name(name):
        assert accepted_by_discord(name)


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("bild", True),
        ("画像生成", True),
        ("в_день_на_участника", True),
        ("palabras-bloqueadas", True),
        ("नमस्ते", True),
        ("Bild", False),
        ("zwei wörter", False),
        ("a" * 33, False),
        ("", False),
        ("a.b", False),
    ],
)
def test_name_examples(name: str, valid: bool) -> None:
    assert is_valid_command_name(name) is valid
    assert accepted_by_discord(name) is valid
