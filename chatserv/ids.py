"""Message ids that any number of writers hand out without asking each other.

An id is an integer below 2**53, so that JSON and JavaScript keep it exact. From the
top: the milliseconds since 2026-01-01 UTC (41 bits: until 2095), the writer's node
slot (6 bits: up to 64 processes writing to one database at once), and a sequence
within the millisecond (6 bits). Two writers with different slots never make the same
id, and one writer's ids always increase, so history ordered by id is ordered by time
(to within the clocks' agreement between nodes) and per sender exactly.

A writer that hands out more than 64 ids in one millisecond, or whose clock goes back,
borrows the next millisecond: its ids stay unique and increasing, and run ahead of its
clock until the clock catches up. Ids stored by older versions (a counter from 1) are
all below every id made here.

The slot comes from the store (L{chatserv.store.State.node}), which leases it in the
database; see L{chatserv.store.nodes}.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SLOT_BITS = 6
SEQUENCE_BITS = 6
SLOTS = 1 << SLOT_BITS
_SEQUENCE_MAX = (1 << SEQUENCE_BITS) - 1
_TICK_SHIFT = SLOT_BITS + SEQUENCE_BITS


def slotOf(messageId: int) -> int:
    """The node slot that made C{messageId} (0 for ids from older versions' counter)."""
    return (messageId >> SEQUENCE_BITS) & (SLOTS - 1)


class MessageIds:
    """Hands out increasing ids for node slot C{slot}, each above C{after} (the newest
    id stored, by any writer: a restarted node never repeats one)."""

    def __init__(self, clock: IReactorTime, slot: int = 0, after: int = 0) -> None:
        self._clock = clock
        self.setSlot(slot)
        self.last = after  # the newest id handed out, or C{after}
        # The next id moves on to a later millisecond than C{after}'s.
        self._tick = after >> _TICK_SHIFT
        self._sequence = _SEQUENCE_MAX

    def setSlot(self, slot: int) -> None:
        """Make ids with C{slot}. A new slot (the store lost its lease and took another)
        applies from the next millisecond on."""
        if not 0 <= slot < SLOTS:
            raise ValueError(f"node slot {slot} is not in 0..{SLOTS - 1}")
        self.slot = slot
        self._slotBits = slot << SEQUENCE_BITS
        self._sequence = _SEQUENCE_MAX

    def next(self) -> int:
        tick = int(self._clock.seconds() * 1000) - EPOCH_MS
        if tick > self._tick:
            self._tick = tick
            self._sequence = 0
        elif self._sequence < _SEQUENCE_MAX:
            self._sequence += 1
        else:
            self._tick += 1
            self._sequence = 0
        self.last = messageId = (self._tick << _TICK_SHIFT) | self._slotBits | self._sequence
        return messageId
