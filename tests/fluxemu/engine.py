"""The emulated vendors' backend: clock, tasks, results, hosted files and the logs tests assert on.

It knows nothing about HTTP routes; the vendor modules (``acedata``, ``openai_relay``, ``bfl``) turn
requests into calls on it and its records into each vendor's JSON.

Time: the emulator clock is wall time plus an offset that ``advance()`` moves. A task is due at
``created_at + task_delay`` and settles as soon as the clock passes that. Settling happens on access
(task creation, every read of ``tasks`` or ``in_flight()``, every poll, ``advance()``) and, so that
callbacks and synchronous answers happen by themselves, in a background clock loop that sleeps until
the next due time or until something changes. Nothing polls on a fixed tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import yarl

from tests.fluxemu.images import SourceError, load_source, render_png
from tests.fluxemu.records import (
    FETCH_FAILED,
    SUCCESS,
    CallbackDelivery,
    EmuTask,
    Mode,
    Outcome,
    Provider,
    RecordedRequest,
)

__all__ = ["Engine"]

log = logging.getLogger(__name__)

CALLBACK_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
OPENAI_FORMATS = ("url", "b64_json")

FinishListener = Callable[[EmuTask], None]


@dataclass(frozen=True)
class _Plan:
    """An outcome queued by a test, for the next created task of one of ``providers``."""

    outcome: Outcome
    providers: frozenset[Provider]


ALL_PROVIDERS: frozenset[Provider] = frozenset({"acedata", "openai", "bfl"})


class Engine:
    """State and task engine shared by every emulated vendor. See the module docstring for timing."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.task_delay = 0.0
        #: When set, results are noisy PNGs this many pixels square (2048: about 12 MB each).
        self.large_results: int | None = None
        self.max_in_flight = 0
        self.requests: list[RecordedRequest] = []
        self.callbacks: list[CallbackDelivery] = []
        self._tasks: dict[str, EmuTask] = {}
        self._plans: list[_Plan] = []
        self._offset = 0.0
        self._openai_format = "url"
        self._results: dict[str, bytes] = {}
        self._files: dict[str, tuple[bytes, str]] = {}
        self._image_counter = 0
        self._finish_listeners: list[FinishListener] = []
        self._changed = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._base_url: str | None = None

    # ----- lifecycle -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``, without a trailing slash. Only known once started."""
        if self._base_url is None:
            raise RuntimeError("the emulator is not started")
        return self._base_url

    @property
    def session(self) -> aiohttp.ClientSession:
        """The client session the emulated services use to fetch source images and send callbacks."""
        if self._session is None:
            raise RuntimeError("the emulator is not started")
        return self._session

    def _start_engine(self, base_url: str) -> None:
        self._base_url = base_url
        self._session = aiohttp.ClientSession()
        self.spawn(self._run_clock(), name="fluxemu-clock")

    async def _stop_engine(self) -> None:
        session, self._session = self._session, None  # from now on spawn() runs nothing
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if session is not None:
            await session.close()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> None:
        """Run ``coro`` in the background; the emulator keeps it, logs its failure, cancels it on close.

        Once the emulator is closed (or before it starts) nothing runs: ``coro`` is discarded.
        """
        if self._session is None:
            log.debug("fluxemu: not running %s, the emulator is not running", name)
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("fluxemu background task %s failed", task.get_name(), exc_info=exc)

    # ----- clock -----------------------------------------------------------------------------------

    def now(self) -> float:
        """The emulator clock: ``time.time()`` plus everything ``advance()`` added."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the emulator clock forward; tasks that become due settle at once."""
        if seconds < 0:
            raise ValueError("the emulator clock only moves forward")
        self._offset += seconds
        self._settle()
        self.notify()

    async def _run_clock(self) -> None:
        """Settle tasks as they become due, sleeping until the next due time or the next change."""
        while True:
            changed = self._changed
            self._settle()
            await self._wait_for_change(changed, self._seconds_to_next_due())

    def _seconds_to_next_due(self) -> float | None:
        now = self.now()
        waits = [task.due_at - now for task in self._tasks.values() if task.outcome is None]
        return max(0.0, min(waits)) if waits else None

    # ----- change notification ---------------------------------------------------------------------

    def notify(self) -> None:
        """Wake everything waiting for the emulator's state to change."""
        self._changed.set()
        self._changed = asyncio.Event()

    @staticmethod
    async def _wait_for_change(changed: asyncio.Event, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait, without polling, until ``predicate()`` holds; raise TimeoutError after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self._changed
            self._settle()
            if predicate():
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"fluxemu: condition not reached within {timeout} s")
            await self._wait_for_change(changed, remaining)

    async def wait_for_callbacks(self, n: int, timeout: float = 5.0) -> list[CallbackDelivery]:
        """Wait until at least ``n`` AceData callbacks were delivered (or failed); return them all."""
        await self.wait_until(lambda: len(self.callbacks) >= n, timeout)
        return list(self.callbacks)

    # ----- request log -----------------------------------------------------------------------------

    def record(self, request: RecordedRequest) -> None:
        """Append ``request`` to the log."""
        self.requests.append(request)
        self.notify()

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """The recorded requests with this method and exact path (no query string), oldest first."""
        method = method.upper()
        return [r for r in self.requests if r.method == method and r.path == path]

    def count(self, method: str, path: str) -> int:
        """How many requests with this method and exact path arrived."""
        return len(self.requests_to(method, path))

    # ----- planned outcomes ------------------------------------------------------------------------

    def fail_next_task(self, code: str = "api_error", message: str = "fetch failed", times: int = 1) -> None:
        """Make the next ``times`` created tasks (any provider) fail with this error code and message.

        AceData reports it in the task's ``response`` (or as an HTTP error in synchronous mode), the
        OpenAI relay as an HTTP error, Black Forest Labs as status "Error".
        """
        self._queue(Outcome(status="Error", code=code, message=message), ALL_PROVIDERS, times)

    def bfl_next_status(self, status: str, times: int = 1) -> None:
        """Give the next ``times`` Black Forest Labs tasks this final status instead of "Ready".

        Only BFL tasks take these; an unknown word (e.g. "Processing") is shown once due and never ends.
        """
        self._queue(Outcome(status=status), frozenset({"bfl"}), times)

    def _queue(self, outcome: Outcome, providers: frozenset[Provider], times: int) -> None:
        if times < 1:
            raise ValueError("times must be at least 1")
        self._plans.extend(_Plan(outcome, providers) for _ in range(times))

    def _take_plan(self, provider: Provider) -> Outcome:
        for index, plan in enumerate(self._plans):
            if provider in plan.providers:
                del self._plans[index]
                return plan.outcome
        return SUCCESS

    @property
    def openai_format(self) -> str:
        """What the OpenAI relay fills in: "url" (``b64_json`` empty) or "b64_json" (``url`` empty)."""
        return self._openai_format

    @openai_format.setter
    def openai_format(self, value: str) -> None:
        if value not in OPENAI_FORMATS:
            raise ValueError(f"openai_format must be one of {OPENAI_FORMATS}, not {value!r}")
        self._openai_format = value

    # ----- tasks -----------------------------------------------------------------------------------

    @property
    def tasks(self) -> dict[str, EmuTask]:
        """Every task by id (AceData task_id, BFL id, or the id of an OpenAI relay call), settled to now."""
        self._settle()
        return self._tasks

    def in_flight(self) -> int:
        """How many tasks are pending now (created, not finished)."""
        self._settle()
        return sum(task.pending for task in self._tasks.values())

    def tasks_by_ids(self, ids: Iterable[str]) -> list[EmuTask]:
        """The known tasks among ``ids``, in that order (repeats kept), settled to now."""
        self._settle()
        return [self._tasks[i] for i in ids if i in self._tasks]

    def create_task(
        self,
        *,
        provider: Provider,
        mode: Mode,
        model: str,
        prompt: str,
        request: Any,
        image_count: int,
        callback_url: str | None = None,
        requested_seed: int | None = None,
        source: str | None = None,
        source_ok: bool | None = None,
    ) -> EmuTask:
        """Accept a generation: it takes the next planned outcome and becomes due after ``task_delay``.

        ``source``/``source_ok``: the image an edit refers to and whether the service could fetch it
        (see ``fetch_source``); a task whose source failed ends with api_error "fetch failed".
        """
        self._settle()  # so that due tasks do not count as in flight
        created_at = self.now()
        task = EmuTask(
            id=str(uuid.uuid4()),
            provider=provider,
            mode=mode,
            model=model,
            prompt=prompt,
            request=request,
            trace_id=str(uuid.uuid4()),
            created_at=created_at,
            due_at=created_at + self.task_delay,
            image_count=image_count,
            planned=self._take_plan(provider),
            callback_url=callback_url,
            requested_seed=requested_seed,
            source_url=source,
            source_ok=source_ok,
        )
        self._tasks[task.id] = task
        self.max_in_flight = max(self.max_in_flight, sum(t.pending for t in self._tasks.values()))
        self._settle()  # a task without delay is finished before its submit is answered
        self.notify()
        return task

    async def fetch_source(self, ref: str, *, plain_base64: bool = False) -> bool:
        """Fetch or decode an edit's source image as the service does; whether that worked.

        The services do this while accepting the task, so with ``task_delay`` 0 an edit is finished
        by the first poll, and a failure is known before the task is created.
        """
        try:
            await load_source(self.session, ref, plain_base64=plain_base64)
        except SourceError as exc:
            log.info("fluxemu: cannot fetch source image %.60s: %s", ref, exc)
            return False
        return True

    async def finished(self, task: EmuTask) -> Outcome:
        """Wait until ``task`` finishes (for synchronous answers) and return its outcome."""
        self._settle()
        await task.done.wait()
        assert task.outcome is not None
        return task.outcome

    def on_finish(self, listener: FinishListener) -> None:
        """Call ``listener(task)`` whenever a task finishes (used for AceData callbacks)."""
        self._finish_listeners.append(listener)

    def _settle(self) -> None:
        """Settle every task that is due."""
        now = self.now()
        settled = [task for task in self._tasks.values() if task.outcome is None and task.due_at <= now]
        for task in settled:
            self._settle_task(task)
        if settled:
            self.notify()

    def _settle_task(self, task: EmuTask) -> None:
        task.outcome = FETCH_FAILED if task.source_ok is False else task.planned
        if not task.outcome.terminal:
            return  # an unknown BFL word: shown from now on, never finishes
        task.finished_at = task.due_at
        if task.outcome.ok:
            self._produce_images(task)
        task.done.set()
        for listener in self._finish_listeners:
            listener(task)

    def _produce_images(self, task: EmuTask) -> None:
        for n in range(task.image_count):
            path = f"/images/{task.id}/{n}.png"
            self._results[path] = render_png(task.id, n, noisy_side=self.large_results)
            task.images.append(self.base_url + path)
            task.seeds.append(task.requested_seed if task.requested_seed is not None else _seed(task.id, n))
            # The real service reports timings sometimes as a Unix time, sometimes as an object.
            self._image_counter += 1
            timings: int | dict[str, float]
            timings = {"inference": 3.328} if self._image_counter % 2 == 0 else int(task.finished_at or 0)
            task.timings.append(timings)

    # ----- hosted files and results ----------------------------------------------------------------

    def add_file(self, name: str, data: bytes, content_type: str) -> str:
        """Host ``data`` at ``{base_url}/files/{name}`` (e.g. the source image of an edit); return that URL."""
        self._files[name] = (data, content_type)
        return f"{self.base_url}/files/{name}"

    def hosted_file(self, name: str) -> tuple[bytes, str] | None:
        """The bytes and content type hosted under ``name``, if any."""
        return self._files.get(name)

    def result_image(self, path: str) -> bytes | None:
        """The PNG bytes of a result image by path (``/images/{task}/{n}.png``), if it exists."""
        return self._results.get(path)

    def image_bytes(self, url: str) -> bytes:
        """The bytes the emulator serves at ``url`` (a result image or a hosted file); KeyError if none."""
        path = yarl.URL(url).path
        if (data := self._results.get(path)) is not None:
            return data
        prefix = "/files/"
        if path.startswith(prefix) and (hosted := self._files.get(path.removeprefix(prefix))) is not None:
            return hosted[0]
        raise KeyError(url)

    # ----- callbacks -------------------------------------------------------------------------------

    def send_callback(self, url: str, payload: dict[str, Any]) -> None:
        """POST ``payload`` to ``url`` in the background, once, without retries (the vendor documents none)."""
        self.spawn(self._post_callback(url, payload), name=f"fluxemu-callback-{payload.get('task_id')}")

    async def _post_callback(self, url: str, payload: dict[str, Any]) -> None:
        status: int | None = None
        error: str | None = None
        try:
            async with self.session.post(url, json=payload, timeout=CALLBACK_TIMEOUT) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = repr(exc)
        self.callbacks.append(CallbackDelivery(url=url, json=payload, status=status, error=error, at=self.now()))
        self.notify()


def _seed(task_id: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(f"seed/{task_id}/{n}".encode()).digest()[:4], "big") >> 1
