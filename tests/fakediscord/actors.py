"""What a member does in the Discord client: commands, context menus, buttons, modals, messages.

Each action builds exactly the payload Discord would deliver and raises, like the client would refuse,
when the action is impossible (a command that was never synced, a hidden admin command, a missing
required option, a button that is not on the message, a modal the bot never opened).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .constants import ALL_PERMISSIONS, CommandType, InteractionType, OptionType, Perm

if TYPE_CHECKING:
    from .emulator import DiscordEmulator
    from .model import Attachment, Channel, Command, Guild, Interaction, Message, User

__all__ = ["MemberActions"]


class MemberActions:
    """Mixed into :class:`~tests.fakediscord.model.Member`."""

    if TYPE_CHECKING:
        guild: Guild
        user: User
        locale: str

        @property
        def emu(self) -> DiscordEmulator: ...

        @property
        def id(self) -> int: ...

        def permissions_in(self, channel: Channel | None = None) -> int: ...

    # -- application commands ---------------------------------------------------------------------
    async def slash(
        self,
        channel: Channel,
        command: str,
        /,
        *,
        force: bool = False,
        options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Interaction:
        """Invoke ``/command`` (``"group sub"`` for subcommands) with options by name.

        Values: str/int/float/bool, a Member/User, a Channel, a Role, or an
        :class:`~tests.fakediscord.model.Attachment` for attachment options. Option names with dashes
        go in ``options={...}``. ``force=True`` invokes a command Discord would hide from this member.
        """
        names = command.split()
        cmd = self._command(channel, names[0], CommandType.CHAT_INPUT, force=force)
        values = {**(options or {}), **kwargs}
        resolved: dict[str, dict[str, Any]] = {}
        data: dict[str, Any] = {"id": str(cmd.id), "name": cmd.name, "type": 1}
        data["options"] = self._command_options(cmd, names, values, resolved, channel)
        return self._deliver_command(cmd, channel, data, resolved)

    async def autocomplete(
        self,
        channel: Channel,
        command: str,
        /,
        focused: str,
        *,
        options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Interaction:
        """Type into option ``focused`` of ``/command``; the bot answers with choices (type 8)."""
        names = command.split()
        cmd = self._command(channel, names[0], CommandType.CHAT_INPUT, force=False)
        values = {**(options or {}), **kwargs}
        data: dict[str, Any] = {"id": str(cmd.id), "name": cmd.name, "type": 1}
        data["options"] = self._command_options(cmd, names, values, {}, channel, focused=focused)
        return self._deliver_command(cmd, channel, data, {}, kind=InteractionType.AUTOCOMPLETE)

    async def context_menu(self, message: Message, command: str, /, *, force: bool = False) -> Interaction:
        """Right-click ``message`` > Apps > ``command`` (a message context-menu command)."""
        self._must_see(message)
        channel = message.channel
        cmd = self._command(channel, command, CommandType.MESSAGE, force=force)
        data = {
            "id": str(cmd.id),
            "name": cmd.name,
            "type": CommandType.MESSAGE,
            "target_id": str(message.id),
            # the target is always delivered with its content, whatever the bot's intents
            "resolved": {"messages": {str(message.id): message.payload()}},
        }
        return self._deliver_command(cmd, channel, data, {})

    async def user_context_menu(
        self, target: Any, command: str, /, *, channel: Channel, force: bool = False
    ) -> Interaction:
        """Right-click a member > Apps > ``command`` (a user context-menu command)."""
        cmd = self._command(channel, command, CommandType.USER, force=force)
        resolved: dict[str, dict[str, Any]] = {}
        self._resolve_user(target, resolved, channel)
        data = {
            "id": str(cmd.id),
            "name": cmd.name,
            "type": CommandType.USER,
            "target_id": str(target.id),
            "resolved": resolved,
        }
        return self._deliver_command(cmd, channel, data, {})

    # -- components and modals --------------------------------------------------------------------
    async def click(self, message: Message, custom_id: str) -> Interaction:
        """Click the button ``custom_id`` on ``message``."""
        component = self._component(message, custom_id)
        if component.get("type") != 2:
            raise ValueError(f"{custom_id!r} is a component of type {component.get('type')}, use select()")
        if component.get("style") in (5, 6):
            raise ValueError(f"{custom_id!r} is a link/premium button: clicking it sends no interaction")
        return self._deliver_component(message, {"custom_id": custom_id, "component_type": 2})

    async def select(self, message: Message, custom_id: str, values: Sequence[Any]) -> Interaction:
        """Pick ``values`` in the select menu ``custom_id`` (option values, or members/channels/roles)."""
        component = self._component(message, custom_id)
        ctype = component.get("type")
        if ctype not in (3, 5, 6, 7, 8):
            raise ValueError(f"{custom_id!r} is not a select menu")
        lo, hi = component.get("min_values", 1), component.get("max_values", 1)
        if not lo <= len(values) <= hi:
            raise ValueError(f"{custom_id!r} takes {lo} to {hi} values, got {len(values)}")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": ctype}
        if ctype == 3:
            offered = {o["value"] for o in component.get("options") or []}
            if not set(values) <= offered:
                raise ValueError(f"{sorted(set(values) - offered)} are not options of {custom_id!r}: {sorted(offered)}")
            data["values"] = list(values)
        else:
            resolved: dict[str, dict[str, Any]] = {}
            for value in values:
                self._resolve_entity(value, resolved, message.channel)
            data["values"] = [str(v.id) for v in values]
            data["resolved"] = resolved
        return self._deliver_component(message, data)

    async def submit_modal(self, source: Interaction, values: dict[str, Any]) -> Interaction:
        """Fill in and submit the modal the bot opened in answer to ``source`` (values by custom_id)."""
        modal = source.modal
        if modal is None:
            raise ValueError(f"the bot did not answer {source!r} with a modal (response type {source.response_type})")
        if source.user.id != self.id:
            raise ValueError("only the member who opened a modal can submit it")
        if source.modal_submitted:
            raise ValueError("this modal was already submitted")
        used: set[str] = set()
        resolved: dict[str, dict[str, Any]] = {}
        components: list[dict[str, Any]] = []
        for comp in modal.get("components") or []:
            if comp.get("type") == 1:
                components.append(
                    {
                        "type": 1,
                        "components": [
                            self._modal_value(child, values, used, resolved, source.channel)
                            for child in comp["components"]
                        ],
                    }
                )
            elif comp.get("type") == 18:
                entry = {
                    "type": 18,
                    "component": self._modal_value(comp["component"], values, used, resolved, source.channel),
                }
                if "id" in comp:
                    entry["id"] = comp["id"]
                components.append(entry)
            elif comp.get("type") == 10:
                components.append({"type": 10, "id": comp.get("id", 0), "content": comp.get("content", "")})
        unknown = set(values) - used
        if unknown:
            raise ValueError(f"the modal has no inputs {sorted(unknown)}")
        data: dict[str, Any] = {"custom_id": modal["custom_id"], "components": components}
        if resolved:
            data["resolved"] = resolved
        source.modal_submitted = True
        from_component = source.message if source.type == InteractionType.MESSAGE_COMPONENT else None
        inter = self.emu.new_interaction(
            type=InteractionType.MODAL_SUBMIT,
            user=self.user,
            member=self._member(source.channel),
            channel=source.channel,
            data=data,
            message=from_component,
            source=source,
            locale=self.locale,
        )
        return self.emu.deliver(inter)

    # -- messages ---------------------------------------------------------------------------------
    async def send(
        self,
        channel: Channel,
        content: str = "",
        *,
        attachments: Iterable[Attachment] = (),
        reply_to: Message | None = None,
        mention_bot: bool = False,
        mention_author: bool = True,
        embeds: list[dict[str, Any]] | None = None,
    ) -> Message:
        """Post a message: text, files, a reply (pinging its author unless ``mention_author=False``),
        and/or an @mention of the bot in front of the text."""
        if mention_bot:
            content = f"{self.emu.bot_user.mention} {content}".strip()
        if len(content) > 2000:
            raise ValueError("the client refuses messages over 2000 characters")
        files = list(attachments)
        if channel.guild is not None:
            member = self._member(channel)
            need = Perm.VIEW_CHANNEL | Perm.SEND_MESSAGES | (Perm.ATTACH_FILES if files else 0)
            if member is None or member.permissions_in(channel) & need != need:
                raise PermissionError(f"{self.user.name} may not post in {channel!r}")
        if reply_to is not None:
            self._must_see(reply_to)
            if reply_to.channel is not channel:
                raise ValueError("a reply must be in the channel of the message it answers")
        stored = [self.emu.store_attachment(channel, a) for a in files]
        body = {
            "content": content,
            "embeds": embeds or [],
            "allowed_mentions": {"parse": ["users", "roles", "everyone"], "replied_user": mention_author},
        }
        return self.emu.create_message(channel, self.user, body, stored, reference=reply_to)

    async def send_dm(
        self, content: str = "", *, attachments: Iterable[Attachment] = (), reply_to: Message | None = None
    ) -> Message:
        """Post a message in the member's DM channel with the bot."""
        channel = self.emu.dm_channel(self.user)
        stored = [self.emu.store_attachment(channel, a) for a in attachments]
        return self.emu.create_message(channel, self.user, {"content": content}, stored, reference=reply_to)

    async def edit(self, message: Message, content: str) -> Message:
        if message.author.id != self.id:
            raise PermissionError("members can only edit their own messages")
        return self.emu.edit_message(message, {"content": content})

    async def delete(self, message: Message) -> None:
        if message.author.id != self.id and not self.permissions_in(message.channel) & Perm.MANAGE_MESSAGES:
            raise PermissionError("members can only delete their own messages without Manage Messages")
        self.emu.delete_message(message)

    async def react(self, message: Message, emoji: str) -> None:
        self._must_see(message)
        self.emu.add_reaction(message, self.user, emoji)

    def sees(self, channel: Channel) -> list[Message]:
        """The messages this member sees in ``channel`` (their own ephemeral ones included)."""
        return channel.visible_messages(self.user)

    # -- helpers ----------------------------------------------------------------------------------
    def _member(self, channel: Channel) -> Any:
        if channel.guild is None:
            return None
        if channel.guild is not self.guild:
            raise ValueError(f"{self.user.name} is a member of {self.guild!r}, not of {channel.guild!r}")
        return self

    def _must_see(self, message: Message) -> None:
        if message.deleted or message.visible_to not in (None, self.id):
            raise ValueError(f"{self.user.name} cannot see {message!r}")

    def _command(self, channel: Channel, name: str, ctype: int, *, force: bool) -> Command:
        from .emulator import CommandNotAvailable, CommandNotSynced

        guild = channel.guild
        cmd = self.emu.find_command(name, ctype, guild)
        if cmd is None:
            synced = sorted(f"{c.name} (type {c.type})" for c in self.emu.commands(guild)) if guild else []
            global_ = sorted(f"{c.name} (type {c.type})" for c in self.emu.commands())
            raise CommandNotSynced(
                f"command {name!r} (type {ctype}) was never synced, so Discord would not deliver it; "
                f"global: {global_}, this guild: {synced}"
            )
        if force:
            return cmd
        if guild is None:
            if cmd.contexts is not None and 1 not in cmd.contexts:
                raise CommandNotAvailable(f"{name!r} is not available in DMs (contexts={cmd.contexts})")
            return cmd
        if cmd.contexts is not None and 0 not in cmd.contexts:
            raise CommandNotAvailable(f"{name!r} is not available in servers (contexts={cmd.contexts})")
        perms = self.permissions_in(channel)
        required = cmd.default_member_permissions
        if not perms & Perm.USE_APPLICATION_COMMANDS:
            raise CommandNotAvailable(f"{self.user.name} may not use application commands in {channel!r}")
        is_admin = perms == ALL_PERMISSIONS or perms & Perm.ADMINISTRATOR
        if required is not None and not is_admin and (required == 0 or perms & required != required):
            raise CommandNotAvailable(
                f"Discord hides {name!r} from {self.user.name}: default_member_permissions={required}, "
                f"member has {perms}"
            )
        return cmd

    def _deliver_command(
        self,
        cmd: Command,
        channel: Channel,
        data: dict[str, Any],
        resolved: dict[str, dict[str, Any]],
        *,
        kind: InteractionType = InteractionType.APPLICATION_COMMAND,
    ) -> Interaction:
        if resolved:
            data["resolved"] = resolved
        if cmd.guild_id is not None:
            data["guild_id"] = str(cmd.guild_id)
        inter = self.emu.new_interaction(
            type=kind,
            user=self.user,
            member=self._member(channel),
            channel=channel,
            data=data,
            command=cmd,
            locale=self.locale,
        )
        return self.emu.deliver(inter)

    def _component(self, message: Message, custom_id: str) -> dict[str, Any]:
        self._must_see(message)
        component = message.find_component(custom_id)
        if component is None:
            raise ValueError(f"{message!r} has no component {custom_id!r}; it has {message.custom_ids}")
        if component.get("disabled"):
            raise ValueError(f"{custom_id!r} is disabled")
        return component

    def _deliver_component(self, message: Message, data: dict[str, Any]) -> Interaction:
        inter = self.emu.new_interaction(
            type=InteractionType.MESSAGE_COMPONENT,
            user=self.user,
            member=self._member(message.channel),
            channel=message.channel,
            data=data,
            message=message,
            locale=self.locale,
        )
        return self.emu.deliver(inter)

    def _command_options(
        self,
        cmd: Command,
        names: list[str],
        values: dict[str, Any],
        resolved: dict[str, dict[str, Any]],
        channel: Channel,
        *,
        focused: str | None = None,
    ) -> list[dict[str, Any]]:
        defs = cmd.options
        wrappers: list[dict[str, Any]] = []
        for sub in names[1:]:
            found = next((o for o in defs if o["name"] == sub and o.get("type") in (1, 2)), None)
            if found is None:
                raise ValueError(f"/{cmd.name} has no subcommand {sub!r}")
            wrappers.append({"name": sub, "type": found["type"], "options": []})
            defs = found.get("options") or []
        if any(o.get("type") in (1, 2) for o in defs):
            raise ValueError(f"/{' '.join(names)} is a group: name one of its subcommands")
        by_name = {o["name"]: o for o in defs}
        out: list[dict[str, Any]] = []
        for key, value in values.items():
            name = key if key in by_name else key.replace("_", "-")
            spec = by_name.get(name)
            if spec is None:
                raise ValueError(f"/{' '.join(names)} has no option {key!r}; options: {sorted(by_name)}")
            if focused is not None:
                entry = {"name": name, "type": spec["type"], "value": value if isinstance(value, str) else str(value)}
                if name == focused:
                    entry["focused"] = True
            else:
                entry = {
                    "name": name,
                    "type": spec["type"],
                    "value": self._option_value(spec, value, resolved, channel),
                }
            out.append(entry)
        if focused is not None:
            if focused not in by_name or not by_name[focused].get("autocomplete"):
                raise ValueError(f"option {focused!r} of /{' '.join(names)} has no autocomplete")
            if not any(o.get("focused") for o in out):
                out.append({"name": focused, "type": by_name[focused]["type"], "value": "", "focused": True})
        else:
            missing = [o["name"] for o in defs if o.get("required") and o["name"] not in {e["name"] for e in out}]
            if missing:
                raise ValueError(f"/{' '.join(names)} requires {missing}")
        for wrapper in reversed(wrappers):
            wrapper["options"] = out
            out = [wrapper]
        return out

    def _option_value(
        self, spec: dict[str, Any], value: Any, resolved: dict[str, dict[str, Any]], channel: Channel
    ) -> Any:
        from .model import Attachment, Channel, Role

        otype = spec["type"]
        name = spec["name"]
        if otype == OptionType.STRING:
            if not isinstance(value, str):
                raise TypeError(f"option {name!r} takes a string")
            if not spec.get("min_length", 0) <= len(value) <= spec.get("max_length", 6000):
                raise ValueError(f"option {name!r}: length out of range")
        elif otype in (OptionType.INTEGER, OptionType.NUMBER):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"option {name!r} takes a number")
            if otype == OptionType.INTEGER and not isinstance(value, int):
                raise TypeError(f"option {name!r} takes an integer")
            if not spec.get("min_value", -(2**53)) <= value <= spec.get("max_value", 2**53):
                raise ValueError(f"option {name!r}: {value} out of range")
        elif otype == OptionType.BOOLEAN:
            if not isinstance(value, bool):
                raise TypeError(f"option {name!r} takes a bool")
        elif otype == OptionType.ATTACHMENT:
            if not isinstance(value, Attachment):
                raise TypeError(f"option {name!r} takes an Attachment(filename, data)")
            stored = self.emu.store_attachment(channel, value, ephemeral=True)
            resolved.setdefault("attachments", {})[str(stored.id)] = stored.payload()
            return str(stored.id)
        elif otype == OptionType.CHANNEL:
            if not isinstance(value, Channel):
                raise TypeError(f"option {name!r} takes a Channel")
            if spec.get("channel_types") and value.type not in spec["channel_types"]:
                raise ValueError(f"option {name!r} takes channels of types {spec['channel_types']}")
            self._resolve_entity(value, resolved, channel)
            return str(value.id)
        elif otype in (OptionType.USER, OptionType.ROLE, OptionType.MENTIONABLE):
            if otype == OptionType.ROLE and not isinstance(value, Role):
                raise TypeError(f"option {name!r} takes a Role")
            if otype == OptionType.USER and isinstance(value, Role | Channel):
                raise TypeError(f"option {name!r} takes a member or user")
            self._resolve_entity(value, resolved, channel)
            return str(value.id)
        choices = spec.get("choices")
        if choices and value not in [c["value"] for c in choices]:
            raise ValueError(f"option {name!r} must be one of {[c['value'] for c in choices]}")
        return value

    def _resolve_entity(self, value: Any, resolved: dict[str, dict[str, Any]], channel: Channel) -> None:
        from .model import Channel, Role

        if isinstance(value, Role):
            if value.guild is not self.guild or value.guild.roles.get(value.id) is not value:
                raise ValueError(f"the client offers only roles of {self.guild!r} that exist, not {value!r}")
            resolved.setdefault("roles", {})[str(value.id)] = value.payload()
        elif isinstance(value, Channel):
            perms = self.permissions_in(value) if value.guild is self.guild else 0
            resolved.setdefault("channels", {})[str(value.id)] = value.payload(permissions=perms)
        else:
            self._resolve_user(value, resolved, channel)

    def _resolve_user(self, value: Any, resolved: dict[str, dict[str, Any]], channel: Channel) -> None:
        from .model import Member

        user = value.user if isinstance(value, Member) else value
        resolved.setdefault("users", {})[str(user.id)] = user.payload()
        member = value if isinstance(value, Member) else (self.guild.members.get(user.id) if channel.guild else None)
        if member is not None:
            resolved.setdefault("members", {})[str(user.id)] = member.payload(with_user=False, channel=channel)

    def _modal_value(
        self,
        child: dict[str, Any],
        values: dict[str, Any],
        used: set[str],
        resolved: dict[str, dict[str, Any]],
        channel: Channel,
    ) -> dict[str, Any]:
        from .model import Attachment

        ctype = child.get("type")
        cid = child.get("custom_id", "")
        out: dict[str, Any] = {"type": ctype, "custom_id": cid}
        if "id" in child:
            out["id"] = child["id"]
        if cid in values:
            used.add(cid)
        if ctype == 4:
            value = values.get(cid, child.get("value") or "")
            if not isinstance(value, str):
                raise TypeError(f"text input {cid!r} takes a string")
            if child.get("required", True) and not value:
                raise ValueError(f"text input {cid!r} is required")
            if value and not child.get("min_length", 0) <= len(value) <= child.get("max_length", 4000):
                raise ValueError(f"text input {cid!r}: length {len(value)} out of range")
            out["value"] = value
        elif ctype == 19:
            files = values.get(cid, [])
            ids = []
            for f in files if isinstance(files, list | tuple) else [files]:
                if not isinstance(f, Attachment):
                    raise TypeError(f"file upload {cid!r} takes Attachment(s)")
                stored = self.emu.store_attachment(channel, f, ephemeral=True)
                resolved.setdefault("attachments", {})[str(stored.id)] = stored.payload()
                ids.append(str(stored.id))
            out["values"] = ids
        elif ctype == 23:
            out["value"] = bool(values.get(cid, False))
        elif ctype == 21:
            out["value"] = values.get(cid)
        else:  # selects and checkbox groups
            picked = values.get(cid, [])
            out["values"] = [str(getattr(v, "id", v)) for v in picked]
            if ctype in (5, 6, 7, 8):
                for v in picked:
                    self._resolve_entity(v, resolved, channel)
        return out
