"""Write throughput of the store: chatserv's batching path against plain DB-API.

    python bench/store.py              # SQLite, and PostgreSQL if CHATSERV_TEST_PG is set
    python bench/store.py --messages 200000 --pg postgresql://USER:PASSWORD@HOST/DB

For each database it prints messages per second for:

- C{chatserv}: C{IStore.addMessage} N times, 100 per reactor turn (as fast as the reactor
  allows), then C{flush()}; timed from the first message to the flush firing. Default
  settings: batches of 1000, flushed every 0.1 s.
- C{baseline}: the same rows with blocking C{executemany}, one transaction per 1000 rows,
  no Twisted: the ceiling for this database and machine.
- C{one commit per message}: the same INSERT committed row by row (at most 2000 rows),
  which is what writing each message as it is said would cost.

and the ratio chatserv / baseline. Each figure is the best of three runs. The baseline's
rows are built before its clock starts; chatserv's timing includes turning messages into
rows (C{fold()} of the room name) in the reactor thread.

SQLite uses a file in a temporary directory (WAL, C{synchronous=NORMAL}, as chatserv sets
it). PostgreSQL uses a scratch schema in the given database, dropped at the end. The whole
run takes well under a minute.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from urllib.parse import quote

from twisted.internet import defer, task

from chatserv.events import RoomMessage
from chatserv.store import openStore
from chatserv.store.sql import _INSERT_MESSAGE, _messageRow

BATCH = 1000
SINGLE_MAX = 2000
ROUNDS = 3  # each figure is the best of this many runs
ROOMS = [f"room{i}" for i in range(10)]


def messages(n: int) -> list[RoomMessage]:
    now = time.time()
    return [
        RoomMessage(
            "message",
            ROOMS[i % len(ROOMS)],
            f"user{i % 97}",
            f"message {i}: the quick brown fox jumps over the lazy dog",
            now + i * 1e-3,
            i + 1,
        )
        for i in range(n)
    ]


async def viaChatserv(reactor, url: str, connect, batch: list[RoomMessage]) -> float:
    store = openStore(url, reactor, 0.1, BATCH)
    store.load()
    empty(connect)  # ids repeat between rounds: ON CONFLICT would skip the rows
    await store.history("warm-up", 1)  # the pool connects on first use: not what is measured
    started = time.perf_counter()
    for i in range(0, len(batch), 100):
        for message in batch[i : i + 100]:
            store.addMessage(message)
        await task.deferLater(reactor, 0)  # a reactor turn: commits finish, the next starts
    await store.flush()
    elapsed = time.perf_counter() - started
    await store.close()
    return elapsed


def empty(connect) -> None:
    connection = connect()
    connection.cursor().execute("DELETE FROM messages")
    connection.commit()
    connection.close()


def stored(connect) -> int:
    connection = connect()
    count = connection.cursor().execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    connection.close()
    return count


def viaDBAPI(connect, paramstyle: str, batch: list[RoomMessage], perMessage: bool) -> float:
    insert = _INSERT_MESSAGE if paramstyle == "qmark" else _INSERT_MESSAGE.replace("?", "%s")
    rows = [_messageRow(m) for m in batch]
    connection = connect()
    cursor = connection.cursor()
    cursor.execute("DELETE FROM messages")
    connection.commit()
    started = time.perf_counter()
    if perMessage:
        for row in rows:
            cursor.execute(insert, row)
            connection.commit()
    else:
        for i in range(0, len(rows), BATCH):
            cursor.executemany(insert, rows[i : i + BATCH])
            connection.commit()
    elapsed = time.perf_counter() - started
    cursor.execute("DELETE FROM messages")
    connection.commit()
    connection.close()
    return elapsed


async def measure(reactor, name: str, url: str, connect, paramstyle: str, n: int) -> None:
    batch = messages(n)
    single = min(n, SINGLE_MAX)
    chatserv = baseline = perMessage = 0.0
    for _ in range(ROUNDS):
        chatserv = max(chatserv, n / await viaChatserv(reactor, url, connect, batch))
        if stored(connect) != n:  # a burst beyond the store's queue bound drops the oldest
            print(f"{name}: only {stored(connect)} of {n} messages were stored: use fewer")
        baseline = max(baseline, n / viaDBAPI(connect, paramstyle, batch, perMessage=False))
        seconds = viaDBAPI(connect, paramstyle, batch[:single], perMessage=True)
        perMessage = max(perMessage, single / seconds)
    print(f"{name:<11} {'chatserv (batched)':<26} {n:>9} {chatserv:>12,.0f}")
    print(f"{'':<11} {'baseline (executemany)':<26} {n:>9} {baseline:>12,.0f}")
    print(f"{'':<11} {'one commit per message':<26} {single:>9} {perMessage:>12,.0f}")
    print(f"{'':<11} chatserv / baseline = {chatserv / baseline:.2f}")


def sqliteConnect(path: str):
    def connect():
        connection = sqlite3.connect(path)
        connection.execute("PRAGMA synchronous=NORMAL")  # as chatserv; WAL is in the file
        return connection

    return connect


def scratchSchema(url: str, name: str) -> str:
    """C{url} with the scratch schema C{name} first on its search path."""
    option = quote(f"-c search_path={name}")
    return f"{url}{'&' if '?' in url else '?'}options={option}"


async def main(reactor, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50_000, metavar="N")
    parser.add_argument("--pg", default=os.environ.get("CHATSERV_TEST_PG"), metavar="URL")
    options = parser.parse_args(argv)
    n = options.messages
    print(f"{'database':<11} {'path':<26} {'messages':>9} {'msgs/s':>12}")
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "bench.db")
        await measure(reactor, "SQLite", path, sqliteConnect(path), "qmark", n)
    if not options.pg:
        print("PostgreSQL  skipped: give --pg URL or set CHATSERV_TEST_PG")
        return
    import psycopg

    schema = f"chatserv_bench_{os.getpid()}"
    with psycopg.connect(options.pg, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    url = scratchSchema(options.pg, schema)
    try:
        await measure(reactor, "PostgreSQL", url, lambda: psycopg.connect(url), "format", n)
    finally:
        with psycopg.connect(options.pg, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
