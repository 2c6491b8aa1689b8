"""The seams between the chat domain and everything around it."""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IWire(Interface):
    """One way of putting events on a connection (line text, JSON frames, ...).

    Clients that share a wire object share rendered payloads: a fan-out renders an event
    once per wire, not once per recipient.
    """

    def render(event):
        """Return the payload that L{IChatClient.send} of this wire's clients accepts."""

    def renderTo(event, nick):
        """The payload of C{event} for one recipient, C{nick} (None before it has one):
        replies and errors to one connection, which a wire may address to it (IRC's
        numerics name the recipient). Fan-outs use L{render}, once per wire."""


class IChatClient(Interface):
    """What the domain needs of a connected client; protocols provide it."""

    wire = Attribute("The IWire that renders events for this client.")
    echo = Attribute("True if the client wants copies of its own room messages.")
    address = Attribute("The peer, as text for logs, e.g. 'tcp 127.0.0.1:50312'.")
    host = Attribute("The peer's IP address, e.g. '127.0.0.1': bans and throttles use it.")

    def send(payload):
        """Queue a payload rendered by C{wire} for this client. Must not raise."""

    def close(reason):
        """Disconnect the client; C{reason} (text) may be shown to it first."""


class IEventBus(Interface):
    """Where events go to reach their recipients, on this process and on the others of
    a cluster. Rooms and users are named by their case-folded keys.
    """

    def publish(event, rooms=(), users=(), skip=None):
        """Hand C{event} for the members of C{rooms} and for C{users} (each once) to
        every receiver, on every process. C{skip} is a user key not to deliver to (a
        sender that wants no echo). This process's receivers get it before this returns.
        """

    def subscribe(receiver):
        """Call C{receiver(event, rooms, users, skip, node)} for every event published
        (rooms and users as tuples; C{node} names the process that published it, C{None}
        for this one)."""


class IDirectory(Interface):
    """Who holds which nickname across the nodes of a cluster (keys are case-folded).
    A single node has none: its own dictionary of users is the whole truth."""

    node = Attribute("This node's name.")

    def claim(key):
        """Deferred C{None} once this node holds C{key}, or the name of the node that
        does. Fails with L{chatserv.errors.ClusterUnavailable} when it cannot tell."""

    def take(key):
        """Deferred C{None} once this node holds C{key}, whoever held it (a login: the
        account's owner takes their name back)."""

    def release(key):
        """Let go of C{key} (no answer awaited)."""

    def locate(key):
        """Deferred name of the node where C{key} is connected, or C{None}."""

    def alive(node):
        """Deferred: whether node C{node}'s heartbeat is current."""

    def serve(localKeys, lost):
        """C{localKeys()} lists the names this node's users hold, claimed again when the
        cluster comes back after an outage; C{lost(key, holder)} is called for one that
        another node gave out meanwhile."""
