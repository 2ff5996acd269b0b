"""What a chaos run left behind, the invariants it must satisfy, and its figures.

Read after the bot stopped: the ``jobs`` and ``usage`` tables of its SQLite file (as an operator would, with
another connection), the messages in the loopback Discord, and the provider's record of every submit.
Each broken invariant names the job and says what happened to it, from all three sides and the bot's log.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.flux import SubmitRecord
from tests.fakediscord import DiscordEmulator, Interaction, Message
from tests.fakediscord.faults import InjectedFault

__all__ = [
    "Figures",
    "JobRow",
    "Verdict",
    "Violation",
    "bot_errors",
    "judge",
    "read_jobs",
    "read_usage",
    "submitting",
    "unfinished",
]

ENDED = frozenset({"posted", "failed", "lost"})
#: How the member's status line (and a notice in the channel) starts when their job failed (cogs/results.py).
FAILED_MARK = "❌"
FOOTER = re.compile(r"Job #(\d+)")


@dataclass(frozen=True)
class JobRow:
    id: int
    user_id: int
    channel_id: int
    prompt: str
    count: int
    status: str
    error_code: str | None
    error_message: str | None
    posted_message_id: int | None
    charged_images: int
    reserved_images: int
    token_kept: bool  # whether the member's interaction token is still stored


def _connect(database: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)


def read_jobs(database: Path) -> list[JobRow]:
    with contextlib.closing(_connect(database)) as conn:
        rows = conn.execute(
            """SELECT id, user_id, channel_id, prompt, count, status, error_code, error_message, posted_message_id,
                      charged_images, reserved_images, interaction_token IS NOT NULL FROM jobs ORDER BY id"""
        ).fetchall()
    return [JobRow(*row[:-1], token_kept=bool(row[-1])) for row in rows]


def read_usage(database: Path) -> dict[int, tuple[int, int]]:
    """user id -> (used, reserved), over every server and day."""
    with contextlib.closing(_connect(database)) as conn:
        rows = conn.execute("SELECT user_id, sum(used), sum(reserved) FROM usage GROUP BY user_id").fetchall()
    return {user: (int(used), int(reserved)) for user, used, reserved in rows}


def unfinished(database: Path) -> int:
    """Jobs that have not ended yet (0 before the bot made its database)."""
    if not database.exists():
        return 0
    with contextlib.closing(_connect(database)) as conn:
        (count,) = conn.execute("SELECT count(*) FROM jobs WHERE status NOT IN ('posted', 'failed', 'lost')").fetchone()
    return int(count)


def submitting(database: Path) -> set[int]:
    """The jobs being sent to the provider (read right after a kill: the ones the next start may call lost)."""
    with contextlib.closing(_connect(database)) as conn:
        return {job for (job,) in conn.execute("SELECT id FROM jobs WHERE status = 'submitting'")}


# -- the bot's log --------------------------------------------------------------------------------------------

_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning|Failure)\b.*$")
_LOOP_DIED = re.compile(r"background task (jobs:(?:dispatcher|poller)) failed")


def bot_errors(logs: Sequence[str]) -> tuple[Counter[str], list[str]]:
    """The exceptions in the bot's tracebacks (by type and message, across lives), and the loops that died."""
    exceptions: Counter[str] = Counter()
    deaths: list[str] = []
    for life, log in enumerate(logs, start=1):
        lines = log.splitlines()
        in_traceback = False
        for index, line in enumerate(lines):
            if line.startswith("Traceback (most recent call last):"):
                in_traceback = True
            elif in_traceback and not line.startswith(" "):
                in_traceback = False
                if _EXCEPTION_LINE.match(line):
                    exceptions[line[:160]] += 1
            if (died := _LOOP_DIED.search(line)) is not None:
                cause = next((later for later in lines[index + 1 :] if _EXCEPTION_LINE.match(later)), "?")
                deaths.append(f"life {life}: the {died[1]} loop died: {cause[:160]}")
    return exceptions, deaths


def job_log(logs: Sequence[str], job_id: int, last: int = 6) -> list[str]:
    pattern = re.compile(rf"\bjob {job_id}\b")
    found = [
        f"life {life}: {line[:240]}"
        for life, log in enumerate(logs, 1)
        for line in log.splitlines()
        if pattern.search(line)
    ]
    return found[-last:]


# -- the verdict ------------------------------------------------------------------------------------------------


@dataclass
class Violation:
    kind: str  # which invariant
    text: str
    job: int | None = None
    detail: list[str] = field(default_factory=list)  # what happened to the job, from every side


@dataclass
class Verdict:
    violations: list[Violation] = field(default_factory=list)

    def broken(self, kind: str, text: str, job: int | None = None, detail: list[str] | None = None) -> None:
        self.violations.append(Violation(kind, text, job, detail or []))

    def __bool__(self) -> bool:
        return bool(self.violations)

    def report(self, examples: int = 6) -> str:
        """Each broken invariant: how often, a few examples, and the whole story of the first job concerned."""
        by_kind: defaultdict[str, list[Violation]] = defaultdict(list)
        for violation in self.violations:
            by_kind[violation.kind].append(violation)
        lines = [f"{len(self.violations)} violations of {len(by_kind)} invariants:"]
        for kind, found in by_kind.items():
            lines.append(f"[{kind}] x{len(found)}")
            lines += [f"  - {v.text}" for v in found[:examples]]
            if len(found) > examples:
                lines.append(f"  - ... and {len(found) - examples} more")
            if (story := next((v for v in found if v.detail), None)) is not None:
                lines.append(f"  what happened to job {story.job}:")
                lines += [f"      {line}" for line in story.detail]
        return "\n".join(lines)


def result_posts(discord: DiscordEmulator) -> tuple[dict[int, list[Message]], list[Message]]:
    """The bot's live result messages (with images) by the job their embed names, and those naming none."""
    by_job: defaultdict[int, list[Message]] = defaultdict(list)
    orphans: list[Message] = []
    for message in discord.messages.values():
        if message.author.id != discord.bot_user.id or message.ephemeral or message.deleted or not message.attachments:
            continue
        footer = ((message.embeds or [{}])[0].get("footer") or {}).get("text") or ""
        if (match := FOOTER.fullmatch(footer)) is not None:
            by_job[int(match[1])].append(message)
        else:
            orphans.append(message)
    return by_job, orphans


def status_line(inter: Interaction | None) -> str:
    if inter is None or inter.original is None or inter.original.loading:
        return ""
    return inter.original.content


def judge(
    *,
    jobs: Sequence[JobRow],
    usage: Mapping[int, tuple[int, int]],
    discord: DiscordEmulator,
    interactions: Mapping[str, Interaction],
    submits: Mapping[str, Sequence[SubmitRecord]],
    submitting_at_kills: set[int],
    logs: Sequence[str],
) -> Verdict:
    verdict = Verdict()
    results, orphans = result_posts(discord)
    known = {job.id for job in jobs}
    attempts = _post_attempts(discord)
    notices = _channel_notices(discord)

    def detail(job: JobRow) -> list[str]:
        posts = [f"message {m.id} ({len(m.attachments)} images)" for m in results.get(job.id, [])]
        lines = [
            f"member {job.user_id}, {job.count} image(s), prompt {job.prompt!r}",
            f"database: {job.status}"
            + (f" ({job.error_code}: {job.error_message})" if job.error_code else "")
            + f", posted_message_id={job.posted_message_id}, charged {job.charged_images} of {job.reserved_images}",
            "in the channel: " + (", ".join(posts) or "no result"),
            "submits: " + ("; ".join(r.label for r in submits.get(job.prompt, [])) or "none"),
            "posts: " + ("; ".join(attempts.get(job.id, [])) or "none"),
            f"the member's status line: {status_line(interactions.get(job.prompt))!r}",
        ]
        return lines + [f"log: {line}" for line in job_log(logs, job.id)]

    for job in jobs:
        posts = results.get(job.id, [])
        if job.status not in ENDED:
            verdict.broken("every job ends", f"job {job.id} never ended: still {job.status}", job.id, detail(job))
            continue
        if job.token_kept:
            verdict.broken(
                "no token kept", f"job {job.id} {job.status}, and its interaction token is still stored", job.id
            )
        line = status_line(interactions.get(job.prompt))
        if job.status == "posted":
            if len(posts) != 1:
                verdict.broken("posted exactly once", f"job {job.id} posted {len(posts)} times", job.id, detail(job))
            elif posts[0].id != job.posted_message_id:
                verdict.broken(
                    "posted exactly once",
                    f"job {job.id} records message {job.posted_message_id}, but its result is {posts[0].id}",
                    job.id,
                    detail(job),
                )
            if posts and job.charged_images != len(posts[0].attachments):
                verdict.broken(
                    "charged what was posted",
                    f"job {job.id} charged {job.charged_images} images for a post of {len(posts[0].attachments)}",
                    job.id,
                    detail(job),
                )
            if line.startswith(FAILED_MARK):
                verdict.broken(
                    "member told the truth",
                    f"job {job.id} was posted, but its member was told it failed",
                    job.id,
                    detail(job),
                )
        else:
            if posts:
                verdict.broken(
                    "posted exactly once or failed",
                    f"job {job.id} {job.status} ({job.error_code}), yet its result is in the channel",
                    job.id,
                    detail(job),
                )
            told = line.startswith(FAILED_MARK)
            if not told and notices[(job.user_id, job.channel_id)] > 0:
                notices[(job.user_id, job.channel_id)] -= 1
                told = True
            if not told:
                verdict.broken(
                    "a failed job's member is told",
                    f"job {job.id} {job.status} ({job.error_code}) and its member was never told",
                    job.id,
                    detail(job),
                )
            if job.status == "lost" and job.id not in submitting_at_kills:
                verdict.broken(
                    "lost only to a kill",
                    f"job {job.id} lost, but no kill caught it being sent: its submit stopped by itself",
                    job.id,
                    detail(job),
                )

    for message in orphans:
        verdict.broken("posted exactly once", f"result message {message.id} names no job")
    for job_id in sorted(set(results) - known):
        verdict.broken("posted exactly once", f"result for job {job_id}, which the database does not have")

    by_prompt = {job.prompt: job for job in jobs}
    for prompt, records in submits.items():
        resent_after = [r for r in records[:-1] if not r.refused]
        if resent_after:
            job = by_prompt.get(prompt)
            what = f"job {job.id}" if job is not None else f"prompt {prompt!r} (no job)"
            verdict.broken(
                "never re-sent after an unknown outcome",
                f"{what} was sent to the provider {len(records)} times ({'; '.join(r.label for r in records)})",
                job.id if job is not None else None,
                detail(job) if job is not None else None,
            )

    for death in bot_errors(logs)[1]:
        verdict.broken("no loop stops", death)

    posted_by_member: Counter[int] = Counter()
    for job in jobs:
        for message in results.get(job.id, []):
            posted_by_member[job.user_id] += len(message.attachments)
    for user in sorted(set(usage) | set(posted_by_member)):
        used, reserved = usage.get(user, (0, 0))
        if reserved != 0:
            verdict.broken("nothing reserved at the end", f"member {user}: {reserved} images still reserved")
        if used != posted_by_member[user]:
            verdict.broken(
                "charged what was posted", f"member {user}: charged {used} images, {posted_by_member[user]} posted"
            )
    return verdict


def _post_attempts(discord: DiscordEmulator) -> dict[int, list[str]]:
    """job id -> what became of each channel post of its result (status, and the fault injected)."""
    faults: dict[int, InjectedFault] = {id(injected.call): injected for injected in discord.rest_faults.injected}
    found: defaultdict[int, list[str]] = defaultdict(list)
    for call in discord.calls("POST", "/channels/{channel_id}/messages"):
        embeds = (call.json.get("embeds") if isinstance(call.json, dict) else None) or [{}]
        footer = (embeds[0].get("footer") or {}).get("text") or ""
        if (match := FOOTER.fullmatch(footer)) is not None:
            injected = faults.get(id(call))
            found[int(match[1])].append(f"{call.status}" + (f" [{injected.fault.name}]" if injected else ""))
    return found


def _channel_notices(discord: DiscordEmulator) -> Counter[tuple[int, int]]:
    """(member, channel) -> the bot's channel messages telling that member a job failed."""
    notices: Counter[tuple[int, int]] = Counter()
    mention = re.compile(rf"^<@!?(\d+)> {FAILED_MARK}")
    for message in discord.messages.values():
        mine = message.author.id == discord.bot_user.id and not message.ephemeral and not message.deleted
        if mine and (match := mention.match(message.content)) is not None:
            notices[(int(match[1]), message.channel.id)] += 1
    return notices


# -- figures ----------------------------------------------------------------------------------------------------


@dataclass
class Figures:
    seed: int
    sent: int = 0
    accepted: int = 0
    posted: int = 0
    images: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    unfinished: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # what members whose request made no job saw
    discord_faults: Mapping[str, int] = field(default_factory=dict)
    post_attempts: int = 0
    submit_faults: Counter[str] = field(default_factory=Counter)
    submits: int = 0
    poll_faults: Counter[str] = field(default_factory=Counter)
    polls: int = 0
    locks: list[float] = field(default_factory=list)
    kills: int = 0
    starts: int = 0
    exits: int = 0
    final_delay: float | None = None
    stop_status: int | None = None
    wall: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds since the start when each phase ended
    bot_exceptions: Counter[str] = field(default_factory=Counter)
    loop_deaths: list[str] = field(default_factory=list)

    def count_jobs(self, jobs: Iterable[JobRow], results: Mapping[int, list[Message]]) -> None:
        for job in jobs:
            self.accepted += 1
            if job.status == "posted":
                self.posted += 1
                self.images += sum(len(m.attachments) for m in results.get(job.id, []))
            elif job.status == "failed":
                self.failed[job.error_code or "?"] += 1
            elif job.status == "lost":
                self.lost += 1
            else:
                self.unfinished += 1

    def count_refused(self, jobs: Iterable[JobRow], interactions: Mapping[str, Interaction]) -> None:
        accepted = {job.prompt for job in jobs}
        for prompt, inter in interactions.items():
            if prompt not in accepted:
                seen = status_line(inter)[:70] or (
                    "acknowledged, never answered" if inter.acknowledged else "not acknowledged"
                )
                self.refused[seen] += 1

    def text(self) -> str:
        def counts(counter: Mapping[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1])) or "none"

        final = f"{self.final_delay:.2f} s" if self.final_delay is not None else "never"
        lines = [
            f"chaos seed {self.seed}: {self.wall:.1f} s wall time ("
            + ", ".join(f"{name} at {at:.1f} s" for name, at in self.phases.items())
            + ")",
            f"  jobs: {self.sent} asked, {self.accepted} accepted: {self.posted} posted ({self.images} images), "
            f"{sum(self.failed.values())} failed ({counts(self.failed)}), {self.lost} lost, "
            f"{self.unfinished} unfinished",
            f"  not accepted: {sum(self.refused.values())} ({counts(self.refused)})",
            f"  Discord faults on {self.post_attempts} posts: {counts(self.discord_faults)}",
            f"  provider faults on {self.submits} submits: {counts(self.submit_faults)}",
            f"  provider faults on {self.polls} polls: {counts(self.poll_faults)}",
            f"  database locks: {len(self.locks)} held " + ", ".join(f"{s:.1f}" for s in self.locks) + " s",
            f"  bot: {self.kills} SIGKILLs, {self.starts} starts, {self.exits} exits on its own, "
            f"stopped with status {self.stop_status}",
            f"  final job delivered {final} after its task finished",
        ]
        if self.loop_deaths:
            lines += [f"  {death}" for death in self.loop_deaths]
        if self.bot_exceptions:
            lines.append(
                "  exceptions in the bot's log: "
                + "; ".join(f"{n}x {e}" for e, n in self.bot_exceptions.most_common(8))
            )
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "wall": round(self.wall, 2),
            "phases": {name: round(at, 2) for name, at in self.phases.items()},
            "sent": self.sent,
            "accepted": self.accepted,
            "posted": self.posted,
            "images": self.images,
            "failed": dict(self.failed),
            "lost": self.lost,
            "unfinished": self.unfinished,
            "refused": dict(self.refused),
            "discord_faults": dict(self.discord_faults),
            "submit_faults": dict(self.submit_faults),
            "poll_faults": dict(self.poll_faults),
            "locks": [round(s, 2) for s in self.locks],
            "kills": self.kills,
            "starts": self.starts,
            "exits": self.exits,
            "final_delay": self.final_delay,
        }
