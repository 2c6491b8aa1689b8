import os
import time

import pytest

# Line output shows server-local time; pin the zone so expectations are stable.
os.environ["TZ"] = "UTC"
time.tzset()


@pytest.fixture(autouse=True)
def no_leftover_timers():
    """Fail a test that leaves reactor timers behind (leaked timeouts, unclosed clients)."""
    yield
    from twisted.internet import reactor

    left = [call for call in reactor.getDelayedCalls() if call.active()]
    for call in left:
        call.cancel()
    assert not left, f"test left delayed calls behind: {left}"


@pytest.fixture
def logged():
    """Every log event while the test runs."""
    from twisted.logger import globalLogPublisher

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)
