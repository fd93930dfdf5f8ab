"""Days of the built-in world: the schedule of seeds and the sim clock in local time."""

import datetime as dt

import pytest
from sage_sim.days import clock_ns, Days, next_at, parse_hhmm


def test_each_day_opens_with_the_same_morning_suite_then_works_on_new_seeds():
    days = Days(seed=1000, day_episodes=5, morning_episodes=2, morning_seed=10_000)
    schedule = [days.episode(k) for k in range(10)]
    assert schedule[:5] == [(0, 'morning', 10_000), (0, 'morning', 10_001),
                            (0, 'work', 1000), (0, 'work', 1001), (0, 'work', 1002)]
    assert schedule[5:] == [(1, 'morning', 10_000), (1, 'morning', 10_001),
                            (1, 'work', 1003), (1, 'work', 1004), (1, 'work', 1005)]
    assert [k for k in range(10) if days.ends_day(k)] == [4, 9]
    plain = Days(seed=7)                  # no days: episode k is seed + k, never a night
    assert [plain.episode(k) for k in range(3)] == [(0, '', 7), (0, '', 8), (0, '', 9)]
    assert not any(plain.ends_day(k) for k in range(50))


def test_the_clock_reads_local_time_and_moves_only_forward():
    morning = clock_ns(0, '07:00')
    assert dt.datetime.fromtimestamp(morning / 1e9) == dt.datetime(2000, 1, 1, 7, 0)
    night = next_at(morning + 3600 * 10**9, '01:00')       # after a day's work at 08:00
    assert dt.datetime.fromtimestamp(night / 1e9) == dt.datetime(2000, 1, 2, 1, 0)
    wake = next_at(night, '07:00')
    assert dt.datetime.fromtimestamp(wake / 1e9) == dt.datetime(2000, 1, 2, 7, 0)
    assert next_at(wake, '07:00') - wake == 24 * 3600 * 10**9   # never now: the next one
    with pytest.raises(ValueError, match='HH:MM'):
        parse_hhmm('7 am')
