"""Days and nights of the built-in world: which episode runs when, on what sim clock.

A day is ``day_episodes`` episodes: first the morning suite (the same seeds every
day, so mornings compare), then work on seeds not seen before. After each day the
world's clock jumps to the night, when the robot sleeps, and after the night to
the next morning. Sim time is local time on day 1 of 2000-01-01 onwards, so a
node's clock (use_sim_time) reads 07:00 in the morning and 01:00 at night.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

EPOCH = dt.date(2000, 1, 1)


def parse_hhmm(text: str) -> dt.time:
    """Parse 'HH:MM' (24 h) or raise ValueError with the expected format."""
    try:
        hours, minutes = (int(x) for x in text.split(':'))
        return dt.time(hours, minutes)
    except (ValueError, TypeError) as exc:
        raise ValueError(f'expected a local time as HH:MM (24 h), got {text!r}') from exc


def clock_ns(day: int, at: str) -> int:
    """Return sim nanoseconds of local time ``at`` on ``day`` (0: 2000-01-01)."""
    when = dt.datetime.combine(EPOCH + dt.timedelta(days=day), parse_hhmm(at))
    return int(round(when.timestamp() * 1e9))        # naive: local time, as nodes read it


def next_at(now_ns: int, at: str) -> int:
    """Return sim nanoseconds of the first local time ``at`` after ``now_ns``."""
    day = (dt.datetime.fromtimestamp(now_ns / 1e9).date() - EPOCH).days
    return next(t for t in (clock_ns(day + k, at) for k in (0, 1, 2)) if t > now_ns)


@dataclass(frozen=True)
class Days:
    """The episode schedule; ``day_episodes`` 0 means no days: episode k is ``seed + k``."""

    seed: int = 0
    day_episodes: int = 0
    morning_episodes: int = 0
    morning_seed: int = 0

    def episode(self, k: int) -> tuple[int, str, int]:
        """Return (day, phase, seed) of episode ``k``; phase 'morning', 'work' or ''."""
        if not self.day_episodes:
            return 0, '', self.seed + k
        day, j = divmod(k, self.day_episodes)
        if j < self.morning_episodes:
            return day, 'morning', self.morning_seed + j
        work = self.day_episodes - self.morning_episodes
        return day, 'work', self.seed + day * work + j - self.morning_episodes

    def ends_day(self, k: int) -> bool:
        """Return True if episode ``k`` is the last of its day."""
        return bool(self.day_episodes) and (k + 1) % self.day_episodes == 0
