"""The built-in world: find the beacon an instruction names, once, with faulty senses.

ROS-free and deterministic by seed. A unicycle robot (REP-103: x forward, y
left, yaw counter-clockwise) lives in a walled square arena with coloured
beacons and grey pillars. Each episode one beacon is the target; it is named
once, at the first step, as text (``Observation.instruction``) and as an audio
cue (a tone pattern per colour in ``Observation.audio``). The camera sees only
a 90° cone in front, so targets leave the view, and faults (blackout, blur,
freeze, IMU bias drift and saturation, audio dropouts) can be scheduled.

API
---
``World(config, seed)``; ``reset(episode_seed) -> Observation``;
``step(v, w) -> (Observation, reward, done, info)`` advances ``config.dt`` seconds;
``oracle_action() -> int`` (knows the state); ``ACTIONS`` maps action ids to
names and ``(v, w)``. ``Observation`` holds what real drivers give: an
H×W×3 uint8 image, IMU accel (m/s², gravity included) and gyro (rad/s), int16
mono audio at ``config.audio_rate`` covering the step, wheel odometry (``Odometry``:
the pose in the episode's ``odom`` frame, integrated from the wheel commands with
seeded slip and heading noise, and its covariance), the instruction text (first step
only), the reward and the sim time. The true pose (``x, y, yaw``) is for evaluation
and viewers only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# id -> (name, v m/s, w rad/s)
ACTIONS = (
    ('stop', 0.0, 0.0),
    ('forward', 0.5, 0.0),
    ('forward_left', 0.35, 0.9),
    ('forward_right', 0.35, -0.9),
    ('turn_left', 0.0, 1.2),
    ('turn_right', 0.0, -1.2),
)
ACTION_NAMES = tuple(a[0] for a in ACTIONS)
TEACHERS = ('oracle', 'operator')

BEACONS = {  # name -> (rgb, cue tone Hz)
    'red': ((220, 40, 40), 440.0),
    'green': ((40, 200, 60), 620.0),
    'blue': ((50, 80, 230), 880.0),
    'yellow': ((230, 210, 40), 1240.0),
}
START = 'start'    # a goal name: where the episode began
INSTRUCTIONS = ('go to the {} beacon', 'find the {} beacon', 'please drive to {}',
                'head for the {} one', 'your target is the {} beacon')
FAULT_KINDS = ('camera_blackout', 'camera_blur', 'camera_freeze', 'imu_bias_drift',
               'imu_saturation', 'audio_dropout')
GRAVITY = 9.80665


@dataclass
class Fault:
    """A fault active from ``start_s`` to ``end_s`` of sim time within each episode."""

    kind: str
    start_s: float = 0.0
    end_s: float = math.inf
    severity: float = 1.0

    def __post_init__(self):
        if self.kind not in FAULT_KINDS:
            raise ValueError(f'unknown fault {self.kind!r}; choose from {FAULT_KINDS}')

    def active(self, t: float) -> bool:
        """Return True while the fault is on."""
        return self.start_s <= t < self.end_s


@dataclass
class WorldConfig:
    """Sizes, rates and noise of the world."""

    arena_m: float = 6.0
    n_pillars: int = 3
    dt: float = 0.1
    time_limit_s: float = 40.0
    width: int = 160
    height: int = 120
    fov_deg: float = 90.0
    robot_radius: float = 0.2
    beacon_radius: float = 0.25
    success_dist: float = 0.65          # centre distance that counts as reached
    audio_rate: int = 16000
    cue_s: float = 0.6                  # length of the audio cue at the episode start
    camera_noise: int = 2               # uniform pixel noise, ± grey levels
    imu_accel_noise: float = 0.05       # m/s^2 (1 sigma)
    imu_gyro_noise: float = 0.01        # rad/s
    imu_gyro_bias: float = 0.005        # rad/s, drawn per episode
    imu_saturation_gyro: float = 0.5    # rad/s range while saturated
    odom_scale_bias: float = 0.02       # wheel-speed scale error, 1 sigma, drawn per episode
    odom_slip: float = 0.03             # per-step relative error of each wheel speed, 1 sigma
    odom_yaw_noise: float = 0.03        # rad/s heading noise while the wheels turn, 1 sigma
    faults: list = field(default_factory=list)   # list[Fault]

    @property
    def focal_px(self) -> float:
        """The camera's focal length in pixels (fx = fy; the principal point is centred)."""
        return (self.width / 2) / math.tan(math.radians(self.fov_deg) / 2)


@dataclass
class Odometry:
    """Wheel odometry: where the robot believes it is.

    The pose in ``odom`` (REP-105; the episode's start pose is the origin), the measured
    speeds in ``base_link``, the pose covariance over (x, y, yaw) and the speed variances.
    """

    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0
    v: float = 0.0
    w: float = 0.0
    covariance: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    speed_variance: tuple = (0.0, 0.0)


@dataclass
class Observation:
    """What the robot's drivers deliver at one step."""

    image: np.ndarray
    accel: np.ndarray
    gyro: np.ndarray
    audio: np.ndarray
    instruction: str
    reward: float
    time_s: float
    faults: tuple = ()
    odom: Odometry = field(default_factory=Odometry)


class World:
    """The arena, the robot and one episode at a time."""

    def __init__(self, config: WorldConfig | None = None, seed: int = 0):
        self.cfg = config or WorldConfig()
        self.seed = seed
        c = self.cfg
        # a pinhole camera, as its CameraInfo says: column u looks along atan((cx - u) / f)
        self._angles = np.arctan((c.width / 2 - (np.arange(c.width) + 0.5)) / c.focal_px)
        self._rows = (np.arange(c.height) + 0.5)[:, None]
        floor = np.linspace(0, 1, c.height // 2)[:, None]
        self._background = np.zeros((c.height, c.width, 3), np.uint8)
        self._background[: c.height // 2] = (150 + 40 * floor[::-1])[:, :, None].astype(np.uint8)
        self._background[c.height // 2:] = (70 + 50 * floor)[:, :, None].astype(np.uint8)
        self.reset(seed)

    # ---------------------------------------------------------------- episode
    def reset(self, episode_seed: int | None = None) -> Observation:
        """Start an episode: new layout, target and start pose from ``episode_seed``."""
        c = self.cfg
        self.episode_seed = self.seed if episode_seed is None else episode_seed
        rng = np.random.default_rng(self.episode_seed)
        self.rng = rng
        half = c.arena_m / 2 - 0.6
        names = list(BEACONS)
        objects = []  # (x, y, radius, rgb, name)
        while len(objects) < len(names) + c.n_pillars:
            x, y = rng.uniform(-half, half, 2)
            r = c.beacon_radius if len(objects) < len(names) else rng.uniform(0.25, 0.45)
            if all(math.hypot(x - o[0], y - o[1]) > r + o[2] + 0.9 for o in objects):
                if len(objects) < len(names):
                    objects.append((x, y, r, BEACONS[names[len(objects)]][0],
                                    names[len(objects)]))
                else:
                    objects.append((x, y, r, (110, 110, 110), 'pillar'))
        self.objects = objects
        self._obj_xy = np.array([[o[0], o[1]] for o in objects])
        self._obj_r = np.array([o[2] for o in objects])
        self._obj_rgb = np.array([o[3] for o in objects], np.float32)
        first = names[int(rng.integers(len(names)))]
        while True:
            self.x, self.y = rng.uniform(-half, half, 2)
            if np.all(np.hypot(self._obj_xy[:, 0] - self.x, self._obj_xy[:, 1] - self.y)
                      > self._obj_r + 1.2):
                break
        self.yaw = float(rng.uniform(-math.pi, math.pi))
        self._begin()
        self.gyro_bias = rng.normal(0, c.imu_gyro_bias, 3)
        self._last_image = None
        self._reset_odometry()
        return self.set_task(rng.choice(INSTRUCTIONS).format(first), ((first,),))

    def set_scenario(self, beacons: dict, target: str, pose: tuple,
                     pillars: tuple = ()) -> Observation:
        """Lay out a hand-made scene: beacons {name: (x, y)}, pillars ((x, y, r), ...)."""
        c = self.cfg
        self.objects = [(x, y, c.beacon_radius, BEACONS[n][0], n) for n, (x, y) in
                        beacons.items()] + [(x, y, r, (110, 110, 110), 'pillar')
                                            for x, y, r in pillars]
        self._obj_xy = np.array([[o[0], o[1]] for o in self.objects])
        self._obj_r = np.array([o[2] for o in self.objects])
        self._obj_rgb = np.array([o[3] for o in self.objects], np.float32)
        self.x, self.y, self.yaw = pose
        self._begin()
        self._reset_odometry()
        return self.set_task(INSTRUCTIONS[0].format(target), ((target,),))

    def set_task(self, instruction: str, goals) -> Observation:
        """Give the episode its instruction and what it means, before the first step.

        ``goals``: the places to reach in order, each a tuple of the names that count
        (beacon names, or START for where the episode began); e.g. (('red',), ('blue',))
        for "red, then blue", (('red', 'green', 'blue'),) for "any but yellow". Each
        reached goal but the last pays the arrival reward; the last ends the episode.
        """
        names = {o[4] for o in self.objects} | {START}
        goals = tuple(tuple(g) for g in goals)
        if not goals or not all(goals) or not set().union(*goals) <= names:
            raise ValueError(f'goals must be non-empty tuples of {sorted(names)}, got {goals}')
        if self.steps:
            raise RuntimeError('set_task() comes before the first step of an episode')
        self.instruction, self.goals, self.goal_index = instruction, goals, 0
        self._aim()
        return self._observe(reward=0.0, accel=np.array([0.0, 0.0, GRAVITY]))

    def _aim(self) -> None:
        """Point the target (what the oracle, cue and reward follow) at the current goal."""
        start = self._odom_origin[:2]
        options = [(-1 if name == START else [o[4] for o in self.objects].index(name))
                   for name in self.goals[self.goal_index]]
        where = [start if k < 0 else self._obj_xy[k] for k in options]
        nearest = np.argmin([math.hypot(x - self.x, y - self.y) for x, y in where])
        self.target = options[int(nearest)]
        self.target_name = START if self.target < 0 else self.objects[self.target][4]
        self._cost = self._distance_field()
        self._prev_dist = self.target_distance()
        self.target_seen, self._searched = self.target_visible(), 0.0

    def _begin(self) -> None:
        """Zero the episode's clock, counters and speeds."""
        self.v = self.w = 0.0
        self.t = 0.0
        self.steps = self.collisions = 0
        self.done = self.success = False

    def _reset_odometry(self) -> None:
        # its own random stream: odometry noise never changes what the sensors see
        self._odom_rng = np.random.default_rng([self.episode_seed, 105])
        self._odom_scale = 1.0 + self._odom_rng.normal(0, self.cfg.odom_scale_bias)
        self.odom = Odometry()
        self._odom_cov = np.zeros((3, 3))   # of the per-step noise; the scale error is added
        self._odom_origin = (self.x, self.y, self.yaw)

    def _integrate_odometry(self, v: float, w: float) -> None:
        """Dead-reckon one step from the wheel commands (blocked wheels slip: they count)."""
        c, r, o = self.cfg, self._odom_rng, self.odom
        moving = float(v != 0.0 or w != 0.0)
        vm = v * self._odom_scale * (1.0 + r.normal(0, c.odom_slip))
        wm = w * (1.0 + r.normal(0, c.odom_slip)) + moving * r.normal(0, c.odom_yaw_noise)
        yaw = (o.yaw + wm * c.dt + math.pi) % (2 * math.pi) - math.pi
        cos, sin = math.cos(yaw), math.sin(yaw)
        # EKF prediction of the unicycle (the world moves after turning, as here)
        f = np.array([[1.0, 0.0, -vm * sin * c.dt], [0.0, 1.0, vm * cos * c.dt],
                      [0.0, 0.0, 1.0]])
        g = np.array([[cos * c.dt, -vm * sin * c.dt ** 2], [sin * c.dt, vm * cos * c.dt ** 2],
                      [0.0, c.dt]])
        var_v = (c.odom_slip * v) ** 2
        var_w = (c.odom_slip * w) ** 2 + moving * c.odom_yaw_noise ** 2
        self._odom_cov = f @ self._odom_cov @ f.T + g @ np.diag([var_v, var_w]) @ g.T
        x, y = o.x + vm * cos * c.dt, o.y + vm * sin * c.dt
        # the scale error is the same all episode: it stretches the whole path from the start
        stretch = np.array([x, y, 0.0])
        cov = self._odom_cov + c.odom_scale_bias ** 2 * np.outer(stretch, stretch)
        self.odom = Odometry(x, y, yaw, vm, wm, cov,
                             (var_v + (c.odom_scale_bias * v) ** 2, var_w))

    def odom_to_world(self) -> tuple:
        """Return the ``odom`` frame's origin in the world (the start pose): x, y, yaw."""
        return self._odom_origin

    def target_distance(self) -> float:
        """Centre distance from the robot to the target beacon, metres."""
        tx, ty = self.target_xy
        return math.hypot(tx - self.x, ty - self.y)

    @property
    def target_xy(self) -> tuple:
        """Where the current goal is: its beacon's centre, or the start."""
        return tuple(self._odom_origin[:2] if self.target < 0 else self._obj_xy[self.target])

    def step(self, v: float, w: float):
        """Apply (v m/s, w rad/s) for one dt; return (obs, reward, done, info)."""
        if self.done:
            raise RuntimeError('episode is over: call reset()')
        c = self.cfg
        v = float(np.clip(v, -0.5, 0.5)) if math.isfinite(v) else 0.0
        w = float(np.clip(w, -2.0, 2.0)) if math.isfinite(w) else 0.0
        self._integrate_odometry(v, w)
        prev_v = self.v
        self.yaw = (self.yaw + w * c.dt + math.pi) % (2 * math.pi) - math.pi
        nx = self.x + v * math.cos(self.yaw) * c.dt
        ny = self.y + v * math.sin(self.yaw) * c.dt
        collided = self._collides(nx, ny)
        if collided:
            self.collisions += 1
            v = 0.0
        else:
            self.x, self.y = nx, ny
        self.v, self.w = v, w
        self.t += c.dt
        self.steps += 1
        if not self.target_seen:
            self._searched += abs(w) * c.dt
            self.target_seen = self.target_visible()
        dist = self.target_distance()
        reward = 0.3 * (self._prev_dist - dist) - 0.01 - 0.2 * collided
        self._prev_dist = dist
        if dist < c.success_dist:
            reward += 1.0
            if self.goal_index + 1 == len(self.goals):
                self.success, self.done = True, True
            else:                       # on to the next goal of the instruction
                self.goal_index += 1
                self._aim()
        elif self.t >= c.time_limit_s - 1e-9:
            self.done = True
        accel = np.array([(v - prev_v) / c.dt, v * w, GRAVITY])
        obs = self._observe(reward, accel)
        info = {'success': self.success, 'collided': bool(collided), 'distance': dist,
                'target': self.target_name}
        return obs, reward, self.done, info

    def metrics(self) -> dict:
        """Metrics of the current episode."""
        return {'seed': self.episode_seed, 'target': self.target_name,
                'instruction': self.instruction,
                'success': self.success, 'goals_reached': self.goal_index + self.success,
                'time_s': round(self.t, 3),
                'collisions': self.collisions, 'distance': round(self.target_distance(), 3)}

    # ---------------------------------------------------------------- physics
    def _collides(self, x: float, y: float) -> bool:
        c = self.cfg
        lim = c.arena_m / 2 - c.robot_radius
        if abs(x) > lim or abs(y) > lim:
            return True
        d = np.hypot(self._obj_xy[:, 0] - x, self._obj_xy[:, 1] - y)
        hit = d < self._obj_r + c.robot_radius
        if self.target >= 0:
            hit[self.target] = False  # touching the target is success, not a crash
        return bool(hit.any())

    # ---------------------------------------------------------------- sensors
    def active_faults(self) -> tuple:
        """Faults on at the current time."""
        return tuple(f for f in self.cfg.faults if f.active(self.t))

    def _observe(self, reward: float, accel: np.ndarray) -> Observation:
        c = self.cfg
        faults = self.active_faults()
        kinds = {f.kind: f for f in faults}
        image = self.render()
        # sensor noise, as every real camera has (a stationary robot still sees changing pixels)
        noise = self.rng.integers(-c.camera_noise, c.camera_noise + 1, image.shape, np.int16)
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
        if 'camera_freeze' in kinds and self._last_image is not None:
            image = self._last_image
        elif 'camera_blackout' in kinds:
            image = (image * (1 - kinds['camera_blackout'].severity)).astype(np.uint8)
        elif 'camera_blur' in kinds:
            image = _box_blur(image, 1 + int(6 * kinds['camera_blur'].severity))
        self._last_image = image
        rng = self.rng
        acc = accel + rng.normal(0, c.imu_accel_noise, 3)
        gyro = np.array([0.0, 0.0, self.w]) + self.gyro_bias + rng.normal(0, c.imu_gyro_noise, 3)
        if 'imu_bias_drift' in kinds:
            gyro[2] += 0.05 * kinds['imu_bias_drift'].severity * self.t
        if 'imu_saturation' in kinds:
            gyro = np.clip(gyro, -c.imu_saturation_gyro, c.imu_saturation_gyro)
            acc = np.clip(acc, -2 * GRAVITY, 2 * GRAVITY)
        audio = self._audio(dropout='audio_dropout' in kinds)
        return Observation(image=image, accel=acc, gyro=gyro, audio=audio,
                           instruction=self.instruction if self.steps == 0 else '',
                           reward=float(reward), time_s=self.t,
                           faults=tuple(f.kind for f in faults), odom=self.odom)

    def _audio(self, dropout: bool) -> np.ndarray:
        c = self.cfg
        n = int(round(c.audio_rate * c.dt))
        t0 = self.t - (c.dt if self.steps else 0.0)
        t = t0 + np.arange(n) / c.audio_rate
        signal = self.rng.normal(0, 200, n)                     # room noise
        tone = BEACONS.get(self.target_name, (None, 0.0))[1]   # no cue for the start
        on = (t < c.cue_s) & ((t * 5) % 1 < 0.7)                # a pulsed tone
        signal += on * 6000 * np.sin(2 * np.pi * tone * t)
        if dropout:
            signal[:] = 0
        return np.clip(signal, -32768, 32767).astype(np.int16)

    def render(self) -> np.ndarray:
        """Egocentric camera image (height × width × 3, uint8), numpy ray casting."""
        c = self.cfg
        ang = self.yaw + self._angles
        dx, dy = np.cos(ang), np.sin(ang)
        # walls: distance to the square's boundary along each ray
        half = c.arena_m / 2
        with np.errstate(divide='ignore', invalid='ignore'):
            tx = np.where(dx > 0, (half - self.x) / dx, (-half - self.x) / dx)
            ty = np.where(dy > 0, (half - self.y) / dy, (-half - self.y) / dy)
        dist = np.minimum(np.where(tx > 0, tx, np.inf), np.where(ty > 0, ty, np.inf))
        shade = np.where(tx < ty, 0.85, 1.0)
        color = np.tile(np.array([[200.0, 195.0, 185.0]]), (c.width, 1)) * shade[:, None]
        # cylinders: ray-circle intersections for all rays × objects at once
        ox = self._obj_xy[:, 0] - self.x
        oy = self._obj_xy[:, 1] - self.y
        b = dx[:, None] * ox[None] + dy[:, None] * oy[None]
        disc = b ** 2 - (ox ** 2 + oy ** 2 - self._obj_r ** 2)[None]
        hit_t = np.where(disc > 0, b - np.sqrt(np.maximum(disc, 0)), np.inf)
        hit_t = np.where(hit_t > 0.05, hit_t, np.inf)
        nearest = hit_t.argmin(axis=1)
        t_obj = hit_t[np.arange(c.width), nearest]
        closer = t_obj < dist
        self.column_objects = np.where(closer, nearest, -1)   # ground truth, per column
        dist = np.where(closer, t_obj, dist)
        self.column_range = dist                                # ray length to the surface
        color = np.where(closer[:, None], self._obj_rgb[nearest], color)
        dist = dist * np.cos(self._angles)                      # no fish-eye
        wall_h = np.where(closer, 1.0, 1.2)
        h = np.minimum(c.height * 4, c.focal_px * wall_h / np.maximum(dist, 1e-3))
        top, bottom = c.height / 2 - h / 2, c.height / 2 + h / 2 * (0.6 / 0.6)
        fog = np.clip(1.2 - dist / (2 * c.arena_m), 0.35, 1.0)[:, None]
        mask = (self._rows >= top[None]) & (self._rows < bottom[None])
        image = self._background.copy()
        image[mask] = np.broadcast_to((color * fog)[None], (c.height, c.width, 3))[mask]
        return image

    def visible_objects(self, min_columns: int = 1) -> list[dict]:
        """Ground truth of the last render: objects seen in at least ``min_columns``.

        Each: name, the bearing of its centre (rad, + left of the heading, REP-103), its
        centre's range (m) and the image columns it fills. For evaluation only.
        """
        seen = []
        for i, (x, y, radius, _, name) in enumerate(self.objects):
            columns = int(np.sum(self.column_objects == i))
            if columns >= min_columns:
                bearing = math.atan2(y - self.y, x - self.x) - self.yaw
                seen.append({'name': name, 'radius': radius, 'columns': columns,
                             'bearing': (bearing + math.pi) % (2 * math.pi) - math.pi,
                             'range': math.hypot(x - self.x, y - self.y)})
        return seen

    # ---------------------------------------------------------------- oracle
    def free_cells(self, cell: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (x, y, free) of the arena on a grid of ``cell`` m (evaluation only).

        Free where the robot's body, with a margin, touches no wall and no object but the
        target.
        """
        c = self.cfg
        n = int(round(c.arena_m / cell))
        centres = (np.arange(n) + 0.5) * cell - c.arena_m / 2
        gx, gy = np.meshgrid(centres, centres, indexing='ij')
        margin = c.robot_radius + 0.08
        free = (np.abs(gx) < c.arena_m / 2 - margin) & (np.abs(gy) < c.arena_m / 2 - margin)
        for k, (ox, oy, r, _, _) in enumerate(self.objects):
            if k != self.target:
                free &= np.hypot(gx - ox, gy - oy) > r + margin
        return gx, gy, free

    def _distance_field(self, cell: float = 0.1) -> np.ndarray:
        """Shortest path length to the target on a grid (Dijkstra on 8-neighbours)."""
        import heapq
        c = self.cfg
        gx, gy, free = self.free_cells(cell)
        n = free.shape[0]
        self._cell, self._n = cell, n
        cost = np.full((n, n), np.inf)
        tx, ty = self.target_xy
        goal = np.hypot(gx - tx, gy - ty) < c.success_dist - 0.1
        heap = [(0.0, i, j) for i, j in zip(*np.nonzero(goal))]
        for _, i, j in heap:
            cost[i, j] = 0.0
        heapq.heapify(heap)
        steps = [(di, dj, math.hypot(di, dj) * cell) for di in (-1, 0, 1) for dj in (-1, 0, 1)
                 if di or dj]
        while heap:
            d, i, j = heapq.heappop(heap)
            if d > cost[i, j]:
                continue
            for di, dj, step in steps:
                a, b = i + di, j + dj
                if 0 <= a < n and 0 <= b < n and free[a, b] and d + step < cost[a, b]:
                    cost[a, b] = d + step
                    heapq.heappush(heap, (d + step, a, b))
        return cost

    def _cell_of(self, x: float, y: float):
        i = int(np.clip((x + self.cfg.arena_m / 2) / self._cell, 0, self._n - 1))
        j = int(np.clip((y + self.cfg.arena_m / 2) / self._cell, 0, self._n - 1))
        return i, j

    def oracle_heading(self) -> float:
        """World-frame heading the shortest path asks for at the robot's position."""
        i, j = self._cell_of(self.x, self.y)
        best, target = self._cost[i, j], None
        for r in (1, 2, 3):   # look a little ahead for a smoother path
            for di in range(-r, r + 1):
                for dj in range(-r, r + 1):
                    a, b = i + di, j + dj
                    if 0 <= a < self._n and 0 <= b < self._n and self._cost[a, b] < best:
                        best, target = self._cost[a, b] + 0.0, (a, b)
        if target is None:
            tx, ty = self.target_xy
        else:
            tx = (target[0] + 0.5) * self._cell - self.cfg.arena_m / 2
            ty = (target[1] + 0.5) * self._cell - self.cfg.arena_m / 2
        return math.atan2(ty - self.y, tx - self.x)

    def target_visible(self) -> bool:
        """Whether the camera sees the target now (the start counts as known)."""
        if self.target < 0:
            return True
        tx, ty = self._obj_xy[self.target] - (self.x, self.y)
        d = math.hypot(tx, ty)
        bearing = (math.atan2(ty, tx) - self.yaw + math.pi) % (2 * math.pi) - math.pi
        if d < 1e-6 or abs(bearing) > math.radians(self.cfg.fov_deg) / 2:
            return False
        ux, uy = tx / d, ty / d
        for k, (ox, oy, r, _, _) in enumerate(self.objects):   # anything in front of it?
            if k == self.target:
                continue
            px, py = ox - self.x, oy - self.y
            along = px * ux + py * uy
            if 0 < along < d and abs(px * uy - py * ux) < r:
                return False
        return True

    def teacher_action(self, teacher: str) -> int:
        """Return the label of ``teacher``: 'oracle' (knows the map) or 'operator'."""
        if teacher not in TEACHERS:
            raise ValueError(f'unknown teacher {teacher!r}; choose one of {TEACHERS}')
        return self.operator_action() if teacher == 'operator' else self.oracle_action()

    def operator_action(self) -> int:
        """Return the action of an operator who sees only what the robot's camera shows.

        Until the target has been in view it searches: a turn in place, then, if a
        whole turn did not show it (hidden behind a pillar), a few steps of the
        shortest path before turning again. Once seen, where it is is known, and
        the operator steers the shortest path to it, as the oracle does.
        """
        if self.target_seen:
            return self.oracle_action()
        if self._searched % (2 * math.pi + 1.0) < 2 * math.pi:
            return ACTION_NAMES.index('turn_left')
        return self.oracle_action()     # a short move to look again from elsewhere

    def oracle_action(self) -> int:
        """Return the best discrete action from the full state (the teacher's label)."""
        return steer(self.oracle_heading() - self.yaw)


def steer(bearing: float) -> int:
    """Return the discrete action that turns towards ``bearing`` (rad, + left) and drives."""
    err = (bearing + math.pi) % (2 * math.pi) - math.pi
    if abs(err) > 0.6:
        return ACTION_NAMES.index('turn_left' if err > 0 else 'turn_right')
    if abs(err) > 0.15:
        return ACTION_NAMES.index('forward_left' if err > 0 else 'forward_right')
    return ACTION_NAMES.index('forward')


def _box_blur(image: np.ndarray, k: int) -> np.ndarray:
    """Separable box blur of radius k (cheap camera defocus)."""
    out = image.astype(np.float32)
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (k, k)
        p = np.pad(out, pad, mode='edge')
        cs = np.cumsum(p, axis=axis, dtype=np.float32)
        zero = np.zeros_like(np.take(cs, [0], axis=axis))
        cs = np.concatenate([zero, cs], axis=axis)
        n = out.shape[axis]
        out = (np.take(cs, np.arange(2 * k + 1, 2 * k + 1 + n), axis=axis)
               - np.take(cs, np.arange(n), axis=axis)) / (2 * k + 1)
    return out.astype(np.uint8)
