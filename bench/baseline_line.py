"""A bare Twisted line broadcast server: the floor chatserv's line protocol is compared with.

Each line received is sent to every other connected client. No nicknames, no rooms, no
limits. Usage: python bench/baseline_line.py PORT
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

    def __init__(self):
        self.clients = set()


def main():
    port = int(sys.argv[1])
    reactor.listenTCP(port, BroadcastFactory(), backlog=1024, interface="127.0.0.1")
    print(f"listening on {port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
