"""Suite-wide guards: no caller number in any log event of any test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

#: Every caller number the tests use (the simulator's default and the simulate command's), and
#: the subscriber part of the first, which its national forms (089/1234567) share.
CALLER_NUMBERS = ("5551234", "+49891234567", "49891234567", "+4930987654321", "891234567")


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    """Each test starts with logging unconfigured (a test that runs `serve` or `track` configures
    it for the whole process: its level would filter the next test's events)."""
    from consent_ivr import logs

    yield
    logs.unconfigure()  # and the writer thread of a server's log queue, if one was started


@pytest.fixture(autouse=True)
def no_caller_number_in_logs() -> Iterator[list[dict[str, object]]]:
    with structlog.testing.capture_logs() as events:
        yield events
    text = repr(events)
    for number in CALLER_NUMBERS:
        assert number not in text, f"caller number {number} reached a log event"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: kill -9, outages and shared stores against `consent-ivr serve`"
    )
    config.addinivalue_line(
        "markers", "soak: the two-minute soak (tests/bench/soak.py); skip it with -m 'not soak'"
    )
