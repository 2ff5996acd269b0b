"""The emulator's shards: ``GET /gateway/bot`` recommends a count, IDENTIFY carries ``shard: [i, n]`` and is
checked as Discord checks it, and each session gets only the guilds and events of its shard
(``(guild_id >> 22) % n``; direct messages go to shard 0).

Real discord.py ``AutoShardedBot`` probes connect; the close codes are provoked with a bare websocket.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import discord
import pytest

from tests.fakediscord import DiscordEmulator, Intent, run_bot
from tests.fakediscord.fixtures import add_world
from tests.fakediscord.probe import ShardedProbeBot, sharded_probe


async def identify(emu: DiscordEmulator, shard: list[Any] | None) -> tuple[str, Any]:
    """A bare IDENTIFY: ``("READY", its data)`` or ``("closed", the close code)``; the socket stays open
    (until the test ends) when READY came, so the shard counts as connected."""
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(emu.gateway_url)
    hello = await ws.receive_json()
    assert hello["op"] == 10
    data: dict[str, Any] = {"token": emu.token, "intents": Intent.GUILDS | Intent.GUILD_MESSAGES, "properties": {}}
    if shard is not None:
        data["shard"] = shard
    await ws.send_str(json.dumps({"op": 2, "d": data}))
    message = await ws.receive()
    if message.type is aiohttp.WSMsgType.TEXT:
        frame = json.loads(message.data)
        assert frame["t"] == "READY"
        _open_sockets.append((session, ws))
        return "READY", frame["d"]
    await session.close()
    return "closed", ws.close_code


_open_sockets: list[tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]] = []


@pytest.fixture(autouse=True)
async def _close_bare_sockets() -> Any:
    yield
    while _open_sockets:
        session, ws = _open_sockets.pop()
        await ws.close()
        await session.close()


def test_a_guild_can_be_placed_on_any_shard_and_the_ids_keep_increasing(discord_emulator: DiscordEmulator) -> None:
    emu = discord_emulator
    emu.shard_count = 3
    guilds = [emu.add_guild(f"server {n}", shard=n % 3) for n in (2, 0, 1, 1, 2, 0)]
    assert [(g.id >> 22) % 3 for g in guilds] == [2, 0, 1, 1, 2, 0]
    assert [emu.shard_of(g) for g in guilds] == [2, 0, 1, 1, 2, 0]
    ids = [g.id for g in guilds]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    with pytest.raises(ValueError, match="shard 3"):
        emu.add_guild("nowhere", shard=3)


async def test_gateway_bot_recommends_the_shard_count_and_an_unset_count_runs_every_shard(
    discord_emulator: DiscordEmulator,
) -> None:
    emu = discord_emulator
    emu.shard_count, emu.max_concurrency = 2, 16
    worlds = [add_world(emu, f"server {shard}", shard=shard) for shard in (0, 1)]
    async with run_bot(emu, sharded_probe()) as bot:
        assert isinstance(bot, ShardedProbeBot)
        assert bot.shard_count == 2 and set(bot.shards) == {0, 1}
        assert {g.id for g in bot.guilds} == {w.guild.id for w in worlds}
        assert sorted(i["shard"] for i in emu.identifies) == [[0, 2], [1, 2]]
        readies = {tuple(d.data["shard"]): d.data for d in emu.gateway_log if d.event == "READY"}
        for world in worlds:
            shard = (emu.shard_of(world.guild), 2)
            assert [g["id"] for g in readies[shard]["guilds"]] == [str(world.guild.id)]
            creates = [d.shard for d in emu.gateway_log if d.event == "GUILD_CREATE"]
            assert creates.count(shard) == 1
    gateway_bot = next(c for c in emu.rest_log if c.route == "/gateway/bot")
    assert gateway_bot.ok


async def test_each_process_gets_only_the_events_of_its_shards_and_direct_messages_go_to_shard_0(
    discord_emulator: DiscordEmulator,
) -> None:
    emu = discord_emulator
    emu.shard_count = 3
    worlds = {shard: add_world(emu, f"server {shard}", shard=shard) for shard in (0, 1, 2)}
    low = sharded_probe(shard_count=3, shard_ids=[0, 1])
    high = sharded_probe(shard_count=3, shard_ids=[2])
    async with run_bot(emu, low) as first, run_bot(emu, high) as second:
        assert {g.id for g in first.guilds} == {worlds[0].guild.id, worlds[1].guild.id}
        assert {g.id for g in second.guilds} == {worlds[2].guild.id}
        assert set(emu.live_shards()) == {0, 1, 2}

        for shard, world in worlds.items():
            sent = await world.member.send(world.channel, f"hello shard {shard}")
            receiver, other = (second, first) if shard == 2 else (first, second)
            got: discord.Message = await receiver.take("message")
            assert got.id == sent.id and got.guild is not None and got.guild.shard_id == shard
            assert other.inbox.empty()
            delivered = [
                d.shard for d in emu.gateway_log if d.event == "MESSAGE_CREATE" and d.data["id"] == str(sent.id)
            ]
            assert delivered == [(shard, 3)]

        dm = await worlds[2].member.send_dm("psst")
        assert (await first.take("message")).id == dm.id
        assert second.inbox.empty()

        later = emu.add_guild("joined later", shard=2)
        assert (await second.take("guild_join")).id == later.id
        assert [d.shard for d in emu.gateway_log if d.event == "GUILD_CREATE" and d.data["id"] == str(later.id)] == [
            (2, 3)
        ]


async def test_an_interaction_goes_only_to_the_session_of_its_guilds_shard(discord_emulator: DiscordEmulator) -> None:
    emu = discord_emulator
    emu.shard_count = 2
    worlds = [add_world(emu, f"server {shard}", shard=shard) for shard in (0, 1)]
    _, ready = await identify(emu, [1, 2])
    assert ready["shard"] == [1, 2] and [g["id"] for g in ready["guilds"]] == [str(worlds[1].guild.id)]
    emu.global_commands.clear()

    def ping(world_index: int) -> Any:
        world = worlds[world_index]
        return emu.deliver(
            emu.new_interaction(type=2, user=world.member.user, member=world.member, channel=world.channel, data={})
        )

    on_connected = ping(1)
    on_missing = ping(0)  # shard 0 is not connected: Discord would let this interaction fail
    sent = [(d.shard, d.data["id"]) for d in emu.gateway_log if d.event == "INTERACTION_CREATE"]
    assert sent == [((1, 2), str(on_connected.id))]
    assert not on_missing.acknowledged


@pytest.mark.parametrize(
    ("shard", "code"),
    [
        ([2, 2], 4010),  # shard id beyond the count
        ([-1, 2], 4010),
        ([0, 0], 4010),
        (["0", 2], 4010),
        ([0], 4010),
        ([0, 1], 4011),  # fewer shards than the emulator requires
        (None, 4011),
        ([0, 3], 4010),  # more shards than it requires
    ],
)
async def test_an_identify_with_an_invalid_shard_is_closed_as_discord_closes_it(
    discord_emulator: DiscordEmulator, shard: list[Any] | None, code: int
) -> None:
    emu = discord_emulator
    emu.shard_count, emu.require_shard_count = 2, True
    assert await identify(emu, shard) == ("closed", code)
    assert emu.sessions == {}


async def test_a_shard_connected_already_cannot_be_identified_again_but_one_that_left_can(
    discord_emulator: DiscordEmulator,
) -> None:
    emu = discord_emulator
    emu.shard_count = 2
    world = add_world(emu, shard=0)
    kind, first = await identify(emu, [0, 2])
    assert kind == "READY"
    assert await identify(emu, [0, 2]) == ("closed", 4010)
    assert (await identify(emu, [1, 2]))[0] == "READY"  # another shard is fine

    session, ws = _open_sockets.pop(0)  # shard 0 goes away...
    await ws.close()
    await session.close()
    await emu.wait_until(lambda: 0 not in emu.live_shards(), 5, "shard 0 to be gone")
    kind, again = await identify(emu, [0, 2])  # ...and may identify anew
    assert kind == "READY" and again["session_id"] != first["session_id"]
    assert emu.sessions[first["session_id"]].superseded  # the old session gets nothing more
    await world.member.send(world.channel, "after the new identify")
    assert [d.session_id for d in emu.gateway_log if d.event == "MESSAGE_CREATE"] == [again["session_id"]]


async def test_role_events_go_to_the_shard_of_their_guild_and_every_shard_can_be_waited_for(
    discord_emulator: DiscordEmulator,
) -> None:
    emu = discord_emulator
    emu.shard_count = 2
    worlds = {shard: add_world(emu, f"server {shard}", shard=shard) for shard in (0, 1)}
    async with (
        run_bot(emu, sharded_probe(shard_count=2, shard_ids=[0])) as low,
        run_bot(emu, sharded_probe(shard_count=2, shard_ids=[1])) as high,
    ):
        roles = {shard: world.guild.add_role(f"Patrons {shard}") for shard, world in worlds.items()}
        await emu.wait_caught_up()  # both processes have read their shard's GUILD_ROLE_CREATE
        for shard, bot in ((0, low), (1, high)):
            guild = bot.get_guild(worlds[shard].guild.id)
            assert guild is not None and guild.get_role(roles[shard].id) is not None
        created = {d.data["role"]["id"]: d.shard for d in emu.gateway_log if d.event == "GUILD_ROLE_CREATE"}
        assert created == {str(roles[0].id): (0, 2), str(roles[1].id): (1, 2)}
