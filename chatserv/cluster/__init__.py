"""Several chatserv nodes as one server: Redis carries the bus and the directory.

A node joins a cluster with C{--cluster redis://HOST:PORT/N} (and a PostgreSQL C{--db},
the one store every node shares). Then:

  - L{chatserv.cluster.link}: the node's two connections to Redis (commands, and a
    subscription), which reconnect by themselves; an outage is logged once, and once
    more when Redis is back.
  - L{chatserv.cluster.bus}: every publication reaches this node's receivers at once
    and, over one Redis channel, every other node's. While Redis is unreachable,
    cross-node traffic is dropped (counted, not queued): local users go on as usual.
  - L{chatserv.cluster.directory}: nickname claims, atomic across nodes (a Lua script),
    valid while their node's heartbeat key lives; a node killed with SIGKILL lets its
    users' nicknames go within C{presence_timeout}.

Nothing here is imported without C{--cluster}: a single node needs neither Redis nor
txredisapi.
"""
