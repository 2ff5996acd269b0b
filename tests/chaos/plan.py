"""Everything random in one chaos run, drawn from ``random.Random(seed)``: the same seed, the same run.

The jobs (who asks, where, how many images, when), what the provider does to each job's submit and task,
when the bot is killed and for how long it stays down, and when another connection holds SQLite's write
lock are drawn up front. Faults on requests whose order the run cannot fix (status polls, Discord posts)
are drawn from a generator seeded with the seed and the request's own key (the n-th poll; a post's nonce and
attempt), so they too are the same from run to run as far as the bot's own timing allows.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from tests.fakediscord import RestCall
from tests.fakediscord.faults import RestFault
from tests.fluxemu import Outcome

__all__ = [
    "CHANNELS",
    "JOBS",
    "MEMBERS",
    "WINDOW",
    "ChaosPlan",
    "FluxFault",
    "FluxFaultKind",
    "JobPlan",
    "Kill",
    "Lock",
    "TaskPlan",
    "poll_fault",
    "post_fault_chooser",
]

MEMBERS = 20
JOBS = 150
CHANNELS = ("general", "art", "memes")
#: Seconds during which the jobs arrive and everything goes wrong; afterwards the run calms down.
WINDOW = 15.0
KILLS = 3
#: A task that takes this long outlives any job deadline of the run: the bot must give it up.
TOO_SLOW = 40.0

#: What an AceData task can end with besides success (FLUX_API.md: failures live in the task's response).
TASK_FAILURES = (
    Outcome(status="Error", code="api_error", message="fetch failed"),
    Outcome(status="Error", code="service_unavailable", message="service unavailable"),
)


class FluxFaultKind(StrEnum):
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    MALFORMED = "malformed"
    OVERSIZED = "oversized"
    SLOW = "slow"
    DROPPED = "dropped"
    SEED_OVERFLOW = "seed_overflow"


#: Bodies a provider (or a proxy in front of it) has been seen to answer with a 200.
MALFORMED_BODIES: dict[str, bytes] = {
    "not JSON": b"<html><head><title>Service</title></head><body>upstream hiccup</body></html>",
    "truncated JSON": b'{"items": [{"id": "',
    "wrong types": b'{"items": {"id": 7}, "count": "many", "task_id": 42}',
    "empty": b"",
    "null": b"null",
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
}
OVERSIZED_MIB = 8


@dataclass(frozen=True)
class FluxFault:
    """What the provider does to one request. See ``tests.chaos.flux.apply`` for how each is answered.

    ``after``: the provider handled the request first (a submit created its task, billed) and then failed
    to answer it properly. ``retry_after_form``: ``seconds``, ``date`` (IMF-fixdate, GMT) or ``date-cet``
    (the same instant written with a CET zone, as some servers do).
    """

    kind: FluxFaultKind
    status: int = 200
    after: bool = False
    delay: float = 0.0
    retry_after: float = 0.0
    retry_after_form: str = "seconds"
    body_name: str = ""

    @property
    def label(self) -> str:
        """How the figures count it."""
        match self.kind:
            case FluxFaultKind.RATE_LIMITED:
                return f"429 Retry-After {self.retry_after_form}"
            case FluxFaultKind.SERVER_ERROR:
                return f"{self.status}" + (" after creating the task" if self.after else "")
            case FluxFaultKind.MALFORMED:
                return f"malformed body ({self.body_name})"
            case FluxFaultKind.OVERSIZED:
                return f"oversized body ({OVERSIZED_MIB} MiB)"
            case FluxFaultKind.SLOW:
                return "slow answer"
            case FluxFaultKind.DROPPED:
                return "dropped connection" + (" after creating the task" if self.after else "")
            case FluxFaultKind.SEED_OVERFLOW:
                return "seed 1e400"

    @property
    def refuses(self) -> bool:
        """Whether the answer says for certain that nothing was done (only a 429 does), so a resend is fine."""
        return self.kind is FluxFaultKind.RATE_LIMITED and not self.after


@dataclass(frozen=True)
class TaskPlan:
    """How long the task of a job takes at the provider, and how it ends (None: with its images)."""

    duration: float
    failure: Outcome | None = None


@dataclass(frozen=True)
class JobPlan:
    n: int
    member: int  # index into the run's members
    channel: int  # index into CHANNELS
    count: int
    at: float  # seconds after the run started
    prompt: str  # unique in the run: the provider's record of submits is counted per prompt
    submit: tuple[FluxFault, ...]  # what happens to the 1st, 2nd... submit of this job; later ones are answered
    task: TaskPlan


@dataclass(frozen=True)
class Kill:
    at: float
    downtime: float


@dataclass(frozen=True)
class Lock:
    at: float
    hold: float


@dataclass(frozen=True)
class ChaosPlan:
    seed: int
    jobs: tuple[JobPlan, ...]
    kills: tuple[Kill, ...]
    locks: tuple[Lock, ...]
    final: JobPlan
    by_prompt: dict[str, JobPlan] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.by_prompt.update({job.prompt: job for job in (*self.jobs, self.final)})
        if len(self.by_prompt) != len(self.jobs) + 1:
            raise ValueError("prompts must be unique in a run")

    @classmethod
    def draw(cls, seed: int) -> ChaosPlan:
        rng = random.Random(seed)
        members = list(range(MEMBERS)) + [rng.randrange(MEMBERS) for _ in range(JOBS - MEMBERS)]
        rng.shuffle(members)  # every member asks at least once
        times = sorted(rng.uniform(0.0, WINDOW) for _ in range(JOBS))
        jobs = tuple(
            JobPlan(
                n=n,
                member=member,
                channel=rng.randrange(len(CHANNELS)),
                count=rng.choices((1, 2, 3, 4), weights=(60, 20, 10, 10))[0],
                at=at,
                prompt=f"chaos {seed} job {n:03}: {rng.choice(SUBJECTS)} {rng.choice(PLACES)}",
                submit=_submit_faults(rng),
                task=_task(rng, may_outlive_deadline=at < WINDOW / 2),
            )
            for n, (member, at) in enumerate(zip(members, times, strict=True))
        )
        # The bot is killed in the first part of the window, so that its last life meets faults and a lock too.
        # Two locks of 0.5 to 7 s, one at a time: one early, one after the last kill.
        kills = _spaced(rng, KILLS, 1.0, WINDOW * 0.6, gap=2.0)
        holds = (rng.uniform(0.5, 7.0), rng.uniform(0.5, 7.0))
        first = rng.uniform(0.5, WINDOW * 0.4)
        last = max(first + holds[0] + 0.5, rng.uniform(kills[-1] + 1.0, WINDOW - 2.0))
        final = JobPlan(JOBS, 0, 0, 1, 0.0, f"chaos {seed} final job: a quiet harbour at dawn", (), TaskPlan(0.5))
        return cls(
            seed=seed,
            jobs=jobs,
            kills=tuple(Kill(at, rng.uniform(0.0, 0.8)) for at in kills),
            locks=(Lock(first, holds[0]), Lock(last, holds[1])),
            final=final,
        )


SUBJECTS = ("a red fox", "a lighthouse", "a paper boat", "an old tram", "a glass owl", "a copper kettle")
PLACES = ("in the snow", "at dusk", "on the moon", "under the sea", "in a cathedral", "on a rooftop")


def _spaced(rng: random.Random, n: int, start: float, end: float, *, gap: float) -> list[float]:
    """``n`` sorted times in [start, end], at least ``gap`` apart."""
    free = end - start - gap * (n - 1)
    offsets = sorted(rng.uniform(0.0, free) for _ in range(n))
    return [start + offset + gap * i for i, offset in enumerate(offsets)]


def _rate_limited(rng: random.Random, form: str | None = None, longest: float = 2.0) -> FluxFault:
    form = form or rng.choices(("seconds", "date", "date-cet"), weights=(5, 4, 1))[0]
    return FluxFault(
        FluxFaultKind.RATE_LIMITED,
        status=429,
        retry_after=rng.choice((0.0, longest / 4, longest / 2, longest)),
        retry_after_form=form,
    )


def _server_error(rng: random.Random, *, after: bool) -> FluxFault:
    return FluxFault(FluxFaultKind.SERVER_ERROR, status=rng.choice((500, 502, 503)), after=after)


def _malformed(rng: random.Random, *, after: bool) -> FluxFault:
    return FluxFault(FluxFaultKind.MALFORMED, after=after, body_name=rng.choice(sorted(MALFORMED_BODIES)))


def _submit_faults(rng: random.Random) -> tuple[FluxFault, ...]:
    """What happens to a job's submits. Most go through; a 429 may be repeated until the client gives up."""
    choices: list[tuple[int, Callable[[], tuple[FluxFault, ...]]]] = [
        (62, lambda: ()),
        (6, lambda: (_rate_limited(rng, "seconds"),)),
        (5, lambda: (_rate_limited(rng, "date"),)),
        (1, lambda: (_rate_limited(rng, "date-cet"),)),
        (2, lambda: (_rate_limited(rng), _rate_limited(rng))),
        (1, lambda: tuple(FluxFault(FluxFaultKind.RATE_LIMITED, status=429) for _ in range(6))),
        (3, lambda: (_server_error(rng, after=False),)),
        (3, lambda: (_server_error(rng, after=True),)),
        (3, lambda: (_malformed(rng, after=True),)),
        (1, lambda: (FluxFault(FluxFaultKind.OVERSIZED, after=True),)),
        (7, lambda: (FluxFault(FluxFaultKind.SLOW, delay=rng.uniform(0.3, 2.0)),)),
        (3, lambda: (FluxFault(FluxFaultKind.DROPPED, after=False),)),
        (3, lambda: (FluxFault(FluxFaultKind.DROPPED, after=True),)),
    ]
    weights = [weight for weight, _ in choices]
    return rng.choices([make for _, make in choices], weights=weights)[0]()


def _task(rng: random.Random, *, may_outlive_deadline: bool) -> TaskPlan:
    """Most tasks take 0.1 to 4 s and succeed; some fail; a few early ones never finish in time."""
    roll = rng.random()
    if roll < 0.03 and may_outlive_deadline:
        return TaskPlan(TOO_SLOW)
    duration = rng.uniform(0.1, 1.0) if rng.random() < 0.7 else rng.uniform(1.0, 4.0)
    if roll < 0.10:
        return TaskPlan(duration, rng.choice(TASK_FAILURES))
    return TaskPlan(duration)


def poll_fault(seed: int, n: int) -> FluxFault | None:
    """What the provider does to the ``n``-th status poll of the run (about one in three goes wrong)."""
    rng = random.Random(f"{seed}/poll/{n}")
    choices: list[tuple[float, Callable[[], FluxFault | None]]] = [
        (62, lambda: None),
        (4, lambda: _server_error(rng, after=False)),
        (3, lambda: _rate_limited(rng, "seconds", longest=1.0)),
        (3, lambda: _rate_limited(rng, "date", longest=1.0)),
        (2, lambda: _rate_limited(rng, "date-cet", longest=1.0)),
        (6, lambda: _malformed(rng, after=False)),
        (2, lambda: FluxFault(FluxFaultKind.OVERSIZED)),
        (6, lambda: FluxFault(FluxFaultKind.SLOW, delay=rng.uniform(0.2, 1.0))),
        (4, lambda: FluxFault(FluxFaultKind.DROPPED)),
        (8, lambda: FluxFault(FluxFaultKind.SEED_OVERFLOW, after=True)),
    ]
    return rng.choices([make for _, make in choices], weights=[weight for weight, _ in choices])[0]()


def post_fault_chooser(seed: int) -> Callable[[RestCall], RestFault | None]:
    """Discord's answer to the bot's channel posts: two attempts in five fail, keyed by nonce and attempt."""
    attempts: dict[str, int] = {}

    def choose(call: RestCall) -> RestFault | None:
        body = call.json if isinstance(call.json, dict) else {}
        key = str(body.get("nonce") or body.get("content") or "")
        attempt = attempts.get(key, 0)
        attempts[key] = attempt + 1
        rng = random.Random(f"{seed}/post/{key}/{attempt}")
        choices: list[tuple[float, Callable[[], RestFault | None]]] = [
            (60, lambda: None),
            (10, lambda: RestFault.server_error(503)),
            (2, lambda: RestFault.server_error(500)),
            (2, lambda: RestFault.server_error(502)),
            (7, lambda: RestFault.rate_limited(round(rng.uniform(0.1, 1.0), 3))),
            (7, lambda: RestFault.dropped(after=False)),
            (12, lambda: RestFault.dropped(after=True)),
        ]
        return rng.choices([make for _, make in choices], weights=[weight for weight, _ in choices])[0]()

    return choose
