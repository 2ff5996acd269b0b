"""The bot's store: jobs that survive restarts, per-member usage, and per-server settings.

The store is a SQLite file (one bot process) or a PostgreSQL database (one or several processes). Open it
once with ``store = await open_store(url)``; every repository function takes the store first::

    job_or_refusal = await create_job(store, new_job, limits)
    await mark_submitting(store, job.id)

Finished jobs are kept until :func:`prune_finished_jobs` deletes old ones; daily usage is kept regardless.
"""

import time
from collections.abc import Callable
from pathlib import Path

from bot.db.guilds import (
    BLOCKED_MEMBER_FIELD,
    BLOCKLIST_FIELD,
    MAX_BLOCK_REASON,
    SETTING_FIELDS,
    BlockedMember,
    SettingsChanges,
    add_blocked_term,
    block_member,
    blocked_members,
    blocked_terms,
    get_guild_settings,
    member_block,
    normalize_reason,
    normalize_term,
    recent_limit_changes,
    remove_blocked_term,
    reset_guild_settings,
    unblock_member,
    update_guild_settings,
)
from bot.db.jobs import (
    active_jobs,
    cancel_job,
    count_in,
    create_job,
    get_job,
    jobs_by_ids,
    jobs_in,
    jobs_owing_final_word,
    mark_failed,
    mark_lost,
    mark_posted,
    mark_submitted,
    mark_submitting,
    mark_succeeded,
    mark_told,
    polling_handles,
    submitted_job,
)
from bot.db.member_settings import (
    MEMBER_SETTING_FIELDS,
    MemberSettings,
    MemberSettingsChanges,
    get_member_settings,
    reset_member_settings,
    update_member_settings,
)
from bot.db.models import (
    ACTIVE_STATUSES,
    CANCELLABLE_STATUSES,
    INTERACTION_LIFETIME,
    CancelOutcome,
    GuildSettings,
    Job,
    JobKind,
    JobStatus,
    LimitChange,
    LimitKind,
    NewJob,
    PollHandle,
    Provider,
    QuotaLimits,
    QuotaRefusal,
    UsageSummary,
)
from bot.db.retention import prune_finished_jobs, prune_records
from bot.db.rules import (
    ACCESS_ROLE_FIELD,
    MEMBER_RULE_FIELD,
    ROLE_RULE_FIELD,
    RULE_FIELDS,
    RuleChanges,
    RuleOverrides,
    access_roles,
    add_access_role,
    clear_access_roles,
    clear_member_rule,
    clear_role_rule,
    member_rule,
    member_rules,
    remove_access_role,
    request_rules,
    role_rules,
    set_member_rule,
    set_role_rule,
)
from bot.db.schema import Migration, MigrationError, SchemaTooNewError, load_migrations
from bot.db.sqlite import SqliteStore
from bot.db.state import get_state, set_state
from bot.db.store import (
    Params,
    Reader,
    Row,
    Store,
    StoreBusyError,
    StoreConnectError,
    StoreUnavailableError,
    Transaction,
)
from bot.db.usage import guild_usage_month, guild_usage_today, user_usage
from bot.db.work import queue_position

__all__ = [
    "ACCESS_ROLE_FIELD",
    "ACTIVE_STATUSES",
    "BLOCKED_MEMBER_FIELD",
    "BLOCKLIST_FIELD",
    "CANCELLABLE_STATUSES",
    "INTERACTION_LIFETIME",
    "MAX_BLOCK_REASON",
    "MEMBER_RULE_FIELD",
    "MEMBER_SETTING_FIELDS",
    "ROLE_RULE_FIELD",
    "RULE_FIELDS",
    "SETTING_FIELDS",
    "BlockedMember",
    "CancelOutcome",
    "GuildSettings",
    "Job",
    "JobKind",
    "JobStatus",
    "LimitChange",
    "LimitKind",
    "MemberSettings",
    "MemberSettingsChanges",
    "Migration",
    "MigrationError",
    "NewJob",
    "Params",
    "PollHandle",
    "Provider",
    "QuotaLimits",
    "QuotaRefusal",
    "Reader",
    "Row",
    "RuleChanges",
    "RuleOverrides",
    "SchemaTooNewError",
    "SettingsChanges",
    "SqliteStore",
    "Store",
    "StoreBusyError",
    "StoreConnectError",
    "StoreUnavailableError",
    "Transaction",
    "UsageSummary",
    "access_roles",
    "active_jobs",
    "add_access_role",
    "add_blocked_term",
    "block_member",
    "blocked_members",
    "blocked_terms",
    "cancel_job",
    "clear_access_roles",
    "clear_member_rule",
    "clear_role_rule",
    "count_in",
    "create_job",
    "get_guild_settings",
    "get_job",
    "get_member_settings",
    "get_state",
    "guild_usage_month",
    "guild_usage_today",
    "jobs_by_ids",
    "jobs_in",
    "jobs_owing_final_word",
    "load_migrations",
    "mark_failed",
    "mark_lost",
    "mark_posted",
    "mark_submitted",
    "mark_submitting",
    "mark_succeeded",
    "mark_told",
    "member_block",
    "member_rule",
    "member_rules",
    "normalize_reason",
    "normalize_term",
    "open_store",
    "polling_handles",
    "prune_finished_jobs",
    "prune_records",
    "queue_position",
    "recent_limit_changes",
    "remove_access_role",
    "remove_blocked_term",
    "request_rules",
    "reset_guild_settings",
    "reset_member_settings",
    "role_rules",
    "set_member_rule",
    "set_role_rule",
    "set_state",
    "submitted_job",
    "unblock_member",
    "update_guild_settings",
    "update_member_settings",
    "user_usage",
]


_SQLITE_PREFIX = "sqlite:///"
_POSTGRESQL_PREFIXES = ("postgresql://", "postgres://")


async def open_store(url: str, *, clock: Callable[[], float] = time.time) -> Store:
    """Open (and migrate) the database that ``url`` names: ``sqlite:///path`` or ``postgresql://...``.

    ``url`` is ``DATABASE_URL`` as the settings checked it. Errors never repeat a password it holds.
    """
    if url.startswith(_SQLITE_PREFIX):
        return await SqliteStore.open(Path(url.removeprefix(_SQLITE_PREFIX)), clock=clock)
    if url.lower().startswith(_POSTGRESQL_PREFIXES):
        from bot.db.postgres import PostgresStore  # noqa: PLC0415 - asyncpg is optional: fluxbot[postgres]

        return await PostgresStore.open(url, clock=clock)
    scheme = url.partition("://")[0] if "://" in url else "(none)"
    raise ValueError(f"DATABASE_URL must start with sqlite:/// or postgresql://, not with the scheme {scheme!r}")
