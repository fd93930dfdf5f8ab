"""The memory node: SNARC salience, the sidecar readout and the experience store.

A thin adapter around sage_memory.snarc, .sidecar and .store. Each cycle it
takes the newest feature of every modality, recalls from the sidecar, scores
the step (SNARC), writes the sidecar gated by salience, stores salient steps
(with the action taken, the teacher's action and the reward, and now and then
the camera frame) for the sleep node, and publishes the readout and the
salience.
"""

from __future__ import annotations

import glob
import json
import os
import sqlite3
import time

import numpy as np
from rclpy.node import Node
from sage_common.features import FeatureBuffer, FeatureRejected
from sage_ros.image_conv import ImageError, image_to_rgb
from sage_common.paths import resolve_path
from sage_ros.common import (Diagnostics, Param, ParameterError, QOS_CHOICES, Throttle,
                             declare_parameters, make_feature, qos_from_name, run_node, stamp)

from sage_msgs.msg import Action, Feature, Salience
from sage_msgs.srv import Recall, Snapshot
from sensor_msgs.msg import Image
from std_msgs.msg import Float32, String

from sage_memory.sidecar import Sidecar, SidecarError
from sage_memory.snarc import Snarc
from sage_memory.store import ExperienceStore, Step, StoreError

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


class MemoryNode(Node):
    """See the module doc."""

    def __init__(self, **kwargs):
        super().__init__(kwargs.pop('node_name', 'memory'), **kwargs)
        self.p = declare_parameters(self, PARAMS)
        names, dims = list(self.p['modalities']), [int(d) for d in self.p['dims']]
        if len(names) != len(dims) or not names:
            raise ParameterError(f'memory: modalities {names} and dims {dims} must have the '
                                 f'same, non-zero length')
        self.diag = Diagnostics(self)
        self.layout = dict(zip(names, dims))
        try:
            self.snarc = Snarc(dims, self.p['weights'], weight_lr=self.p['learn_weights'])
            self.store = ExperienceStore(resolve_path(self.p['store_path']), self.layout,
                                         max_rows=self.p['max_rows'],
                                         max_frames=self.p['max_frames'])
        except (ValueError, StoreError) as exc:
            raise ParameterError(f'memory: {exc}') from exc
        self.sidecar_path = resolve_path(self.p['sidecar_path'])
        self.sidecar = self._load_sidecar(sum(dims))
        self.buffer = FeatureBuffer(self.layout, 0.5, 2.0)
        for m in names:
            if m.startswith('cognition'):
                self.buffer.set_lifetime(m, 30.0, 120.0)     # a plan stays valid
        qos = qos_from_name(self.p['qos_features'])
        for m in names:
            self.create_subscription(Feature, f'sage/features/{m}', self._on_feature, qos)
        self.create_subscription(Action, 'sage/action', self._on_action, 10)
        self.create_subscription(Action, 'sage/teacher_action', self._on_teacher, 10)
        self.create_subscription(Float32, 'sage/reward', self._on_reward, 10)
        self.create_subscription(String, 'sage/episode', self._on_episode, 10)
        self.frame, self.frames_stored, self.frame_at = None, 0, -float('inf')
        if self.p['frame_period_s'] > 0:
            self.create_subscription(Image, 'camera/image_raw', self._on_image,
                                     qos_from_name('SENSOR_DATA'))
        self.pub_memory = self.create_publisher(Feature, 'sage/features/memory', 10)
        self.pub_salience = self.create_publisher(Salience, 'sage/salience', 10)
        self.create_service(Recall, 'sage/memory/recall', self._recall)
        self.create_service(Snapshot, 'sage/memory/snapshot', self._snapshot)
        self.action = self.teacher = -1
        self.action_at = self.teacher_at = -float('inf')
        self.reward, self.episode = 0.0, 0
        self.rejected = self.stored = self.steps = self.store_errors = self._errors_seen = 0
        self.store_error = self.save_error = ''
        self.last_snapshot = time.monotonic()
        self._rate_at, self._rate_writes = time.monotonic(), self.sidecar.writes
        self._warn = Throttle(5.0)
        self._t0 = time.monotonic()
        self.create_timer(1.0 / self.p['rate_hz'], self._cycle)

    def _load_sidecar(self, input_dim: int) -> Sidecar:
        for stale in glob.glob(glob.escape(self.sidecar_path) + '.tmp-*'):
            os.remove(stale)                             # a save cut short by a kill
        if os.path.exists(self.sidecar_path):
            try:
                mem = Sidecar.load(self.sidecar_path)
                if mem.input_dim != input_dim:
                    raise SidecarError(f'it holds {mem.input_dim}-d inputs, the node is '
                                       f'configured for {input_dim}')
                self.get_logger().info(f'loaded sidecar ({mem.writes} writes, fill '
                                       f'{mem.fill:.0%}) from {self.sidecar_path}')
                return mem
            except SidecarError as exc:
                aside = f'{self.sidecar_path}.corrupt-{int(time.time())}'
                os.replace(self.sidecar_path, aside)
                self.get_logger().error(f'refused sidecar snapshot: {exc}; moved it to {aside} '
                                        f'and starting with an empty memory')
                self.diag.set('WARN', f'sidecar snapshot refused: {exc}', moved_to=aside)
        return Sidecar(input_dim, d=self.p['key_dim'], r=self.p['slots'],
                       forget=self.p['forget'])

    # ----------------------------------------------------------------- inputs
    def _on_feature(self, msg: Feature) -> None:
        try:
            self.buffer.put(msg.modality, msg.data, msg.trust,
                            msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
        except FeatureRejected as exc:
            self.rejected += 1
            if self._warn():
                self.get_logger().warning(f'rejected feature ({self.rejected} so far): {exc}')

    def _on_image(self, msg: Image) -> None:
        self.frame = msg              # converted only when it is stored

    def _store_frame(self, now: float, salience: float) -> None:
        if self.frame is None or now - self.frame_at < self.p['frame_period_s']:
            return
        msg, self.frame, self.frame_at = self.frame, None, now
        try:
            self.store.insert_frame(self.episode, now, image_to_rgb(msg), salience)
            self.frames_stored += 1
        except (ImageError, StoreError, sqlite3.Error) as exc:   # a bad frame is not fatal
            self.rejected += 1
            if self._warn():
                self.get_logger().warning(f'camera frame not stored: {exc}')

    def _on_action(self, msg: Action) -> None:
        self.action, self.action_at = int(msg.discrete_id), time.monotonic()

    def _on_teacher(self, msg: Action) -> None:
        self.teacher, self.teacher_at = int(msg.discrete_id), time.monotonic()

    def _labels(self) -> tuple[int, int]:
        """Return (action, teacher), each -1 when stale: a stopped teacher labels nothing."""
        now, limit = time.monotonic(), self.p['label_timeout_s']
        return (self.action if now - self.action_at <= limit else -1,
                self.teacher if now - self.teacher_at <= limit else -1)

    def _on_reward(self, msg: Float32) -> None:
        if np.isfinite(msg.data):
            self.reward += float(msg.data)
            self.snarc.learn(msg.data)
        else:
            self.rejected += 1
            if self._warn():
                self.get_logger().warning(f'rejected a non-finite reward ({msg.data})')

    def _on_episode(self, msg: String) -> None:
        try:
            self.episode = int(json.loads(msg.data)['episode']) + 1
        except (ValueError, KeyError, TypeError):
            if self._warn():
                self.get_logger().warning(f'ignored malformed sage/episode: {msg.data[:80]!r}')

    # ----------------------------------------------------------------- cycle
    def _cycle(self) -> None:
        now = self.get_clock().now().nanoseconds * 1e-9
        if not self.buffer.latest:
            return
        vectors, trust, age = self.buffer.snapshot(now)
        x = np.concatenate([vectors[m] for m in self.layout]).astype(np.float32)
        key = self.sidecar.key(x)
        recalled, confidence = self.sidecar.read(key=key)
        action, teacher = self._labels()
        scores = self.snarc.score(x, 1.0 - confidence, self.reward, action, teacher)
        self.sidecar.write(None, x, scores.total, key=key)
        stored = scores.total >= self.p['store_threshold']
        if stored:
            try:
                self.store.insert(Step(self.episode, now, x, trust, age, action, teacher,
                                       self.reward, scores.total))
                self.stored += 1
                self._store_frame(now, scores.total)
            except (StoreError, sqlite3.Error) as exc:    # e.g. disk full: keep running
                stored = False
                self.store_errors, self.store_error = self.store_errors + 1, str(exc)
                if self._warn():
                    self.get_logger().error(f'experience store write failed '
                                            f'({self.store_errors} so far): {exc}')
        self.steps += 1
        header_stamp = stamp(self)
        sal = Salience(surprise=scores.surprise, novelty=scores.novelty,
                       arousal=scores.arousal, reward=scores.reward,
                       conflict=scores.conflict, total=scores.total, stored=stored)
        sal.header.stamp = header_stamp
        self.pub_salience.publish(sal)
        self.pub_memory.publish(make_feature(self, 'memory', recalled, confidence))
        self.reward = 0.0
        if time.monotonic() - self.last_snapshot > self.p['snapshot_period_s']:
            try:
                self.save()
            except OSError as exc:
                self.last_snapshot = time.monotonic()     # retry next period, not every step
                self.save_error = str(exc)
                self.get_logger().error(f'cannot save the sidecar: {exc}')
        if self.steps % max(1, int(self.p['rate_hz'])) == 0:
            self._diagnose()

    def _diagnose(self) -> None:
        t = time.monotonic()
        write_rate = (self.sidecar.writes - self._rate_writes) / max(1e-6, t - self._rate_at)
        self._rate_at, self._rate_writes = t, self.sidecar.writes
        level, message = 'OK', 'remembering'
        if self.store_errors > self._errors_seen:
            level, message = 'ERROR', f'experience store write failed: {self.store_error}'
        elif self.save_error:
            level, message = 'ERROR', f'cannot save the sidecar: {self.save_error}'
        self._errors_seen = self.store_errors
        self.diag.set(level, message,
                      fill=self.sidecar.fill, write_rate_hz=write_rate,
                      step_rate_hz=self.steps / max(1e-6, t - self._t0),
                      sidecar_writes=self.sidecar.writes, stored=self.stored,
                      frames_stored=self.frames_stored,
                      store_errors=self.store_errors, rejected_features=self.rejected,
                      last_snapshot_s=t - self.last_snapshot,
                      snapshot_path=self.sidecar_path)

    # ----------------------------------------------------------------- services
    def _recall(self, request: Recall.Request, response: Recall.Response):
        try:
            query = np.asarray(request.query, np.float32)
            if query.size == 0:
                vectors, _, _ = self.buffer.snapshot(self.get_clock().now().nanoseconds * 1e-9)
                query = np.concatenate([vectors[m] for m in self.layout])
            if query.size == self.sidecar.d and query.size != self.sidecar.input_dim:
                recalled, confidence = self.sidecar.read(key=self.sidecar.as_key(query))
            else:                                  # a state vector: projected to a key
                recalled, confidence = self.sidecar.read(query)
            response.recalled, response.score, response.success = \
                recalled.tolist(), confidence, True
        except ValueError as exc:
            response.success, response.message = False, f'bad query: {exc}'
        return response

    def _snapshot(self, request: Snapshot.Request, response: Snapshot.Response):
        path = request.path and os.path.join(resolve_path(request.path), 'sidecar.npz')
        try:
            response.path = self.save(path or None)
            response.success, response.message = True, 'saved'
        except OSError as exc:
            response.success, response.message = False, f'cannot save: {exc}'
        return response

    def save(self, path: str | None = None) -> str:
        """Save the sidecar now (atomically); return where."""
        out = self.sidecar.save(path or self.sidecar_path)
        self.last_snapshot, self.save_error = time.monotonic(), ''
        return out

    def destroy_node(self):
        """Persist on shutdown, then close the store."""
        try:
            self.save()
        except OSError as exc:
            self.get_logger().error(f'could not save the sidecar on shutdown: {exc}')
        self.store.close()
        return super().destroy_node()


def main(args=None):
    """Run the memory node."""
    raise SystemExit(run_node(MemoryNode, args))
