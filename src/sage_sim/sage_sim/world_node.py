"""The world node: the built-in world as ROS topics, driving /clock.

Publishes what real drivers would (camera/image_raw + camera_info, imu/data_raw,
audio/chunk, and wheel odometry on odom: nav_msgs/Odometry, frames odom -> base_link,
with its covariance), the instruction (latched), reward, the oracle's teacher action,
episode metrics and /clock, and for viewers (RViz markers, Foxglove) the robot's
ground-truth pose (sage/world/robot_pose) and the arena layout (sage/world/layout,
JSON, latched, once per episode); takes cmd_vel (TwistStamped) or sage/action. The
world owns sim time: its step timer runs on the steady clock, so it works with
use_sim_time like every other node.
"""

from __future__ import annotations

import json
import math
import time

from geometry_msgs.msg import PoseStamped, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.clock import Clock, ClockType
from rosgraph_msgs.msg import Clock as ClockMsg
from sage_ros.guard import GuardedNode
from sage_ros.image_conv import numpy_to_image
from sage_ros.common import (Diagnostics, Param, ParameterError, declare_parameters,
                             parsed_by, qos_from_name)
from sage_msgs.msg import Action, AudioChunk, Coherence, Feature, SleepStatus
from sensor_msgs.msg import CameraInfo, Image, Imu
from std_msgs.msg import Float32, String

from sage_sim.days import clock_ns, Days, next_at, parse_hhmm
from sage_sim.evaluate import MORNING, OPENING_TURN, SCENES, start
from sage_sim.world import (ACTION_NAMES, ACTIONS, FAULT_KINDS, Fault, TEACHERS, World,
                            WorldConfig)


def parse_faults(specs: list[str]) -> list[Fault]:
    """Parse 'kind:start_s:end_s[:severity]' strings (end may be 'inf')."""
    faults = []
    for spec in specs:
        parts = spec.split(':')
        if len(parts) not in (3, 4) or parts[0] not in FAULT_KINDS:
            raise ValueError(f'bad fault {spec!r}: use kind:start_s:end_s[:severity] with kind '
                             f'in {FAULT_KINDS}')
        faults.append(Fault(parts[0], float(parts[1]), float(parts[2]),
                            float(parts[3]) if len(parts) == 4 else 1.0))
    return faults


def _check_start_after(topics):
    bad = [t for t in topics if t != 'sage/coherence' and not t.startswith('sage/features/')]
    return f'{bad} are neither sage/coherence nor sage/features/<name>' if bad else None


PARAMS = [
    Param('seed', 0, 'seed of the first episode; episode k uses seed + k', low=0,
          high=2**31 - 1),
    Param('real_time_factor', 1.0, 'sim seconds per wall second', low=0.01, high=100.0),
    Param('time_limit_s', 40.0, 'episode time limit, sim seconds', low=1.0, high=3600.0),
    Param('width', 160, 'camera width, px', low=16, high=1920),
    Param('height', 120, 'camera height, px', low=12, high=1080),
    Param('faults', [''], 'scheduled faults kind:start_s:end_s[:severity]',
          check=lambda v: parsed_by(parse_faults)([s for s in v if s])),
    Param('command_source', 'cmd_vel', 'which command drives the robot: cmd_vel, '
          'sage/action, or the teacher (a demonstration: the robot only watches)',
          choices=('cmd_vel', 'action', 'teacher')),
    Param('teacher', 'oracle', 'who labels sage/teacher_action: the oracle (knows the map), '
          'an operator (sees only what the camera has shown: searches, then the shortest '
          'path), or none (another node labels, e.g. the planner of sage_sleep\'s teacher node)',
          choices=(*TEACHERS, 'none')),
    Param('scene', 'random', 'episode layout: random (seeded), recall (the target in view, '
          'then turned away from), detour (a wall of pillars before the target) or language '
          '(a held-out instruction that needs understanding), as the suites of '
          'sage_sim.evaluate', choices=SCENES),
    Param('opening_s', 0.0, 'each episode opens with the world turning the robot left this '
          'long, its commands ignored (the recall suite: 2.6)', low=0.0, high=60.0),
    Param('start_after', [''], 'topics to hear before the first episode starts: until then '
          'the world holds still, republishing its first frame, so no episode is lost while '
          'the graph starts; sage/coherence (sage_msgs/Coherence) or sage/features/<name> '
          '(sage_msgs/Feature)', check=lambda v: _check_start_after([t for t in v if t])),
    Param('start_timeout_s', 120.0, 'start anyway after this many wall seconds of waiting',
          low=0.0, high=86400.0),
    Param('command_timeout_s', 0.5, 'stop the robot when commands are older (sim s)',
          low=0.01, high=10.0),
    Param('episodes', 0, 'stop after this many episodes (0: run forever)', low=0,
          high=10**9),
    Param('day_episodes', 0, 'episodes in a day; after each the world\'s clock jumps to '
          'night_at and the world holds still (no sensors) until the sleep node has slept, '
          'then to the next morning_at (0: no nights)', low=0, high=10**6),
    Param('morning_episodes', 0, 'the first episodes of each day are the morning suite: '
          'seeds morning_seed on, the same every day; the rest of a day works on new seeds '
          'from seed on', low=0, high=10**6),
    Param('morning_seed', MORNING.seeds[0], 'first seed of the morning suite (sage_sim.'
          'evaluate.MORNING)', low=0, high=2**31 - 1),
    Param('morning_at', '07:00', 'local time on the sim clock when the world starts and each '
          'day begins (HH:MM)', check=parsed_by(parse_hhmm)),
    Param('night_at', '01:00', 'local time a night begins: inside the sleep node\'s window',
          check=parsed_by(parse_hhmm)),
    Param('night_timeout_s', 1800.0, 'wake after this many wall seconds of night even if no '
          'sleep cycle ended (with no sleep node in the graph, at once)', low=1.0,
          high=86400.0),
    Param('metrics_file', '', 'append each episode\'s metrics as a JSON line (empty: off)'),
    Param('camera_frame', 'camera_optical_frame', 'frame of the camera (REP-103 optical)'),
    Param('imu_frame', 'imu_link', 'frame of the IMU'),
    Param('world_frame', 'map', 'frame of the ground-truth pose and layout (REP-105)'),
    Param('odom_frame', 'odom', 'frame of the odometry pose (REP-105)'),
    Param('base_frame', 'base_link', 'the robot\'s body frame (REP-105)'),
    Param('odom_slip', 0.03, 'odometry: per-step relative wheel-speed error, 1 sigma',
          low=0.0, high=1.0),
    Param('odom_yaw_noise', 0.03, 'odometry: heading noise while moving, rad/s, 1 sigma',
          low=0.0, high=1.0),
]

UNUSED_VARIANCE = 1e6     # z, roll, pitch of a planar robot: unknown, as diff_drive does


def odometry_msg(odom, stamp, odom_frame: str = 'odom', base_frame: str = 'base_link') -> Odometry:
    """Return the world's Odometry (sage_sim.world.Odometry) as nav_msgs/Odometry (REP-105)."""
    msg = Odometry(child_frame_id=base_frame)
    msg.header.stamp, msg.header.frame_id = stamp, odom_frame
    pose = msg.pose.pose
    pose.position.x, pose.position.y = float(odom.x), float(odom.y)
    pose.orientation.z, pose.orientation.w = math.sin(odom.yaw / 2), math.cos(odom.yaw / 2)
    msg.twist.twist.linear.x, msg.twist.twist.angular.z = float(odom.v), float(odom.w)
    cov = [0.0] * 36                  # row-major over x, y, z, roll, pitch, yaw
    for i, a in enumerate((0, 1, 5)):
        for j, b in enumerate((0, 1, 5)):
            cov[6 * a + b] = float(odom.covariance[i, j])
    for k in (2, 3, 4):
        cov[7 * k] = UNUSED_VARIANCE
    msg.pose.covariance = cov
    twist = [0.0] * 36
    twist[0], twist[35] = map(float, odom.speed_variance)
    for k in (1, 2, 3, 4):            # a diff-drive base cannot move sideways or tilt
        twist[7 * k] = UNUSED_VARIANCE if k > 2 else 1e-9
    msg.twist.covariance = twist
    return msg


class WorldNode(GuardedNode):
    """Step the world on a steady timer and publish its sensors."""

    def __init__(self, **kwargs):
        super().__init__(kwargs.pop('node_name', 'world'), **kwargs)
        self.p = declare_parameters(self, PARAMS)
        if self.p['command_source'] == 'teacher' and self.p['teacher'] == 'none':
            raise ParameterError('world: command_source teacher needs a teacher that drives: '
                                 'set teacher to oracle or operator')
        self.config = WorldConfig(width=self.p['width'], height=self.p['height'],
                                  time_limit_s=self.p['time_limit_s'],
                                  odom_slip=self.p['odom_slip'],
                                  odom_yaw_noise=self.p['odom_yaw_noise'],
                                  faults=parse_faults([s for s in self.p['faults'] if s]))
        self.world = World(self.config, seed=self.p['seed'])
        self.episode = 0
        self.days = Days(self.p['seed'], self.p['day_episodes'], self.p['morning_episodes'],
                         self.p['morning_seed'])
        self.sim_ns = clock_ns(0, self.p['morning_at'])
        self.night_since = None         # wall time the night began; None by day
        self.sleep_cycles = 0           # cycles the sleep node reported so far
        self.cmd = (0.0, 0.0)
        self.cmd_ns = -10**18
        self.diag = Diagnostics(self)
        sensor = qos_from_name('DEFAULT')  # drivers publish reliable (REP-2003)
        self.pub_clock = self.create_publisher(ClockMsg, '/clock', 10)
        self.pub_image = self.create_publisher(Image, 'camera/image_raw', sensor)
        self.pub_info = self.create_publisher(CameraInfo, 'camera/camera_info', sensor)
        self.pub_imu = self.create_publisher(Imu, 'imu/data_raw', sensor)
        self.pub_audio = self.create_publisher(AudioChunk, 'audio/chunk', sensor)
        self.pub_odom = self.create_publisher(Odometry, 'odom', sensor)
        self.pub_instruction = self.create_publisher(String, 'sage/instruction',
                                                     qos_from_name('LATCHED'))
        self.pub_reward = self.create_publisher(Float32, 'sage/reward', 10)
        self.pub_teacher = self.create_publisher(Action, 'sage/teacher_action', 10)
        self.pub_episode = self.create_publisher(String, 'sage/episode', 10)
        self.pub_pose = self.create_publisher(PoseStamped, 'sage/world/robot_pose', 10)
        self.pub_layout = self.create_publisher(String, 'sage/world/layout',
                                                qos_from_name('LATCHED'))
        self.create_subscription(TwistStamped, 'cmd_vel', self._on_cmd_vel, 10)
        self.create_subscription(Action, 'sage/action', self._on_action, 10)
        self.create_subscription(SleepStatus, 'sage/sleep/status', self._on_sleep, 10)
        self.waiting = {t for t in self.p['start_after'] if t}
        for topic in self.waiting:
            kind = Coherence if topic == 'sage/coherence' else Feature
            self.create_subscription(kind, topic, lambda _, t=topic: self.waiting.discard(t),
                                     qos_from_name('SENSOR_DATA'))
        self._wait_from = time.monotonic()
        period = self.config.dt / self.p['real_time_factor']
        self.create_timer(period, self._tick, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._obs = start(self.world, self.days.episode(0)[2], self.p['scene'])
        self._publish(self._obs)

    def _on_sleep(self, msg: SleepStatus) -> None:
        if self.night_since is None:        # cycles slept by day (manual, idle) do not count
            self.sleep_cycles = max(self.sleep_cycles, msg.cycle)
        elif msg.cycle > self.sleep_cycles and msg.phase in ('done', 'rollback', 'idle'):
            self.sleep_cycles = msg.cycle
            self._morning(f'slept: {msg.message}')

    def _night(self) -> None:
        self.sim_ns = next_at(self.sim_ns, self.p['night_at'])
        self.night_since = time.monotonic()
        if not self.count_publishers('sage/sleep/status'):    # nobody to sleep: no night
            self._morning('no sleep node in the graph')
            return
        self.get_logger().info(f'day {self.days.episode(self.episode - 1)[0] + 1} is over: '
                               f'night, the robot sleeps')
        self.diag.set('OK', 'night: waiting for the sleep node to sleep')

    def _morning(self, why: str) -> None:
        self.night_since = None
        self.sim_ns = next_at(self.sim_ns, self.p['morning_at'])
        self.get_logger().info(f'morning of day {self.days.episode(self.episode)[0] + 1} '
                               f'({why[:160]})')
        self._obs = start(self.world, self.days.episode(self.episode)[2], self.p['scene'])
        self._publish(self._obs)

    def _stamp(self):
        from builtin_interfaces.msg import Time
        return Time(sec=self.sim_ns // 10**9, nanosec=self.sim_ns % 10**9)

    def _on_cmd_vel(self, msg: TwistStamped) -> None:
        if self.p['command_source'] == 'cmd_vel':
            self._set_cmd(msg.twist.linear.x, msg.twist.angular.z)

    def _on_action(self, msg: Action) -> None:
        if self.p['command_source'] != 'action':
            return
        if len(msg.continuous) >= 2:
            self._set_cmd(msg.continuous[0], msg.continuous[1])
        elif 0 <= msg.discrete_id < len(ACTIONS):
            self._set_cmd(ACTIONS[msg.discrete_id][1], ACTIONS[msg.discrete_id][2])

    def _set_cmd(self, v: float, w: float) -> None:
        if math.isfinite(v) and math.isfinite(w):
            self.cmd, self.cmd_ns = (float(v), float(w)), self.sim_ns

    def _tick(self) -> None:
        if self.p['episodes'] and self.episode >= self.p['episodes']:
            return
        if self.night_since is not None:        # the clock runs; nothing to see or hear
            self.sim_ns += int(round(self.config.dt * 1e9))
            self.pub_clock.publish(ClockMsg(clock=self._stamp()))
            if time.monotonic() - self.night_since > self.p['night_timeout_s']:
                self._morning(f'no sleep cycle ended in {self.p["night_timeout_s"]:.0f} s')
            return
        if self.waiting:
            waited = time.monotonic() - self._wait_from
            if waited < self.p['start_timeout_s']:
                self._publish(self._obs)       # time stands still until the graph is up
                self.diag.set('OK', f'waiting for {sorted(self.waiting)} before starting')
                return
            self.get_logger().warning(f'never heard {sorted(self.waiting)}: starting anyway '
                                      f'after {waited:.0f} s')
            self.waiting.clear()
        fresh = self.sim_ns - self.cmd_ns <= self.p['command_timeout_s'] * 1e9
        v, w = self.cmd if fresh else (0.0, 0.0)
        if self.p['command_source'] == 'teacher':
            v, w = ACTIONS[self.world.teacher_action(self.p['teacher'])][1:]
        if self.world.t < self.p['opening_s'] - 1e-9:
            v, w = OPENING_TURN[1:]
        obs, _, done, _ = self.world.step(v, w)
        self.sim_ns += int(round(self.config.dt * 1e9))
        self._obs = obs
        self._publish(obs)
        if done:
            self._end_episode()

    def _end_episode(self) -> None:
        day, phase, _ = self.days.episode(self.episode)
        metrics = dict(self.world.metrics(), episode=self.episode,
                       **({'day': day, 'phase': phase} if phase else {}),
                       # the morning suite measures the robot: no night may train on it
                       **({'held_out': True} if phase == 'morning' else {}))
        self.pub_episode.publish(String(data=json.dumps(metrics)))
        if self.p['metrics_file']:
            with open(self.p['metrics_file'], 'a') as f:
                f.write(json.dumps(metrics) + '\n')
        self.episode += 1
        self.diag.set('OK', f'episode {self.episode} done', episodes=self.episode,
                      last_success=metrics['success'])
        if not self.p['episodes'] or self.episode < self.p['episodes']:
            if self.days.ends_day(self.episode - 1):
                self._night()
                return
            # the new episode's first frame is a step later: stamps never repeat
            self.sim_ns += int(round(self.config.dt * 1e9))
            self._obs = start(self.world, self.days.episode(self.episode)[2], self.p['scene'])
            self._publish(self._obs)

    def _publish(self, obs) -> None:
        stamp = self._stamp()
        self.pub_clock.publish(ClockMsg(clock=stamp))
        image = numpy_to_image(obs.image, 'rgb8')
        image.header.stamp, image.header.frame_id = stamp, self.p['camera_frame']
        self.pub_image.publish(image)
        self.pub_info.publish(self._camera_info(image.header))
        imu = Imu()
        imu.header.stamp, imu.header.frame_id = stamp, self.p['imu_frame']
        imu.orientation_covariance[0] = -1.0          # REP-145: no orientation
        imu.angular_velocity.x, imu.angular_velocity.y, imu.angular_velocity.z = obs.gyro
        imu.linear_acceleration.x, imu.linear_acceleration.y, imu.linear_acceleration.z = \
            obs.accel
        for i in (0, 4, 8):
            imu.angular_velocity_covariance[i] = self.config.imu_gyro_noise ** 2
            imu.linear_acceleration_covariance[i] = self.config.imu_accel_noise ** 2
        self.pub_imu.publish(imu)
        audio = AudioChunk(encoding='S16LE', sample_rate=self.config.audio_rate, channels=1,
                           data=obs.audio.astype('<i2').tobytes())
        audio.header.stamp, audio.header.frame_id = stamp, 'microphone_link'
        self.pub_audio.publish(audio)
        self.pub_odom.publish(self._odometry(obs.odom, stamp))
        if obs.instruction:             # the first step of an episode
            self.pub_instruction.publish(String(data=obs.instruction))
            self.pub_layout.publish(String(data=json.dumps(self._layout())))
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = stamp, self.p['world_frame']
        pose.pose.position.x, pose.pose.position.y = float(self.world.x), float(self.world.y)
        pose.pose.orientation.z = math.sin(self.world.yaw / 2)
        pose.pose.orientation.w = math.cos(self.world.yaw / 2)
        self.pub_pose.publish(pose)
        self.pub_reward.publish(Float32(data=obs.reward))
        if self.p['teacher'] == 'none':
            return
        a = self.world.teacher_action(self.p['teacher'])
        teacher = Action(discrete_id=a, discrete_name=ACTION_NAMES[a],
                         continuous=[ACTIONS[a][1], ACTIONS[a][2]], confidence=1.0,
                         source=self.p['teacher'])
        teacher.header.stamp, teacher.header.frame_id = stamp, 'base_link'
        self.pub_teacher.publish(teacher)

    def _layout(self) -> dict:
        w = self.world
        return {'episode': self.episode, 'frame_id': self.p['world_frame'],
                'arena_m': self.config.arena_m, 'robot_radius': self.config.robot_radius,
                'target': w.target_name, 'objects': [
                    {'name': o[4], 'x': float(o[0]), 'y': float(o[1]), 'radius': float(o[2]),
                     'rgb': [int(c) for c in o[3]]} for o in w.objects]}

    def _odometry(self, odom, stamp) -> Odometry:
        return odometry_msg(odom, stamp, self.p['odom_frame'], self.p['base_frame'])

    def _camera_info(self, header) -> CameraInfo:
        c = self.config
        f = c.focal_px
        info = CameraInfo(width=c.width, height=c.height, distortion_model='plumb_bob')
        info.header = header
        info.d = [0.0] * 5
        info.k = [f, 0.0, c.width / 2, 0.0, f, c.height / 2, 0.0, 0.0, 1.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [f, 0.0, c.width / 2, 0.0, 0.0, f, c.height / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
        return info


def main(args=None):
    """Run the world node."""
    from sage_ros.common import run_node
    raise SystemExit(run_node(WorldNode, args))
