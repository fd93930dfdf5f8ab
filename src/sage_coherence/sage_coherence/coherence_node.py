"""The HRM coherence node: fuse trust-weighted features into actions.

A thin adapter: features go into a FeatureBuffer, a timer runs the coherence
runtime (sage_coherence.runtime) once per cycle within a time budget, and
the decision goes out as sage/action, sage/cmd_vel_raw (the proposal the safety
node limits into cmd_vel; zero while the inputs are stale) and sage/coherence.
New checkpoints announced on sage/checkpoint are loaded and checked off the
executor thread, then swapped in between cycles.

A lifecycle node: configure loads and checks the model (a missing or broken one
fails the transition with what to do), activate starts the subscriptions and
cycles, deactivate proposes zero and stops them.
"""

from __future__ import annotations

import threading
import time

from geometry_msgs.msg import TwistStamped
from rclpy.lifecycle import TransitionCallbackReturn
from sage_msgs.msg import Action, Checkpoint, Coherence, Feature
import torch

from sage_common.features import FeatureBuffer, FeatureRejected
from sage_coherence.runtime import BACKENDS, load_runtime, RuntimeRefused
from sage_common.checkpoints import superseded
from sage_common.paths import inside, resolve_path
from sage_ros.guard import GuardedLifecycleNode
from sage_ros.common import (Diagnostics, Param, ParameterError, QOS_CHOICES, Throttle,
                             declare_parameters, qos_from_name, seconds, stamp)


PARAMS = [
    Param('modalities', ['vision', 'audio', 'imu', 'cognition_main', 'places'],
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
    Param('watchdog_s', 0.5, 'propose zero when the newest feature is older than this (by '
          'its stamp)', low=0.05, high=10.0),
    Param('model_dir', 'models', 'checkpoint root holding coherence/latest (relative: under '
          '$SAGE_HOME)'),
    Param('backend', 'onnxruntime', 'inference backend (tensorrt falls back to onnxruntime, '
          'that to torch, when unavailable)',
          choices=BACKENDS),
    Param('device', 'cpu', 'torch device', choices=('cpu', 'cuda')),
    Param('threads', 1, 'CPU threads of the torch model: a batch-1 step gains nothing from '
          'more, and idle OpenMP threads spin on the cores the other nodes need', low=1,
          high=256),
    Param('frame_id', 'base_link', 'frame of cmd_vel'),
    Param('qos_features', 'SENSOR_DATA', 'QoS of feature subscriptions', choices=QOS_CHOICES),
]


class CoherenceNode(GuardedLifecycleNode):
    """Subscribe to features, run the coherence model per cycle, propose actions."""

    def __init__(self, **kwargs):
        super().__init__(kwargs.pop('node_name', 'coherence'), **kwargs)
        self.p = declare_parameters(self, PARAMS)
        trigger = self.p['trigger_modality']
        if trigger and trigger not in self.p['modalities']:
            raise ParameterError(f'coherence: trigger_modality {trigger!r} is not one of the '
                                 f'modalities {self.p["modalities"]}; use one of them or ""')
        self.runtime = self.diag = None
        self._io = []
        self.stale_reason = ''

    # ----------------------------------------------------------- lifecycle
    def on_configure(self, state) -> TransitionCallbackReturn:
        self.model_dir = resolve_path(self.p['model_dir'])
        torch.set_num_threads(self.p['threads'])
        try:
            self.runtime = load_runtime(self.model_dir, self.p['modalities'],
                                        self.p['backend'], self.p['device'])
        except Exception as exc:  # rclpy would swallow it: say why configure failed
            self.get_logger().error(
                f'cannot load a model from {self.model_dir}: {exc}. Install the shipped one '
                f'with `sage init`, or train one with `sage train coherence`.')
            return TransitionCallbackReturn.FAILURE
        self.buffer = FeatureBuffer(self.runtime.dims, self.p['stale_after_s'],
                                    self.p['drop_after_s'])
        for m in self.runtime.modalities:
            if any(m.startswith(s) for s in self.p['sticky_modalities']):
                drop = self.p['sticky_drop_after_s']
                self.buffer.set_lifetime(m, 0.25 * drop, drop)
        self.pub_action = self.create_lifecycle_publisher(Action, 'sage/action', 10)
        self.pub_cmd = self.create_lifecycle_publisher(TwistStamped, 'sage/cmd_vel_raw', 10)
        self.pub_coh = self.create_lifecycle_publisher(Coherence, 'sage/coherence', 10)
        self.diag = Diagnostics(self)
        self._warn = Throttle(5.0)
        self._cycles, self._lat_ms, self._t0 = 0, [], time.monotonic()
        self._pending = None      # a runtime loaded off-thread, swapped in by the next cycle
        self._reload_lock = threading.Lock()
        self._last_cycle = 0.0
        self.diag.set('OK', f'configured: model {self.runtime.version}, backend '
                      f'{self.runtime.backend}', backend=self.runtime.backend,
                      modalities=','.join(self.runtime.modalities))
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        qos = qos_from_name(self.p['qos_features'])
        self._io = [self.create_subscription(Feature, f'sage/features/{m}', self._on_feature,
                                             qos) for m in self.runtime.modalities]
        self._io.append(self.create_subscription(Checkpoint, 'sage/checkpoint',
                                                 self._on_checkpoint,
                                                 qos_from_name('LATCHED')))
        self._io.append(self.create_timer(1.0 / self.p['rate_hz'], self._on_timer))
        self._t0 = time.monotonic()
        self.diag.set('OK', f'running model {self.runtime.version}')
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_io()
        cmd = TwistStamped()            # the safety node would zero it anyway; say so at once
        cmd.header.stamp = stamp(self)
        cmd.header.frame_id = self.p['frame_id']
        self.pub_cmd.publish(cmd)
        self.diag.set('WARN', 'inactive: proposing no motion')
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._stop_io()
        for pub in (self.pub_action, self.pub_cmd, self.pub_coh):
            self.destroy_lifecycle_publisher(pub)
        self.diag.destroy()
        self.runtime = self.diag = self._pending = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._stop_io()
        return TransitionCallbackReturn.SUCCESS

    def _stop_io(self) -> None:
        for entity in self._io:
            if hasattr(entity, 'cancel'):
                self.destroy_timer(entity)
            else:
                self.destroy_subscription(entity)
        self._io = []

    # ----------------------------------------------------------- cycles
    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_feature(self, msg: Feature) -> None:
        t = seconds(msg.header.stamp)
        try:
            self.buffer.put(msg.modality, msg.data, msg.trust, t, self._now_s())
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

    def _on_checkpoint(self, msg: Checkpoint) -> None:
        if msg.model == 'coherence':
            threading.Thread(target=self._reload, args=(msg,), daemon=True).start()

    def _reload(self, msg: Checkpoint) -> None:
        with self._reload_lock:         # one at a time, in the order they were announced
            runtime = self.runtime
            if runtime is None:
                return                  # cleaned up meanwhile
            if superseded(msg.path):    # e.g. a latched re-delivery after a respawn
                self.get_logger().info(f'ignored announced {msg.path}: the store\'s latest '
                                       f'has moved on (running {runtime.version})')
                return
            try:
                if not inside(msg.path, self.model_dir):    # an announcement is not a command
                    raise RuntimeRefused(f'it is not under model_dir {self.model_dir}')
                new = load_runtime(msg.path, self.p['modalities'], self.p['backend'],
                                   self.p['device'], expect_sha256=msg.sha256 or None,
                                   like=runtime)
            except Exception as exc:  # RuntimeRefused, or anything a broken file raises
                self.get_logger().error(f'refused checkpoint {msg.path}: {exc}; '
                                        f'keeping {runtime.version}')
                if self.diag is not None:
                    self.diag.set('WARN', f'refused checkpoint: {exc}', refused=msg.path)
                return
            self._pending = new

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
        fresh = newest is not None and 0 <= now - newest < self.p['watchdog_s']
        self.stale_reason = '' if fresh else 'stale inputs'
        v, w = decision.continuous if fresh else (0.0, 0.0)
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
        level = 'WARN' if self.stale_reason else 'OK'
        message = (f'proposing zero: {self.stale_reason}' if level == 'WARN'
                   else f'running model {self.runtime.version}')
        self.diag.set(level, message, rate_hz=rate, latency_p50_ms=lat[len(lat) // 2],
                      latency_max_ms=lat[-1], rejected_features=self.buffer.rejected)
        self._lat_ms = self._lat_ms[-200:]


def main(args=None):
    """Run the coherence node."""
    from sage_ros.common import run_node
    raise SystemExit(run_node(CoherenceNode, args))
