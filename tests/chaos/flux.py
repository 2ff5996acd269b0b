"""The Flux emulator of a chaos run: AceData as usual, with the plan's faults applied by our own middleware.

The middleware sits right after the emulator's request log (every request is recorded, faulty or not) and
before everything else. A submit is matched to its job by its prompt (unique per job): the job's planned
faults apply to its 1st, 2nd... submit, and the task it creates gets the job's planned duration and ending.
Status polls get ``plan.poll_fault`` of their index. Once ``calm`` is set, no fault is injected any more.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from email.utils import formatdate
from functools import cache

from aiohttp import web
from aiohttp.typedefs import Handler

from tests.chaos.plan import MALFORMED_BODIES, OVERSIZED_MIB, ChaosPlan, FluxFault, FluxFaultKind, poll_fault
from tests.conftest import KEY
from tests.fluxemu import FluxEmulator
from tests.fluxemu.acedata import error_response
from tests.fluxemu.common import parse_json

__all__ = ["ChaosFlux", "SubmitRecord", "apply"]

#: Every task is created with this delay, then given its job's own duration (so none settles at creation).
PLACEHOLDER_DELAY = 3600.0
_SEED = re.compile(rb'"seed":\s*-?\d+')


@dataclass
class SubmitRecord:
    """One ``POST /flux/images`` of a prompt: the fault it met (None: answered normally) and the tasks it made."""

    fault: FluxFault | None
    task_ids: list[str] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        """Whether the bot was told for certain that nothing happened (a 429), so sending again is allowed."""
        return self.fault is not None and self.fault.refuses

    @property
    def label(self) -> str:
        made = f", task {self.task_ids[0][:8]}" if self.task_ids else ", no task"
        return (self.fault.label if self.fault is not None else "answered") + made


class ChaosFlux(FluxEmulator):
    def __init__(self, plan: ChaosPlan) -> None:
        super().__init__(KEY)
        self.plan = plan
        self.calm = False
        self.task_delay = PLACEHOLDER_DELAY
        #: prompt -> every submit of it, in order
        self.submits: defaultdict[str, list[SubmitRecord]] = defaultdict(list)
        self.poll_faults: list[FluxFault] = []
        self.polls = 0
        self._timed: set[str] = set()

    def _build_app(self) -> web.Application:
        app = super()._build_app()
        app.middlewares.insert(1, self._chaos)  # after the request log, before the emulator's own faults
        return app

    @web.middleware
    async def _chaos(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "POST" and request.path == "/flux/images":
            return await self._submit(request, handler)
        if request.method == "POST" and request.path == "/flux/tasks":
            n, self.polls = self.polls, self.polls + 1
            fault = None if self.calm else poll_fault(self.plan.seed, n)
            if fault is None:
                return await handler(request)
            response = await apply(fault, request, handler)
            if fault.kind is not FluxFaultKind.SEED_OVERFLOW or _overflowed(response):
                self.poll_faults.append(fault)  # (a seed can only overflow in an answer that has one)
            return response
        return await handler(request)

    async def _submit(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = parse_json(await request.read())
        prompt = str(body.get("prompt")) if isinstance(body, dict) else ""
        job = self.plan.by_prompt.get(prompt)
        records = self.submits[prompt]
        attempt = len(records)
        fault = job.submit[attempt] if job is not None and not self.calm and attempt < len(job.submit) else None
        record = SubmitRecord(fault)
        records.append(record)
        try:
            return await apply(fault, request, handler) if fault is not None else await handler(request)
        finally:
            self._time_tasks(prompt, record)

    def _time_tasks(self, prompt: str, record: SubmitRecord) -> None:
        """Give the tasks this submit created the job's planned duration and ending."""
        job = self.plan.by_prompt.get(prompt)
        for task in self._tasks.values():
            if task.prompt != prompt or task.id in self._timed:
                continue
            self._timed.add(task.id)
            record.task_ids.append(task.id)
            if job is not None:
                task.due_at = task.created_at + job.task.duration
                if job.task.failure is not None:
                    task.planned = job.task.failure
        self.notify()

    def fault_counts(self) -> tuple[Counter[str], Counter[str]]:
        """Faults injected by label: on submits, and on status polls."""
        submits = Counter(r.fault.label for records in self.submits.values() for r in records if r.fault is not None)
        return submits, Counter(fault.label for fault in self.poll_faults)


async def apply(fault: FluxFault, request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer ``request`` as ``fault`` says, in AceData's documented shapes."""
    if fault.delay:
        await asyncio.sleep(fault.delay)
    if fault.kind is FluxFaultKind.SLOW:
        return await handler(request)
    answered = await handler(request) if fault.after else None
    match fault.kind:
        case FluxFaultKind.DROPPED:
            if request.transport is not None:
                request.transport.close()
            return web.Response()  # never sent: the connection is gone
        case FluxFaultKind.RATE_LIMITED:
            response = error_response(code="too_many_requests")
            response.headers["Retry-After"] = retry_after_header(fault)
            return response
        case FluxFaultKind.SERVER_ERROR if fault.status == 502:  # the proxy in front of the service
            return web.Response(
                status=502, text="<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html"
            )
        case FluxFaultKind.SERVER_ERROR:
            return error_response(status=fault.status)
        case FluxFaultKind.MALFORMED:
            return web.Response(status=200, body=MALFORMED_BODIES[fault.body_name], content_type="application/json")
        case FluxFaultKind.OVERSIZED:
            return web.Response(status=200, body=oversized_body(), content_type="application/json")
        case FluxFaultKind.SEED_OVERFLOW:
            assert isinstance(answered, web.Response) and isinstance(answered.body, bytes)
            body = _SEED.sub(b'"seed": 1e400', answered.body)
            return web.Response(status=answered.status, body=body, content_type="application/json")
    raise AssertionError(f"unknown fault {fault}")


def _overflowed(response: web.StreamResponse) -> bool:
    return isinstance(response, web.Response) and isinstance(response.body, bytes) and b"1e400" in response.body


def retry_after_header(fault: FluxFault) -> str:
    """``Retry-After`` in seconds, or as an HTTP date that far ahead (RFC 9110 IMF-fixdate, or with CET)."""
    if fault.retry_after_form == "seconds":
        return str(int(fault.retry_after)) if fault.retry_after.is_integer() else str(fault.retry_after)
    when = time.time() + fault.retry_after
    if fault.retry_after_form == "date-cet":
        return formatdate(when + 3600, usegmt=True).replace(" GMT", " CET")
    return formatdate(when, usegmt=True)


@cache
def oversized_body() -> bytes:
    """Valid JSON of a few MiB: a status answer padded far beyond anything the service sends."""
    return b'{"success": true, "items": [], "count": 0, "padding": "' + b"x" * (OVERSIZED_MIB << 20) + b'"}'
