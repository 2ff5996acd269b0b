"""The REST API half of the emulator: routes, auth, rate limits, the REST log and the CDN."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import secrets
from dataclasses import dataclass, field, replace
from fnmatch import fnmatch
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import yarl
from aiohttp import web

from .constants import (
    ACK_DEADLINE_S,
    NONCE_WINDOW_S,
    CallbackType,
    Code,
    CommandType,
    InteractionType,
    MessageFlag,
    MessageType,
    Perm,
)
from .faults import FaultKind
from .model import CdnFetch, Command, Interaction, Message, RestCall, StoredFile
from .validation import (
    ApiError,
    UploadedFile,
    check_upload_sizes,
    validate_command,
    validate_message,
    validate_modal,
)

if TYPE_CHECKING:
    from .model import Channel, Guild

__all__ = ["HeldResponses", "RateLimitRule", "RestMixin"]

log = logging.getLogger(__name__)


@dataclass
class RateLimitRule:
    method: str
    route: str
    limit: int
    per_seconds: float
    initial_remaining: int | None = None
    bucket: str = field(default_factory=lambda: secrets.token_hex(16))
    windows: dict[str, list[float]] = field(default_factory=dict)  # major key -> [reset_at, used]
    hits: int = 0  # how many 429s it answered

    def matches(self, method: str, route: str, path: str) -> bool:
        return self.method in ("*", method) and (self.route == route or fnmatch(path, self.route))

    def take(self, key: str, now: float) -> tuple[bool, int, float]:
        """(allowed, remaining, reset_at) for one request in the window of ``key``."""
        window = self.windows.get(key)
        if window is None or now >= window[0]:
            used = 0
            if window is None and self.initial_remaining is not None:
                used = self.limit - self.initial_remaining
            window = self.windows[key] = [now + self.per_seconds, used]
        if window[1] >= self.limit:
            self.hits += 1
            return False, 0, window[0]
        window[1] += 1
        return True, int(self.limit - window[1]), window[0]


@dataclass
class HeldResponses:
    """Requests matching ``method`` and ``route`` take effect, but their answers wait for :meth:`release`.

    Models a bot that dies after Discord acted on a request (stored the message) and before the answer
    reached it. ``calls`` lists the held requests, already in ``rest_log`` with the status they will get.
    """

    method: str
    route: str
    calls: list[RestCall] = field(default_factory=list)
    _released: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def matches(self, method: str, route: str, path: str) -> bool:
        return self.method in ("*", method) and (self.route == route or fnmatch(path, self.route))

    def release(self) -> None:
        """Send the held answers (to whoever is still connected) and stop holding new ones."""
        self._released.set()

    @property
    def released(self) -> bool:
        return self._released.is_set()

    async def hold(self, call: RestCall) -> None:
        self.calls.append(call)
        await self._released.wait()


@dataclass
class Request:
    params: dict[str, str]
    query: dict[str, str]
    json: Any
    files: list[UploadedFile]
    call: RestCall
    interaction: Interaction | None = None

    @property
    def body(self) -> dict[str, Any]:
        return self.json if isinstance(self.json, dict) else {}


Answer = tuple[int, Any]

ROUTES: list[tuple[str, str, str, bool]] = [
    # method, route template, handler, needs "Authorization: Bot <token>"
    ("GET", "/gateway", "get_gateway", False),
    ("GET", "/gateway/bot", "get_gateway_bot", True),
    ("GET", "/users/@me", "get_me", True),
    ("POST", "/users/@me/channels", "create_dm", True),
    ("GET", "/users/@me/guilds", "list_my_guilds", True),
    ("GET", "/users/{user_id}", "get_user", True),
    ("POST", "/attachments/refresh-urls", "refresh_urls", True),
    ("GET", "/oauth2/applications/@me", "get_application", True),
    ("GET", "/applications/@me", "get_application", True),
    ("GET", "/applications/{application_id}/commands", "list_commands", True),
    ("PUT", "/applications/{application_id}/commands", "put_commands", True),
    ("POST", "/applications/{application_id}/commands", "upsert_command", True),
    ("DELETE", "/applications/{application_id}/commands/{command_id}", "delete_command", True),
    ("GET", "/applications/{application_id}/guilds/{guild_id}/commands", "list_commands", True),
    ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", "put_commands", True),
    ("POST", "/applications/{application_id}/guilds/{guild_id}/commands", "upsert_command", True),
    ("DELETE", "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}", "delete_command", True),
    ("POST", "/interactions/{interaction_id}/{token}/callback", "callback", False),
    ("POST", "/webhooks/{webhook_id}/{token}", "execute_webhook", False),
    ("GET", "/webhooks/{webhook_id}/{token}/messages/{message_id}", "get_webhook_message", False),
    ("PATCH", "/webhooks/{webhook_id}/{token}/messages/{message_id}", "edit_webhook_message", False),
    ("DELETE", "/webhooks/{webhook_id}/{token}/messages/{message_id}", "delete_webhook_message", False),
    ("GET", "/channels/{channel_id}", "get_channel", True),
    ("GET", "/channels/{channel_id}/messages", "list_messages", True),
    ("POST", "/channels/{channel_id}/messages", "create_channel_message", True),
    ("GET", "/channels/{channel_id}/messages/{message_id}", "get_channel_message", True),
    ("PATCH", "/channels/{channel_id}/messages/{message_id}", "edit_channel_message", True),
    ("DELETE", "/channels/{channel_id}/messages/{message_id}", "delete_channel_message", True),
    ("POST", "/channels/{channel_id}/typing", "typing", True),
    ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", "add_reaction", True),
    ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", "remove_own_reaction", True),
    ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/{user_id}", "remove_reaction_of", True),
    ("GET", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}", "list_reactions", True),
    ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions", "clear_reactions", True),
    ("GET", "/guilds/{guild_id}", "get_guild", True),
    ("GET", "/guilds/{guild_id}/channels", "get_guild_channels", True),
    ("GET", "/guilds/{guild_id}/roles", "get_guild_roles", True),
    ("GET", "/guilds/{guild_id}/members/{user_id}", "get_member", True),
]


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return re.compile(f"^{pattern}$")


_COMPILED = [(m, t, _compile(t), h, auth) for m, t, h, auth in ROUTES]
_TRUE = ("1", "true", "True")


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    headers = {"Via": "1.1 google", **(headers or {})}
    if status == 204 or body is None:
        return web.Response(status=status, headers=headers)
    # exactly "application/json": discord.py parses nothing else (aiohttp's json_response adds a charset)
    return web.Response(
        status=status, body=json.dumps(body).encode(), headers={**headers, "Content-Type": "application/json"}
    )


def _snowflake(value: str, error: ApiError) -> int:
    if not value.isdigit():
        raise error
    return int(value)


class RestMixin:
    """REST handlers of :class:`~tests.fakediscord.emulator.DiscordEmulator` (methods named ``h_*``)."""

    # -- plumbing ---------------------------------------------------------------------------------
    async def _handle_api(self, request: web.Request) -> web.Response:
        raw = request.rel_url.raw_path
        path = "/" + raw.split("/", 3)[3] if raw.count("/") >= 3 else "/"
        method = request.method
        call = RestCall(method=method, path=unquote(path), route="", at=self.clock.time(), query=dict(request.query))
        for m, template, regex, handler_name, needs_auth in _COMPILED:
            if m != method or (match := regex.match(path)) is None:
                continue
            call.route = template
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            headers: dict[str, str] = {}
            req = Request(params, call.query, None, [], call)
            fault = None
            try:
                if needs_auth and request.headers.get("Authorization") != f"Bot {self.token}":
                    raise ApiError(401, 0, "401: Unauthorized")
                rule_headers, limited = self._rate_limit(method, template, call.path, params)
                headers.update(rule_headers)
                if limited is not None:
                    status, body = 429, limited
                else:
                    req.json, req.files = await self._read_body(request)
                    call.json = req.json
                    call.files = [(f.filename, len(f.data)) for f in req.files]
                    fault = self.rest_faults.take(method, template, call)
                    if fault is None or fault.handled:
                        status, body = await getattr(self, f"h_{handler_name}")(req)
                    else:
                        status, body = fault.answer(headers, self.clock.time(), self.rest_faults.bucket)
            except ApiError as exc:
                status, body = exc.status, exc.body()
            except Exception:
                log.exception("fake Discord failed on %s %s", method, path)
                status, body = 500, {"message": "500: Internal Server Error", "code": 0}
            call.status = status
            if status >= 400 and isinstance(body, dict):
                call.code = body.get("code")
            if req.interaction is not None:
                call.interaction_id = req.interaction.id
                req.interaction.calls.append(call)
            self.rest_log.append(call)
            log.debug("%s %s -> %s", method, call.path, status)
            self._bump()
            for held in self.held_responses:
                if not held.released and held.matches(method, template, call.path):
                    await held.hold(call)
                    self._bump()
            if fault is not None and fault.kind is FaultKind.DROPPED:
                self.rest_faults.drop(request)
                return web.Response()  # never sent: the connection is gone
            return _json(status, body, headers)
        call.route, call.status, call.code = "?", 404, 0
        self.rest_log.append(call)
        self.unimplemented.append(f"{method} {call.path}")
        self._bump()
        return _json(404, {"message": "404: Not Found", "code": 0})

    async def _read_body(self, request: web.Request) -> tuple[Any, list[UploadedFile]]:
        ctype = request.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            body: dict[str, Any] = {}
            files: list[UploadedFile] = []
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                name = part.name or ""
                if name == "payload_json":
                    body.update(json.loads(await part.text()))  # type: ignore[union-attr]
                elif part.filename is not None:
                    match = re.fullmatch(r"files\[(\d+)\]", name)
                    index = int(match.group(1)) if match else len(files)
                    data = await part.read(decode=False)  # type: ignore[union-attr]
                    files.append(UploadedFile(index, part.filename, bytes(data), part.headers.get("Content-Type")))
                else:
                    body[name] = await part.text()  # type: ignore[union-attr]
            return body, files
        raw = await request.read()
        if not raw:
            return None, []
        try:
            return json.loads(raw), []
        except ValueError:
            raise ApiError(400, 50109, "The request body contains invalid JSON.") from None

    def _rate_limit(
        self, method: str, route: str, path: str, params: dict[str, str]
    ) -> tuple[dict[str, str], dict[str, Any] | None]:
        for rule in self.rate_limits:
            if not rule.matches(method, route, path):
                continue
            key = params.get("channel_id") or params.get("guild_id") or params.get("webhook_id") or ""
            if "token" in params:
                key += ":" + params["token"]
            now = self.clock.time()
            allowed, remaining, reset_at = rule.take(key, now)
            reset_after = max(0.0, reset_at - now)
            headers = {
                "X-RateLimit-Limit": str(rule.limit),
                "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": f"{reset_at:.3f}",
                "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                "X-RateLimit-Bucket": rule.bucket,
            }
            if allowed:
                return headers, None
            headers["Retry-After"] = str(math.ceil(reset_after))
            headers["X-RateLimit-Scope"] = "user"
            body = {"message": "You are being rate limited.", "retry_after": round(reset_after, 3), "global": False}
            return headers, body
        return {}, None

    async def _handle_cdn(self, request: web.Request) -> web.Response:
        """GET of an attachment URL: the bytes, if the URL is signed and not expired."""
        file_id = request.match_info["file_id"]
        stored = self.files.get(int(file_id)) if file_id.isdigit() else None
        fetch = CdnFetch(unquote(request.rel_url.raw_path), stored.id if stored else None, 404, at=self.clock.time())
        not_found = web.Response(status=404, text="This content is no longer available.")
        if stored is None or not self._cdn_url_valid(request, stored):
            self.cdn_log.append(fetch)
            self._bump()
            return not_found
        self.cdn_log.append(replace(fetch, status=200))
        self._bump()
        content_type = stored.content_type or "application/octet-stream"
        return web.Response(body=stored.data, headers={"Content-Type": content_type})

    def _cdn_url_valid(self, request: web.Request, stored: StoredFile) -> bool:
        try:
            expires = int(request.query.get("ex", ""), 16)
        except ValueError:
            return False
        return (
            request.query.get("hm") == self.sign_cdn(stored.path, expires)
            and unquote(request.rel_url.raw_path) == unquote(stored.path)
            and self.clock.time() <= expires
        )

    # -- shared lookups ---------------------------------------------------------------------------
    def _channel(self, req: Request) -> Channel:
        unknown = ApiError(404, Code.UNKNOWN_CHANNEL, "Unknown Channel")
        channel = self.channels.get(_snowflake(req.params["channel_id"], unknown))
        if channel is None:
            raise unknown
        if channel.guild is not None and channel.guild.id not in self.guilds:
            raise ApiError(403, Code.MISSING_ACCESS, "Missing Access")
        return channel

    def _require(self, channel: Channel, perms: int) -> None:
        guild = channel.guild
        if guild is None:
            return
        have = guild.permissions_in(guild.bot_member, channel)
        if not have & Perm.VIEW_CHANNEL:
            raise ApiError(403, Code.MISSING_ACCESS, "Missing Access")
        if have & perms != perms:
            raise ApiError(403, Code.MISSING_PERMISSIONS, "Missing Permissions")

    def _channel_message(self, req: Request, channel: Channel) -> Message:
        unknown = ApiError(404, Code.UNKNOWN_MESSAGE, "Unknown Message")
        msg = channel.messages.get(_snowflake(req.params["message_id"], unknown))
        if msg is None or msg.deleted or msg.ephemeral:
            raise unknown
        return msg

    def _guild(self, req: Request) -> Guild:
        unknown = ApiError(404, Code.UNKNOWN_GUILD, "Unknown Guild")
        guild = self.guilds.get(_snowflake(req.params["guild_id"], unknown))
        if guild is None:
            raise unknown
        return guild

    def _store_uploads(self, channel: Channel, body: dict[str, Any], files: list[UploadedFile]) -> list[StoredFile]:
        meta = {str(a.get("id")): a for a in body.get("attachments") or [] if isinstance(a, dict)}
        stored = []
        for f in files:
            info = meta.get(str(f.index), {})
            stored.append(
                self.store_file(
                    channel.id, info.get("filename") or f.filename, f.data, description=info.get("description")
                )
            )
        return stored

    def _check_message(
        self,
        body: dict[str, Any],
        files: list[UploadedFile],
        limit: int,
        *,
        creating: bool,
        existing: int = 0,
    ) -> None:
        check_upload_sizes(files, limit)
        validate_message(body, files, creating=creating, existing_attachments=existing)

    # -- users, application, gateway --------------------------------------------------------------
    async def h_get_gateway(self, req: Request) -> Answer:
        return 200, {"url": self.gateway_url}

    async def h_get_gateway_bot(self, req: Request) -> Answer:
        return 200, {
            "url": self.gateway_url,
            "shards": self.shard_count,
            "session_start_limit": {
                "total": 1000,
                "remaining": 999,
                "reset_after": 0,
                "max_concurrency": self.max_concurrency,
            },
        }

    async def h_get_me(self, req: Request) -> Answer:
        return 200, {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0, "email": None}

    async def h_list_my_guilds(self, req: Request) -> Answer:
        """The bot's servers as partial guilds, by id, paged with ``before``/``after``/``limit`` (1-200)."""
        invalid = ApiError(400, Code.INVALID_FORM_BODY, "Invalid Form Body")
        limit = req.query.get("limit", "200")
        if not limit.isdigit() or not 1 <= int(limit) <= 200:
            raise invalid
        before = _snowflake(req.query["before"], invalid) if "before" in req.query else None
        after = _snowflake(req.query["after"], invalid) if "after" in req.query else 0
        with_counts = req.query.get("with_counts") in _TRUE
        chosen = [
            g
            for g in sorted(self.guilds.values(), key=lambda g: g.id)
            if self.bot_user.id in g.members and g.id > after and (before is None or g.id < before)
        ]
        chosen = chosen[-int(limit) :] if before is not None and "after" not in req.query else chosen[: int(limit)]
        partials = []
        for guild in chosen:
            partial: dict[str, Any] = {
                "id": str(guild.id),
                "name": guild.name,
                "icon": None,
                "banner": None,
                "owner": guild.owner.id == self.bot_user.id,
                "permissions": str(guild.base_permissions(guild.bot_member)),
                "features": [],
            }
            if with_counts:
                partial["approximate_member_count"] = len(guild.members)
                partial["approximate_presence_count"] = 0
            partials.append(partial)
        return 200, partials

    async def h_refresh_urls(self, req: Request) -> Answer:
        """Fresh signed URLs for attachment URLs, expired or not (the file must still exist)."""
        urls = req.body.get("attachment_urls")
        if not isinstance(urls, list) or not urls or len(urls) > 50:
            raise ApiError(400, Code.INVALID_FORM_BODY, "attachment_urls must list 1 to 50 URLs")
        refreshed = []
        for url in urls:
            stored = self._stored_file_at(str(url))
            refreshed.append({"original": url, "refreshed": stored.url() if stored else url})
        return 200, {"refreshed_urls": refreshed}

    def _stored_file_at(self, url: str) -> StoredFile | None:
        path = unquote(yarl.URL(url).path)
        return next((f for f in self.files.values() if unquote(f.path) == path), None)

    async def h_get_user(self, req: Request) -> Answer:
        unknown = ApiError(404, Code.UNKNOWN_USER, "Unknown User")
        user = self.users.get(_snowflake(req.params["user_id"], unknown))
        if user is None:
            raise unknown
        return 200, user.payload()

    async def h_create_dm(self, req: Request) -> Answer:
        unknown = ApiError(400, Code.INVALID_FORM_BODY, "Invalid Recipient(s)")
        user = self.users.get(_snowflake(str(req.body.get("recipient_id", "")), unknown))
        if user is None or user.bot:
            raise unknown
        return 200, self.dm_channel(user).payload()

    async def h_get_application(self, req: Request) -> Answer:
        return 200, {
            "id": str(self.application_id),
            "name": self.bot_user.name,
            "icon": None,
            "description": "",
            "summary": "",
            "rpc_origins": [],
            "bot_public": True,
            "bot_require_code_grant": False,
            "bot": self.bot_user.payload(),
            "owner": self.owner.payload(),
            "team": None,
            "verify_key": "0" * 64,
            "flags": 0,
            "tags": [],
            "interactions_endpoint_url": None,
            "approximate_guild_count": len(self.guilds),
            "redirect_uris": [],
        }

    # -- application commands ---------------------------------------------------------------------
    def _command_scope(self, req: Request) -> tuple[int | None, dict[tuple[str, int], Command]]:
        if req.params["application_id"] != str(self.application_id):
            raise ApiError(403, Code.MISSING_ACCESS, "Missing Access")
        if "guild_id" not in req.params:
            return None, self.global_commands
        guild = self._guild(req)
        return guild.id, self.guild_commands.setdefault(guild.id, {})

    def _make_command(self, raw: dict[str, Any], guild_id: int | None) -> Command:
        key = (guild_id, raw["name"], int(raw.get("type") or 1))
        cmd_id = self._command_ids.setdefault(key, self.snowflakes.next())
        return Command.from_payload(
            raw, id=cmd_id, application_id=self.application_id, guild_id=guild_id, version=self.snowflakes.next()
        )

    async def h_list_commands(self, req: Request) -> Answer:
        _, scope = self._command_scope(req)
        return 200, [c.payload() for c in scope.values()]

    async def h_put_commands(self, req: Request) -> Answer:
        guild_id, scope = self._command_scope(req)
        raw_list = req.json if isinstance(req.json, list) else []
        if len(raw_list) > 100:
            raise ApiError(400, Code.INVALID_FORM_BODY, "Invalid Form Body")
        seen: set[tuple[str, int]] = set()
        for i, raw in enumerate(raw_list):
            validate_command(i, raw)
            key = (raw["name"], int(raw.get("type") or 1))
            if key in seen:
                error = {
                    "code": "APPLICATION_COMMANDS_DUPLICATE_NAME",
                    "message": "Application command names must be unique",
                }
                errors = {str(i): {"name": {"_errors": [error]}}}
                raise ApiError(400, Code.INVALID_FORM_BODY, "Invalid Form Body", errors)
            seen.add(key)
        scope.clear()
        for raw in raw_list:
            cmd = self._make_command(raw, guild_id)
            scope[(cmd.name, cmd.type)] = cmd
        self.command_syncs.append((guild_id, req.call.at))
        return 200, [c.payload() for c in scope.values()]

    async def h_upsert_command(self, req: Request) -> Answer:
        guild_id, scope = self._command_scope(req)
        validate_command(0, req.body)
        cmd = self._make_command(req.body, guild_id)
        created = (cmd.name, cmd.type) not in scope
        scope[(cmd.name, cmd.type)] = cmd
        return (201 if created else 200), cmd.payload()

    async def h_delete_command(self, req: Request) -> Answer:
        _, scope = self._command_scope(req)
        for key, cmd in list(scope.items()):
            if str(cmd.id) == req.params["command_id"]:
                del scope[key]
                return 204, None
        raise ApiError(404, Code.UNKNOWN_APPLICATION_COMMAND, "Unknown application command")

    # -- interaction callback ---------------------------------------------------------------------
    async def h_callback(self, req: Request) -> Answer:
        unknown = ApiError(404, Code.UNKNOWN_INTERACTION, "Unknown interaction")
        inter = self.interactions.get(_snowflake(req.params["interaction_id"], unknown))
        if inter is None or inter.token != req.params["token"]:
            raise unknown
        req.interaction = inter
        if inter.acknowledged:
            raise ApiError(400, Code.ALREADY_ACKNOWLEDGED, "Interaction has already been acknowledged.")
        if req.call.at - inter.created_at > ACK_DEADLINE_S:
            raise unknown
        ctype = req.body.get("type")
        data = req.body.get("data") or {}
        allowed = {
            InteractionType.APPLICATION_COMMAND: {4, 5, 9},
            InteractionType.MESSAGE_COMPONENT: {4, 5, 6, 7, 9},
            InteractionType.AUTOCOMPLETE: {8},
            InteractionType.MODAL_SUBMIT: {4, 5, 6, 7} if inter.message is not None else {4, 5},
        }[InteractionType(inter.type)]
        if ctype not in allowed:
            raise ApiError(
                400,
                Code.INVALID_FORM_BODY,
                "Invalid Form Body",
                {
                    "type": {
                        "_errors": [
                            {
                                "code": "INTERACTION_RESPONSE_TYPE_INVALID",
                                "message": f"Response type {ctype} is invalid here",
                            }
                        ]
                    }
                },
            )
        limit = self.upload_limit_for(inter.channel)
        if ctype == CallbackType.CHANNEL_MESSAGE:
            self._check_message(data, req.files, limit, creating=True)
        elif ctype == CallbackType.UPDATE_MESSAGE:
            assert inter.message is not None
            self._check_message(data, req.files, limit, creating=False, existing=len(inter.message.attachments))
        elif ctype == CallbackType.MODAL:
            validate_modal(data)
        elif ctype == CallbackType.AUTOCOMPLETE_RESULT and len(data.get("choices") or []) > 25:
            raise ApiError(400, Code.INVALID_FORM_BODY, "Invalid Form Body")

        now = req.call.at
        inter.acked_at = now
        inter.response_type = ctype
        ephemeral_flag = int(data.get("flags") or 0) & MessageFlag.EPHEMERAL
        if ctype == CallbackType.CHANNEL_MESSAGE:
            inter.original = self._interaction_message(inter, data, self._store_uploads(inter.channel, data, req.files))
            inter.responded_at = now
        elif ctype == CallbackType.DEFERRED_CHANNEL_MESSAGE:
            inter.original = self._interaction_message(inter, {}, (), flags=MessageFlag.LOADING | ephemeral_flag)
        elif ctype == CallbackType.DEFERRED_UPDATE_MESSAGE:
            inter.original = inter.message
        elif ctype == CallbackType.UPDATE_MESSAGE:
            assert inter.message is not None
            inter.original = self.edit_message(inter.message, data, self._store_uploads(inter.channel, data, req.files))
            inter.responded_at = now
        elif ctype == CallbackType.AUTOCOMPLETE_RESULT:
            inter.choices = list(data.get("choices") or [])
            inter.responded_at = now
        elif ctype == CallbackType.MODAL:
            inter.modal = data
            inter.responded_at = now

        if req.query.get("with_response") not in _TRUE:
            return 204, None
        info: dict[str, Any] = {"id": str(inter.id), "type": inter.type}
        resource: dict[str, Any] = {"type": ctype}
        msg = inter.original
        if msg is not None and ctype in (4, 5, 7):
            info.update(
                response_message_id=str(msg.id),
                response_message_loading=msg.loading,
                response_message_ephemeral=msg.ephemeral,
            )
            resource["message"] = msg.payload()
        return 200, {"interaction": info, "resource": resource}

    def _interaction_message(
        self,
        inter: Interaction,
        data: dict[str, Any],
        files: list[StoredFile] | tuple[()],
        *,
        flags: int | None = None,
        followup: bool = False,
    ) -> Message:
        if flags is None:
            keep = (
                MessageFlag.EPHEMERAL
                | MessageFlag.SUPPRESS_EMBEDS
                | MessageFlag.SUPPRESS_NOTIFICATIONS
                | MessageFlag.IS_COMPONENTS_V2
            )
            flags = int(data.get("flags") or 0) & keep
        mtype = MessageType.DEFAULT
        if inter.command is not None and not followup:
            mtype = (
                MessageType.CHAT_INPUT_COMMAND
                if inter.command.type == CommandType.CHAT_INPUT
                else MessageType.CONTEXT_MENU_COMMAND
            )
        return self.create_message(
            inter.channel,
            self.bot_user,
            data,
            list(files),
            flags=flags,
            type=mtype,
            interaction=inter,
            is_followup=followup,
            reply_ping_default=False,
        )

    # -- interaction webhooks ---------------------------------------------------------------------
    def _webhook_interaction(self, req: Request) -> Interaction:
        if req.params["webhook_id"] != str(self.application_id):
            raise ApiError(404, Code.UNKNOWN_WEBHOOK, "Unknown Webhook")
        inter = self._tokens.get(req.params["token"])
        if inter is not None:
            req.interaction = inter
        if inter is None or inter.token_expired:
            raise ApiError(401, Code.INVALID_WEBHOOK_TOKEN, "Invalid Webhook Token")
        if not inter.acknowledged:
            raise ApiError(404, Code.UNKNOWN_WEBHOOK, "Unknown Webhook")
        return inter

    def _webhook_message(self, req: Request, inter: Interaction) -> Message:
        unknown = ApiError(404, Code.UNKNOWN_MESSAGE, "Unknown Message")
        mid = req.params["message_id"]
        if mid == "@original":
            msg = inter.original
        else:
            wanted = _snowflake(mid, unknown)
            candidates = ([inter.original] if inter.original is not None else []) + inter.followups
            msg = next((m for m in candidates if m.id == wanted), None)
        if msg is None or msg.deleted:
            raise unknown
        return msg

    async def h_execute_webhook(self, req: Request) -> Answer:
        inter = self._webhook_interaction(req)
        data = req.body
        self._check_message(data, req.files, self.upload_limit_for(inter.channel), creating=True)
        files = self._store_uploads(inter.channel, data, req.files)
        original = inter.original
        if inter.response_type == CallbackType.DEFERRED_CHANNEL_MESSAGE and original is not None and original.loading:
            # the first followup after a deferral replaces the "thinking" message (keeping its ephemerality)
            msg = self.edit_message(original, data, files, replaces_loading=True)
        else:
            msg = self._interaction_message(inter, data, files, followup=True)
        inter.followups.append(msg)
        inter.responded_at = inter.responded_at or req.call.at
        self._bump()
        if req.query.get("wait") not in _TRUE:
            return 204, None
        return 200, msg.payload()

    async def h_get_webhook_message(self, req: Request) -> Answer:
        inter = self._webhook_interaction(req)
        return 200, self._webhook_message(req, inter).payload()

    async def h_edit_webhook_message(self, req: Request) -> Answer:
        inter = self._webhook_interaction(req)
        msg = self._webhook_message(req, inter)
        data = req.body
        self._check_message(
            data, req.files, self.upload_limit_for(inter.channel), creating=False, existing=len(msg.attachments)
        )
        files = self._store_uploads(inter.channel, data, req.files)
        self.edit_message(msg, data, files, replaces_loading=msg.loading)
        inter.responded_at = inter.responded_at or req.call.at
        self._bump()
        return 200, msg.payload()

    async def h_delete_webhook_message(self, req: Request) -> Answer:
        inter = self._webhook_interaction(req)
        self.delete_message(self._webhook_message(req, inter))
        return 204, None

    # -- channels and messages --------------------------------------------------------------------
    async def h_get_channel(self, req: Request) -> Answer:
        channel = self._channel(req)
        self._require(channel, Perm.VIEW_CHANNEL)
        return 200, channel.payload()

    async def h_typing(self, req: Request) -> Answer:
        channel = self._channel(req)
        self._require(channel, Perm.SEND_MESSAGES)
        return 204, None

    async def h_create_channel_message(self, req: Request) -> Answer:
        channel = self._channel(req)
        body = req.body
        self._require(channel, Perm.SEND_MESSAGES | (Perm.ATTACH_FILES if req.files else 0))
        if channel.recipient is not None and channel.recipient.dms_closed:
            raise ApiError(403, Code.CANNOT_DM_USER, "Cannot send messages to this user")
        self._check_message(body, req.files, self.upload_limit_for(channel), creating=True)

        nonce = body.get("nonce")
        key = (channel.id, self.bot_user.id, str(nonce))
        if nonce is not None and body.get("enforce_nonce"):
            seen = self._nonces.get(key)
            if seen is not None and req.call.at - seen[1] <= NONCE_WINDOW_S and not seen[0].deleted:
                return 200, seen[0].payload(redact=self.rest_redact)

        reference = None
        if (ref := body.get("message_reference")) is not None:
            ref_id = str(ref.get("message_id", ""))
            reference = self.messages.get(int(ref_id)) if ref_id.isdigit() else None
            if reference is None or reference.deleted or reference.ephemeral or reference.channel is not channel:
                reference = None
                if ref.get("fail_if_not_exists", True):
                    raise ApiError(
                        400,
                        Code.INVALID_FORM_BODY,
                        "Invalid Form Body",
                        {
                            "message_reference": {
                                "_errors": [{"code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "message": "Unknown message"}]
                            }
                        },
                    )

        flags = int(body.get("flags") or 0) & (
            MessageFlag.SUPPRESS_EMBEDS | MessageFlag.SUPPRESS_NOTIFICATIONS | MessageFlag.IS_COMPONENTS_V2
        )
        msg = self.create_message(
            channel,
            self.bot_user,
            body,
            self._store_uploads(channel, body, req.files),
            reference=reference,
            flags=flags,
        )
        if nonce is not None and body.get("enforce_nonce"):
            self._nonces[key] = (msg, req.call.at)
        return 200, msg.payload(redact=self.rest_redact)

    async def h_get_channel_message(self, req: Request) -> Answer:
        channel = self._channel(req)
        self._require(channel, Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY)
        return 200, self._channel_message(req, channel).payload(redact=self.rest_redact)

    async def h_list_messages(self, req: Request) -> Answer:
        channel = self._channel(req)
        self._require(channel, Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY)
        limit = max(1, min(100, int(req.query.get("limit", "50"))))
        msgs = [m for m in channel.messages.values() if not m.deleted and not m.ephemeral]
        if "before" in req.query:
            msgs = [m for m in msgs if m.id < int(req.query["before"])][-limit:]
        elif "after" in req.query:
            msgs = [m for m in msgs if m.id > int(req.query["after"])][:limit]
        elif "around" in req.query:
            around = int(req.query["around"])
            older = [m for m in msgs if m.id <= around][-(limit // 2 + limit % 2) :]
            newer = [m for m in msgs if m.id > around][: limit // 2]
            msgs = older + newer
        else:
            msgs = msgs[-limit:]
        return 200, [m.payload(redact=self.rest_redact) for m in reversed(msgs)]

    async def h_edit_channel_message(self, req: Request) -> Answer:
        channel = self._channel(req)
        msg = self._channel_message(req, channel)
        if msg.author.id != self.bot_user.id:
            if set(req.body) - {"flags"}:
                raise ApiError(403, Code.CANNOT_EDIT_OTHERS_MESSAGE, "Cannot edit a message authored by another user")
            self._require(channel, Perm.MANAGE_MESSAGES)
        self._check_message(
            req.body, req.files, self.upload_limit_for(channel), creating=False, existing=len(msg.attachments)
        )
        self.edit_message(msg, req.body, self._store_uploads(channel, req.body, req.files))
        return 200, msg.payload(redact=self.rest_redact)

    async def h_delete_channel_message(self, req: Request) -> Answer:
        channel = self._channel(req)
        msg = self._channel_message(req, channel)
        if msg.author.id != self.bot_user.id:
            self._require(channel, Perm.MANAGE_MESSAGES)
        self.delete_message(msg)
        return 204, None

    # -- reactions --------------------------------------------------------------------------------
    async def h_add_reaction(self, req: Request) -> Answer:
        channel = self._channel(req)
        msg = self._channel_message(req, channel)
        if not msg.reactions.get(req.params["emoji"]):
            self._require(channel, Perm.ADD_REACTIONS | Perm.READ_MESSAGE_HISTORY)
        self.add_reaction(msg, self.bot_user, req.params["emoji"])
        return 204, None

    async def h_remove_own_reaction(self, req: Request) -> Answer:
        channel = self._channel(req)
        self.remove_reaction(self._channel_message(req, channel), self.bot_user, req.params["emoji"])
        return 204, None

    async def h_remove_reaction_of(self, req: Request) -> Answer:
        channel = self._channel(req)
        msg = self._channel_message(req, channel)
        self._require(channel, Perm.MANAGE_MESSAGES)
        user = self.users.get(int(req.params["user_id"])) if req.params["user_id"].isdigit() else None
        if user is None:
            raise ApiError(404, Code.UNKNOWN_USER, "Unknown User")
        self.remove_reaction(msg, user, req.params["emoji"])
        return 204, None

    async def h_list_reactions(self, req: Request) -> Answer:
        channel = self._channel(req)
        msg = self._channel_message(req, channel)
        return 200, [self.users[u].payload() for u in msg.reactions.get(req.params["emoji"], [])]

    async def h_clear_reactions(self, req: Request) -> Answer:
        channel = self._channel(req)
        msg = self._channel_message(req, channel)
        self._require(channel, Perm.MANAGE_MESSAGES)
        msg.reactions.clear()
        return 204, None

    # -- guilds -----------------------------------------------------------------------------------
    async def h_get_guild(self, req: Request) -> Answer:
        data = self._guild(req).payload(members=())
        for key in (
            "members",
            "channels",
            "threads",
            "presences",
            "voice_states",
            "joined_at",
            "large",
            "member_count",
            "unavailable",
        ):
            data.pop(key, None)
        return 200, data

    async def h_get_guild_channels(self, req: Request) -> Answer:
        return 200, [c.payload() for c in self._guild(req).channels.values()]

    async def h_get_guild_roles(self, req: Request) -> Answer:
        return 200, [r.payload() for r in self._guild(req).roles.values()]

    async def h_get_member(self, req: Request) -> Answer:
        guild = self._guild(req)
        unknown = ApiError(404, Code.UNKNOWN_MEMBER, "Unknown Member")
        member = guild.members.get(_snowflake(req.params["user_id"], unknown))
        if member is None:
            raise unknown
        return 200, member.payload()
