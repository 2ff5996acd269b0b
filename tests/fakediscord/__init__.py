"""A Discord of our own on loopback, to test the unmodified bot with the real discord.py.

See ``emulator.DiscordEmulator`` (state, waits, clock), ``actors.MemberActions`` (what test users do),
``runner.run_bot`` / ``runner.ErrorGuard`` and the fixtures in ``fixtures``. Shards: ``emu.shard_count``,
``emu.add_guild(shard=)`` / ``fixtures.add_world(emu, shard=)``, ``emu.live_shards()``, ``emu.wait_shards()``
(the rules are in ``gateway``'s docstring).
Roles while the bot runs: ``guild.add_role()``, ``guild.update_role()``, ``guild.delete_role()``,
``member.add_role()`` / ``member.remove_role()`` (the events Discord sends for each are in their docstrings);
``await emu.wait_caught_up()`` before looking at the bot's cache after such a change.
Files the bot sent are :class:`StoredFile` objects in ``message.attachments`` (``.filename``, ``.data``),
e.g. ``inter.followups[-1].attachments[0].data`` for an ephemeral followup.
"""

from .constants import Code, Intent, MessageFlag, Perm
from .emulator import (
    BotNotConnected,
    CommandNotAvailable,
    CommandNotSynced,
    DiscordEmulator,
    NotAcknowledged,
    WaitTimeout,
)
from .model import (
    Attachment,
    CdnFetch,
    Channel,
    Command,
    Guild,
    Interaction,
    Member,
    Message,
    RestCall,
    Role,
    StoredFile,
    User,
)
from .runner import ErrorGuard, expected_commands, run_bot

__all__ = [
    "Attachment",
    "BotNotConnected",
    "CdnFetch",
    "Channel",
    "Code",
    "Command",
    "CommandNotAvailable",
    "CommandNotSynced",
    "DiscordEmulator",
    "ErrorGuard",
    "Guild",
    "Intent",
    "Interaction",
    "Member",
    "Message",
    "MessageFlag",
    "NotAcknowledged",
    "Perm",
    "RestCall",
    "Role",
    "StoredFile",
    "User",
    "WaitTimeout",
    "expected_commands",
    "run_bot",
]
