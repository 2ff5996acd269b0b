"""What Discord rejects, with the status, code and error body it answers with."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .constants import MAX_CONTENT, MAX_EMBED_TOTAL, MAX_EMBEDS, MAX_FILES, Code, MessageFlag

__all__ = [
    "ApiError",
    "UploadedFile",
    "check_upload_sizes",
    "validate_command",
    "validate_message",
    "validate_modal",
    "walk_components",
]


class ApiError(Exception):
    """An error answer: HTTP status, JSON code, message and, for 50035, the per-field ``errors``."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = int(code)
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return body


@dataclass(frozen=True)
class UploadedFile:
    """One ``files[n]`` part of a multipart request."""

    index: int
    filename: str
    data: bytes
    content_type: str | None = None


class _Errors:
    """Collects Discord's nested ``{"field": {"_errors": [...]}}`` structure."""

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}

    def add(self, path: Sequence[str | int], code: str, message: str) -> None:
        node = self.tree
        for part in path:
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def max_length(self, path: Sequence[str | int], value: Any, limit: int) -> None:
        if isinstance(value, str) and len(value) > limit:
            self.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")

    def raise_if_any(self) -> None:
        if self.tree:
            raise ApiError(400, Code.INVALID_FORM_BODY, "Invalid Form Body", self.tree)


def check_upload_sizes(files: Sequence[UploadedFile], limit: int) -> None:
    """413 / 40005 when one file is larger than the limit that applies (checked before anything else)."""
    for f in files:
        if len(f.data) > limit:
            raise ApiError(413, Code.REQUEST_TOO_LARGE, "Request entity too large")


def validate_message(
    body: dict[str, Any], files: Sequence[UploadedFile], *, creating: bool, existing_attachments: int = 0
) -> None:
    """Validate a message create/edit body the way Discord does (400 / 50035 or 50006)."""
    errors = _Errors()
    content = body.get("content")
    if content is not None and not isinstance(content, str):
        errors.add(["content"], "BASE_TYPE_STRING", "Must be a string.")
    errors.max_length(["content"], content, MAX_CONTENT)

    embeds = body.get("embeds") or []
    if len(embeds) > MAX_EMBEDS:
        errors.add(["embeds"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBEDS} or fewer in length.")
    total = 0
    for i, embed in enumerate(embeds):
        total += _validate_embed(errors, ["embeds", i], embed)
    if total > MAX_EMBED_TOTAL:
        errors.add(["embeds"], "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")

    flags = int(body.get("flags") or 0)
    components = body.get("components") or []
    _validate_components(errors, components, v2=bool(flags & MessageFlag.IS_COMPONENTS_V2))
    if flags & MessageFlag.IS_COMPONENTS_V2 and (content or embeds):
        errors.add(
            ["content"],
            "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
            "The 'content' and 'embeds' fields cannot be used with components v2",
        )

    if len(files) + existing_attachments > MAX_FILES:
        errors.add(["files"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_FILES} or fewer in length.")
    allowed = body.get("allowed_mentions")
    if allowed:
        parse = allowed.get("parse") or []
        for key in ("users", "roles"):
            if key in parse and allowed.get(key):
                errors.add(
                    ["allowed_mentions", key],
                    "SET_TYPE_ALREADY_CONTAINS_VALUE",
                    f'Mutually exclusive with "{key}" in parse.',
                )
    errors.raise_if_any()

    if creating and not (
        content
        or embeds
        or files
        or components
        or body.get("sticker_ids")
        or body.get("poll")
        or body.get("attachments")
    ):
        raise ApiError(400, Code.EMPTY_MESSAGE, "Cannot send an empty message")


def _validate_embed(errors: _Errors, path: list[str | int], embed: dict[str, Any]) -> int:
    size = 0
    for key, limit in (("title", 256), ("description", 4096)):
        value = embed.get(key)
        errors.max_length([*path, key], value, limit)
        size += len(value or "")
    footer = (embed.get("footer") or {}).get("text")
    errors.max_length([*path, "footer", "text"], footer, 2048)
    author = (embed.get("author") or {}).get("name")
    errors.max_length([*path, "author", "name"], author, 256)
    size += len(footer or "") + len(author or "")
    fields = embed.get("fields") or []
    if len(fields) > 25:
        errors.add([*path, "fields"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    for j, field in enumerate(fields):
        errors.max_length([*path, "fields", j, "name"], field.get("name"), 256)
        errors.max_length([*path, "fields", j, "value"], field.get("value"), 1024)
        size += len(field.get("name") or "") + len(field.get("value") or "")
    return size


_INTERACTIVE = {2, 3, 4, 5, 6, 7, 8, 19, 21, 22, 23}


def walk_components(components: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every component, depth first: action rows, sections, containers, labels and their children."""
    for component in components:
        yield component
        children = list(component.get("components") or [])
        if component.get("component"):
            children.append(component["component"])
        if component.get("accessory"):
            children.append(component["accessory"])
        yield from walk_components(children)


def _validate_components(errors: _Errors, components: Sequence[dict[str, Any]], *, v2: bool) -> None:
    if not v2:
        if len(components) > 5:
            errors.add(["components"], "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
        for i, row in enumerate(components):
            if row.get("type") != 1:
                errors.add(
                    ["components", i, "type"],
                    "UNION_TYPE_CHOICES",
                    "Top-level components must be action rows without the IS_COMPONENTS_V2 flag",
                )
                continue
            children = row.get("components") or []
            buttons = [c for c in children if c.get("type") == 2]
            if not children or len(children) > 5 or (len(buttons) != len(children) and len(children) != 1):
                errors.add(
                    ["components", i, "components"],
                    "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                    "The specified component exceeds the maximum width",
                )
    elif sum(1 for _ in walk_components(components)) > 40:
        errors.add(["components"], "BASE_TYPE_MAX_LENGTH", "Must be 40 or fewer in length.")

    seen: set[str] = set()
    for component in walk_components(components):
        ctype = component.get("type")
        if ctype == 2 and component.get("style") in (5, 6):
            if component.get("custom_id"):
                errors.add(
                    ["components"],
                    "BUTTON_COMPONENT_CUSTOM_ID_NOT_ALLOWED",
                    "A custom id is not allowed for link and premium buttons",
                )
            continue
        if ctype in _INTERACTIVE:
            custom_id = component.get("custom_id")
            if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 100:
                errors.add(["components", "custom_id"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
            elif custom_id in seen:
                errors.add(
                    ["components", "custom_id"],
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    "Component custom id cannot be duplicated",
                )
            else:
                seen.add(custom_id)
        if ctype == 2:
            errors.max_length(["components", "label"], component.get("label"), 80)
        if ctype == 3:
            options = component.get("options") or []
            if not 1 <= len(options) <= 25:
                errors.add(["components", "options"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 25 in length.")


def validate_modal(data: dict[str, Any]) -> None:
    errors = _Errors()
    title = data.get("title")
    if not isinstance(title, str) or not 1 <= len(title) <= 45:
        errors.add(["data", "title"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length.")
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 100:
        errors.add(["data", "custom_id"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
    components = data.get("components") or []
    if not 1 <= len(components) <= 5:
        errors.add(["data", "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
    seen: set[str] = set()
    for component in walk_components(components):
        if component.get("type") in _INTERACTIVE:
            cid = component.get("custom_id")
            if not isinstance(cid, str) or not 1 <= len(cid) <= 100 or cid in seen:
                errors.add(
                    ["data", "components", "custom_id"],
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 100 in length and unique.",
                )
            seen.add(cid or "")
        if component.get("type") == 4:
            errors.max_length(["data", "components", "label"], component.get("label"), 45)
            if int(component.get("max_length") or 0) > 4000:
                errors.add(["data", "components", "max_length"], "NUMBER_TYPE_MAX", "Must be 4000 or less.")
    errors.raise_if_any()


_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


def validate_command(index: int, cmd: dict[str, Any]) -> None:
    """The checks ``PUT /applications/{id}/commands`` applies to one command (400 / 50035)."""
    errors = _Errors()
    ctype = int(cmd.get("type") or 1)
    name = cmd.get("name")
    description = cmd.get("description") or ""
    if not isinstance(name, str) or not 1 <= len(name) <= 32:
        errors.add([index, "name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")
    elif ctype == 1 and not set(name) <= _NAME_CHARS:
        errors.add([index, "name"], "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
    if ctype == 1 and not 1 <= len(description) <= 100:
        errors.add([index, "description"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
    if ctype != 1 and (description or cmd.get("options")):
        errors.add(
            [index, "description"],
            "APPLICATION_COMMAND_CONTEXT_MENU_HAS_OPTIONS",
            "Context menu commands cannot have a description or options",
        )
    _validate_options(errors, [index, "options"], cmd.get("options") or [])
    errors.raise_if_any()


def _validate_options(errors: _Errors, path: list[str | int], options: Sequence[dict[str, Any]]) -> None:
    if len(options) > 25:
        errors.add(path, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    seen_optional = False
    names: set[str] = set()
    for i, option in enumerate(options):
        name = option.get("name") or ""
        if not 1 <= len(name) <= 32 or not set(name) <= _NAME_CHARS:
            errors.add([*path, i, "name"], "APPLICATION_COMMAND_INVALID_NAME", "Option name is invalid")
        if name in names:
            errors.add([*path, i, "name"], "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS", "Duplicate name")
        names.add(name)
        if not 1 <= len(option.get("description") or "") <= 100:
            errors.add([*path, i, "description"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        if len(option.get("choices") or []) > 25:
            errors.add([*path, i, "choices"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        if option.get("type") in (1, 2):
            _validate_options(errors, [*path, i, "options"], option.get("options") or [])
            continue
        if option.get("required"):
            if seen_optional:
                errors.add(
                    [*path, i, "required"],
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            seen_optional = True
