"""The Discord face of fluxbot: each module listed here is an extension with ``async def setup(bot)``."""

#: The extensions the bot loads at start, in order.
EXTENSIONS: tuple[str, ...] = ("cogs.imagine", "cogs.limits", "cogs.history", "cogs.settings")
