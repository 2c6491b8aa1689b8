"""What the fuzz suites share: their hypothesis settings, and a watch for logged failures
(an example that logged one fails)."""

from __future__ import annotations

import gc

import pytest
from hypothesis import HealthCheck, settings
from twisted.logger import LogLevel, formatEvent, globalLogPublisher


def isFailure(event: dict) -> bool:
    return "log_failure" in event or event.get("log_level") in (LogLevel.error, LogLevel.critical)


def describeFailures(events: list[dict]) -> str:
    return "; ".join(
        formatEvent(e) + (f" {e['log_failure'].value!r}" if "log_failure" in e else "")
        for e in events
    )


@pytest.fixture(autouse=True)
def no_unhandled_errors():
    """Fail a test that logged a failure at any time, even once garbage was collected
    ("Unhandled error in Deferred" is logged when the Deferred is collected). Autouse in
    every module that imports it."""
    logged: list[dict] = []

    def observe(event: dict) -> None:
        if isFailure(event):
            logged.append(event)

    globalLogPublisher.addObserver(observe)
    yield
    gc.collect()
    globalLogPublisher.removeObserver(observe)
    assert not logged, "logged: " + describeFailures(logged)


def fuzz(examples: int):
    """Settings for a property: C{examples} of them, reproducible, no deadline."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
