"""Who holds which nickname, across the nodes of a cluster, in Redis.

A claim is one Lua script, so it is atomic however many nodes race for a name: it
succeeds when nobody holds the name, when this node does, or when the node holding it
is dead, that is when its heartbeat key (C{node:NAME}, renewed every third of
C{presence_timeout}) has expired. A node killed with SIGKILL therefore lets its users'
names go within C{presence_timeout}; one that stops cleanly releases them at once.

While Redis is unreachable, claims are refused (L{ClusterUnavailable}): two nodes
cannot agree then, and refusing is the only way never to hand one name to two people.
Users keep the names they have.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from chatserv.errors import ClusterUnavailable
from chatserv.interfaces import IDirectory

log = Logger()

PREFIX = "chatserv:"

# KEYS[1]: the name's key. ARGV: this node, the key prefix. Nil: claimed; else: holder.
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then
  if redis.call('EXISTS', ARGV[2] .. 'node:' .. owner) == 1 then return owner end
  redis.call('SREM', ARGV[2] .. 'names:' .. owner, KEYS[1])
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', ARGV[2] .. 'names:' .. ARGV[1], KEYS[1])
return false
"""
# The same, whoever holds it (a login).
_TAKE = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then redis.call('SREM', ARGV[2] .. 'names:' .. owner, KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', ARGV[2] .. 'names:' .. ARGV[1], KEYS[1])
return false
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('SREM', ARGV[2] .. 'names:' .. ARGV[1], KEYS[1])
return 1
"""
# KEYS[1]: the name's key. ARGV[1]: the key prefix. The live node holding it, or nil.
_LOCATE = """
local owner = redis.call('GET', KEYS[1])
if owner and redis.call('EXISTS', ARGV[1] .. 'node:' .. owner) == 1 then return owner end
return false
"""
# Everything this node held (a previous run of it, killed): released at start.
_RESET = """
local names = ARGV[2] .. 'names:' .. ARGV[1]
for _, key in ipairs(redis.call('SMEMBERS', names)) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
redis.call('DEL', names)
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@implementer(IDirectory)
class RedisDirectory:
    """Nickname claims for node C{node}, over a L{chatserv.cluster.link.RedisLink}."""

    def __init__(self, link: Any, node: str, clock: Any, presenceTimeout: float) -> None:
        self.link = link
        self.node = node
        self.presenceTimeout = presenceTimeout
        self._clock = clock
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = clock
        self._localKeys: Any = lambda: ()
        self._lost: Any = lambda key, holder: None
        link.onUp.append(self._resync)

    def serve(self, localKeys: Any, lost: Any) -> None:
        self._localKeys, self._lost = localKeys, lost

    def _resync(self) -> None:
        """Redis is back (perhaps restarted, empty): this node is alive again and claims
        its users' names again, after letting go of all it held (names its users gave up
        during the outage could not be released then). A name another node gave out
        meanwhile is lost here."""
        if not self._heartbeat.running:
            return  # the first connection: start() does it
        self._beat()
        self._eval(_RESET, "").addErrback(lambda f: None)  # (sent first, on one connection)
        for key in list(self._localKeys()):
            d = self._eval(_CLAIM, key)
            d.addCallback(lambda holder, key=key: holder and self._lost(key, _text(holder)))
            d.addErrback(lambda f: None)  # lost again: resynchronised on the next return

    def start(self) -> defer.Deferred[Any]:
        """Release what an earlier run of this node left, and start the heartbeat."""
        d = self._eval(_RESET, "")
        d.addCallback(lambda _: self._beat())
        d.addCallback(lambda _: self._startBeating())
        return d

    def _startBeating(self) -> None:
        # (LoopingCall.start's Deferred fires only when the loop stops: not waited on.)
        self._heartbeat.start(self.presenceTimeout / 3, now=False)

    def stop(self) -> defer.Deferred[Any]:
        if self._heartbeat.running:
            self._heartbeat.stop()
        if not self.link.up:
            return defer.succeed(None)
        d = self._eval(_RESET, "")
        d.addCallback(lambda _: self.link.commands.delete(PREFIX + "node:" + self.node))
        d.addErrback(lambda failure: None)  # the heartbeat key expires anyway
        return d

    def claim(self, key: str) -> defer.Deferred[str | None]:
        """C{None} once this node holds C{key}; else the name of the node that does.
        Fails with L{ClusterUnavailable} while Redis is unreachable."""
        return self._claimWith(_CLAIM, key)

    def take(self, key: str) -> defer.Deferred[str | None]:
        return self._claimWith(_TAKE, key)

    def _claimWith(self, script: str, key: str) -> defer.Deferred[str | None]:
        if not self.link.up:
            return defer.fail(
                ClusterUnavailable(
                    "the cluster cannot be reached just now, so no nickname can be"
                    " given out; try again in a moment"
                )
            )
        d = self._eval(script, key)
        d.addCallback(lambda holder: None if holder is None else _text(holder))
        return d

    def release(self, key: str) -> None:
        if self.link.up:
            self._eval(_RELEASE, key).addErrback(
                lambda f: log.warn(
                    "cluster: releasing a nickname failed: {why}", why=f.getErrorMessage()
                )
            )

    def locate(self, key: str) -> defer.Deferred[str | None]:
        if not self.link.up:
            return defer.succeed(None)  # nobody elsewhere can be reached now
        d = self.link.commands.eval(_LOCATE, [PREFIX + "nick:" + key], [PREFIX])
        d.addCallback(lambda holder: None if holder is None else _text(holder))
        return d

    def alive(self, node: str) -> defer.Deferred[bool]:
        if not self.link.up:
            return defer.fail(ClusterUnavailable("the cluster cannot be reached just now"))
        d = self.link.commands.execute_command("EXISTS", PREFIX + "node:" + node)
        d.addCallback(lambda found: int(found) == 1)
        return d

    def _eval(self, script: str, key: str) -> defer.Deferred[Any]:
        keys = [PREFIX + "nick:" + key] if key else [PREFIX + "nick:"]
        return self.link.commands.eval(script, keys, [self.node, PREFIX])

    def _beat(self) -> Any:
        if not self.link.up:
            return None
        d = self.link.commands.execute_command(
            "SET", PREFIX + "node:" + self.node, "1", "PX", str(int(self.presenceTimeout * 1000))
        )
        d.addErrback(lambda f: None)  # the link logs the outage
        return d
