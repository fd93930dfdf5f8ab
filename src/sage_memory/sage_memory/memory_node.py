"""The memory node: SNARC salience, the sidecar readout and the experience store.

A thin adapter around ``sage_memory.memory.Memory``: messages go in as its inputs, a
timer calls its ``step`` (recall, score, write, store) and the result goes out as
``sage/salience`` and ``sage/features/memory``; the services call ``recall`` and
``save``.
"""

from __future__ import annotations

import os
import time

from sage_common.features import FeatureRejected
from sage_common.paths import inside, resolve_path, sage_home
from sage_common.validate import parse_json
from sage_ros.guard import GuardedNode
from sage_ros.common import (Diagnostics, Param, ParameterError, QOS_CHOICES, Throttle,
                             declare_parameters, make_feature, qos_from_name, run_node, stamp)
from sage_ros.image_conv import image_to_rgb

from sage_msgs.msg import Action, Feature, Salience
from sage_msgs.srv import Recall, Snapshot
from sensor_msgs.msg import Image
from std_msgs.msg import Float32, String

from sage_memory.memory import Memory, MemoryConfig
from sage_memory.store import StoreError

PARAMS = [
    Param('modalities', ['vision', 'audio', 'imu', 'cognition_main'],
          'modalities remembered, each read from sage/features/<name>'),
    Param('dims', [68, 18, 14, 384], 'feature length of each modality, same order'),
    Param('rate_hz', 10.0, 'steps scored per second', low=0.5, high=200.0),
    Param('store_path', 'memory/experiences.db', 'experience store (relative: under $SAGE_HOME)'),
    Param('sidecar_path', 'memory/sidecar.npz', 'sidecar snapshot (relative: under $SAGE_HOME)'),
    Param('snapshot_period_s', 60.0, 'save the sidecar this often (and on shutdown)', low=1.0,
          high=86400.0),
    Param('store_threshold', 0.0, 'store steps with salience at least this', low=0.0, high=1.0),
    Param('max_rows', 200000, 'experience store cap (the least salient go first)', low=100,
          high=100000000),
    Param('weights', [0.25, 0.2, 0.15, 0.25, 0.15], 'SNARC weights: surprise, novelty, '
          'arousal, reward, conflict'),
    Param('learn_weights', 0.0, 'learning rate of the SNARC weights from reward (0 = fixed)',
          low=0.0, high=1.0),
    Param('key_dim', 256, 'sidecar key size d', low=8, high=4096),
    Param('slots', 64, 'sidecar rank r (memories held)', low=4, high=4096),
    Param('forget', 1e-4, 'per-step fading of what sidecar slots hold (0 = never fade)',
          low=0.0, high=0.1),
    Param('label_timeout_s', 1.0, 'an action or teacher label older than this is not '
          'stored with a step (-1 instead)', low=0.01, high=3600.0),
    Param('qos_features', 'SENSOR_DATA', 'QoS of feature subscriptions', choices=QOS_CHOICES),
    Param('frame_period_s', 1.0, 'store the latest camera frame with a stored step at most '
          'this often, for the vision encoder to learn from at night (0 = no frames)',
          low=0.0, high=86400.0),
    Param('max_frames', 5000, 'stored frame cap (the least salient go first); a frame is 3 kB '
          '(the world) to 55 kB (a photograph) as PNG', low=10, high=10000000),
]


class MemoryNode(GuardedNode):
    """See the module doc."""

    def __init__(self, **kwargs):
        super().__init__(kwargs.pop('node_name', 'memory'), **kwargs)
        self.p = declare_parameters(self, PARAMS)
        names, dims = list(self.p['modalities']), [int(d) for d in self.p['dims']]
        if len(names) != len(dims) or not names:
            raise ParameterError(f'memory: modalities {names} and dims {dims} must have the '
                                 f'same, non-zero length')
        self.diag = Diagnostics(self)
        config = MemoryConfig(
            modalities=dict(zip(names, dims)), store_path=resolve_path(self.p['store_path']),
            sidecar_path=resolve_path(self.p['sidecar_path']),
            **{k: self.p[k] for k in ('store_threshold', 'max_rows', 'max_frames',
                                      'learn_weights', 'key_dim', 'slots', 'forget',
                                      'label_timeout_s', 'frame_period_s')},
            weights=tuple(self.p['weights']))
        try:
            self.memory = Memory(config, log=self.get_logger().info)
        except (ValueError, StoreError) as exc:
            raise ParameterError(f'memory: {exc}') from exc
        if self.memory.sidecar_note:
            self.get_logger().error(self.memory.sidecar_note)
            self.diag.set('WARN', self.memory.sidecar_note)
        qos = qos_from_name(self.p['qos_features'])
        for m in names:
            self.create_subscription(Feature, f'sage/features/{m}', self._on_feature, qos)
        self.create_subscription(Action, 'sage/action', self._on_action, 10)
        self.create_subscription(Action, 'sage/teacher_action', self._on_teacher, 10)
        self.create_subscription(Float32, 'sage/reward', self._on_reward, 10)
        self.create_subscription(String, 'sage/episode', self._on_episode, 10)
        if self.p['frame_period_s'] > 0:
            self.create_subscription(Image, 'camera/image_raw', self._on_image,
                                     qos_from_name('SENSOR_DATA'))
        self.pub_memory = self.create_publisher(Feature, 'sage/features/memory', 10)
        self.pub_salience = self.create_publisher(Salience, 'sage/salience', 10)
        self.create_service(Recall, 'sage/memory/recall', self._recall)
        self.create_service(Snapshot, 'sage/memory/snapshot', self._snapshot)
        self.rejected = self._errors_seen = 0
        self.save_error = ''
        self.last_snapshot = time.monotonic()
        self._rate_at, self._rate_writes = time.monotonic(), self.memory.sidecar.writes
        self._warn = Throttle(5.0)
        self._t0 = time.monotonic()
        self.create_timer(1.0 / self.p['rate_hz'], self._cycle)

    # the step's state, as tests and diagnostics read it
    store = property(lambda self: self.memory.store)
    sidecar = property(lambda self: self.memory.sidecar)
    stored = property(lambda self: self.memory.stored)
    frames_stored = property(lambda self: self.memory.frames_stored)

    def _reject(self, what: str) -> None:
        self.rejected += 1
        if self._warn():
            self.get_logger().warning(f'rejected {what} ({self.rejected} so far)')

    # ----------------------------------------------------------------- inputs
    def _on_feature(self, msg: Feature) -> None:
        try:
            self.memory.put_feature(msg.modality, msg.data, msg.trust,
                                    msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9,
                                    self.get_clock().now().nanoseconds * 1e-9)
        except FeatureRejected as exc:
            self._reject(f'feature: {exc}')

    def _on_image(self, msg: Image) -> None:
        self.memory.offer_frame(lambda: image_to_rgb(msg))   # converted only when stored

    def _on_action(self, msg: Action) -> None:
        self.memory.set_action(msg.discrete_id, time.monotonic())

    def _on_teacher(self, msg: Action) -> None:
        self.memory.set_teacher(msg.discrete_id, time.monotonic())

    def _on_reward(self, msg: Float32) -> None:
        try:
            self.memory.add_reward(msg.data)
        except ValueError as exc:
            self._reject(str(exc))

    def _on_episode(self, msg: String) -> None:
        try:
            self.memory.set_episode(int(parse_json(msg.data)['episode']) + 1)
        except (ValueError, KeyError, TypeError, OverflowError):
            self._reject(f'malformed sage/episode: {msg.data[:80]!r}')

    # ----------------------------------------------------------------- cycle
    def _cycle(self) -> None:
        now = self.get_clock().now().nanoseconds * 1e-9
        errors = self.memory.store_errors
        out = self.memory.step(now, time.monotonic())
        if out is None:
            return
        if self.memory.store_errors > errors and self._warn():
            self.get_logger().error(f'experience store write failed '
                                    f'({self.memory.store_errors} so far): '
                                    f'{self.memory.store_error}')
        s = out.scores
        sal = Salience(surprise=s.surprise, novelty=s.novelty, arousal=s.arousal,
                       reward=s.reward, conflict=s.conflict, total=s.total, stored=out.stored)
        sal.header.stamp = stamp(self)
        self.pub_salience.publish(sal)
        self.pub_memory.publish(make_feature(self, 'memory', out.recalled, out.confidence))
        if time.monotonic() - self.last_snapshot > self.p['snapshot_period_s']:
            try:
                self.save()
            except OSError as exc:
                self.last_snapshot = time.monotonic()     # retry next period, not every step
                self.save_error = str(exc)
                self.get_logger().error(f'cannot save the sidecar: {exc}')
        if self.memory.steps % max(1, int(self.p['rate_hz'])) == 0:
            self._diagnose()

    def _diagnose(self) -> None:
        t, mem = time.monotonic(), self.memory
        write_rate = (mem.sidecar.writes - self._rate_writes) / max(1e-6, t - self._rate_at)
        self._rate_at, self._rate_writes = t, mem.sidecar.writes
        level, message = 'OK', 'remembering'
        if mem.store_errors > self._errors_seen:
            level, message = 'ERROR', f'experience store write failed: {mem.store_error}'
        elif self.save_error:
            level, message = 'ERROR', f'cannot save the sidecar: {self.save_error}'
        self._errors_seen = mem.store_errors
        self.diag.set(level, message,
                      fill=mem.sidecar.fill, write_rate_hz=write_rate,
                      step_rate_hz=mem.steps / max(1e-6, t - self._t0),
                      sidecar_writes=mem.sidecar.writes, stored=mem.stored,
                      frames_stored=mem.frames_stored, frame_errors=mem.frame_errors,
                      store_errors=mem.store_errors, rejected_features=self.rejected,
                      last_snapshot_s=t - self.last_snapshot,
                      snapshot_path=mem.config.sidecar_path)

    # ----------------------------------------------------------------- services
    def _recall(self, request: Recall.Request, response: Recall.Response):
        try:
            recalled, confidence = self.memory.recall(request.query)
            response.recalled, response.score, response.success = \
                recalled.tolist(), confidence, True
        except ValueError as exc:
            response.success, response.message = False, f'bad query: {exc}'
        return response

    def _snapshot(self, request: Snapshot.Request, response: Snapshot.Response):
        path = request.path and os.path.join(resolve_path(request.path), 'sidecar.npz')
        if path and not inside(path, sage_home()):     # a request is not a command
            response.success = False
            response.message = f'refused: {request.path} is not under $SAGE_HOME {sage_home()}'
            return response
        try:
            response.path = self.save(path or None)
            response.success, response.message = True, 'saved'
        except OSError as exc:
            response.success, response.message = False, f'cannot save: {exc}'
        return response

    def save(self, path: str | None = None) -> str:
        """Save the sidecar now (atomically); return where."""
        out = self.memory.save(path)
        self.last_snapshot, self.save_error = time.monotonic(), ''
        return out

    def destroy_node(self):
        """Persist on shutdown, then close the store."""
        try:
            self.save()
        except OSError as exc:
            self.get_logger().error(f'could not save the sidecar on shutdown: {exc}')
        self.memory.close()
        return super().destroy_node()


def main(args=None):
    """Run the memory node."""
    raise SystemExit(run_node(MemoryNode, args))
