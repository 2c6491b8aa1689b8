"""chatserv: a multi-protocol chat server built on Twisted."""

__version__ = "0.1.0"
