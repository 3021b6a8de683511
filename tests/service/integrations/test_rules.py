"""The HTTP rules as tables: what a status means, which Retry-After is sane."""

from __future__ import annotations

import email.utils

import pytest

from service.integrations.rules import (
    MAX_RETRY_AFTER,
    IgnoredStatus,
    UpstreamStatus,
    retry_after,
    status_outcome,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("status", "count_429", "outcome"),
    [
        (200, False, None),
        (204, False, None),
        (301, False, None),
        (400, False, None),  # the upstream answered: the request was wrong, not the upstream
        (404, False, None),
        (408, False, UpstreamStatus),
        (429, False, IgnoredStatus),
        (429, True, UpstreamStatus),
        (500, False, UpstreamStatus),
        (503, False, UpstreamStatus),
        (599, False, UpstreamStatus),
    ],
)
def test_what_a_status_means(status: int, count_429: bool, outcome: type | None) -> None:
    assert status_outcome(status, count_429) is outcome


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("120", 120.0),
        (" 1.5 ", 1.5),
        ("0", None),
        ("-3", None),
        (str(MAX_RETRY_AFTER), MAX_RETRY_AFTER),
        (str(MAX_RETRY_AFTER + 1), None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        (email.utils.formatdate(NOW + 90, usegmt=True), 90.0),
        (email.utils.formatdate(NOW - 90, usegmt=True), None),  # already past
        ("Sun, 06 Dec 2026 99:99:99 GMT", None),
    ],
)
def test_which_retry_after_is_sane(value: str | None, seconds: float | None) -> None:
    assert retry_after(value, NOW, MAX_RETRY_AFTER) == seconds
