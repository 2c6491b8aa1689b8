"""PostgreSQL for the tests: a fresh database per test on the server named by an env var.

C{CHATSERV_TEST_PG} is a URL such as
C{postgresql://chatserv:chatserv@127.0.0.1:5432/chatserv_test}; its role needs C{CREATEDB}
(each test gets an empty database of its own; they are reused, emptied, between tests and
dropped when the run ends). C{.ci/run} starts a local server and sets it. Without a usable
server the PostgreSQL tests are skipped, saying why, except when C{CI=true}: CI must not
pass by skipping them.
"""

from __future__ import annotations

import atexit
import itertools
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest

ENV = "CHATSERV_TEST_PG"
HOWTO = (
    f"set {ENV}=postgresql://USER:PASSWORD@HOST:PORT/DATABASE (a role with CREATEDB),"
    " or run .ci/run, which starts a local server"
)

_counter = itertools.count(1)
_problem: str | None = None  # why the server cannot be used, once found out
_checked = False


def _unavailable(reason: str) -> None:
    message = f"PostgreSQL tests not run: {reason}; {HOWTO}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def redact(url: str) -> str:
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)


def serverURL() -> str:
    """The URL in C{CHATSERV_TEST_PG}, once the server answered; else skip (fail on CI)."""
    global _checked, _problem
    url = os.environ.get(ENV, "")
    if not url:
        _unavailable(f"{ENV} is not set")
    if not _checked:
        _checked = True
        try:
            import psycopg
        except ImportError:
            _problem = "psycopg is not installed (pip install -e '.[test]')"
        else:
            try:
                psycopg.connect(url, connect_timeout=5).close()
            except psycopg.Error as e:
                _problem = f"cannot connect to {redact(url)}: {' '.join(str(e).split())}"
    if _problem:
        _unavailable(_problem)
    return url


def withDatabase(url: str, name: str) -> str:
    """C{url} naming database C{name} instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def _admin(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as connection:
        for statement in statements:
            connection.execute(statement)


# CREATE DATABASE costs a quarter of a second: a database is emptied after each test and
# handed to the next; all are dropped when the test run ends.
_idle: list[str] = []
_made: list[str] = []


def _dropAll() -> None:
    import psycopg

    url = os.environ.get(ENV, "")
    for name in _made:
        try:
            _drop(url, name)
        except psycopg.Error:
            pass


def _drop(url: str, name: str) -> None:
    import psycopg

    # Plain DROP first: it makes an autovacuum worker on the database give way, which
    # FORCE may not (a worker runs as superuser). FORCE for connections a test that
    # failed half-way may have left open.
    try:
        _admin(url, f'DROP DATABASE IF EXISTS "{name}"')
    except psycopg.errors.ObjectInUse:
        _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def freshDatabase() -> Iterator[str]:
    """An empty database (no tables) for one test: yields its URL."""
    import psycopg

    url = serverURL()
    if _idle:
        name = _idle.pop()
    else:
        name = f"chatserv_t_{os.getpid()}_{next(_counter)}"  # unique across parallel runs
        _admin(url, f'CREATE DATABASE "{name}"')
        if not _made:
            atexit.register(_dropAll)
        _made.append(name)
    yield withDatabase(url, name)
    try:
        _admin(
            withDatabase(url, name),
            "SET lock_timeout = '2s'",  # a connection left open by a failed test
            "DROP SCHEMA public CASCADE",
            "CREATE SCHEMA public",
        )
    except psycopg.Error:
        _made.remove(name)
        _drop(url, name)
    else:
        _idle.append(name)
