"""Command limits and the watchdog between the model and the robot base."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Limits:
    """Velocity and acceleration limits of the base (REP-103: m/s, rad/s)."""

    max_linear: float = 0.5
    max_angular: float = 1.5
    max_linear_accel: float = 1.0     # m/s^2
    max_angular_accel: float = 4.0    # rad/s^2


class CommandLimiter:
    """Clamp commands to limits and slew rates; zero them when inputs are stale or e-stopped.

    ``update(v, w, now_s, inputs_fresh)`` returns the command to send. A stale
    input or an active e-stop sends zero at once (no slew: stopping must not
    wait for a ramp).
    """

    def __init__(self, limits: Limits):
        self.limits = limits
        self.v = self.w = 0.0
        self._last_s: float | None = None
        self.estop = False
        self.zeroed_reason = ''

    def update(self, v: float, w: float, now_s: float, inputs_fresh: bool) -> tuple[float, float]:
        """Return the limited (v, w) to publish now."""
        dt = 0.0 if self._last_s is None else max(0.0, now_s - self._last_s)
        self._last_s = now_s
        if self.estop or not inputs_fresh or not (math.isfinite(v) and math.isfinite(w)):
            self.zeroed_reason = ('e-stop' if self.estop else
                                  'stale inputs' if not inputs_fresh else 'non-finite command')
            self.v = self.w = 0.0
            return 0.0, 0.0
        self.zeroed_reason = ''
        lim = self.limits
        v = min(lim.max_linear, max(-lim.max_linear, v))
        w = min(lim.max_angular, max(-lim.max_angular, w))
        self.v = _slew(self.v, v, lim.max_linear_accel * dt)     # the first call: from rest
        self.w = _slew(self.w, w, lim.max_angular_accel * dt)
        return self.v, self.w


def _slew(current: float, target: float, step: float) -> float:
    return current + max(-step, min(step, target - current))
