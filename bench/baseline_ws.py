"""A bare Autobahn broadcast server: the floor chatserv's websocket endpoint is compared with.

Each text message received is framed once (factory.prepareMessage) and sent to every other
open client with sendPreparedMessage. No nicknames, no rooms, no limits.
Usage: python bench/baseline_ws.py PORT
"""

import sys

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor


class Broadcast(WebSocketServerProtocol):
    def connectionMade(self):
        super().connectionMade()
        # Autobahn 26 means to set this but never does (it reads the option before copying
        # it from the factory); without it Nagle and delayed ACKs add up to 40 ms.
        self.transport.setTcpNoDelay(True)

    def onOpen(self):
        self.factory.clients.add(self)

    def onClose(self, wasClean, code, reason):
        self.factory.clients.discard(self)

    def onMessage(self, payload, isBinary):
        prepared = self.factory.prepareMessage(payload, isBinary)
        for client in self.factory.clients:
            if client is not self:
                client.sendPreparedMessage(prepared)


class BroadcastFactory(WebSocketServerFactory):
    protocol = Broadcast

    def __init__(self, url):
        super().__init__(url)
        self.clients = set()


def main():
    port = int(sys.argv[1])
    factory = BroadcastFactory(f"ws://127.0.0.1:{port}")
    reactor.listenTCP(port, factory, backlog=1024, interface="127.0.0.1")
    print(f"listening on {port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
