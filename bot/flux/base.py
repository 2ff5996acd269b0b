"""The one interface the rest of the bot uses to talk to any Flux provider."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

import aiohttp
from pydantic import SecretStr

from bot.settings import Provider

from .catalog import ModelCatalog, ModelSpec, catalog_for
from .errors import CallbackError, FluxAPIError
from .http import MAX_JSON_BYTES, ErrorParser, Timeouts, send_json
from .models import EditRequest, GenerateRequest, Submission, TaskStatus
from .retry import RetryPolicy, Sleep, call_with_retries, retryable_poll, retryable_submit

__all__ = ["FluxClient"]


class FluxClient(ABC):
    """Submit generations and edits, follow their tasks, and read callbacks — for one provider.

    Every request is validated against the provider's model table before any network call. Submits are
    retried only when that cannot start a second paid task (see :mod:`bot.flux.retry`); status polls are
    retried on any transient failure. The :class:`aiohttp.ClientSession` is injected and not closed here.
    """

    provider: ClassVar[Provider]
    #: Whether the provider can POST results to ``callback_url`` (polling stays the fallback regardless).
    supports_callbacks: ClassVar[bool] = False
    #: Whether an edit's source may be sent inline as a ``data:`` URI (else it must be a URL to fetch).
    accepts_inline_images: ClassVar[bool] = True

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        api_key: SecretStr,
        base_url: str,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        callback_url: str | None = None,
    ) -> None:
        self._session = session
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.catalog: ModelCatalog = catalog_for(self.provider)
        self.timeouts = timeouts or self.default_timeouts()
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self.callback_url = callback_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    @classmethod
    def default_timeouts(cls) -> Timeouts:
        return Timeouts()

    # -- the interface -----------------------------------------------------------------------------

    async def generate(self, request: GenerateRequest) -> Submission:
        """Start a generation. Raises :class:`~bot.flux.errors.InvalidParameters` before any network call."""
        spec = self.catalog.check_generate(
            prompt=request.prompt, model=request.model, size=request.size, count=request.count
        )
        return await self._submit(lambda: self._submit_generate(request, spec))

    async def edit(self, request: EditRequest) -> Submission:
        """Start an edit of ``request.image_url``. Validated before any network call."""
        spec = self.catalog.check_edit(prompt=request.prompt, model=request.model, size=request.size)
        return await self._submit(lambda: self._submit_edit(request, spec))

    @abstractmethod
    async def statuses(self, handles: Sequence[str]) -> dict[str, TaskStatus]:
        """Where each task stands, with as few requests as the provider allows.

        A handle missing from the result has no news this time (its poll failed after retries, or the
        provider does not know it yet); the caller asks again on its next tick, up to the job's deadline.
        """

    async def probe_key(self) -> bool:
        """Send the provider a request that needs the API key and bills nothing (a lookup of a made-up task).

        Returns False, sending nothing, when the provider has no such request. The answer's error, if any,
        is raised as for any request: an unknown task (404) means the key was taken; a
        :class:`~bot.flux.errors.CredentialsError` that it was not.
        """
        return False

    def parse_callback(self, body: Any) -> TaskStatus:
        """Read a callback body the provider POSTed. Raises :class:`CallbackError` if it cannot."""
        raise CallbackError(f"{self.provider} does not send callbacks")

    # -- for the implementations -------------------------------------------------------------------

    @abstractmethod
    async def _submit_generate(self, request: GenerateRequest, spec: ModelSpec) -> Submission: ...

    @abstractmethod
    async def _submit_edit(self, request: EditRequest, spec: ModelSpec) -> Submission: ...

    @abstractmethod
    def _headers(self) -> dict[str, str]:
        """The authentication and content headers of every request."""

    @abstractmethod
    def _parse_error(self, status: int, body: Any, headers: Mapping[str, str]) -> FluxAPIError:
        """The provider's error for a non-2xx answer (an :class:`~bot.flux.errors.FluxAPIError`)."""

    async def _submit(self, call: Callable[[], Awaitable[Submission]]) -> Submission:
        return await call_with_retries(call, policy=self.retry, retryable=retryable_submit, sleep=self._sleep)

    async def _post_submit(self, url: str, payload: Mapping[str, Any], *, max_bytes: int = MAX_JSON_BYTES) -> Any:
        """POST a submit once, with the submit timeout (whether to retry is :meth:`_submit`'s decision)."""
        return await self._send("POST", url, payload=payload, submit=True, max_bytes=max_bytes)

    async def _poll(self, method: str, url: str, payload: Mapping[str, Any] | None = None) -> Any:
        """A status request, retried on transient failures."""
        return await call_with_retries(
            lambda: self._send(method, url, payload=payload, submit=False),
            policy=self.retry,
            retryable=retryable_poll,
            sleep=self._sleep,
        )

    async def _send(
        self, method: str, url: str, *, payload: Mapping[str, Any] | None, submit: bool, max_bytes: int = MAX_JSON_BYTES
    ) -> Any:
        parse_error: ErrorParser = self._parse_error
        return await send_json(
            self._session,
            method,
            url,
            headers=self._headers(),
            payload=payload,
            client_timeout=self.timeouts.submit if submit else self.timeouts.poll,
            parse_error=parse_error,
            max_bytes=max_bytes,
        )
