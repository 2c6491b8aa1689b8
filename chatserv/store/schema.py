"""The SQL schema, as numbered migrations shared by SQLite and PostgreSQL.

C{MIGRATIONS[n - 1]} takes a database from version C{n - 1} to C{n}; the version a
database is at is the highest row of its C{schema_version} table. Never edit a released
migration: append a new one. Only types and statements both databases accept are used
(C{TEXT}, C{INTEGER}, C{BIGINT}, C{DOUBLE PRECISION}); booleans are C{INTEGER} 0/1.
"""

from __future__ import annotations

SCHEMA_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version"
    " (version INTEGER PRIMARY KEY, applied DOUBLE PRECISION NOT NULL)"
)

MIGRATIONS: list[tuple[str, ...]] = [
    # 1: accounts, permanent rooms, sanctions, room history, offline private messages.
    (
        """CREATE TABLE accounts (
            nick_key TEXT PRIMARY KEY,
            nick TEXT NOT NULL,
            password_hash TEXT NOT NULL,
            color TEXT,
            admin INTEGER NOT NULL DEFAULT 0,
            created DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE rooms (
            room_key TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            topic TEXT NOT NULL,
            topic_by TEXT NOT NULL,
            topic_ts DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE sanctions (
            kind TEXT NOT NULL,
            nick_key TEXT NOT NULL,
            nick TEXT NOT NULL,
            host TEXT,
            until_ts DOUBLE PRECISION,
            reason TEXT NOT NULL,
            by_nick TEXT NOT NULL,
            ts DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (kind, nick_key)
        )""",
        # Message ids are unique across rooms (chatserv.ids says how they are made).
        """CREATE TABLE messages (
            id BIGINT PRIMARY KEY,
            room_key TEXT NOT NULL,
            room TEXT NOT NULL,
            kind TEXT NOT NULL,
            sender TEXT NOT NULL,
            text TEXT NOT NULL,
            ts DOUBLE PRECISION NOT NULL,
            color TEXT
        )""",
        # history() and the per-room prune walk a room by id; the age prune goes by ts.
        "CREATE INDEX messages_room_id ON messages (room_key, id)",
        "CREATE INDEX messages_ts ON messages (ts)",
        """CREATE TABLE offline_messages (
            id BIGINT PRIMARY KEY,
            to_key TEXT NOT NULL,
            sender TEXT NOT NULL,
            recipient TEXT NOT NULL,
            text TEXT NOT NULL,
            ts DOUBLE PRECISION NOT NULL,
            color TEXT
        )""",
        "CREATE INDEX offline_messages_to_id ON offline_messages (to_key, id)",
        "CREATE INDEX offline_messages_ts ON offline_messages (ts)",
    ),
    # 2: the processes writing to this database, each with the slot its message ids carry
    # (chatserv.store.nodes).
    (
        """CREATE TABLE node_slots (
            slot INTEGER PRIMARY KEY,
            holder TEXT NOT NULL,
            name TEXT NOT NULL,
            expires DOUBLE PRECISION NOT NULL
        )""",
    ),
    # 3: keys every process of this database must share, made once (chatserv.hostmasks'
    # cloak key: the same cloak for an address after a restart and on every node).
    (
        """CREATE TABLE server_keys (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
    ),
]

VERSION = len(MIGRATIONS)
