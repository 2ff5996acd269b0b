"""LOG_FORMAT=json: the real ``fluxbot`` process writes one JSON object per line, scrubbed like the text format."""

from __future__ import annotations

import io
import json
import logging
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bot.logs import JobContextFilter, JsonLogFormatter, RedactingFormatter, job_context
from bot.settings import SettingsError
from tests.conftest import KEY
from tests.fluxbot_harness import FluxbotHarness, fluxbot_environment, is_result, status_line
from tests.fluxbot_process import fluxbot_process

JOB_LINE = re.compile(r"job (\d+)\b")


async def test_fluxbot_with_log_format_json_writes_json_lines_carrying_the_job_and_no_secret(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    world = fluxbot.world
    # DEBUG: discord.py then logs every gateway event, interaction tokens included, and the request URLs
    env = fluxbot_environment(fluxbot.discord, fluxbot.flux, fluxbot.database, LOG_FORMAT="json", LOG_LEVEL="DEBUG")
    async with fluxbot_process(env, tmp_path) as bot:
        await bot.wait_online(world.emu)
        inter = await world.member.slash(world.channel, "imagine", prompt="a paper boat on a pond", count=1)
        await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user, timeout=10)
        await world.emu.wait_until(lambda: "Done" in status_line(inter), 5, "the member told it is done")
        bot.send_signal(signal.SIGTERM)
        assert await bot.wait_exit(10) == 0, bot.stderr()

    stderr = bot.stderr()
    lines = [json.loads(line) for line in stderr.splitlines()]  # every line is one JSON object
    assert lines and all(isinstance(line, dict) for line in lines)
    for line in lines:
        assert {"ts", "level", "logger", "message"} <= line.keys(), line
        assert line["ts"].endswith("+00:00") and "T" in line["ts"]
    assert {"DEBUG", "INFO"} <= {line["level"] for line in lines}

    about_jobs = [line for line in lines if line["logger"] == "bot.jobs" and JOB_LINE.match(line["message"])]
    assert [line["message"] for line in about_jobs if "queued" in line["message"]]  # the runner's first word
    assert any(line["message"].endswith(" posted as message " + line["message"].split()[-1]) for line in about_jobs)
    for line in about_jobs:
        job_id = int(JOB_LINE.match(line["message"]).group(1))  # type: ignore[union-attr]
        assert (line.get("job_id"), line.get("guild_id"), line.get("user_id")) == (
            job_id,
            world.guild.id,
            world.member.id,
        ), line
    # lines logged while the job is handled, by other modules too, carry it
    assert {line["logger"] for line in lines if "job_id" in line} - {"bot.jobs"}

    assert fluxbot.discord.token not in stderr
    assert KEY not in stderr
    assert inter.token not in stderr
    assert "[redacted]" in stderr  # there was something to scrub, and it was


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("bot.test", logging.WARNING, __file__, 1, message, args, exc_info)


def test_the_json_format_scrubs_secrets_and_tokens_in_the_message_and_the_traceback() -> None:
    secret = SecretStr("sk-very-secret-value")
    formatter = JsonLogFormatter([secret])
    try:
        raise RuntimeError("failed with sk-very-secret-value")
    except RuntimeError as error:
        line = formatter.format(
            record(
                "POST /interactions/123/aW50ZXJhY3Rpb246dG9rZW4 %s payload %s",
                "sk-very-secret-value",
                {"token": "aW50ZXJhY3Rpb246dG9rZW4"},
                exc=error,
            )
        )

    parsed: dict[str, Any] = json.loads(line)
    assert "sk-very-secret-value" not in line and "aW50ZXJhY3Rpb246dG9rZW4" not in line
    assert parsed["message"].startswith("POST /interactions/123/[redacted] [redacted] payload")
    assert "RuntimeError: failed with [redacted]" in parsed["exc_info"]
    assert (parsed["level"], parsed["logger"]) == ("WARNING", "bot.test")


def test_both_formats_scrub_the_same_way() -> None:
    secrets = [SecretStr("MTIz.secret-discord-token")]
    message = "GET /webhooks/42/tok3n-value?wait=true with MTIz.secret-discord-token"
    text = RedactingFormatter("%(message)s", secrets).format(record(message))
    as_json = json.loads(JsonLogFormatter(secrets).format(record(message)))["message"]
    assert text == as_json == "GET /webhooks/42/[redacted]?wait=true with [redacted]"


def test_a_line_about_a_job_carries_its_ids_in_json_only_while_the_job_is_bound() -> None:
    class Job:
        id, guild_id, user_id = 7, 11, 13

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter([]))
    handler.addFilter(JobContextFilter())
    logger = logging.getLogger("bot.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with job_context(Job()):
            logger.warning("job %d: about it", 7)
        logger.warning("not about a job")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True

    about, other = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (about["job_id"], about["guild_id"], about["user_id"]) == (7, 11, 13)
    assert not {"job_id", "guild_id", "user_id"} & other.keys()


@pytest.mark.parametrize("value", ["xml", "JSONL", ""])
def test_a_log_format_other_than_text_or_json_is_refused_naming_the_variable(
    fluxbot: FluxbotHarness, value: str
) -> None:
    with pytest.raises(SettingsError, match="LOG_FORMAT"):
        fluxbot.settings(LOG_FORMAT=value)
    assert fluxbot.settings(LOG_FORMAT="JSON").log_format == "json"
