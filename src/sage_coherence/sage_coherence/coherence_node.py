"""The HRM coherence node: fuse trust-weighted features into actions.

A thin adapter: features go into a FeatureBuffer, a timer runs the coherence
runtime (sage_coherence.runtime) once per cycle within a time budget, and
the decision goes out as sage/action, cmd_vel (limited, watchdog-zeroed) and
sage/coherence. New checkpoints announced on sage/checkpoint are loaded and
checked off the executor thread, then swapped in between cycles.
"""

from __future__ import annotations

import threading
import time

from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from sage_msgs.msg import Action, Checkpoint, Coherence, Feature
from std_msgs.msg import Bool
import torch

from sage_common.features import FeatureBuffer, FeatureRejected
from sage_coherence.runtime import BACKENDS, load_runtime, RuntimeRefused
from sage_safety.limits import CommandLimiter, Limits
from sage_common.paths import resolve_path
from sage_ros.common import (Diagnostics, Param, ParameterError, QOS_CHOICES, Throttle,
                             declare_parameters, qos_from_name, stamp)


PARAMS = [
    Param('modalities', ['vision', 'audio', 'imu', 'cognition_main'],
          'modalities fused, in token order; each is read from sage/features/<name>'),
    Param('rate_hz', 10.0, 'control cycles per second', low=0.5, high=200.0),
    Param('trigger_modality', '', 'if set, a cycle runs on each new feature of this modality '
          '(lowest latency, one model step per observation as in training); the timer then '
          'runs a cycle only when it has been silent for 2 periods'),
    Param('budget_ms', 25.0, 'compute budget of one cycle (ACT stops thinking when spent)',
          low=1.0, high=1000.0),
    Param('stale_after_s', 0.5, 'features older than this lose trust linearly', low=0.01,
          high=60.0),
    Param('drop_after_s', 2.0, 'features older than this are ignored', low=0.02, high=3600.0),
    Param('sticky_modalities', ['cognition'],
          'modality prefixes whose features stay valid for sticky_drop_after_s (plans, goals)'),
    Param('sticky_drop_after_s', 120.0, 'lifetime of sticky modalities', low=1.0,
          high=86400.0),
    Param('watchdog_s', 0.5, 'zero cmd_vel when no feature arrived for this long', low=0.05,
          high=10.0),
    Param('model_dir', 'models', 'checkpoint root holding coherence/latest (relative: under '
          '$SAGE_HOME)'),
    Param('backend', 'torch', 'inference backend (falls back in this order when unavailable)',
          choices=BACKENDS),
    Param('device', 'cpu', 'torch device', choices=('cpu', 'cuda')),
    Param('threads', 1, 'CPU threads of the torch model: a batch-1 step gains nothing from '
          'more, and idle OpenMP threads spin on the cores the other nodes need', low=1,
          high=256),
    Param('max_linear', 0.5, 'cmd_vel linear limit, m/s', low=0.0, high=10.0),
    Param('max_angular', 1.5, 'cmd_vel angular limit, rad/s', low=0.0, high=20.0),
    Param('max_linear_accel', 2.0, 'linear acceleration limit, m/s^2', low=0.01, high=100.0),
    Param('max_angular_accel', 8.0, 'angular acceleration limit, rad/s^2', low=0.01,
          high=100.0),
    Param('frame_id', 'base_link', 'frame of cmd_vel'),
    Param('qos_features', 'SENSOR_DATA', 'QoS of feature subscriptions', choices=QOS_CHOICES),
]


class CoherenceNode(Node):
    """Subscribe to features, run the coherence model per cycle, publish actions."""

    def __init__(self, **kwargs):
        super().__init__(kwargs.pop('node_name', 'coherence'), **kwargs)
        self.p = declare_parameters(self, PARAMS)
        trigger = self.p['trigger_modality']
        if trigger and trigger not in self.p['modalities']:
            raise ParameterError(f'coherence: trigger_modality {trigger!r} is not one of the '
                                 f'modalities {self.p["modalities"]}; use one of them or ""')
        self.diag = Diagnostics(self)
        self.model_dir = resolve_path(self.p['model_dir'])
        torch.set_num_threads(self.p['threads'])
        try:
            self.runtime = load_runtime(self.model_dir, self.p['modalities'],
                                        self.p['backend'], self.p['device'])
        except RuntimeRefused as exc:
            raise ParameterError(f'coherence: cannot load a model from {self.model_dir}: {exc}. '
                                 f'Install the shipped one with `sage init`, or train one with '
                                 f'`sage train coherence`.') from exc
        modalities = self.runtime.modalities
        self.buffer = FeatureBuffer(self.runtime.dims, self.p['stale_after_s'],
                                    self.p['drop_after_s'])
        for m in modalities:
            if any(m.startswith(s) for s in self.p['sticky_modalities']):
                drop = self.p['sticky_drop_after_s']
                self.buffer.set_lifetime(m, 0.25 * drop, drop)
        self.limiter = CommandLimiter(Limits(self.p['max_linear'], self.p['max_angular'],
                                             self.p['max_linear_accel'],
                                             self.p['max_angular_accel']))
        qos = qos_from_name(self.p['qos_features'])
        for m in modalities:
            self.create_subscription(Feature, f'sage/features/{m}', self._on_feature, qos)
        self.create_subscription(Bool, 'sage/estop', self._on_estop, 10)
        self.create_subscription(Checkpoint, 'sage/checkpoint', self._on_checkpoint,
                                 qos_from_name('LATCHED'))
        self.pub_action = self.create_publisher(Action, 'sage/action', 10)
        self.pub_cmd = self.create_publisher(TwistStamped, 'cmd_vel', 10)
        self.pub_coh = self.create_publisher(Coherence, 'sage/coherence', 10)
        self._warn = Throttle(5.0)
        self._cycles, self._lat_ms, self._t0 = 0, [], time.monotonic()
        self._pending = None      # a runtime loaded off-thread, swapped in by the next cycle
        self._last_cycle = 0.0
        self.create_timer(1.0 / self.p['rate_hz'], self._on_timer)
        self.diag.set('OK', f'model {self.runtime.version}, backend {self.runtime.backend}',
                      backend=self.runtime.backend, modalities=','.join(modalities))

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_feature(self, msg: Feature) -> None:
        t = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        try:
            self.buffer.put(msg.modality, msg.data, msg.trust, t)
        except FeatureRejected as exc:
            if self._warn():
                self.get_logger().warning(f'dropped feature: {exc}')
            return
        if msg.modality == self.p['trigger_modality']:
            self._cycle()

    def _on_timer(self) -> None:
        if self.p['trigger_modality'] and \
                time.monotonic() - self._last_cycle < 2.0 / self.p['rate_hz']:
            return                 # the trigger modality drives the cycles
        self._cycle()

    def _on_estop(self, msg: Bool) -> None:
        self.limiter.estop = bool(msg.data)

    def _on_checkpoint(self, msg: Checkpoint) -> None:
        if msg.model == 'coherence':
            threading.Thread(target=self._reload, args=(msg,), daemon=True).start()

    def _reload(self, msg: Checkpoint) -> None:
        try:
            runtime = load_runtime(msg.path, self.p['modalities'], self.p['backend'],
                                   self.p['device'], expect_sha256=msg.sha256 or None,
                                   like=self.runtime)
        except RuntimeRefused as exc:
            self.get_logger().error(f'refused checkpoint {msg.path}: {exc}; '
                                    f'keeping {self.runtime.version}')
            self.diag.set('WARN', f'refused checkpoint: {exc}', refused=msg.path)
            return
        self._pending = runtime

    def _cycle(self) -> None:
        self._last_cycle = time.monotonic()
        if self._pending is not None:  # swap between cycles: never a partial model
            self.runtime, self._pending = self._pending, None
            self.get_logger().info(f'hot-reloaded coherence model {self.runtime.version}')
            self.diag.set('OK', f'model {self.runtime.version}', version=self.runtime.version)
        now = self._now_s()
        vectors, trust, age = self.buffer.snapshot(now)
        decision = self.runtime.step(vectors, trust, age, budget_ms=self.p['budget_ms'])
        # freshness by the sensors' stamps, not arrival: a late burst of old data is still stale
        newest = self.buffer.newest_stamp()
        fresh = newest is not None and now - newest < self.p['watchdog_s']
        v, w = self.limiter.update(decision.continuous[0], decision.continuous[1], now, fresh)
        header_stamp = stamp(self)
        self._publish(decision, v, w, header_stamp, trust, age)
        self._cycles += 1
        self._lat_ms.append(decision.latency_ms)
        if self._cycles % max(1, int(self.p['rate_hz'])) == 0:
            self._report()

    def _publish(self, d, v, w, header_stamp, trust, age) -> None:
        action = Action(discrete_id=d.action_id, discrete_name=d.action_name,
                        continuous=[float(v), float(w)], confidence=d.confidence,
                        source='coherence')
        action.header.stamp = header_stamp
        action.header.frame_id = self.p['frame_id']
        self.pub_action.publish(action)
        cmd = TwistStamped()
        cmd.header = action.header
        cmd.twist.linear.x, cmd.twist.angular.z = float(v), float(w)
        self.pub_cmd.publish(cmd)
        coh = Coherence(score=d.score, modalities=list(self.runtime.modalities),
                        trust_in=[float(x) for x in trust],
                        trust_used=[float(x) for x in d.trust_used],
                        age_s=[float(x) for x in age], act_steps=d.act_steps,
                        budget_exhausted=d.budget_exhausted, latency_ms=d.latency_ms,
                        model_version=str(self.runtime.version))
        coh.header.stamp = header_stamp
        self.pub_coh.publish(coh)

    def _report(self) -> None:
        lat = sorted(self._lat_ms)
        rate = self._cycles / max(1e-6, time.monotonic() - self._t0)
        level = 'WARN' if self.limiter.zeroed_reason else 'OK'
        message = (f'cmd_vel zeroed: {self.limiter.zeroed_reason}' if level == 'WARN'
                   else f'running model {self.runtime.version}')
        self.diag.set(level, message, rate_hz=rate, latency_p50_ms=lat[len(lat) // 2],
                      latency_max_ms=lat[-1], rejected_features=self.buffer.rejected)
        self._lat_ms = self._lat_ms[-200:]


def main(args=None):
    """Run the coherence node."""
    from sage_ros.common import run_node
    raise SystemExit(run_node(CoherenceNode, args))
