"""Every refusal a client can get, with its stable code (the JSON "code" field).

Raising one of these anywhere in a request gives the client one error event and changes
nothing else; the connection stays.
"""

from __future__ import annotations


class ChatError(Exception):
    """A request the rules refuse; C{str()} is the message for the user."""

    code = "error"


# -- the rules (ChatService) --------------------------------------------------------------


class BadName(ChatError):
    code = "invalid-name"


class NickTaken(ChatError):
    code = "nick-taken"


class NickRequired(ChatError):
    code = "nick-required"


class NoSuchUser(ChatError):
    code = "no-such-user"


class NoSuchRoom(ChatError):
    code = "no-such-room"


class NotInRoom(ChatError):
    code = "not-in-room"


class EmptyText(ChatError):
    code = "empty-text"


class MessageTooLong(ChatError):
    code = "message-too-long"


class TooManyRooms(ChatError):
    code = "too-many-rooms"


# -- accounts and moderation -----------------------------------------------------------------


class NickRegistered(ChatError):
    code = "nick-registered"


class LoginFailed(ChatError):
    code = "login-failed"


class LoginThrottled(ChatError):
    code = "login-throttled"


class RegisterThrottled(ChatError):
    code = "register-throttled"


class NotLoggedIn(ChatError):
    code = "not-logged-in"


class WeakPassword(ChatError):
    code = "weak-password"


class NotPermitted(ChatError):
    code = "not-permitted"


class Banned(ChatError):
    code = "banned"


class Muted(ChatError):
    code = "muted"


class NotSanctioned(ChatError):
    code = "not-sanctioned"


class MailboxFull(ChatError):
    code = "mailbox-full"


# -- the command language --------------------------------------------------------------------


class UnknownCommand(ChatError):
    code = "unknown-command"


class UsageError(ChatError):
    code = "usage"


class BadRequest(ChatError):
    code = "bad-request"


# -- the wire ------------------------------------------------------------------------------


class LineTooLong(ChatError):
    code = "line-too-long"


class BadEncoding(ChatError):
    code = "bad-encoding"


class BinaryRefused(ChatError):
    code = "binary-frame"


# -- limits --------------------------------------------------------------------------------


class RateLimited(ChatError):
    code = "rate-limited"


class TooManyConnections(ChatError):
    code = "too-many-connections"


class Busy(ChatError):
    """Too many password hashes are waiting for a thread."""

    code = "busy"


# -- storage -------------------------------------------------------------------------------


class StoreUnavailable(ChatError):
    """The database did not answer in time (C{[storage] db_timeout}), or failed: what
    was asked cannot be done right now. The text says what, and for a write whether it
    may still happen."""

    code = "unavailable"


class ClusterUnavailable(StoreUnavailable):
    """A cluster's directory (Redis) cannot be reached: what needs every node's
    agreement, such as a new nickname, cannot be done right now."""
