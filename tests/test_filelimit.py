"""The open-file limit is raised for max_connections, within the hard limit."""

from __future__ import annotations

import resource

from twisted.logger import globalLogPublisher

from chatserv.filelimit import SPARE_DESCRIPTORS, FileLimitService, raiseFileLimit


class FakeLimits:
    def __init__(self, soft: int, hard: int) -> None:
        self.limits = (soft, hard)
        self.calls = 0

    def get(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.limits

    def set(self, which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        self.calls += 1
        self.limits = limits


def test_the_soft_limit_is_raised_to_what_is_wanted():
    limits = FakeLimits(1024, 524288)
    assert raiseFileLimit(10064, limits.get, limits.set) == (1024, 10064)
    assert limits.limits == (10064, 524288)  # the hard limit is left alone


def test_the_soft_limit_stops_at_the_hard_limit():
    limits = FakeLimits(1024, 4096)
    assert raiseFileLimit(10064, limits.get, limits.set) == (1024, 4096)
    assert limits.limits == (4096, 4096)


def test_a_limit_high_enough_is_left_alone():
    for soft in (20000, resource.RLIM_INFINITY):
        limits = FakeLimits(soft, resource.RLIM_INFINITY)
        raiseFileLimit(10064, limits.get, limits.set)
        assert limits.calls == 0


def test_the_service_logs_what_it_did_and_warns_when_short():
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        limits = FakeLimits(1024, 4096)
        service = FileLimitService(
            10000, lambda wanted: raiseFileLimit(wanted, limits.get, limits.set)
        )
        service.startService()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    texts = [(e["log_level"].name, e["log_format"]) for e in logged if "log_format" in e]
    assert ("info", texts[0][1]) == texts[0] and texts[0][1].startswith("raised the open-file")
    assert logged[0]["after"] == 4096 and logged[0]["before"] == 1024
    assert texts[1][0] == "warn" and "fewer than max_connections" in texts[1][1]
    assert logged[1]["limit"] == 4096 and 10000 + SPARE_DESCRIPTORS > 4096


def test_the_real_limit_allows_max_connections_after_start():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        FileLimitService(2000).startService()
        now, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        expected = 2000 + SPARE_DESCRIPTORS
        if hard != resource.RLIM_INFINITY:
            expected = min(expected, hard)
        assert now == resource.RLIM_INFINITY or now >= expected
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
