"""What the fuzz suites share: their hypothesis settings, and a watch for logged failures
(an example that logged one fails)."""

from __future__ import annotations

import gc
import warnings

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


class Watched:
    """For a fuzz example's world, used as a context manager: it fails the example if
    anything was logged as a failure or an error, or Python warned of a coroutine never
    awaited (a request that silently did nothing), from L{watch} on."""

    # Collect garbage before looking for those warnings: a coroutine held in a cycle warns
    # only then. Thorough but slow (it multiplies the line suite's time by seven).
    collect = False

    def watch(self) -> None:
        self._logged: list[dict] = []
        globalLogPublisher.addObserver(self._observe)
        self._warnings = warnings.catch_warnings(record=True)
        self._warned = self._warnings.__enter__()
        warnings.simplefilter("always", RuntimeWarning)

    def allowedWarning(self, text: str) -> bool:
        """Whether a warning is a known bug's, let pass until it is fixed."""
        return False

    def __enter__(self):
        return self

    def _observe(self, event: dict) -> None:
        if isFailure(event):
            self._logged.append(event)

    def __exit__(self, kind, value, tb) -> None:
        globalLogPublisher.removeObserver(self._observe)
        if self.collect:
            gc.collect()
        self._warnings.__exit__(None, None, None)
        if kind is None:  # per example, so that hypothesis can shrink to the culprit
            assert not self._logged, "logged: " + describeFailures(self._logged)
            warned = [str(w.message) for w in self._warned if w.category is RuntimeWarning]
            warned = [w for w in warned if not self.allowedWarning(w)]
            assert not warned, f"warned: {warned}"
