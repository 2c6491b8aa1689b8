"""Message ids: unique across node slots, increasing per writer, exact in JSON."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from chatserv.ids import EPOCH_MS, SLOTS, MessageIds, slotOf

NOON = 1_795_262_400.0  # 2026-11-21T12:00:00Z


def clockAt(seconds: float) -> Clock:
    clock = Clock()
    clock.advance(seconds)
    return clock


def test_ids_carry_the_time_and_the_slot_and_fit_in_a_javascript_number():
    ids = MessageIds(clockAt(NOON), slot=5)
    first, second = ids.next(), ids.next()
    assert first < second < 2**53
    assert first >> 12 == int(NOON * 1000) - EPOCH_MS  # the millisecond it was made
    assert slotOf(first) == slotOf(second) == 5
    assert ids.last == second


def test_two_slots_at_the_same_moment_never_make_the_same_id():
    clock = clockAt(NOON)
    a, b = MessageIds(clock, slot=0), MessageIds(clock, slot=1)
    made = [ids.next() for _ in range(500) for ids in (a, b)]
    assert len(set(made)) == len(made)


def test_a_burst_borrows_the_next_millisecond_and_the_clock_catches_up():
    clock = clockAt(NOON)
    ids = MessageIds(clock)
    burst = [ids.next() for _ in range(200)]  # more than 64 in one millisecond
    assert burst == sorted(set(burst))
    assert burst[-1] >> 12 == (int(NOON * 1000) - EPOCH_MS) + 3  # 200 = 3 * 64 + 8
    clock.advance(1)
    assert ids.next() >> 12 == int((NOON + 1) * 1000) - EPOCH_MS


def test_ids_go_on_above_the_newest_stored_one_whoever_made_it():
    clock = clockAt(NOON)
    stored = MessageIds(clock, slot=63).next()
    restarted = MessageIds(clock, slot=0, after=stored)  # same millisecond, lower slot
    assert restarted.next() > stored and restarted.last > stored
    assert MessageIds(clock, after=41).next() > 41  # ids of an older version's counter


def test_a_new_slot_starts_on_a_new_millisecond():
    ids = MessageIds(clockAt(NOON), slot=2)
    before = ids.next()
    ids.setSlot(7)
    after = ids.next()
    assert slotOf(after) == 7 and after >> 12 == (before >> 12) + 1
    with pytest.raises(ValueError):
        ids.setSlot(SLOTS)


@given(
    st.lists(st.floats(min_value=-5, max_value=5, allow_nan=False), max_size=300),
    st.integers(0, SLOTS - 1),
)
def test_ids_always_increase_whatever_the_clock_does(steps, slot):
    clock = clockAt(NOON)
    ids = MessageIds(clock, slot=slot)
    made = []
    for step in steps:
        clock.rightNow = max(0.0, clock.rightNow + step)  # also backwards
        made.append(ids.next())
    assert made == sorted(set(made))
    assert all(slotOf(i) == slot for i in made)
