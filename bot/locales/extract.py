"""Every message id the catalogs must have, and what each catalog lacks: ``python -m bot.locales.extract``.

The message ids come from two places: the code (``tr(locale, "...")``, ``N_("...")``, ``lazy("...")`` and
``localized("...")`` in ``bot/`` and ``cogs/``, found by Babel's extractor) and the bot's command tree (each
name, description and choice, found by asking the tree for its translations exactly as discord.py does when it
syncs, so a command added later is found without a change here). ``--pot PATH`` also writes them as a gettext
template, for translation tools.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po
from discord import app_commands
from discord.app_commands import TranslationContextLocation, TranslationContextTypes

from bot.app import FluxBot, open_bot
from bot.i18n import LANGUAGES, LOCALES_DIR, message_context
from bot.settings import load_settings
from cogs import EXTENSIONS

__all__ = [
    "KEYWORDS",
    "Text",
    "catalog_entries",
    "command_tree_texts",
    "missing",
    "offline_bot",
    "texts_in_code",
    "texts_of_tree",
]

#: The functions whose string arguments are message ids (Babel's keyword specification).
KEYWORDS: dict[str, Any] = {"tr": (2,), "N_": None, "lazy": None, "localized": None}
#: The folders of the project whose code is searched.
SOURCES = ("bot", "cogs")
_ROOT = Path(__file__).resolve().parents[2]
#: What discord.py sends as the description of an option that has none: not a text.
_NO_DESCRIPTION = "…"


@dataclass(frozen=True, slots=True)
class Text:
    """One message id, with its message context (None for a plain text) and where it was found."""

    msgid: str
    context: str | None
    where: str

    @property
    def key(self) -> tuple[str | None, str]:
        return self.context, self.msgid


def texts_in_code(root: Path = _ROOT) -> list[Text]:
    """The message ids of ``tr``, ``N_``, ``lazy`` and ``localized`` calls in the project's code."""
    found: list[Text] = []
    for folder in SOURCES:
        for filename, lineno, message, _, context in extract_from_dir(root / folder, keywords=KEYWORDS):
            if isinstance(message, str) and message:
                found.append(Text(message, context, f"{folder}/{filename}:{lineno}"))
    return found


class _Recorder(app_commands.Translator):
    """Records what discord.py asks to translate (for one locale) and translates nothing."""

    def __init__(self) -> None:
        self.texts: list[Text] = []

    async def translate(
        self, string: app_commands.locale_str, locale: discord.Locale, context: TranslationContextTypes
    ) -> str | None:
        if locale is not discord.Locale.german:  # discord.py asks once per locale: one is enough
            return None
        data: Any = context.data
        if context.location is TranslationContextLocation.choice_name and str(data.value) == data.name:
            return None  # a choice shown as its value (a model's name, a size) is an identifier, not a text
        msgid: str = string.extras.get("msgid", string.message)
        if msgid == _NO_DESCRIPTION:
            return None
        if isinstance(data, app_commands.Parameter):
            where = f"{data.command.qualified_name} {data.name}"
        else:
            where = str(getattr(data, "qualified_name", None) or getattr(data, "name", ""))
        self.texts.append(Text(msgid, message_context(context), f"/{where} ({context.location.name})"))
        return None


async def texts_of_tree(tree: app_commands.CommandTree[Any]) -> list[Text]:
    """Every name, description and choice of ``tree``'s commands that discord.py would have translated."""
    recorder = _Recorder()
    for command in tree.get_commands():
        await command.get_translated_payload(tree, recorder)
    return recorder.texts


@asynccontextmanager
async def offline_bot() -> AsyncIterator[FluxBot]:
    """The bot as ``fluxbot`` builds it, its extensions loaded, never connected (a database of its own)."""
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(  # the bot never logs in: the token and key are only there to be required
            DISCORD_TOKEN="extract",  # noqa: S106
            FLUX_API_KEY="extract",
            DATABASE_URL=f"sqlite:///{folder}/extract.db",
        )
        async with open_bot(settings) as bot:
            for extension in EXTENSIONS:
                await bot.load_extension(extension)
            yield bot


async def command_tree_texts() -> list[Text]:
    """The texts of the bot's command tree."""
    async with offline_bot() as bot:
        return await texts_of_tree(bot.tree)


def catalog_entries(language: str) -> dict[tuple[str | None, str], str]:
    """``language``'s translations of all its domains, keyed by (message context, message id); a fuzzy or
    empty translation counts as none."""
    entries: dict[tuple[str | None, str], str] = {}
    for path in sorted((LOCALES_DIR / language / "LC_MESSAGES").glob("*.po")):
        with path.open("rb") as file:
            catalog = read_po(file, locale=language)
        for message in catalog:
            translated = message.string
            if message.fuzzy or not isinstance(message.id, str) or not isinstance(translated, str):
                continue  # a fuzzy translation is a guess; a plural one is not used by tr()
            if message.id and translated:
                entries[message.context, message.id] = translated
    return entries


def missing(texts: Iterable[Text], language: str) -> list[Text]:
    """The texts ``language``'s catalogs lack (each message id once)."""
    entries = catalog_entries(language)
    return list(_unique(text for text in texts if text.key not in entries))


def _unique(texts: Iterable[Text]) -> Iterator[Text]:
    seen: set[tuple[str | None, str]] = set()
    for text in texts:
        if text.key not in seen:
            seen.add(text.key)
            yield text


def write_template(texts: Iterable[Text], path: Path) -> None:
    """Write ``texts`` as a gettext template (``.pot``)."""
    catalog = Catalog(project="fluxbot")
    for text in texts:
        where = text.where.rsplit(":", 1)
        location = (where[0], int(where[1])) if len(where) == 2 and where[1].isdigit() else (text.where, 0)
        catalog.add(text.msgid, context=text.context, locations=[location])
    with path.open("wb") as file:
        write_po(file, catalog, sort_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.locales.extract", description=__doc__.splitlines()[0])
    parser.add_argument("--pot", type=Path, help="also write the message ids as a gettext template here")
    args = parser.parse_args(argv)
    texts = texts_in_code() + asyncio.run(command_tree_texts())
    if args.pot is not None:
        write_template(texts, args.pot)
    lacking = 0
    for language in sorted(set(LANGUAGES.values())):
        for text in missing(texts, language):
            lacking += 1
            context = f" [{text.context}]" if text.context else ""
            print(f"{language}: missing{context} {text.msgid!r} ({text.where})")
    print(f"{len({text.key for text in texts})} message ids; {lacking} missing translations")
    return 1 if lacking else 0


if __name__ == "__main__":
    sys.exit(main())
