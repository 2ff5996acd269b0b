"""The bot's Prometheus metrics: one :class:`Metrics` per bot, each with its own registry.

The bot's own code records through :func:`current` (the metrics of the bot whose task is running, set by
:func:`bot.app.open_bot`), so the runner and the provider clients need no extra wiring; with no bot
running, records go to a detached :class:`Metrics` nobody scrapes.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterable, Mapping
from types import SimpleNamespace

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from yarl import URL

__all__ = ["ACTIVE_STATES", "Metrics", "current", "endpoint_of", "job_outcome", "stop_using", "using"]

#: The job states ``fluxbot_jobs{state}`` reports: the ones a job passes through before it ends.
ACTIVE_STATES = ("queued", "submitting", "submitted", "succeeded")
#: How a failed job's code (``jobs.error_code``) is reported; any other code is a failure at the provider.
_FAILURE_OUTCOMES = {"deadline": "deadline", "delivery": "undelivered", "internal": "internal_error"}

PROVIDER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
JOB_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0)

#: A path segment that names one object (a task id, a uuid) rather than an endpoint.
_ID_SEGMENT = re.compile(r"[0-9]+|[0-9a-fA-F-]{16,}|[A-Za-z0-9_-]{32,}")


def endpoint_of(url: str) -> str:
    """The path of ``url`` as a bounded label: no query, no host, ids replaced by ``{id}``."""
    try:
        path = URL(url).path
    except ValueError:
        return "unknown"
    return "/".join("{id}" if _ID_SEGMENT.fullmatch(segment) else segment for segment in path.split("/")) or "/"


def job_outcome(code: str) -> str:
    """The ``outcome`` label of a job failed with ``code``."""
    return _FAILURE_OUTCOMES.get(code, "failed")


class _JobStates(Collector):
    """``fluxbot_jobs{state}``: the counts read from the database at the last scrape (see :meth:`Metrics.render`)."""

    def __init__(self) -> None:
        self.counts: Mapping[str, int] | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # its name must not clash with the ``fluxbot_jobs_total`` counter's family name

    def collect(self) -> Iterable[Metric]:
        if self.counts is None:  # the database did not answer: no value rather than a wrong one
            return
        family = GaugeMetricFamily("fluxbot_jobs", "Jobs in each active state now.", labels=["state"])
        for state in ACTIVE_STATES:
            family.add_metric([state], self.counts.get(state, 0))
        yield family


class Metrics:
    """The counters and histograms of one bot, in a registry of their own."""

    def __init__(self, provider: str = "") -> None:
        self.provider = provider
        self.registry = CollectorRegistry()
        registry = self.registry
        self.jobs_total = Counter(
            "fluxbot_jobs", "Jobs that ended, by kind and outcome.", ["kind", "outcome"], registry=registry
        )
        self.images_total = Counter("fluxbot_images", "Images posted to Discord.", registry=registry)
        self.cancelled_images_total = Counter(
            "fluxbot_cancelled_images",
            "Images of jobs cancelled after they were sent to the provider, charged since the provider bills them.",
            registry=registry,
        )
        self.job_seconds = Histogram(
            "fluxbot_job_seconds", "Seconds from accepting a job to posting it.", ["kind"],
            buckets=JOB_BUCKETS, registry=registry,
        )  # fmt: skip
        self.provider_requests_total = Counter(
            "fluxbot_provider_requests",
            "HTTP requests to the Flux provider, by endpoint and status (or timeout, error).",
            ["provider", "endpoint", "status"],
            registry=registry,
        )
        self.provider_request_seconds = Histogram(
            "fluxbot_provider_request_seconds", "Seconds per HTTP request to the Flux provider.", ["provider"],
            buckets=PROVIDER_BUCKETS, registry=registry,
        )  # fmt: skip
        self.discord_requests_total = Counter(
            "fluxbot_discord_requests", "HTTP requests to Discord's API, by status (or error).", ["status"],
            registry=registry,
        )  # fmt: skip
        self.quota_refusals_total = Counter(
            "fluxbot_quota_refusals", "Requests refused by a quota, by limit.", ["limit"], registry=registry
        )
        self._job_states = _JobStates()
        registry.register(self._job_states)

    # -- recording --------------------------------------------------------------------------------

    def job_ended(self, kind: str, outcome: str) -> None:
        self.jobs_total.labels(kind=str(kind), outcome=outcome).inc()

    def job_posted(self, kind: str, images: int, seconds: float) -> None:
        self.job_ended(kind, "posted")
        self.images_total.inc(images)
        self.job_seconds.labels(kind=str(kind)).observe(max(seconds, 0.0))

    def job_cancelled(self, kind: str, charged: int) -> None:
        """A member cancelled a job (outcome ``cancelled``); ``charged``: the images billed all the same."""
        self.job_ended(kind, "cancelled")
        self.cancelled_images_total.inc(charged)

    def provider_request(self, url: str, status: int | str, seconds: float) -> None:
        self.provider_requests_total.labels(provider=self.provider, endpoint=endpoint_of(url), status=str(status)).inc()
        self.provider_request_seconds.labels(provider=self.provider).observe(seconds)

    def quota_refused(self, limit: str) -> None:
        self.quota_refusals_total.labels(limit=str(limit)).inc()

    def discord_trace(self) -> aiohttp.TraceConfig:
        """An aiohttp trace for discord.py's session (``http_trace=``) that counts its requests by status."""
        trace = aiohttp.TraceConfig()

        async def on_end(_: aiohttp.ClientSession, __: SimpleNamespace, params: aiohttp.TraceRequestEndParams) -> None:
            self.discord_requests_total.labels(status=str(params.response.status)).inc()

        async def on_error(
            _: aiohttp.ClientSession, __: SimpleNamespace, ___: aiohttp.TraceRequestExceptionParams
        ) -> None:
            self.discord_requests_total.labels(status="error").inc()

        trace.on_request_end.append(on_end)
        trace.on_request_exception.append(on_error)
        return trace

    # -- scraping ---------------------------------------------------------------------------------

    def render(self, job_states: Mapping[str, int] | None) -> bytes:
        """The Prometheus text exposition, with ``job_states`` (None: unknown now) as ``fluxbot_jobs``."""
        self._job_states.counts = job_states
        return generate_latest(self.registry)


_DETACHED = Metrics()
_current: contextvars.ContextVar[Metrics] = contextvars.ContextVar("fluxbot_metrics", default=_DETACHED)


def current() -> Metrics:
    """The metrics of the bot running this task (a detached set when none is)."""
    return _current.get()


def using(metrics: Metrics) -> contextvars.Token[Metrics]:
    """Make ``metrics`` :func:`current` for this task and the tasks it starts from now on."""
    return _current.set(metrics)


def stop_using(token: contextvars.Token[Metrics]) -> None:
    _current.reset(token)
