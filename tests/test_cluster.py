"""Two real chatserv nodes (twistd subprocesses) sharing rooms through a real redis-server,
with one PostgreSQL database as their store: clients on different nodes, over the line,
IRC and websocket wires; nickname races; a node killed with SIGKILL; Redis restarted."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pgserver
import pytest
from redisserver import RedisServer
from servers import TWISTD, readUntil, runServer

LOOPBACK = "tcp:0:interface=127.0.0.1"


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def database():
    with pgserver.freshDatabase() as url:
        yield url


@contextmanager
def nodes(tmp_path, redis, database, count=2, presence=3.0, cluster=""):
    """C{count} nodes of one cluster, each with line, websocket and IRC listeners;
    C{cluster}: more of the config file's [cluster] section."""
    config = tmp_path / "cluster.toml"
    config.write_text(f"[cluster]\npresence_timeout = {presence}\n{cluster}")
    with ExitStack() as stack:
        started = []
        for i in range(count):
            name = f"node{i}"
            (tmp_path / name).mkdir(exist_ok=True)
            started.append(
                stack.enter_context(
                    runServer(
                        tmp_path / name,
                        "--config", str(config), "--db", database, "--cluster", redis.url,
                        "--node-name", name, "--tcp", LOOPBACK, "--ws", LOOPBACK,
                        "--irc", LOOPBACK,
                        listeners=3,
                    )
                )
            )  # fmt: skip
        for server in started:  # both in the cluster (connected to Redis) before the test
            waitFor(lambda server=server: "connected to Redis" in "".join(server.output))
        yield started


def waitFor(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def line(port: int, nick: str) -> tuple[socket.socket, bytes]:
    """A line client that chose C{nick}: the socket and what it got until it was told."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    readUntil(sock, b"Type a nickname")
    sock.sendall(nick.encode() + b"\n")
    got = readUntil(sock, b"\n", 10)
    while b"Welcome," not in got and b"error:" not in got:
        got += sock.recv(65536)
    return sock, got


def irc(port: int, nick: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\nJOIN #lobby\r\n".encode())
    readUntil(sock, b"366 ")  # end of NAMES: in the channel
    return sock


@contextmanager
def websocketJSON(port: int, nick: str):
    from websockets.sync.client import connect

    url = f"ws://127.0.0.1:{port}/ws"
    with connect(url, subprotocols=["chatserv.v1.json"], open_timeout=10) as ws:
        ws.send(json.dumps({"type": "nick", "nick": nick}))
        while json.loads(ws.recv(timeout=10))["type"] != "who":
            pass
        yield ws


def test_room_messages_reach_members_on_every_node_over_every_wire(tmp_path, redis, database):
    with nodes(tmp_path, redis, database) as (a, b):
        alice, _ = line(a.tcp, "alice")
        bob, _ = line(b.tcp, "bob")
        dave = irc(b.irc, "dave")
        with websocketJSON(a.ws, "erin") as erin:
            alice.sendall(b"hello from node a\n")
            assert b"#lobby <alice> hello from node a" in readUntil(bob, b"hello from node a")
            assert b":alice!" in readUntil(dave, b"hello from node a")
            dave.sendall(b"PRIVMSG #lobby :and from IRC on node b\r\n")
            readUntil(alice, b"#lobby <dave> and from IRC on node b")
            seen = []
            while not any(e.get("text") == "and from IRC on node b" for e in seen):
                seen.append(json.loads(erin.recv(timeout=10)))
            said = [e for e in seen if e.get("type") == "message"]
            assert [e["from"] for e in said] == ["alice", "dave"]  # each once, in order
            # Who is in the room, and which rooms there are: on both nodes alike.
            for sock in (alice, bob):
                sock.sendall(b"/who\n")
                listed = readUntil(sock, b"#lobby users (4):").split(b"users (4): ")[1]
                names = listed.split(b"\n")[0].decode().strip().split(", ")
                assert sorted(names) == ["alice", "bob", "dave", "erin"]
            dave.sendall(b"JOIN #ops\r\n")
            readUntil(dave, b"366 dave #ops")
            deadline = time.monotonic() + 5  # (the join reaches node a a moment later)
            while True:
                alice.sendall(b"/rooms\n")
                got = readUntil(alice, b"rooms (")
                while not got.split(b"rooms (")[-1].count(b"\n"):
                    got += alice.recv(65536)
                if b"#ops (1)" in got.split(b"rooms (")[-1]:
                    break
                assert time.monotonic() < deadline, got
                time.sleep(0.05)
            # Private messages, to whichever node the recipient is on, over any wire.
            alice.sendall(b"/msg dave psst, dave\n")
            assert b"PRIVMSG dave :psst, dave" in readUntil(dave, b"psst, dave")
            dave.sendall(b"PRIVMSG erin :hello erin\r\n")
            while True:
                event = json.loads(erin.recv(timeout=10))
                if event.get("type") == "msg":
                    break
            assert (event["from"], event["text"]) == ("dave", "hello erin")
        for sock in (alice, bob, dave):
            sock.close()


def test_irc_who_whois_and_list_show_the_whole_cluster(tmp_path, redis, database):
    with nodes(tmp_path, redis, database) as (a, b):
        ivy = irc(a.irc, "ivy")
        dave = irc(b.irc, "dave")
        dave.sendall(b"JOIN #ops\r\nAWAY :in a meeting\r\n")
        readUntil(dave, b"306 dave")
        deadline = time.monotonic() + 5  # (what dave did reaches node a a moment later)
        while True:
            ivy.sendall(b"WHOIS dave\r\n")
            whois = readUntil(ivy, b"318 ivy dave")
            if b"301 ivy dave" in whois:
                break
            assert time.monotonic() < deadline, whois
            time.sleep(0.05)
        assert b"311 ivy dave ~dave " in whois  # nick, user, then the host's cloak
        # Without an [irc] cloak_key, every node cloaks with the database's key: dave's
        # host (from node b) is ivy's (node a), both being 127.0.0.1.
        ivy.sendall(b"WHOIS ivy\r\n")
        own = readUntil(ivy, b"318 ivy ivy").split(b"311 ivy ivy ~ivy ")[1].split(b" ")[0]
        assert b"311 ivy dave ~dave " + own + b" * " in whois
        assert b"319 ivy dave :#lobby #ops" in whois
        assert b"312 ivy dave " in whois and b":node node1 of " in whois
        assert b"301 ivy dave :in a meeting" in whois
        assert b"317 ivy dave " in whois  # asked of node b: when dave connected
        # Someone in no room, on the other node: found and shown all the same.
        zed = socket.create_connection(("127.0.0.1", b.irc), timeout=10)
        zed.sendall(b"NICK zed\r\nUSER zee 0 * :Zed Zero\r\n")
        readUntil(zed, b"001 zed")
        ivy.sendall(b"WHOIS zed\r\nWHO zed\r\n")
        got = readUntil(ivy, b"315 ivy zed")
        assert b"311 ivy zed ~zee " in got and b" * :Zed Zero" in got
        assert b"311 ivy zed ~zee *" not in got  # the host's cloak, not a blank
        assert b"317 ivy zed " in got and b"319 ivy zed" not in got
        assert b"352 ivy * ~zee " in got and b" zed H :0 Zed Zero" in got
        zed.close()
        ivy.sendall(b"WHO #ops\r\n")
        who = readUntil(ivy, b"315 ivy #ops")
        assert b"352 ivy #ops ~dave " in who and b" dave G :0 dave" in who
        ivy.sendall(b"WHO #lobby %nf\r\n")
        who = readUntil(ivy, b"315 ivy #lobby")
        assert b"354 ivy ivy H" in who and b"354 ivy dave G" in who
        ivy.sendall(b"LIST\r\n")
        listed = readUntil(ivy, b"323 ivy")
        assert b"322 ivy #lobby 2 :" in listed and b"322 ivy #ops 1 :" in listed
        ivy.sendall(b"LIST >1\r\n")
        listed = readUntil(ivy, b"323 ivy")
        assert b"#lobby" in listed and b"#ops" not in listed
        ivy.sendall(b"LUSERS\r\n")
        counts = readUntil(ivy, b"266 ivy")
        assert b"There are 2 users and 0 invisible on 2 servers" in counts
        assert b"I have 1 clients and 1 servers" in counts
        assert b"Current global users 2" in counts
        ivy.close(), dave.close()


def test_a_nickname_is_never_given_to_two_people_on_two_nodes(tmp_path, redis, database):
    with nodes(tmp_path, redis, database) as (a, b):
        for i in range(25):
            nick = f"racer{i}"
            socks = []
            for port in (a.tcp, b.tcp):  # both ask at (nearly) the same moment
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                readUntil(sock, b"Type a nickname")
                socks.append(sock)
            for sock in socks:
                sock.sendall(nick.encode() + b"\n")
            answers = []
            for sock in socks:
                got = b""
                while b"Welcome," not in got and b"error:" not in got:
                    got += sock.recv(65536)
                answers.append(b"Welcome," in got)
            assert sorted(answers) == [False, True], (nick, answers)
            for sock in socks:
                sock.close()
        # Let go on disconnect: the name is free again, on the other node too.
        waitFor(lambda: redis.command("EXISTS", "chatserv:nick:racer0") == ":0")
        sock, got = line(b.tcp, "racer0")
        assert b"Welcome, racer0!" in got
        sock.close()


def test_a_login_ends_the_accounts_session_on_the_other_node(tmp_path, redis, database):
    with nodes(tmp_path, redis, database) as (a, b):
        first, _ = line(a.tcp, "frank")
        first.sendall(b"/register wonderland-42\n")
        readUntil(first, b"registered frank")
        second = socket.create_connection(("127.0.0.1", b.tcp), timeout=10)
        readUntil(second, b"Type a nickname")
        second.sendall(b"/login frank wonderland-42\n")
        readUntil(second, b"you are logged in as frank")
        assert b"you logged in from elsewhere" in readUntil(first, b"from elsewhere")
        first.close(), second.close()


def test_a_kick_and_a_ban_on_one_node_end_sessions_on_the_other(tmp_path, redis, database):
    import psycopg
    from argon2 import PasswordHasher

    with nodes(tmp_path, redis, database) as (a, b):
        with psycopg.connect(database) as db:  # an admin's account, as the console makes
            db.execute(
                "INSERT INTO accounts (nick_key, nick, password_hash, color, admin, created)"
                " VALUES ('root', 'root', %s, NULL, 1, 0)",
                (PasswordHasher().hash("wonderland-42"),),
            )
        root = socket.create_connection(("127.0.0.1", a.tcp), timeout=10)
        readUntil(root, b"Type a nickname")
        root.sendall(b"/login root wonderland-42\n")
        readUntil(root, b"you are logged in as root")
        mallory, _ = line(b.tcp, "mallory")
        trudy, _ = line(b.tcp, "trudy")
        root.sendall(b"/kick mallory spamming\n")
        assert b"you were kicked by root: spamming" in readUntil(mallory, b"spamming")
        root.sendall(b"/ban trudy 1h again\n")
        assert b"you are banned" in readUntil(trudy, b"banned")
        sock, got = line(b.tcp, "trudy")  # and the ban holds on node b
        assert b"banned" in got
        for s in (root, mallory, trudy, sock):
            s.close()


def test_a_killed_nodes_users_are_released_within_the_presence_timeout(tmp_path, redis, database):
    with nodes(tmp_path, redis, database, presence=3.0) as (a, b):
        gina, _ = line(b.tcp, "gina")
        hank, _ = line(b.tcp, "hank")  # who will not come back
        alice, _ = line(a.tcp, "alice")
        gina.sendall(b"before the crash\n")
        readUntil(alice, b"<gina> before the crash")
        deadline = time.monotonic() + 5  # (node b writes its messages a moment later)
        while True:
            alice.sendall(b"/history 5\n")
            if b"<gina> before the crash" in readUntil(alice, b"end of history"):
                break
            assert time.monotonic() < deadline, "never stored"
            time.sleep(0.1)
        b.process.send_signal(signal.SIGKILL)
        b.process.wait()
        killedAt = time.monotonic()
        alice.sendall(b"node a goes on\n")  # the survivor keeps serving
        sock, got = line(a.tcp, "gina")
        assert b'"gina" is taken' in got  # node b's heartbeat has not expired yet
        sock.close()
        while True:
            sock, got = line(a.tcp, "gina")
            if b"Welcome, gina!" in got:
                break
            sock.close()
            assert time.monotonic() - killedAt < 3.0 + 2.0, "still held"
            time.sleep(0.2)
        # Back on the other node, she goes on from the database's history (which may
        # have come in the same read as her welcome).
        replayed = readUntil(sock, b"<alice> node a goes on", have=got)
        assert replayed.index(b"<gina> before the crash") < replayed.index(b"node a goes on")
        # Node a's users see hank quit, once a sees node b's heartbeat has ended (and
        # gina too, unless she was back here first: then she just joins).
        readUntil(alice, b"hank has left (node node1 is gone)")
        alice.sendall(b"/who\n")
        readUntil(alice, b"users (2): alice, gina")
        sock.close(), gina.close(), hank.close(), alice.close()


def test_redis_restarted_mid_conversation(tmp_path, redis, database):
    with nodes(tmp_path, redis, database) as (a, b):
        alice, _ = line(a.tcp, "alice")
        bob, _ = line(b.tcp, "bob")
        alice.sendall(b"before\n")
        readUntil(bob, b"<alice> before")
        redis.stop()
        waitFor(lambda: "lost Redis" in "".join(a.output))
        alice.sendall(b"during\n")  # local users are served; other nodes miss it
        sock, got = line(a.tcp, "hank")
        assert b"the cluster cannot be reached just now" in got
        sock.close()
        redis.start()
        for node in (a, b):
            waitFor(lambda node=node: "reachable again" in "".join(node.output))
        waitFor(lambda: redis.command("EXISTS", "chatserv:nick:bob") == ":1")  # claimed again
        sock, got = line(a.tcp, "bob")
        assert b'"bob" is taken' in got
        sock.close()
        alice.sendall(b"after\n")
        got = readUntil(bob, b"<alice> after")
        assert b"during" not in got  # dropped, as the README says, not queued
        # History (the shared database) has it all, once node a has committed "after"
        # (within its flush_interval, 0.1 s).
        time.sleep(0.5)
        bob.sendall(b"/history 5\n")
        history = readUntil(bob, b"end of history")
        assert all(word in history for word in (b"before", b"during", b"after"))
        alice.close(), bob.close()


def test_nodes_reach_redis_over_tls_with_a_certificate_of_their_own(tmp_path, database):
    from tlshelpers import makeChain

    ca, chain, key = makeChain(tmp_path)
    redis = RedisServer(tmp_path, tls=(ca, chain, key))  # asks clients for a certificate
    redis.start()
    try:
        # Relative to the config file: the CA that signed Redis's, and the node's own
        # certificate (one the CA signed: Redis refuses clients without one).
        files = 'tls_ca = "root.crt"\ntls_cert = "server-chain.crt"\ntls_key = "server.key"\n'
        with nodes(tmp_path, redis, database, cluster=files) as (a, b):
            assert "joining through rediss://localhost:" in "".join(a.output)
            alice, _ = line(a.tcp, "alice")
            bob, _ = line(b.tcp, "bob")
            alice.sendall(b"hello over TLS\n")
            assert b"<alice> hello over TLS" in readUntil(bob, b"hello over TLS")
            alice.close(), bob.close()
        # Without the CA, Redis's certificate is not trusted: the node says why, and
        # keeps trying (serving its own users meanwhile).
        (tmp_path / "alone").mkdir()
        alone = ("--db", database, "--cluster", redis.url, "--node-name", "alone")
        with runServer(tmp_path / "alone", *alone, "--tcp", LOOPBACK, listeners=1) as server:
            waitFor(lambda: "certificate verify failed" in "".join(server.output))
            carol, _ = line(server.tcp, "carol")
            carol.close()
    finally:
        redis.stop()


@pytest.mark.parametrize("db", ["memory", "chatserv.db"])
def test_a_cluster_needs_postgresql(tmp_path, db):
    result = subprocess.run(
        [str(TWISTD), "-n", "--pidfile=", "chatserv", "--cluster", "redis://127.0.0.1:1/0",
         "--db", db, "--tcp", LOOPBACK],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    lines = [text for text in result.stderr.splitlines() if text.strip()]
    assert len(lines) == 1 and "--cluster needs a PostgreSQL --db" in lines[0], lines


def test_cluster_settings_are_checked_at_start_up():
    from chatserv.config import ConfigError, makeSettings

    pg = "postgresql://chatserv@127.0.0.1/chatserv"
    good = makeSettings({"cluster": "redis://:s3cret@10.0.0.5:6380/2", "db": pg})
    from chatserv.cluster.address import parseRedisURL

    address = parseRedisURL(good.cluster)
    assert (address.host, address.port, address.db, address.password) == (
        "10.0.0.5",
        6380,
        2,
        "s3cret",
    )
    assert "s3cret" not in str(address)  # never shown
    for overrides, why in (
        ({"cluster": "http://x/0", "db": pg}, "--cluster needs redis://HOST:PORT/DB"),
        ({"cluster": "redis://x/zero", "db": pg}, "database number must be a whole number"),
        ({"cluster": "redis://x/0", "db": "memory"}, "needs a PostgreSQL --db"),
        ({"cluster": "redis://x/0", "db": pg, "cluster_presence_timeout": 1.0},
         "presence_timeout must be at least 3"),
        ({"cluster": "redis://x/0", "db": pg, "cluster_node_name": "a b"},
         "node_name must be letters"),
        ({"cluster": "redis://x/0", "db": pg, "cluster_tls_ca": __file__},
         "need a rediss:// (TLS) URL"),
        ({"cluster": "rediss://x/0", "db": pg, "cluster_tls_cert": __file__},
         "tls_cert and cluster.tls_key go together"),
        ({"cluster": "rediss://x/0", "db": pg, "cluster_tls_ca": "/nowhere/ca.pem"},
         "cluster.tls_ca: no such file '/nowhere/ca.pem'"),
    ):  # fmt: skip
        with pytest.raises(ConfigError) as raised:
            makeSettings(overrides)
        assert why in str(raised.value), overrides


def test_tls_files_that_cannot_be_used_stop_start_up_in_one_line(tmp_path):
    from chatserv.cluster.address import ClusterConfigError
    from chatserv.cluster.link import clientTLS

    (tmp_path / "ca.pem").write_text("not a certificate\n")
    with pytest.raises(ClusterConfigError, match="holds no PEM certificate"):
        clientTLS("localhost", ca=str(tmp_path / "ca.pem"))
    (tmp_path / "bad.pem").write_text(
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    with pytest.raises(ClusterConfigError, match="TLS files cannot be used"):
        clientTLS("localhost", ca=str(tmp_path / "bad.pem"))


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_two_node_example_behind_haproxy(tmp_path, redis, database):
    """etc/cluster/: two nodes behind HAProxy, as shipped but for ports and addresses."""
    import shutil

    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy is not installed (.ci/run installs it)")
    etc = Path(__file__).resolve().parent.parent / "etc" / "cluster"
    node = (etc / "node.toml").read_text()
    node = node.replace("postgresql://chatserv:PASSWORD@127.0.0.1/chatserv", database)
    node = node.replace("redis://127.0.0.1:6379/0", redis.url)
    (tmp_path / "node.toml").write_text(node)
    ports = {old: freePort() for old in (10011, 10012, 6671, 6672, 8771, 8772)}
    fronts = {old: freePort() for old in (10001, 6667, 8765)}
    config = (etc / "haproxy.cfg").read_text()
    for old, new in ports.items():
        config = config.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    for old, new in fronts.items():
        config = config.replace(f"bind :{old}", f"bind 127.0.0.1:{new}")
    config = config.replace("maxconn 20000", "maxconn 200")
    (tmp_path / "haproxy.cfg").write_text(config)
    with ExitStack() as stack:
        nodes = []
        for name, (tcp, irc_, ws) in {"a": (10011, 6671, 8771), "b": (10012, 6672, 8772)}.items():
            (tmp_path / name).mkdir()
            listen = [f"tcp:{ports[p]}:interface=127.0.0.1" for p in (tcp, irc_, ws)]
            nodes.append(stack.enter_context(runServer(
                tmp_path / name, "--config", str(tmp_path / "node.toml"), "--node-name", name,
                "--tcp", listen[0], "--irc", listen[1], "--ws", listen[2], listeners=3,
            )))  # fmt: skip
        for server in nodes:
            waitFor(lambda server=server: "connected to Redis" in "".join(server.output))
        log = open(tmp_path / "haproxy.log", "wb")
        proxy = subprocess.Popen([haproxy, "-db", "-f", str(tmp_path / "haproxy.cfg")],
                                 stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        stack.callback(lambda: (proxy.terminate(), proxy.wait(10), log.close()))
        waitFor(lambda: _accepts(fronts[10001]) and _accepts(fronts[8765]))
        alice = sourced(fronts[10001], "127.0.0.3")
        readUntil(alice, b"Type a nickname")
        alice.sendall(b"alice\n")
        readUntil(alice, b"Welcome, alice!")
        # Each front has a backend of its own, balanced on its own: which node alice is on
        # says nothing of where the first IRC client goes. Two IRC clients held open at
        # once do land on two nodes (leastconn), so one of them is on a node alice is not.
        bob = irc(fronts[6667], "bob")
        dave = irc(fronts[6667], "dave")
        with websocketJSON(fronts[8765], "carol") as carol:
            alice.sendall(b"hello everyone\n")
            readUntil(bob, b"hello everyone")
            readUntil(dave, b"hello everyone")
            while json.loads(carol.recv(timeout=10)).get("text") != "hello everyone":
                pass
            bob.sendall(b"PRIVMSG #lobby :hi from bob\r\n")
            readUntil(alice, b"hi from bob")
            dave.sendall(b"PRIVMSG #lobby :hi from dave\r\n")
            readUntil(alice, b"hi from dave")
        logs = ["".join(server.output) for server in nodes]
        home = next(text for text in logs if "is now alice" in text)
        assert "connect from tcp 127.0.0.3:" in home  # her address, from the PROXY header
        for nick in ("alice", "bob", "dave"):
            assert sum(f"is now {nick}" in text for text in logs) == 1, nick
        where = [["is now bob" in text for text in logs], ["is now dave" in text for text in logs]]
        assert where[0] != where[1], "both IRC clients on one node: the cluster was not exercised"
        alice.close(), bob.close(), dave.close()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def sourced(port: int, source: str) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock
