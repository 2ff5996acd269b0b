"""The gettext catalogs of :mod:`bot.i18n` (``<language>/LC_MESSAGES/<domain>.po``) and :mod:`.extract`,
which finds every message id they must have."""
