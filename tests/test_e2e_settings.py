"""A member's own defaults end to end: /settings set, show and reset, and what /imagine and /edit send the
provider when the member leaves an option out, in servers that allow the default and in servers that do not.

The real bot runs against the loopback Discord and the Flux emulator (AceData's catalog) with a real SQLite file;
what reaches the provider is read from the emulator's record of the request bodies.
"""

from __future__ import annotations

from typing import Any

from bot import db
from tests.conftest import png_bytes
from tests.fakediscord import Attachment, Channel, Interaction, Member, Message
from tests.fakediscord.fixtures import World, add_world
from tests.fluxbot_harness import FluxbotHarness, status_line


def provider_bodies(harness: FluxbotHarness) -> list[dict[str, Any]]:
    bodies = [request.json for request in harness.flux.requests_to("POST", "/flux/images")]
    assert all(isinstance(body, dict) for body in bodies)
    return bodies


def sent(body: dict[str, Any]) -> tuple[str, str, int]:
    return body["model"], body["size"], body["count"]


async def answer(who: Member, channel: Channel, command: str, **options: Any) -> str:
    """Run a command that answers at once; return the answer the member sees."""
    inter = await who.slash(channel, command, **options)
    message = await inter.wait_response()
    assert isinstance(message, Message) and message.ephemeral
    return message.content


async def imagine(world: World, who: Member, channel: Channel, **options: Any) -> Interaction:
    """Run /imagine and wait until its status line says the job is done (or refused, or failed)."""
    inter = await who.slash(channel, "imagine", **options)
    await world.emu.wait_until(lambda: status_line(inter).startswith(("✅", "❌")) or refused(inter), 10, "a verdict")
    return inter


def refused(inter: Interaction) -> bool:
    """Refused before any job: the answer is the refusal alone (a followup that replaced "thinking…")."""
    return bool(status_line(inter)) and not status_line(inter).startswith(("⏳", "🎨", "📝"))


async def test_defaults_reach_the_provider_and_options_given_beat_them(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running() as bot:
        saved = await answer(world.member, world.channel, "settings set", model="flux-pro", size="16:9", count=2)
        with_defaults = await imagine(world, world.member, world.channel, prompt="a lighthouse")
        given = await imagine(
            world, world.member, world.channel, prompt="a boat", model="flux-dev", size="1:1", count=1
        )
        stored = await db.get_member_settings(bot.store, world.member.id)

    assert "saved" in saved
    assert "**Model:** flux-pro (yours, used here)" in saved
    assert "**Size:** 16:9 (yours, used here)" in saved
    assert "**Images per request:** 2 (yours, used here)" in saved
    assert [sent(body) for body in provider_bodies(fluxbot)] == [("flux-pro", "16:9", 2), ("flux-dev", "1:1", 1)]
    assert status_line(with_defaults).startswith("✅") and status_line(given).startswith("✅")
    assert with_defaults.followups == [] and given.followups == []  # nothing to note: every default was used
    assert (stored.model, stored.size, stored.count) == ("flux-pro", "16:9", 2)


async def test_set_changes_only_the_options_given(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        await answer(world.member, world.channel, "settings set", model="flux-pro", count=3)
        shown = await answer(world.member, world.channel, "settings set", size="4:3")
        await imagine(world, world.member, world.channel, prompt="a lighthouse")

    assert "**Model:** flux-pro (yours" in shown and "**Images per request:** 3 (yours" in shown
    assert [sent(body) for body in provider_bodies(fluxbot)] == [("flux-pro", "4:3", 3)]


async def test_a_default_model_the_server_no_longer_allows_is_left_out_with_a_note(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        await answer(world.member, world.channel, "settings set", model="flux-pro", size="16:9")
        await answer(world.admin, world.channel, "limits models", allowed="flux-dev flux-kontext-pro")
        inter = await imagine(world, world.member, world.channel, prompt="a lighthouse")
        note = await inter.wait_followup()
        shown = await answer(world.member, world.channel, "settings show")

    assert [sent(body) for body in provider_bodies(fluxbot)] == [("flux-dev", "16:9", 1)]
    assert status_line(inter).startswith("✅ Done")  # the note did not hide the job's status
    assert note.ephemeral
    assert note.content == "📝 Your default model flux-pro is not allowed here; flux-dev is used instead."
    assert "**Model:** flux-pro (yours, not used here)" in shown
    assert "**Size:** 16:9 (yours, used here)" in shown
    assert "⚠️ Your default model flux-pro is not allowed here; flux-dev is used instead." in shown


async def test_a_default_count_above_the_servers_limit_is_left_out_with_a_note(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        await answer(world.member, world.channel, "settings set", count=3)
        await answer(world.admin, world.channel, "limits set", max_count=2)
        inter = await imagine(world, world.member, world.channel, prompt="a lighthouse")
        note = await inter.wait_followup()
        asked = await imagine(world, world.member, world.channel, prompt="a boat", count=2)

    assert [sent(body) for body in provider_bodies(fluxbot)] == [("flux-dev", "1:1", 1), ("flux-dev", "1:1", 2)]
    assert status_line(inter).startswith("✅ Done")
    assert note.content == (
        "📝 Your default number of images (3) is more than you may ask for here (at most 2); 1 is used instead."
    )
    assert asked.followups == []  # a count given is not the default: no note


async def test_a_default_size_the_model_given_cannot_make_is_left_out_with_a_note(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        await answer(world.member, world.channel, "settings set", model="flux-dev", size="1024x1792")
        inter = await imagine(world, world.member, world.channel, prompt="a lighthouse", model="flux-kontext-pro")
        note = await inter.wait_followup()

    assert [sent(body) for body in provider_bodies(fluxbot)] == [("flux-kontext-pro", "1:1", 1)]
    assert note.content == "📝 Your default size 1024x1792 is not available for flux-kontext-pro; 1:1 is used instead."


async def test_defaults_follow_the_member_to_another_server_and_are_checked_by_its_rules(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    other = add_world(world.emu, "Another Server")
    bob_there = other.guild.add_member("bob", user=world.member.user)
    async with fluxbot.running():
        await answer(world.member, world.channel, "settings set", model="flux-pro")
        await answer(other.admin, other.channel, "limits models", allowed="flux-dev")
        here = await answer(world.member, world.channel, "settings show")
        there = await answer(bob_there, other.channel, "settings show")
        in_first = await imagine(world, world.member, world.channel, prompt="a lighthouse")
        in_other = await imagine(world, bob_there, other.channel, prompt="a boat")
        note = await in_other.wait_followup()

    assert "**Model:** flux-pro (yours, used here)" in here
    assert "**Model:** flux-pro (yours, not used here)" in there
    assert [body["model"] for body in provider_bodies(fluxbot)] == ["flux-pro", "flux-dev"]
    assert in_first.followups == []
    assert status_line(in_other).startswith("✅ Done")
    assert "flux-pro is not allowed here" in note.content


async def test_reset_forgets_every_default(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running() as bot:
        await answer(world.member, world.channel, "settings set", model="flux-pro", size="16:9", count=2)
        reset = await answer(world.member, world.channel, "settings reset")
        again = await answer(world.member, world.channel, "settings reset")
        await imagine(world, world.member, world.channel, prompt="a lighthouse")
        stored = await db.get_member_settings(bot.store, world.member.id)

    assert "Your defaults are cleared" in reset
    assert "**Model:** flux-dev (the bot's default)" in reset
    assert "**Size:** 1:1 (the bot's default)" in reset
    assert "**Images per request:** 1 (the bot's default)" in reset
    assert "You had no defaults of your own" in again
    assert [sent(body) for body in provider_bodies(fluxbot)] == [("flux-dev", "1:1", 1)]
    assert stored.is_empty


async def test_set_refuses_a_size_the_model_cannot_make_and_keeps_what_was_there(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running() as bot:
        await answer(world.member, world.channel, "settings set", size="1024x1792")  # the bot's flux-dev makes it
        pair = await answer(world.member, world.channel, "settings set", model="flux-kontext-pro", size="1024x1024")
        model_alone = await answer(world.member, world.channel, "settings set", model="flux-kontext-pro")
        nothing = await answer(world.member, world.channel, "settings set")
        stored = await db.get_member_settings(bot.store, world.member.id)

    assert pair.startswith("flux-kontext-pro cannot make the size 1024x1024. Sizes it can make: 1:1, 16:9,")
    assert model_alone.startswith("flux-kontext-pro cannot make your default size 1024x1792.")
    assert "Give at least one default" in nothing
    assert (stored.model, stored.size, stored.count) == (None, "1024x1792", None)


async def test_edit_takes_the_default_model_when_it_can_edit_and_notes_when_it_cannot(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    source = Attachment("cat.png", png_bytes(96, 64))
    async with fluxbot.running():
        await answer(world.member, world.channel, "settings set", model="flux-kontext-max")
        edited = await world.member.slash(world.channel, "edit", image=source, prompt="make the cat blue")
        await world.emu.wait_until(lambda: status_line(edited).startswith("✅"), 10, "the first edit")
        await answer(world.member, world.channel, "settings set", model="flux-2-klein")
        noted = await world.member.slash(world.channel, "edit", image=source, prompt="make the cat red")
        await world.emu.wait_until(lambda: status_line(noted).startswith("✅"), 10, "the second edit")
        note = await noted.wait_followup()

    bodies = provider_bodies(fluxbot)
    assert [(body["action"], body["model"]) for body in bodies] == [
        ("edit", "flux-kontext-max"),
        ("edit", "flux-kontext-pro"),
    ]
    assert edited.followups == []
    assert note.content == "📝 Your default model flux-2-klein cannot edit images; flux-kontext-pro is used instead."


async def test_a_member_whose_discord_is_in_german_gets_the_note_and_show_in_german(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    greta = world.guild.add_member("greta", locale="de")
    async with fluxbot.running():
        await answer(greta, world.channel, "settings set", model="flux-pro")
        await answer(world.admin, world.channel, "limits models", allowed="flux-dev")
        inter = await imagine(world, greta, world.channel, prompt="ein Leuchtturm")
        note = await inter.wait_followup()
        shown = await answer(greta, world.channel, "settings show")

    assert (
        note.content == "📝 Dein Standardmodell flux-pro ist hier nicht erlaubt; stattdessen wird flux-dev verwendet."
    )
    assert "**Modell:** flux-pro (deins, wird hier nicht verwendet)" in shown
    assert [body["model"] for body in provider_bodies(fluxbot)] == ["flux-dev"]
