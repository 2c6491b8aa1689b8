# No __init__.py in twisted/ or twisted/plugins/: this file joins Twisted's plugin namespace.
from twisted.application.service import ServiceMaker

chatserv = ServiceMaker(
    "chatserv", "chatserv.tap", "A multi-protocol chat server (line, websocket)", "chatserv"
)
