"""The safety node: the only publisher of cmd_vel.

The coherence node proposes ``sage/cmd_vel_raw``; this node clamps it to the base's
velocity limits, limits its acceleration, holds zero while ``sage/estop`` is true, and
zeroes the command when proposals stop arriving for ``watchdog_s`` (the decision
process hung, crashed or was killed). The watchdog is a node of its own on the steady
clock, so neither a stuck model nor a paused simulation clock can silence it. A command
goes out as soon as a proposal arrives (no added latency); the watchdog timer publishes
zero at ``rate_hz`` while the input is stale.
"""

from __future__ import annotations

import math
import time

from geometry_msgs.msg import TwistStamped
from rclpy.clock import Clock, ClockType
from std_msgs.msg import Bool

from sage_ros.guard import GuardedNode
from sage_ros.common import (Diagnostics, Param, Throttle, declare_parameters, qos_from_name,
                             stamp)
from sage_safety.limits import CommandLimiter, Limits

PARAMS = [
    Param('watchdog_s', 0.5, 'zero cmd_vel when no proposal arrived for this long (steady '
          'clock)', low=0.05, high=10.0),
    Param('rate_hz', 20.0, 'how often the watchdog checks (and publishes zero when stale)',
          low=1.0, high=1000.0),
    Param('max_linear', 0.5, 'cmd_vel linear limit, m/s', low=0.0, high=10.0),
    Param('max_angular', 1.5, 'cmd_vel angular limit, rad/s', low=0.0, high=20.0),
    Param('max_linear_accel', 2.0, 'linear acceleration limit, m/s^2', low=0.01, high=100.0),
    Param('max_angular_accel', 8.0, 'angular acceleration limit, rad/s^2', low=0.01,
          high=100.0),
    Param('frame_id', 'base_link', 'frame of cmd_vel'),
]


class SafetyNode(GuardedNode):
    """sage/cmd_vel_raw + sage/estop -> cmd_vel (limited, slewed, watchdog-zeroed)."""

    own_executor = True      # in one process too: no other node's callback can delay it

    def __init__(self, **kwargs):
        super().__init__(kwargs.pop('node_name', 'safety'), **kwargs)
        self.p = declare_parameters(self, PARAMS)
        self.limiter = CommandLimiter(Limits(self.p['max_linear'], self.p['max_angular'],
                                             self.p['max_linear_accel'],
                                             self.p['max_angular_accel']))
        self.diag = Diagnostics(self)
        self.pub = self.create_publisher(TwistStamped, 'cmd_vel', 10)
        self.create_subscription(TwistStamped, 'sage/cmd_vel_raw', self._on_raw, 10)
        # latched: an e-stop pressed before a (re)start of this node still holds
        self.create_subscription(Bool, 'sage/estop', self._on_estop, qos_from_name('LATCHED'))
        self._raw = (0.0, 0.0)
        self._last_raw = -math.inf        # steady-clock time of the last proposal
        self.proposals = self.rejected = self.zeroed = 0
        self._warn = Throttle(5.0)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(1.0 / self.p['rate_hz'], self._watchdog, clock=steady)
        self.create_timer(1.0, self._report, clock=steady)
        self.diag.set('WARN', 'no command proposed yet: cmd_vel held at zero')

    def _on_raw(self, msg: TwistStamped) -> None:
        v, w = msg.twist.linear.x, msg.twist.angular.z
        if not (math.isfinite(v) and math.isfinite(w)):
            self.rejected += 1
            if self._warn():
                self.get_logger().warning('rejected a non-finite command proposal; '
                                          'holding zero until a valid one arrives')
            self._raw, self._last_raw = (0.0, 0.0), -math.inf
            self._send(0.0, 0.0, fresh=False)
            return
        self.proposals += 1
        self._raw, self._last_raw = (v, w), time.monotonic()
        self._send(v, w, fresh=True)

    def _on_estop(self, msg: Bool) -> None:
        self.limiter.estop = bool(msg.data)
        if self.limiter.estop:
            self._send(0.0, 0.0, fresh=False)      # stop now, not at the next check
            self.get_logger().warning('e-stop pressed: cmd_vel held at zero')

    def _watchdog(self) -> None:
        if self.limiter.estop or time.monotonic() - self._last_raw >= self.p['watchdog_s']:
            self._send(0.0, 0.0, fresh=False)

    def _send(self, v: float, w: float, fresh: bool) -> None:
        v, w = self.limiter.update(v, w, time.monotonic(), fresh)
        if not fresh or self.limiter.estop:
            self.zeroed += 1
        cmd = TwistStamped()
        cmd.header.stamp = stamp(self)
        cmd.header.frame_id = self.p['frame_id']
        cmd.twist.linear.x, cmd.twist.angular.z = float(v), float(w)
        self.pub.publish(cmd)

    @property
    def zeroed_reason(self) -> str:
        """Why cmd_vel is zero now ('' when commands flow)."""
        if self.limiter.estop:
            return 'e-stop'
        if time.monotonic() - self._last_raw >= self.p['watchdog_s']:
            return 'no command proposed' if self.proposals else 'no command proposed yet'
        return ''

    def _report(self) -> None:
        reason = self.zeroed_reason
        self.diag.set('WARN' if reason else 'OK',
                      f'cmd_vel held at zero: {reason}' if reason else 'commands flow',
                      estop=self.limiter.estop, proposals=self.proposals,
                      rejected=self.rejected, zeroed=self.zeroed,
                      last_linear=self.limiter.v, last_angular=self.limiter.w)


def main(args=None):
    """Run the safety node."""
    from sage_ros.common import run_node
    raise SystemExit(run_node(SafetyNode, args))
