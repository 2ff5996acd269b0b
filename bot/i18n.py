"""The bot in its members' languages: every member-facing text goes through :func:`tr`.

``tr(locale, "English text with {placeholders}", **values)`` looks the English text up in the catalog of
``locale`` (a :class:`discord.Locale` or its value, e.g. ``interaction.locale`` for an answer to a member,
``guild.preferred_locale`` for what is posted in a channel) and fills in the values after translating, so a
value (a prompt, a name, a number) is never translated. An unknown locale, or a text the catalog lacks, falls
back to English. :func:`N_` marks a text for the catalogs where it is defined but translated later.

Commands are shown translated by Discord: :class:`CommandTranslator`, installed on the command tree, gives
discord.py the name, description and choice localizations it sends with the commands, so each member sees
them in their client's language (Discord still sends the bot the English names). A description with a value
in it is written ``localized("... {value}", value=...)``, so its message id stays the same whatever the
value. A choice whose name is its value (a model's name, a size) is an identifier and is not translated.

The catalogs are gettext ``.po`` files, read with Babel: ``bot/locales/<language>/LC_MESSAGES/<domain>.po``.
A language may have several domains (one per feature); they are merged when the language is first used.
Command, group and option names have the message context ``name`` (Discord's rules: lowercase, no spaces,
unique among siblings), context menu names the context ``menu``; every other text has none.

Languages: Simplified Chinese (``zh-CN``), Spanish (``es-ES``, also shown to Discord's Latin American Spanish,
``es-419``, whose members read it as easily), Brazilian Portuguese (``pt-BR``), Russian (``ru``), Japanese
(``ja``) and German (``de``); every other locale (Traditional Chinese and Ukrainian included) gets English.

Wording: ``tr`` has no plural forms, so a text with a number is written so that no word agrees with it
("Images today: {count}", not "{count} images"), and a sentence is one message id, never glued from pieces.

Updating the catalogs after adding texts (the message ids are found in ``tr(locale, "...")``,
``N_("...")``, ``lazy("...")`` and ``localized("...")`` calls in ``bot/`` and ``cogs/``, and in the bot's
command tree)::

    python -m bot.locales.extract                     # lists what each language's catalogs lack
    python -m bot.locales.extract --pot fluxbot.pot   # and writes every message id as a gettext template

then add the missing entries to each language's ``.po`` file (or a new ``<domain>.po`` beside it); the
tests in ``tests/test_i18n.py`` fail until every language has them. The texts in code alone (not the
command tree's) can also be listed with Babel's own command::

    pybabel extract -k tr:2 -k N_ -k lazy -k localized --no-default-keywords -o messages.pot bot cogs
"""

from __future__ import annotations

import io
import logging
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import discord
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from discord import app_commands
from discord.app_commands import TranslationContextLocation, TranslationContextTypes

__all__ = [
    "LANGUAGES",
    "LOCALES_DIR",
    "MENU_CONTEXT",
    "NAME_CONTEXT",
    "N_",
    "CommandTranslator",
    "Text",
    "catalog_language",
    "is_valid_command_name",
    "lazy",
    "localized",
    "message_context",
    "placeholders",
    "say",
    "tr",
]

log = logging.getLogger(__name__)

#: Where the catalogs are: ``<language>/LC_MESSAGES/<domain>.po``.
LOCALES_DIR = Path(__file__).with_name("locales")

#: Discord's locale -> the catalog's language (a folder of :data:`LOCALES_DIR`).
LANGUAGES: Mapping[str, str] = {
    discord.Locale.chinese.value: "zh_CN",
    discord.Locale.spain_spanish.value: "es_ES",
    discord.Locale.latin_american_spanish.value: "es_ES",
    discord.Locale.brazil_portuguese.value: "pt_BR",
    discord.Locale.russian.value: "ru",
    discord.Locale.japanese.value: "ja",
    discord.Locale.german.value: "de",
}

#: The message context of command, group and option names (Discord's name rules apply to them).
NAME_CONTEXT = "name"
#: The message context of context menu names ("Edit image": spaces and capitals allowed).
MENU_CONTEXT = "menu"

_MAX_NAME = 32


def N_(message: str) -> str:
    """Mark ``message`` for translation where it is defined; :func:`tr` translates it where it is shown."""
    return message


def tr(locale: discord.Locale | str | None, message: str, /, **values: object) -> str:
    """``message`` in ``locale``'s language, with ``values`` filled in (``str.format`` placeholders)."""
    language = catalog_language(locale)
    if language is not None:
        translated = _translations(language).gettext(message)
        if translated != message:
            try:
                return translated.format(**values) if values else translated
            except (KeyError, IndexError, ValueError):  # checked when loaded; never let a catalog break an answer
                log.warning("the %s translation of %r does not format; English is used", language, message)
    return message.format(**values) if values else message


@dataclass(frozen=True, slots=True)
class Text:
    """A member-facing text whose language is chosen where it is shown, not where it is made.

    An error raised deep in the code (a refusal, an image that is too large) reaches a member whose locale
    only the code that answers them knows: it carries a :class:`Text` (made with :func:`lazy`) and the answer
    renders it. Values that are texts themselves are rendered in the same language. ``str()`` is English,
    for logs.
    """

    message: str
    values: Mapping[str, object] = field(default_factory=dict)

    def render(self, locale: discord.Locale | str | None) -> str:
        values = {name: say(locale, value) if isinstance(value, Text) else value for name, value in self.values.items()}
        return tr(locale, self.message, **values)

    def __str__(self) -> str:
        return self.render(None)


def lazy(message: str, /, **values: object) -> Text:
    """``message`` with ``values``, to be translated where it is shown (see :class:`Text`)."""
    return Text(message, values)


def say(locale: discord.Locale | str | None, text: Text | str) -> str:
    """``text`` in ``locale``'s language: a :class:`Text` rendered, a plain string looked up as it is (a
    message id kept in the database, say, such as a job's error message), unchanged if it is not one."""
    return text.render(locale) if isinstance(text, Text) else tr(locale, text)


def localized(message: str, /, **values: object) -> app_commands.locale_str:
    """A command or option description (or choice name) with values in it, for discord.py's decorators.

    Discord gets ``message`` with ``values`` filled in as the English text; :class:`CommandTranslator` looks
    up ``message`` itself, so the message id does not change with the values (a provider's default model).
    """
    text = message.format(**values) if values else message
    return app_commands.locale_str(text, msgid=message, values=values)


def catalog_language(locale: discord.Locale | str | None) -> str | None:
    """The catalog for ``locale`` (a folder name such as ``zh_CN``), or None for English."""
    if locale is None:
        return None
    return LANGUAGES.get(locale.value if isinstance(locale, discord.Locale) else str(locale))


def placeholders(text: str) -> frozenset[str]:
    """The names of the ``str.format`` fields in ``text``; raises ValueError for a malformed one."""
    return frozenset(name for _, name, _, _ in string.Formatter().parse(text) if name is not None)


def is_valid_command_name(name: str) -> bool:
    """Whether Discord accepts ``name`` for a slash command, group or option (in any language).

    Discord's rule is ``^[-_\\p{L}\\p{N}\\p{sc=Deva}\\p{sc=Thai}]{1,32}$``, in lowercase where a letter has
    case; a name it refuses would make it refuse the whole command sync, so such a translation is left out.
    It errs on the safe side: a character Discord's newer Unicode data may allow, but Python's does not
    know, is refused, and so are the few marks that Devanagari shares with other scripts.
    """
    if not 1 <= len(name) <= _MAX_NAME or name != name.lower():
        return False
    return all(_name_character(character) for character in name)


def _name_character(character: str) -> bool:
    category = unicodedata.category(character)[0]
    if character in "-_" or category in "LN":
        return True
    # Devanagari's and Thai's vowel signs (marks) too, but not the marks other scripts share with them.
    return category == "M" and (
        "\u0900" <= character <= "\u0950" or "\u0955" <= character <= "\u097f" or "\u0e00" <= character <= "\u0e7f"
    )


class CommandTranslator(app_commands.Translator):
    """Gives discord.py each command's names, descriptions and choices in every language with a catalog.

    Installed with ``tree.set_translator``; discord.py asks it once per text and Discord locale when it
    builds the commands it syncs. None means "no translation": Discord then shows the English text.
    """

    async def translate(
        self, string: app_commands.locale_str, locale: discord.Locale, context: TranslationContextTypes
    ) -> str | None:
        language = catalog_language(locale)
        if language is None:
            return None
        msgid: str = string.extras.get("msgid", string.message)
        values: dict[str, Any] = string.extras.get("values", {})
        msgctxt = message_context(context)
        translations = _translations(language)
        found = translations.gettext(msgid) if msgctxt is None else translations.pgettext(msgctxt, msgid)
        translated = str(found)
        if translated == msgid:
            return None
        if values:
            try:
                translated = translated.format(**values)
            except (KeyError, IndexError, ValueError):
                log.warning("the %s translation of %r does not format; English is used", language, msgid)
                return None
        if msgctxt == NAME_CONTEXT and not is_valid_command_name(translated):
            log.warning(
                "the %s name %r for %r is not a valid command name; English is used", language, translated, msgid
            )
            return None
        return translated


def message_context(context: TranslationContextTypes) -> str | None:
    """The catalog's message context of a text of the command tree: names are kept apart from other texts."""
    match context.location:
        case TranslationContextLocation.command_name if isinstance(context.data, app_commands.ContextMenu):
            return MENU_CONTEXT
        case (
            TranslationContextLocation.command_name
            | TranslationContextLocation.group_name
            | TranslationContextLocation.parameter_name
        ):
            return NAME_CONTEXT
        case _:
            return None


@cache
def _translations(language: str) -> Translations:
    """Every domain of ``language`` merged into one, read once; translations whose placeholders differ from
    the English text's are left out (with a warning), so :func:`tr` falls back to English for them."""
    merged = Translations()
    folder = LOCALES_DIR / language / "LC_MESSAGES"
    for path in sorted(folder.glob("*.po")):
        with path.open("rb") as file:
            catalog = read_po(file, locale=language, domain=path.stem)
        for message in list(catalog):
            if not isinstance(message.id, str) or not isinstance(message.string, str) or not message.string:
                continue  # the header, a plural form (tr() has none) or an untranslated text
            if not _same_placeholders(message.id, message.string):
                log.warning("%s: the translation of %r has other placeholders; English is used", path, message.id)
                catalog.delete(message.id, context=message.context)
        compiled = io.BytesIO()
        write_mo(compiled, catalog)
        compiled.seek(0)
        merged.merge(Translations(compiled, domain=path.stem))
    return merged


def _same_placeholders(english: str, translated: str) -> bool:
    try:
        return placeholders(english) == placeholders(translated)
    except ValueError:
        return False
