"""What can go wrong when talking to a Flux provider, as a small typed hierarchy.

Every error carries ``user_message``, a short sentence in our own words that is safe to show a Discord
member (a provider's reason about the member's own request appears only as neutralised inline code, see
:func:`shown_reason`), as a :class:`~bot.i18n.Text` shown in the reader's language, and ``trace_id`` when
the provider sent one. ``str(error)`` is the operator's view, with the provider's status, code and message,
for the log. No error ever contains the API key: requests are never embedded in errors.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

from bot.i18n import Text, lazy

__all__ = [
    "AccountError",
    "BadRequestError",
    "BalanceError",
    "CallbackError",
    "CredentialsError",
    "FluxAPIError",
    "FluxConnectionError",
    "FluxError",
    "FluxTimeoutError",
    "InvalidParameters",
    "ModerationError",
    "RateLimitedError",
    "UpstreamError",
    "error_for",
    "shown_reason",
]


class FluxError(Exception):
    """Base class. ``detail`` is for operators; :attr:`user_message` is for members.

    The default messages carry no values, so a job's failure kept in the database (as English) is still
    found in the catalogs when it is shown.
    """

    default_user_message: Text = lazy("The image service failed. Please try again later.")

    def __init__(
        self,
        detail: str,
        *,
        trace_id: str | None = None,
        status: int | None = None,
        code: str | None = None,
        user_message: Text | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.trace_id = trace_id
        self.status = status
        self.code = code
        self.user_message: Text = user_message or self.default_user_message

    def __str__(self) -> str:
        facts = [
            f"{name}={value}"
            for name, value in (("status", self.status), ("code", self.code), ("trace_id", self.trace_id))
            if value is not None
        ]
        return f"{self.detail} ({', '.join(facts)})" if facts else self.detail


class InvalidParameters(FluxError):
    """The request was refused by our own validation, before any network call; names the allowed values.

    The member reads ``text`` in their language; the log (``detail``) has it in English.
    """

    def __init__(self, text: Text) -> None:
        super().__init__(str(text), user_message=text)


class FluxConnectionError(FluxError):
    """No usable answer came back over the connection.

    ``reached_server`` is False only when the request certainly never left this machine (the connection
    was refused or the name did not resolve); a dropped connection mid-request may have been processed.
    """

    default_user_message = lazy("The image service could not be reached. Please try again later.")

    def __init__(self, detail: str, *, reached_server: bool) -> None:
        super().__init__(detail)
        self.reached_server = reached_server


class FluxTimeoutError(FluxError):
    """The provider did not answer in time (or a job passed its deadline). The outcome is unknown."""

    default_user_message = lazy("The image service took too long to answer. Please try again later.")


class CallbackError(FluxError):
    """A callback body that cannot be tied to a task or parsed."""


class FluxAPIError(FluxError):
    """The provider answered with an error."""


class AccountError(FluxAPIError):
    """Something only the bot's operator can fix: the provider account or its configuration."""

    default_user_message = lazy(
        "The bot's image service account needs attention; the bot's operator can see why in the log. "
        "Please try again later."
    )


class CredentialsError(AccountError):
    """The API key is missing, wrong, expired or not allowed to use this API."""


class BalanceError(AccountError):
    """The provider account has no balance or quota left."""


class ModerationError(FluxAPIError):
    """The provider's safety filter refused the prompt, the source image or the result."""

    default_user_message = lazy("The image service's safety filter refused this request. Please rephrase the prompt.")


class BadRequestError(FluxAPIError):
    """The provider refused the request's parameters; ``user_message`` shows the provider's reason as
    neutralised inline code (see :func:`shown_reason`)."""

    default_user_message = lazy("The image service refused the request's parameters.")


class RateLimitedError(FluxAPIError):
    """Too many requests; ``retry_after`` is the provider's hint in seconds, when it gave one."""

    default_user_message = lazy("The image service is busy. Please try again in a minute.")

    def __init__(
        self,
        detail: str,
        *,
        retry_after: float | None = None,
        trace_id: str | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(detail, trace_id=trace_id, status=status, code=code)
        self.retry_after = retry_after


class UpstreamError(FluxAPIError):
    """The provider (or the model behind it) failed; trying again later may work."""

    default_user_message = lazy("The image service is having trouble. Please try again later.")


# Error codes seen across the three API families (FLUX_API.md), mapped to what a member or operator can do.
_CODE_CLASSES: Mapping[str, type[FluxAPIError]] = {
    # AceDataCloud
    "invalid_token": CredentialsError,
    "token_expired": CredentialsError,
    "token_mismatched": CredentialsError,
    "no_token": CredentialsError,
    "disabled": CredentialsError,
    "api_not_implemented": AccountError,
    "no_api": AccountError,
    "used_up": BalanceError,
    "bad_request": BadRequestError,
    "too_many_requests": RateLimitedError,
    "api_error": UpstreamError,
    "service_unavailable": UpstreamError,
    # OpenAI-style relays
    "invalid_api_key": CredentialsError,
    "insufficient_user_quota": BalanceError,
    "insufficient_quota": BalanceError,
    "model_not_found": BadRequestError,
    "invalid_request_error": BadRequestError,
    "prompt_blocked": ModerationError,
    "sensitive_words_detected": ModerationError,
    "content_policy_violation": ModerationError,
    "rate_limit_exceeded": RateLimitedError,
}

_STATUS_CLASSES: Mapping[int, type[FluxAPIError]] = {
    400: BadRequestError,
    401: CredentialsError,
    402: BalanceError,
    # AceData has answered content moderation with a bare 403; Black Forest Labs overrides this (auth).
    403: ModerationError,
    404: BadRequestError,
    413: BadRequestError,
    422: BadRequestError,
    429: RateLimitedError,
}


def error_for(
    *,
    status: int | None,
    code: str | None,
    message: str | None,
    trace_id: str | None = None,
    retry_after: float | None = None,
    status_overrides: Mapping[int, type[FluxAPIError]] | None = None,
) -> FluxAPIError:
    """Build the error for a provider answer: by ``code`` first, by HTTP ``status`` second."""
    cls = _CODE_CLASSES.get(code or "")
    if cls is None and code and "moderat" in code.lower():
        cls = ModerationError
    if cls is None and status is not None:
        cls = {**_STATUS_CLASSES, **(status_overrides or {})}.get(status)
    if cls is None:
        cls = UpstreamError
    code = code[:64] if code else code
    text = " ".join((message or "").split())[:300]  # one line in the log, whatever the provider sent
    detail = f"{cls.__name__}: {text or 'no message'}"
    if cls is RateLimitedError:
        return RateLimitedError(detail, retry_after=retry_after, trace_id=trace_id, status=status, code=code)
    user_message: Text | None = None
    if cls is BadRequestError and (reason := shown_reason(text)):
        # The provider's reason stays as it wrote it (a value): only our sentence around it is translated.
        user_message = lazy("The image service refused the request's parameters. Its reason: `{reason}`", reason=reason)
    return cls(detail, trace_id=trace_id, status=status, code=code, user_message=user_message)


#: The longest provider reason shown to a member.
MAX_SHOWN_REASON = 120
_LINK_SCHEME = re.compile(r"([a-z][a-z0-9+.-]*):/+", re.IGNORECASE)


def shown_reason(text: str) -> str:
    """A provider's reason made safe to show inside inline code in Discord, or "" if nothing is left.

    The provider's text is not ours: backticks (which would end the code span) are removed, and nothing in
    it can become a link, a masked link or a mention (``@`` and ``://`` get a zero-width space). Control
    characters and runs of whitespace become one space; the result is at most :data:`MAX_SHOWN_REASON`
    characters.
    """
    text = "".join(" " if unicodedata.category(char)[0] in "CZ" else char for char in text)
    text = " ".join(text.replace("`", "").split())
    text = _LINK_SCHEME.sub(lambda match: f"{match[1]}:\u200b//", text)
    text = text.replace("@", "@\u200b").replace("](", "] (")
    if len(text) > MAX_SHOWN_REASON:
        text = text[: MAX_SHOWN_REASON - 1].rstrip() + "…"
    return text
