"""chatserv-client: a terminal chat client for chatserv's line and websocket JSON wires.

The logic (recognising server output, colours, scroll-back, session state, back-off)
lives in plain modules that need no terminal; L{chatserv.client.app} is the only one that
draws.
"""
