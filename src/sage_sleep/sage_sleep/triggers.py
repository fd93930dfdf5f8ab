"""When to sleep: a nightly window in local time, and idleness."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sage_sim.days import parse_hhmm


@dataclass
class NightWindow:
    """A daily window in local time; it may cross midnight (e.g. 23:00-05:00)."""

    start: dt.time
    end: dt.time

    @classmethod
    def parse(cls, start: str, end: str) -> 'NightWindow':
        """Build from two 'HH:MM' strings."""
        return cls(parse_hhmm(start), parse_hhmm(end))

    def contains(self, when: dt.datetime) -> bool:
        """Return True if local time ``when`` lies in the window."""
        t = when.time()
        if self.start == self.end:
            return False  # an empty window disables the trigger
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def seconds_left(self, when: dt.datetime) -> float:
        """Return the seconds from ``when`` to the window's next end."""
        end = dt.datetime.combine(when.date(), self.end, when.tzinfo)
        if end <= when:
            end += dt.timedelta(days=1)
        return (end - when).total_seconds()


class IdleDetector:
    """The robot is idle when salience and feature activity stay low for a while.

    ``observe(now_s, salience, activity)`` is fed at any rate; ``idle(now_s)`` is
    True once both stayed under their thresholds for ``idle_for_s`` seconds.
    ``active(now_s)`` says the robot just became active (for yielding a sleep).
    """

    def __init__(self, idle_for_s: float, salience_threshold: float,
                 activity_threshold: float):
        self.idle_for_s = idle_for_s
        self.salience_threshold = salience_threshold
        self.activity_threshold = activity_threshold
        self._quiet_since: float | None = None
        self._last_busy_s: float | None = None

    def observe(self, now_s: float, salience: float = 0.0, activity: float = 0.0) -> None:
        """Record one observation of salience (0..1) and activity (e.g. |cmd| or features/s)."""
        busy = salience > self.salience_threshold or activity > self.activity_threshold
        if busy:
            self._quiet_since, self._last_busy_s = None, now_s
        elif self._quiet_since is None:
            self._quiet_since = now_s

    def idle(self, now_s: float) -> bool:
        """Return True when quiet for at least idle_for_s."""
        return self._quiet_since is not None and now_s - self._quiet_since >= self.idle_for_s

    def busy_since(self, t_s: float) -> bool:
        """Return True if anything busy was observed after time ``t_s``."""
        return self._last_busy_s is not None and self._last_busy_s > t_s
