"""The memory node: SNARC salience, the sidecar readout, the experience store, places.

A thin adapter around ``sage_memory.memory.Memory``: messages go in as its inputs, a
timer calls its ``step`` (recall, score, write, store) and the result goes out as
``sage/salience`` and ``sage/features/memory``; the services call ``recall`` and
``save``. Beside it, ``sage_memory.spatial.SpatialMemory`` takes ``sage/detections``
placed by ``odom`` (landmarks, an occupancy grid), answers ``sage/memory/query`` and
shows itself as ``sage/memory/map`` (OccupancyGrid) and ``sage/memory/landmarks``
(MarkerArray). After each frame's detections it publishes what it remembers, seen from
the frame's pose, as ``sage/features/places`` (``sage_memory.places``): the tokens the
coherence model fuses. Both are saved atomically every ``snapshot_period_s`` and on shutdown.
"""

from __future__ import annotations

import collections
import math
import os
import time

import numpy as np

from sage_common.features import FeatureRejected
from sage_common.paths import inside, resolve_path, sage_home
from sage_common.places_layout import TOKEN_DIM
from sage_common.validate import parse_json
from sage_ros.guard import GuardedNode
from sage_ros.common import (Diagnostics, Param, ParameterError, QOS_CHOICES, Throttle,
                             declare_parameters, make_feature, qos_from_name, run_node, seconds,
                             stamp)
from sage_ros.image_conv import image_to_rgb

from nav_msgs.msg import OccupancyGrid, Odometry
from sage_common import snapshot
from sage_msgs.msg import Action, Detection2DArray, Feature, Landmark, Salience
from sage_msgs.srv import QueryLandmarks, Recall, Snapshot
from sensor_msgs.msg import Image, LaserScan
from std_msgs.msg import Float32, String
from visualization_msgs.msg import Marker, MarkerArray

from sage_memory.memory import Memory, MemoryConfig
from sage_memory.places import PlacesConfig, PlacesFeature
from sage_memory.spatial import SpatialConfig, SpatialMemory
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
    Param('spatial_path', 'memory/spatial.npz', 'landmarks and grid snapshot (relative: under '
          '$SAGE_HOME; empty: places are not remembered)'),
    Param('max_landmarks', 64, 'landmarks held (the least seen go first)', low=1, high=100000),
    Param('grid_size_m', 16.0, 'side of the square occupancy grid around the odom origin, m',
          low=1.0, high=1000.0),
    Param('cell_m', 0.25, 'occupancy grid cell, m', low=0.01, high=10.0),
    Param('max_pose_age_s', 0.25, 'detections further than this from the newest odom stamp '
          'are not placed', low=0.001, high=10.0),
    Param('map_period_s', 1.0, 'publish sage/memory/map and the landmark markers this often',
          low=0.05, high=3600.0),
    Param('places_tokens', 12, 'landmark and frontier tokens in sage/features/places (the '
          "coherence model's size; 0: not published)", low=0, high=256),
    Param('places_routes', True, "each places token's waypoint follows the shortest path over "
          'the remembered grid (false: the straight line)'),
    Param('places_start', True, 'a places token for where the robot started (the odom origin, '
          'labelled "where you started"), so "go back to where you started" has a place'),
    Param('forget_places_each_episode', True, 'clear landmarks and grid when sage/episode '
          'says an episode ended (the built-in world lays out a new arena and odom restarts)'),
]
MAX_DETECTIONS = 256
MAX_RAYS = 10000
MAX_GRID_CELLS = 4096          # per side: a 4096² grid is 64 MB of float32


class MemoryNode(GuardedNode):
    """See the module doc."""

    def __init__(self, **kwargs):
        super().__init__(kwargs.pop('node_name', 'memory'), **kwargs)
        self.p = declare_parameters(self, PARAMS)
        names, dims = list(self.p['modalities']), [int(d) for d in self.p['dims']]
        if len(names) != len(dims) or not names:
            raise ParameterError(f'memory: modalities {names} and dims {dims} must have the '
                                 f'same, non-zero length')
        tokens = self.p['places_tokens'] * TOKEN_DIM
        if 'places' in names and tokens and dims[names.index('places')] != tokens:
            raise ParameterError(f'memory: places is {self.p["places_tokens"]} tokens of '
                                 f'{TOKEN_DIM}: set its dims entry to {tokens}')
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
        self.spatial = self.places = None
        self.poses = collections.deque(maxlen=64)    # (stamp s, pose, covariance), newest last
        if self.p['grid_size_m'] / self.p['cell_m'] > MAX_GRID_CELLS:
            raise ParameterError(f'memory: grid_size_m / cell_m is over {MAX_GRID_CELLS} cells a '
                                 f'side; use larger cells or a smaller grid')
        if self.p['spatial_path']:
            self.spatial = self._load_spatial()
            self.create_subscription(Odometry, 'odom', self._on_odom,
                                     qos_from_name('SENSOR_DATA'))
            self.create_subscription(Detection2DArray, 'sage/detections', self._on_detections,
                                     10)
            self.create_subscription(LaserScan, 'camera/scan', self._on_scan,
                                     qos_from_name('SENSOR_DATA'))
            self.pub_map = self.create_publisher(OccupancyGrid, 'sage/memory/map',
                                                 qos_from_name('LATCHED'))
            self.pub_landmarks = self.create_publisher(MarkerArray, 'sage/memory/landmarks', 10)
            self.create_service(QueryLandmarks, 'sage/memory/query', self._query)
            if self.p['places_tokens']:
                self.places = PlacesFeature(PlacesConfig(max_tokens=self.p['places_tokens'],
                                                         routes=self.p['places_routes'],
                                                         start_place=self.p['places_start']))
                self.places.load()          # the sentence model now, not at the first frame
                self.pub_places = self.create_publisher(Feature, 'sage/features/places',
                                                        qos_from_name('SENSOR_DATA'))
            self.create_timer(self.p['map_period_s'], self._publish_places)
        self.rejected = self._errors_seen = self.unplaced = 0
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
                                    seconds(msg.header.stamp),
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
            data = parse_json(msg.data)
            ended = int(data['episode'])
            self.memory.set_episode(ended + 1)
        except (ValueError, KeyError, TypeError, OverflowError):
            self._reject(f'malformed sage/episode: {msg.data[:80]!r}')
            return
        if data.get('held_out') is True:
            self.memory.store.hold_out(ended)     # a measurement: the nights never train on it
        if self.spatial is not None and self.p['forget_places_each_episode']:
            self.spatial = SpatialMemory(self.spatial.cfg)
            self.poses.clear()

    # ----------------------------------------------------------------- places
    def _spatial_config(self) -> SpatialConfig:
        return SpatialConfig(max_landmarks=self.p['max_landmarks'],
                             grid_size_m=self.p['grid_size_m'], cell_m=self.p['cell_m'])

    def _load_spatial(self) -> SpatialMemory:
        path = resolve_path(self.p['spatial_path'])
        mem, note = snapshot.restore(path, lambda p: SpatialMemory.load(
            p, self._spatial_config()))
        if mem is not None:
            self.get_logger().info(f'loaded {len(mem.landmarks)} landmarks from {path}')
            return mem
        if note:
            self.get_logger().error(f'places {note}')
            self.diag.set('WARN', f'places {note}')
        return SpatialMemory(self._spatial_config())

    def _on_odom(self, msg: Odometry) -> None:
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        planar = np.ix_((0, 1, 5), (0, 1, 5))            # x, y, yaw of the 6×6
        cov = np.asarray(msg.pose.covariance, np.float64).reshape(6, 6)[planar]
        pose = (p.x, p.y, math.atan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y ** 2 + q.z ** 2)))
        if not (all(map(math.isfinite, pose)) and np.isfinite(cov).all()) or \
                max(abs(p.x), abs(p.y), np.abs(cov).max()) > 1e6:
            self._reject('odom: a pose or covariance that is not finite or out of range')
            return
        self.poses.append((seconds(msg.header.stamp), pose, cov))

    def _pose_at(self, header, topic: str):
        """Return the odom (stamp, pose, cov) nearest ``header``'s stamp, or None."""
        t = seconds(header.stamp)
        best = min(self.poses, key=lambda p: abs(p[0] - t), default=None)
        if best is None or abs(best[0] - t) > self.p['max_pose_age_s']:
            self.unplaced += 1      # e.g. the first frame of an episode, before its odom
            if self._warn():
                self.get_logger().info(f'{topic}: no odom pose within max_pose_age_s of its '
                                       f'stamp; not placed ({self.unplaced} so far)')
            return None
        return best

    def _on_scan(self, msg: LaserScan) -> None:
        pose = self._pose_at(msg.header, 'camera/scan')
        n = len(msg.ranges)
        if pose is None or not 0 < n <= MAX_RAYS or not all(map(math.isfinite, (
                msg.angle_min, msg.angle_increment))) or abs(msg.angle_min) > 2 * math.pi or \
                abs(msg.angle_increment) > 2 * math.pi:
            if pose is not None:
                self._reject('camera/scan: no ranges, or angles that are not finite')
            return
        self.spatial.scan(pose[1], msg.angle_min + msg.angle_increment * np.arange(n),
                          msg.ranges, msg.range_min, msg.range_max)

    def _on_detections(self, msg: Detection2DArray) -> None:
        pose = self._pose_at(msg.header, 'sage/detections')
        if pose is None:
            return
        dets = [d for d in msg.detections[:MAX_DETECTIONS]
                if 0 < len(d.class_id) <= 64 and all(
                    math.isfinite(v) and abs(v) <= 1e6 for v in
                    (d.score, d.bearing, d.bearing_variance)) and
                (math.isnan(d.range) or (math.isfinite(d.range_variance) and
                                         0 <= d.range_variance <= 1e6))]
        if len(dets) < len(msg.detections):
            self._reject(f'{len(msg.detections) - len(dets)} malformed detections')
        self.spatial.observe(*pose, dets)       # at the pose and time of the frame
        if self.places is not None:             # what is remembered, seen from there
            sensed = self.places.step(self.spatial, pose[1], pose[0])
            self.pub_places.publish(make_feature(self, 'places', sensed.vector, sensed.trust,
                                                 sensed.quality, 'base_link', msg.header.stamp))

    def _landmark_msgs(self, landmarks) -> list[Landmark]:
        return [Landmark(label=m.label, x=float(m.mean[0]), y=float(m.mean[1]),
                         covariance=m.cov.reshape(-1).tolist(), first_seen_s=m.first_seen,
                         last_seen_s=m.last_seen, times_seen=m.times_seen)
                for m in landmarks]

    def _query(self, request: QueryLandmarks.Request, response: QueryLandmarks.Response):
        values = (request.x, request.y, request.radius, request.since_s, request.until_s)
        response.header.stamp, response.header.frame_id = stamp(self), 'odom'
        if not all(math.isfinite(v) and abs(v) <= 1e9 for v in values) or \
                request.radius < 0 or len(request.label) > 64:
            response.message = 'refused: x, y, radius, since_s and until_s must be finite ' \
                               '(radius >= 0) and the label at most 64 characters'
            return response
        timed = bool(request.since_s or request.until_s)
        found = self.spatial.query(
            request.label, (request.x, request.y), request.radius,
            request.since_s if timed else None, (request.until_s or math.inf) if timed else None)
        response.landmarks = self._landmark_msgs(found)
        response.message = '' if found else 'nothing remembered that matches'
        return response

    def _publish_places(self) -> None:
        mem, now = self.spatial, stamp(self)
        grid = OccupancyGrid()
        grid.header.stamp, grid.header.frame_id = now, 'odom'
        n = mem.log_odds.shape[0]
        grid.info.resolution, grid.info.width, grid.info.height = mem.cfg.cell_m, n, n
        grid.info.origin.position.x = grid.info.origin.position.y = -0.5 * mem.cfg.grid_size_m
        grid.info.origin.orientation.w = 1.0
        grid.data = mem.occupancy().reshape(-1).tolist()
        self.pub_map.publish(grid)
        markers = MarkerArray(markers=[Marker(action=Marker.DELETEALL)])
        for i, m in enumerate(mem.landmarks):
            for kind in (Marker.CYLINDER, Marker.TEXT_VIEW_FACING):
                mk = Marker(ns='landmarks', id=2 * i + (kind == Marker.TEXT_VIEW_FACING),
                            type=kind, action=Marker.ADD)
                mk.header.stamp, mk.header.frame_id = now, 'odom'
                mk.pose.position.x, mk.pose.position.y = float(m.mean[0]), float(m.mean[1])
                mk.pose.orientation.w = 1.0
                size = 4 * m.std_m                             # the 2-sigma circle
                mk.scale.x = mk.scale.y = size if kind == Marker.CYLINDER else 0.3
                mk.scale.z = 0.05 if kind == Marker.CYLINDER else 0.3
                mk.pose.position.z = 0.0 if kind == Marker.CYLINDER else 1.2
                mk.color.r = mk.color.g = mk.color.b = mk.color.a = 1.0
                if kind == Marker.CYLINDER:
                    mk.color.a = 0.5
                mk.text = f'{m.label} ({m.times_seen})' if kind != Marker.CYLINDER else ''
                markers.markers.append(mk)
        self.pub_landmarks.publish(markers)

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
                      unplaced=self.unplaced,
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
        """Save the sidecar and the places now (atomically); return the sidecar's path."""
        out = self.memory.save(path)
        if self.spatial is not None:
            self.spatial.save(os.path.join(os.path.dirname(path), 'spatial.npz') if path
                              else resolve_path(self.p['spatial_path']))
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
