"""Every push answers within the ack deadline: the settings that bound a capture or a summary are checked
against it at start-up, not discovered by a redelivery in production."""

from __future__ import annotations

import pytest

from functions.archivers.base import capture_timeout
from htbase.config import PUSH_OVERHEAD_S, ConfigError, Settings
from htbase.topology import ACK_DEADLINE_S

ROOM = ACK_DEADLINE_S - PUSH_OVERHEAD_S  # the longest timeout a push may be given


def test_the_defaults_fit_the_ack_deadline():
    settings = Settings.from_env({})
    assert max(settings.capture_timeout_s, settings.max_capture_timeout_s) + PUSH_OVERHEAD_S <= ACK_DEADLINE_S
    assert settings.summary_timeout_s + PUSH_OVERHEAD_S <= ACK_DEADLINE_S


@pytest.mark.parametrize(
    "env",
    [
        {"CAPTURE_TIMEOUT": str(ROOM)},
        {"MAX_CAPTURE_TIMEOUT": str(ROOM)},
        {"SUMMARY_TIMEOUT": str(ROOM)},
        {"SUMMARY_TIMEOUT": "30", "LLM_TIMEOUT": "30"},
    ],
)
def test_timeouts_that_leave_the_overhead_under_the_deadline_start(env):
    Settings.from_env(env)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"CAPTURE_TIMEOUT": str(ROOM + 1)}, "CAPTURE_TIMEOUT and MAX_CAPTURE_TIMEOUT"),
        ({"MAX_CAPTURE_TIMEOUT": str(ROOM + 1)}, "CAPTURE_TIMEOUT and MAX_CAPTURE_TIMEOUT"),
        ({"SUMMARY_TIMEOUT": str(ROOM + 1)}, "SUMMARY_TIMEOUT"),
        ({"SUMMARY_TIMEOUT": "30", "LLM_TIMEOUT": "31"}, "LLM_TIMEOUT must not exceed SUMMARY_TIMEOUT"),
    ],
)
def test_a_timeout_that_could_outlast_the_ack_deadline_refuses_to_start(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_a_message_cannot_ask_a_capture_for_more_than_the_maximum():
    settings = Settings(capture_timeout_s=60, max_capture_timeout_s=120)
    assert capture_timeout(settings, {}) == 60
    assert capture_timeout(settings, {"timeout": 90}) == 90
    assert capture_timeout(settings, {"timeout": 100_000}) == 120  # e.g. queued before MAX_CAPTURE_TIMEOUT shrank
