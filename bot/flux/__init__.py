"""The async Flux client: one interface, one implementation per provider."""

from __future__ import annotations

import aiohttp

from bot.settings import Provider, Settings

from .acedata import AceDataClient
from .base import FluxClient
from .bfl import BflClient
from .catalog import MAX_COUNT, MAX_PROMPT_LENGTH, ModelCatalog, ModelSpec, catalog_for
from .errors import (
    AccountError,
    BadRequestError,
    BalanceError,
    CallbackError,
    CredentialsError,
    FluxAPIError,
    FluxConnectionError,
    FluxError,
    FluxTimeoutError,
    InvalidParameters,
    ModerationError,
    RateLimitedError,
    UpstreamError,
)
from .http import Timeouts
from .models import EditRequest, GenerateRequest, ResultImage, Submission, TaskState, TaskStatus
from .openai_relay import OpenAIRelayClient
from .retry import RetryPolicy

__all__ = [
    "MAX_COUNT",
    "MAX_PROMPT_LENGTH",
    "AccountError",
    "AceDataClient",
    "BadRequestError",
    "BalanceError",
    "BflClient",
    "CallbackError",
    "CredentialsError",
    "EditRequest",
    "FluxAPIError",
    "FluxClient",
    "FluxConnectionError",
    "FluxError",
    "FluxTimeoutError",
    "GenerateRequest",
    "InvalidParameters",
    "ModelCatalog",
    "ModelSpec",
    "ModerationError",
    "OpenAIRelayClient",
    "RateLimitedError",
    "ResultImage",
    "RetryPolicy",
    "Submission",
    "TaskState",
    "TaskStatus",
    "Timeouts",
    "UpstreamError",
    "catalog_for",
    "create_flux_client",
]

_CLIENTS: dict[Provider, type[FluxClient]] = {
    Provider.ACEDATA: AceDataClient,
    Provider.OPENAI: OpenAIRelayClient,
    Provider.BFL: BflClient,
}


def create_flux_client(settings: Settings, session: aiohttp.ClientSession) -> FluxClient:
    """The client of the configured provider, sharing the bot's HTTP session."""
    cls = _CLIENTS[settings.flux_provider]
    callback_url = settings.callback_public_url if cls.supports_callbacks else None
    return cls(session=session, api_key=settings.flux_api_key, base_url=settings.api_base, callback_url=callback_url)
