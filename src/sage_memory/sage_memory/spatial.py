"""Spatial-episodic memory: where SAGE saw things, and what floor it has seen.

Beside the sidecar (which remembers *what* happened), this remembers *where*:

- landmarks: label, position in ``odom`` with its covariance, first and last seen,
  times seen. A detection (range and bearing from the camera, with variances) is put
  into ``odom`` through the robot's odometry pose and its covariance (first-order), then
  associated with the nearest landmark of its label by Mahalanobis distance (gate:
  chi-square, 2 dof, 99 %) and fused by a Kalman update, or starts a new landmark.
  A variance floor (``min_std_m``, and the pose's own position variance) keeps a
  landmark from growing more certain than the odometry that placed it. At most
  ``max_landmarks``: the least seen, oldest go first.
- a coarse grid over ``odom`` (log-odds): every camera ray's floor up to the first
  surface is free, the surface is occupied; collisions mark the cell ahead occupied.

Queries: by label ("where is green?"), by place (within a radius) and by time window.
``save``/``load`` go through sage_common.snapshot (atomic, verified). ROS-free: the
memory node turns sage/detections, odom and the queries into these calls.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from sage_common import snapshot

FORMAT, VERSION = 'sage-spatial', 1
GATE = 9.21                      # chi-square, 2 degrees of freedom, 99 %
LOG_FREE, LOG_OCCUPIED, LOG_LIMIT = -0.4, 0.85, 5.0


@dataclass
class SpatialConfig:
    """Sizes and limits of the spatial memory."""

    max_landmarks: int = 64
    min_score: float = 0.3            # weaker detections are not remembered
    min_std_m: float = 0.1            # a landmark is never more certain than this
    grid_size_m: float = 16.0         # a square centred on the odom origin
    cell_m: float = 0.25
    max_range_m: float = 8.0          # farther rays are not trusted for the grid


@dataclass
class Landmark:
    """One remembered object."""

    label: str
    mean: np.ndarray                  # x, y in odom, m
    cov: np.ndarray                   # 2×2, m²
    first_seen: float
    last_seen: float
    times_seen: int = 1

    @property
    def std_m(self) -> float:
        """Root of the larger eigenvalue of the covariance: the worst-case 1-sigma error."""
        return float(math.sqrt(max(np.linalg.eigvalsh(self.cov)[-1], 0.0)))


class SpatialMemory:
    """Landmarks and an occupancy grid in odom (see the module docstring)."""

    def __init__(self, config: SpatialConfig | None = None):
        self.cfg = config or SpatialConfig()
        self.landmarks: list[Landmark] = []
        n = int(round(self.cfg.grid_size_m / self.cfg.cell_m))
        self.log_odds = np.zeros((n, n), np.float32)     # rows: y, columns: x

    # --------------------------------------------------------------- observing
    def observe(self, t: float, pose, pose_cov, detections) -> list[int]:
        """Fuse detections seen from ``pose`` (x, y, yaw in odom; 3×3 covariance).

        ``detections``: objects with class_id, score, bearing, bearing_variance, range,
        range_variance (sage_msgs/Detection2D or sage_sensors.detect.Detection); one
        whose numbers are not finite (a range too close to tell is NaN) is skipped.
        Returns the index of the landmark each detection went to (-1: not remembered).
        """
        x, y, yaw = (float(v) for v in pose)
        pose_cov = np.asarray(pose_cov, np.float64).reshape(3, 3)
        if not (all(map(math.isfinite, (x, y, yaw))) and np.isfinite(pose_cov).all()):
            raise ValueError('the pose and its covariance must be finite')
        out = []
        for d in detections:
            r, b = float(d.range), float(d.bearing)
            var_r, var_b = float(d.range_variance), float(d.bearing_variance)
            if not all(map(math.isfinite, (r, b, var_r, var_b, d.score))) or var_r < 0 or \
                    var_b < 0 or d.score < self.cfg.min_score or not 0 < r <= self.cfg.max_range_m:
                out.append(-1)
                continue
            a = yaw + b
            z = np.array([x + r * math.cos(a), y + r * math.sin(a)])
            j_pose = np.array([[1.0, 0.0, -r * math.sin(a)], [0.0, 1.0, r * math.cos(a)]])
            j_meas = np.array([[math.cos(a), -r * math.sin(a)], [math.sin(a), r * math.cos(a)]])
            from_pose = j_pose @ pose_cov @ j_pose.T        # heading error grows with range
            cov = from_pose + j_meas @ np.diag([var_r, var_b]) @ j_meas.T + \
                np.eye(2) * self.cfg.min_std_m ** 2
            # repeated sightings share the pose's error: never fuse below it
            floor = max(self.cfg.min_std_m ** 2, float(np.linalg.eigvalsh(from_pose)[-1]))
            out.append(self._fuse(d.class_id, z, cov, t, floor))
        return out

    def _fuse(self, label: str, z, cov, t: float, floor: float) -> int:
        best, best_d2 = -1, GATE
        for i, m in enumerate(self.landmarks):
            if m.label != label:
                continue
            e = z - m.mean
            d2 = float(e @ np.linalg.solve(m.cov + cov, e))
            if d2 < best_d2:
                best, best_d2 = i, d2
        if best < 0:
            if len(self.landmarks) >= self.cfg.max_landmarks:
                self.landmarks.pop(min(range(len(self.landmarks)), key=lambda i: (
                    self.landmarks[i].times_seen, self.landmarks[i].last_seen)))
            self.landmarks.append(Landmark(label, z, cov, t, t))
            return len(self.landmarks) - 1
        m = self.landmarks[best]
        gain = m.cov @ np.linalg.inv(m.cov + cov)
        m.mean = m.mean + gain @ (z - m.mean)
        m.cov = (np.eye(2) - gain) @ m.cov
        m.cov = 0.5 * (m.cov + m.cov.T) + np.eye(2) * 1e-9    # stays symmetric, positive
        w, v = np.linalg.eigh(m.cov)
        m.cov = (v * np.maximum(w, floor)) @ v.T
        m.last_seen, m.times_seen = t, m.times_seen + 1
        return best

    def scan(self, pose, bearings, ranges, range_min: float = 0.0,
             range_max: float = math.inf) -> None:
        """Mark each ray's floor free and its end occupied (a range per camera column).

        A range outside [``range_min``, ``range_max``] (a LaserScan's limits) or not finite
        is no reading (REP-117). One update per cell per scan, however many rays cross it.
        """
        x, y, yaw = (float(v) for v in pose)
        b, r = np.asarray(bearings, np.float64), np.asarray(ranges, np.float64)
        ok = np.isfinite(b) & np.isfinite(r) & (r > 0) & (r >= range_min) & (r <= range_max)
        if not ok.any():
            return
        b, r = b[ok], r[ok]
        hit = r <= self.cfg.max_range_m
        r = np.minimum(r, self.cfg.max_range_m)
        cos, sin = np.cos(yaw + b), np.sin(yaw + b)
        free = np.maximum(r - self.cfg.cell_m, 0.0)
        s = np.arange(0.0, free.max(), 0.5 * self.cfg.cell_m)
        along = s[None, :] < free[:, None]
        self._mark((x + s[None, :] * cos[:, None])[along],
                   (y + s[None, :] * sin[:, None])[along], LOG_FREE)
        self._mark(x + r[hit] * cos[hit], y + r[hit] * sin[hit], LOG_OCCUPIED)

    def collided(self, pose, ahead_m: float = 0.3) -> None:
        """Mark the cell in front of the robot occupied (it drove into something)."""
        x, y, yaw = (float(v) for v in pose)
        self._mark(np.array([x + ahead_m * math.cos(yaw)]),
                   np.array([y + ahead_m * math.sin(yaw)]), LOG_OCCUPIED)

    def _mark(self, xs, ys, delta: float) -> None:
        cols, rows = self.cell(xs, ys)
        n = self.log_odds.shape[0]
        inside = (rows >= 0) & (rows < n) & (cols >= 0) & (cols < n)
        cells = np.unique(rows[inside] * n + cols[inside])      # once per cell per call
        flat = self.log_odds.reshape(-1)
        flat[cells] = np.clip(flat[cells] + delta, -LOG_LIMIT, LOG_LIMIT)

    def cell(self, xs, ys):
        """Grid column and row of odom points."""
        half = 0.5 * self.cfg.grid_size_m
        return (np.floor((np.asarray(xs) + half) / self.cfg.cell_m).astype(int),
                np.floor((np.asarray(ys) + half) / self.cfg.cell_m).astype(int))

    # --------------------------------------------------------------- reading
    def occupancy(self) -> np.ndarray:
        """Return the grid as nav_msgs/OccupancyGrid data: -1 unknown, 0..100 percent."""
        p = 1.0 / (1.0 + np.exp(-self.log_odds))
        out = np.round(100 * p).astype(np.int8)
        out[self.log_odds == 0] = -1
        return out

    def by_label(self, label: str) -> list[Landmark]:
        """Landmarks of ``label``, most certain first."""
        return sorted((m for m in self.landmarks if m.label == label), key=lambda m: m.std_m)

    def near(self, x: float, y: float, radius: float) -> list[Landmark]:
        """Landmarks within ``radius`` m of (x, y) in odom, nearest first."""
        found = [(float(np.hypot(*(m.mean - (x, y)))), i) for i, m in enumerate(self.landmarks)]
        return [self.landmarks[i] for d, i in sorted(found) if d <= radius]

    def query(self, label: str = '', near=None, radius: float = 0.0, since: float | None = None,
              until: float | None = None) -> list[Landmark]:
        """Return the landmarks that pass every filter given.

        Filters: ``label``; within ``radius`` of ``near`` (x, y); seen in [since, until].
        Nearest first with a place, most certain first with only a label, else most
        recently seen first.
        """
        found = self.landmarks
        if since is not None or until is not None:
            found = self.seen_between(-math.inf if since is None else since,
                                      math.inf if until is None else until)
        if label:
            found = [m for m in found if m.label == label]
        if near is not None and radius > 0:
            keep = set(map(id, found))
            return [m for m in self.near(near[0], near[1], radius) if id(m) in keep]
        if label and since is None and until is None:
            return sorted(found, key=lambda m: m.std_m)
        return sorted(found, key=lambda m: m.last_seen, reverse=True)

    def seen_between(self, t0: float, t1: float) -> list[Landmark]:
        """Landmarks seen at some time in [t0, t1] (first to last seen overlaps it)."""
        return sorted((m for m in self.landmarks if m.first_seen <= t1 and m.last_seen >= t0),
                      key=lambda m: m.last_seen, reverse=True)

    # --------------------------------------------------------------- persistence
    def save(self, path: str) -> str:
        """Write atomically (sage_common.snapshot); return the path."""
        lm = self.landmarks
        arrays = {'mean': np.array([m.mean for m in lm], np.float64).reshape(-1, 2),
                  'cov': np.array([m.cov for m in lm], np.float64).reshape(-1, 2, 2),
                  'seen': np.array([[m.first_seen, m.last_seen, m.times_seen] for m in lm],
                                   np.float64).reshape(-1, 3),
                  'log_odds': self.log_odds}
        header = {'format': FORMAT, 'version': VERSION, 'labels': [m.label for m in lm],
                  'grid_size_m': self.cfg.grid_size_m, 'cell_m': self.cfg.cell_m,
                  'saved': time.time()}
        return snapshot.save(path, header, arrays)

    @classmethod
    def load(cls, path: str, config: SpatialConfig | None = None) -> 'SpatialMemory':
        """Load a snapshot (snapshot.SnapshotError if unusable or of another grid)."""
        header, a = snapshot.load(path, FORMAT, VERSION, ('mean', 'cov', 'seen', 'log_odds'))
        mem = cls(config)
        labels = header.get('labels')
        if (header.get('grid_size_m'), header.get('cell_m')) != \
                (mem.cfg.grid_size_m, mem.cfg.cell_m) or a['log_odds'].shape != \
                mem.log_odds.shape or not isinstance(labels, list) or \
                not len(labels) == len(a['mean']) == len(a['cov']) == len(a['seen']):
            raise snapshot.SnapshotError(f'{path}: its grid or landmarks do not fit this '
                                         f'configuration')
        mem.log_odds = a['log_odds'].astype(np.float32)
        mem.landmarks = [Landmark(str(lb), m, c, s[0], s[1], int(s[2])) for lb, m, c, s in
                         zip(labels, a['mean'], a['cov'], a['seen'])][-mem.cfg.max_landmarks:]
        return mem
