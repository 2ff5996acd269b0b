"""Small helpers the vendor modules share."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

__all__ = ["InvalidJSON", "is_int", "parse_json", "read_json_object"]


class InvalidJSON(ValueError):
    """The request body is not JSON, or not the JSON object the endpoint expects."""


def parse_json(body: bytes) -> Any | None:
    """``body`` parsed as JSON, or None when it is empty or not JSON."""
    if not body:
        return None
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; InvalidJSON otherwise. (aiohttp caches the body once read.)"""
    try:
        body = json.loads(await request.read())
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidJSON("request body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise InvalidJSON("request body must be a JSON object")
    return body


def is_int(value: object) -> bool:
    """Whether ``value`` is a JSON integer (``True``/``False`` are not)."""
    return isinstance(value, int) and not isinstance(value, bool)
