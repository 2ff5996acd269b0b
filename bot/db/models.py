"""The rows the store hands out: small frozen dataclasses and the enums they use."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from bot.settings import Provider

__all__ = [
    "ACTIVE_STATUSES",
    "CANCELLABLE_STATUSES",
    "INTERACTION_LIFETIME",
    "CancelOutcome",
    "GuildSettings",
    "Job",
    "JobKind",
    "JobStatus",
    "LimitChange",
    "LimitKind",
    "NewJob",
    "PollHandle",
    "Provider",
    "QuotaLimits",
    "QuotaRefusal",
    "UsageSummary",
]

#: Discord accepts edits of an interaction response for this many seconds after the interaction.
INTERACTION_LIFETIME = 15 * 60.0


class JobKind(StrEnum):
    GENERATE = "generate"
    EDIT = "edit"


class JobStatus(StrEnum):
    """Where a job is. ``queued -> submitting -> submitted -> succeeded -> posted``; see ``bot/db/jobs.py``."""

    QUEUED = "queued"
    """Recorded; waiting for a provider slot."""
    SUBMITTING = "submitting"
    """The submit request may be in flight. After a crash its outcome is unknown: never re-send it."""
    SUBMITTED = "submitted"
    """The provider accepted it; ``provider_task_id`` is being polled."""
    SUCCEEDED = "succeeded"
    """The images are ready (``image_urls``) but not yet posted to Discord."""
    POSTED = "posted"
    """Terminal: the images were posted (``posted_message_id``) and charged."""
    FAILED = "failed"
    """Terminal: ``error_code``/``error_message`` say why; nothing charged."""
    LOST = "lost"
    """Terminal: the bot stopped while submitting, so the outcome is unknown; nothing charged."""
    CANCELLED = "cancelled"
    """Terminal: its member cancelled it. Nothing charged if it was still queued; once the submit may have
    been sent, the provider bills it, so what was reserved is charged (``charged_images``)."""

    @property
    def is_terminal(self) -> bool:
        """True for posted, failed, lost and cancelled: nothing will happen to the job any more."""
        return self not in ACTIVE_STATUSES


#: The statuses of jobs that hold a reservation and count towards ``max_concurrent``.
ACTIVE_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.QUEUED, JobStatus.SUBMITTING, JobStatus.SUBMITTED, JobStatus.SUCCEEDED}
)


#: The statuses from which a member may cancel a job: before its result is recorded.
CANCELLABLE_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.QUEUED, JobStatus.SUBMITTING, JobStatus.SUBMITTED})


class CancelOutcome(StrEnum):
    """What a member's Cancel did (:func:`bot.db.cancel_job`)."""

    CANCELLED_QUEUED = "cancelled_queued"
    """The job was still queued: it ended, nothing was sent, its reservation was released."""
    CANCELLED_BILLED = "cancelled_billed"
    """The submit may have been sent: the job ended, its result will not be posted, and what it reserved is
    charged (the provider bills it)."""
    TOO_LATE = "too_late"
    """The result was already recorded (being posted, or posted): the job goes on."""
    ALREADY_ENDED = "already_ended"
    """The job had already failed, been lost or cancelled (or is no longer known)."""
    NOT_YOURS = "not_yours"
    """Only the member who asked for the job may cancel it."""

    @property
    def cancelled(self) -> bool:
        """True if this Cancel ended the job."""
        return self in (CancelOutcome.CANCELLED_QUEUED, CancelOutcome.CANCELLED_BILLED)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewJob:
    """A job request, as :func:`bot.db.create_job` records it. ``guild_id`` is 0 in direct messages."""

    guild_id: int
    channel_id: int
    user_id: int
    kind: JobKind
    prompt: str
    model: str
    size: str
    count: int
    provider: Provider
    seed: int | None = None
    source_image_url: str | None = None
    parent_job_id: int | None = None
    interaction_application_id: int | None = None
    interaction_token: str | None = field(default=None, repr=False)
    interaction_created_at: float | None = None
    """When the interaction was created; defaults to the time the job is recorded if a token is given."""
    locale: str | None = None
    """The member's Discord locale (``interaction.locale``'s value): their status line is shown in it."""

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"a job needs at least one image, not {self.count}")
        if "\x00" in self.prompt:  # PostgreSQL's text cannot hold NUL; a NUL means nothing in a prompt
            object.__setattr__(self, "prompt", self.prompt.replace("\x00", ""))
        if self.kind is JobKind.EDIT and not self.source_image_url:
            raise ValueError("an edit job needs a source_image_url")


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One row of ``jobs``. Timestamps are unix seconds; ``usage_day`` holds the job's reservation."""

    id: int
    guild_id: int
    channel_id: int
    user_id: int
    kind: JobKind
    prompt: str
    model: str
    size: str
    count: int
    seed: int | None
    source_image_url: str | None
    parent_job_id: int | None
    interaction_application_id: int | None
    interaction_token: str | None = field(repr=False)
    interaction_created_at: float | None
    locale: str | None
    """The language of the member who asked (see :class:`NewJob`); None: unknown, English."""
    provider: Provider
    provider_task_id: str | None
    status: JobStatus
    error_code: str | None
    error_message: str | None
    created_at: float
    submitted_at: float | None
    finished_at: float | None
    posted_at: float | None
    image_urls: tuple[str, ...]
    """The result images, once succeeded."""
    result_seed: int | None
    """The seed the provider reports having used, when it does."""
    posted_message_id: int | None
    reserved_images: int
    charged_images: int
    usage_day: str

    @property
    def is_terminal(self) -> bool:
        """True once the job is posted, failed, lost or cancelled."""
        return self.status.is_terminal

    @property
    def cancellable(self) -> bool:
        """Whether its member may still cancel it (see :class:`CancelOutcome`)."""
        return self.status in CANCELLABLE_STATUSES

    @property
    def interaction_expires_at(self) -> float | None:
        """Until when the interaction token can edit the original response, if there is one."""
        if self.interaction_token is None or self.interaction_created_at is None:
            return None
        return self.interaction_created_at + INTERACTION_LIFETIME


@dataclass(frozen=True, slots=True)
class PollHandle:
    """What polling a submitted job needs, without the rest of its row: see :func:`bot.db.polling_handles`."""

    job_id: int
    task_id: str
    """The provider's handle for the job (``provider_task_id``)."""
    started_at: float
    """When the provider accepted the job (unix seconds; its creation time if that is unknown)."""


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """The limits :func:`bot.db.create_job` enforces; ``None`` (or a cooldown of 0) means no limit.

    Daily limits count images (used + reserved today, UTC), monthly ones images this calendar month (UTC).
    ``max_concurrent`` counts the member's active jobs in the server. ``cooldown`` is seconds since the
    member's previous job in the server.
    """

    user_daily: int | None = None
    guild_daily: int | None = None
    max_concurrent: int | None = None
    cooldown: float = 0.0
    user_monthly: int | None = None
    guild_monthly: int | None = None


class LimitKind(StrEnum):
    USER_DAILY = "user_daily"
    GUILD_DAILY = "guild_daily"
    MAX_CONCURRENT = "max_concurrent"
    COOLDOWN = "cooldown"
    USER_MONTHLY = "user_monthly"
    GUILD_MONTHLY = "guild_monthly"


@dataclass(frozen=True, slots=True)
class QuotaRefusal:
    """Why a job was refused: which limit, its value, the current use, and when it resets.

    ``current`` is images used + reserved today for daily limits (this month for monthly ones), active jobs
    for ``max_concurrent``, and seconds since the previous job for ``cooldown``. ``resets_at`` is unix time
    (next UTC midnight, 00:00 UTC on the first of next month, or the end of the cooldown) and ``None`` for
    ``max_concurrent``, which frees up when a job ends.
    """

    kind: LimitKind
    limit: float
    current: float
    requested: int
    resets_at: float | None


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """A member's images in one server: today (UTC) and this month, each as used + reserved."""

    day: str
    used_today: int
    reserved_today: int
    used_month: int
    reserved_month: int

    @property
    def today(self) -> int:
        """Images counted against today's limit (used + reserved)."""
        return self.used_today + self.reserved_today

    @property
    def month(self) -> int:
        """Images used or reserved this month."""
        return self.used_month + self.reserved_month


@dataclass(frozen=True, slots=True, kw_only=True)
class GuildSettings:
    """A server's overrides. ``None`` means "use the bot's default"; no row at all means all ``None``."""

    guild_id: int
    user_daily: int | None = None
    guild_daily: int | None = None
    max_count: int | None = None
    max_concurrent: int | None = None
    cooldown_seconds: float | None = None
    allowed_models: tuple[str, ...] | None = None
    """``None`` allows every model."""
    allowed_channels: tuple[int, ...] | None = None
    """``None`` allows every channel."""
    user_monthly: int | None = None
    guild_monthly: int | None = None
    updated_at: float | None = None
    updated_by: int | None = None

    def quota_limits(self, defaults: QuotaLimits) -> QuotaLimits:
        """The limits to enforce in this server: each override, or else the bot's default."""
        return QuotaLimits(
            user_daily=_first(self.user_daily, defaults.user_daily),
            guild_daily=_first(self.guild_daily, defaults.guild_daily),
            max_concurrent=_first(self.max_concurrent, defaults.max_concurrent),
            cooldown=self.cooldown_seconds if self.cooldown_seconds is not None else defaults.cooldown,
            user_monthly=_first(self.user_monthly, defaults.user_monthly),
            guild_monthly=_first(self.guild_monthly, defaults.guild_monthly),
        )

    def allows_model(self, model: str) -> bool:
        """Whether ``model`` may be used here."""
        return self.allowed_models is None or model in self.allowed_models

    def allows_channel(self, channel_id: int) -> bool:
        """Whether the bot may be used in ``channel_id`` here."""
        return self.allowed_channels is None or channel_id in self.allowed_channels


@dataclass(frozen=True, slots=True)
class LimitChange:
    """One audit row: ``user_id`` changed ``field`` from ``old_value`` to ``new_value`` (JSON text)."""

    id: int
    guild_id: int
    user_id: int
    field: str
    old_value: str | None
    new_value: str | None
    at: float


def _first(value: int | None, default: int | None) -> int | None:
    return value if value is not None else default
