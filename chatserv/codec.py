"""Events as bytes between chatserv processes: a versioned, tagged JSON encoding.

What one node publishes on the cluster's bus another decodes, perhaps running another
chatserv version during a rolling upgrade. So every message carries the encoding's
version (C{"v"}), and every value that is a dataclass carries its type's name (C{"t"}).
Decoding is driven by the dataclass's field types: tuples, frozensets and nested
dataclasses come back as what they were, C{ts} floats as floats.

Compatibility within one version: a field the receiver does not know is ignored (a
newer sender added it), and a field the sender left out takes its default. A message of
another version, of an unknown type, or missing a field without a default is refused
with L{CodecError}: the receiver logs and drops it rather than guessing.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

from chatserv import events as ev

__all__ = ["VERSION", "CodecError", "decode", "encode", "register", "registered"]

VERSION = 1


class CodecError(ValueError):
    """Bytes that are not a message this version can read (said in one line)."""


_types: dict[str, type] = {}
_decoders: dict[type, Callable[[Any], Any]] = {}


def register(*classes: type) -> None:
    """Make dataclasses known by name to L{encode} and L{decode}."""
    for cls in classes:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls!r} is not a dataclass")
        known = _types.setdefault(cls.__name__, cls)
        if known is not cls:
            raise ValueError(f"two types are named {cls.__name__}")


def registered() -> dict[str, type]:
    """The types L{decode} reads, by name."""
    return dict(_types)


# -- encoding ------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """C{value} as JSON's types: dataclasses as tagged objects, tuples and sets as lists."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, frozenset):
        return sorted(_plain(item) for item in value)  # the same bytes for the same set
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if _types.get(name) is not type(value):
            raise CodecError(f"{name} is not a registered type")
        plain = {"t": name}
        for f in dataclasses.fields(value):
            plain[f.name] = _plain(getattr(value, f.name))
        return plain
    raise CodecError(f"cannot encode a {type(value).__name__}")


def encode(value: Any) -> bytes:
    """C{value} (a registered dataclass) as one versioned JSON message."""
    return json.dumps(
        {"v": VERSION, "m": _plain(value)}, ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")


# -- decoding --------------------------------------------------------------------------------


def decode(data: bytes | str) -> Any:
    """The value L{encode} made C{data} from.

    @raise CodecError: not JSON, another version, an unknown type, or a missing field.
    """
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CodecError(f"not a JSON message: {e}") from None
    if not isinstance(message, dict) or "m" not in message:
        raise CodecError("not a chatserv message")
    if message.get("v") != VERSION:
        raise CodecError(f"version {message.get('v')!r}, not {VERSION}")
    return _decodeTagged(message["m"])


def _decodeTagged(plain: Any) -> Any:
    if not isinstance(plain, dict) or not isinstance(plain.get("t"), str):
        raise CodecError("a value without its type")
    cls = _types.get(plain["t"])
    if cls is None:
        raise CodecError(f"unknown type {plain['t']!r}")
    return _decoderFor(cls)(plain)


def _decoderFor(hint: Any) -> Callable[[Any], Any]:
    decoder = _decoders.get(hint)
    if decoder is None:
        decoder = _decoders[hint] = _makeDecoder(hint)
    return decoder


def _makeDecoder(hint: Any) -> Callable[[Any], Any]:
    if hint is typing.Any:
        return lambda plain: plain
    if hint is object:  # any registered type: the value says which
        return _decodeTagged
    if hint in (str, bool):
        return _exactly(hint)
    if hint is int:
        return _exactly(int, notBool=True)
    if hint is float:
        return _number
    if hint is type(None):
        return _none
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _union([_decoderFor(arg) for arg in args], type(None) in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _sequence(tuple, _decoderFor(args[0]))
        return _fixedTuple([_decoderFor(arg) for arg in args])
    if origin is frozenset:
        return _sequence(frozenset, _decoderFor(args[0]))
    if dataclasses.is_dataclass(hint):
        return _dataclass(hint)
    raise TypeError(f"cannot decode {hint!r}")


def _exactly(kind: type, notBool: bool = False) -> Callable[[Any], Any]:
    def decode(plain: Any) -> Any:
        if not isinstance(plain, kind) or (notBool and isinstance(plain, bool)):
            raise CodecError(f"{plain!r} is not a {kind.__name__}")
        return plain

    return decode


def _number(plain: Any) -> float:
    if isinstance(plain, bool) or not isinstance(plain, (int, float)):
        raise CodecError(f"{plain!r} is not a number")
    return float(plain)


def _none(plain: Any) -> None:
    if plain is not None:
        raise CodecError(f"{plain!r} is not null")
    return None


def _union(decoders: list[Callable[[Any], Any]], optional: bool) -> Callable[[Any], Any]:
    def decode(plain: Any) -> Any:
        if plain is None and optional:
            return None
        for decoder in decoders:
            try:
                return decoder(plain)
            except CodecError:
                continue
        raise CodecError(f"{plain!r} is none of the types allowed")

    return decode


def _sequence(kind: Callable[[Iterable[Any]], Any], item: Callable[[Any], Any]):
    def decode(plain: Any) -> Any:
        if not isinstance(plain, list):
            raise CodecError(f"{plain!r} is not a list")
        return kind(item(x) for x in plain)

    return decode


def _fixedTuple(items: list[Callable[[Any], Any]]) -> Callable[[Any], tuple]:
    def decode(plain: Any) -> tuple:
        if not isinstance(plain, list) or len(plain) != len(items):
            raise CodecError(f"{plain!r} is not a list of {len(items)}")
        return tuple(item(x) for item, x in zip(items, plain, strict=True))

    return decode


def _dataclass(cls: type) -> Callable[[Any], Any]:
    hints = typing.get_type_hints(cls)
    fields = [
        (
            f.name,
            hints[f.name],
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)
        if f.init
    ]

    def decode(plain: Any) -> Any:
        if not isinstance(plain, dict) or plain.get("t") != cls.__name__:
            raise CodecError(f"not a {cls.__name__}")
        values = {}
        for name, hint, required in fields:
            if name in plain:
                values[name] = _decoderFor(hint)(plain[name])
            elif required:
                raise CodecError(f"{cls.__name__} without its {name}")
        return cls(**values)

    return decode


register(
    ev.Source,
    ev.HelpEntry,
    *typing.get_args(ev.Event),
)
