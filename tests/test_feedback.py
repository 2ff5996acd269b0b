"""The one error policy: what members are told, and what reaches the log."""

from __future__ import annotations

import logging

import pytest

from bot.db import StoreBusyError
from cogs.feedback import BUSY, UNEXPECTED_ERROR, explain


def test_a_busy_database_is_explained_to_the_member_and_is_not_an_error_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    assert explain(StoreBusyError("the database stayed locked for 30 s"), "interaction 1", None) == BUSY
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_anything_unexpected_is_logged_once_and_the_member_gets_an_apology(caplog: pytest.LogCaptureFixture) -> None:
    assert explain(KeyError("resolved"), "interaction 2", None) == UNEXPECTED_ERROR
    assert [record.levelno for record in caplog.records] == [logging.ERROR]
