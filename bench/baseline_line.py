"""A bare Twisted line broadcast server: the floor chatserv's line protocol is compared with.

Each line received is sent to every other connected client. No nicknames, no rooms, no
limits. Usage: python bench/baseline_line.py PORT [--greet]

With --greet each new connection is sent one line ("hello") when it is accepted: the
connect storm's baseline (accept + greet), which a client takes as its sign of being in.
"""

import sys

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver


class Broadcast(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 65536

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self.factory.clients.add(self)
        if self.factory.greet:
            self.transport.write(b"hello\r\n")

    def connectionLost(self, reason=None):
        self.factory.clients.discard(self)

    def lineReceived(self, line):
        data = line + b"\r\n"
        for client in self.factory.clients:
            if client is not self:
                client.transport.write(data)


class BroadcastFactory(Factory):
    protocol = Broadcast
    noisy = False

    def __init__(self, greet=False):
        self.clients = set()
        self.greet = greet


def main():
    port = int(sys.argv[1])
    factory = BroadcastFactory(greet="--greet" in sys.argv[2:])
    reactor.listenTCP(port, factory, backlog=1024, interface="127.0.0.1")
    print(f"listening on {port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
