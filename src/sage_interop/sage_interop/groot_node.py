"""The GR00T bridge: ask a GR00T policy server for action chunks, feed them to SAGE.

At ``rate_hz`` a worker thread (never the executor) sends the newest camera
image, joint state and instruction to the server (sage_interop.groot) and
publishes the answer: the whole chunk as trajectory_msgs/JointTrajectory on
groot/action_chunk (for an arm controller), and, by ``role``, either a
cognition feature sage/features/cognition_groot (the chunk's first step,
trust 1 while the server answers in time, 0 when it fails) or a teacher label
on sage/teacher_action (the first step of ``teacher_part`` as (v, w)) for the
sleep node to learn from. ``protocol`` picks the server generation (N1.6's
run_gr00t_server.py or N1.5's inference_service.py); ``joint_names`` names the
chunk's columns for a joint_trajectory_controller.
"""

from __future__ import annotations

import threading

import numpy as np
from builtin_interfaces.msg import Duration
from sage_ros.guard import GuardedNode
from sage_ros.image_conv import image_to_rgb
from sage_ros.common import (Diagnostics, Param, declare_parameters, make_feature,
                             qos_from_name, run_node, stamp)
from sage_msgs.msg import Action, Feature
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from sage_interop.groot import GrootClient, GrootError, observation, PROTOCOLS

PARAMS = [
    Param('host', '127.0.0.1', 'GR00T policy server host'),
    Param('port', 5555, 'GR00T policy server port', low=1, high=65535),
    Param('timeout_s', 2.0, 'answer timeout', low=0.05, high=120.0),
    Param('rate_hz', 2.0, 'requests per second', low=0.05, high=100.0),
    Param('camera_key', 'ego_view', 'GR00T video key the camera image is sent as'),
    Param('state_part', 'arm', 'GR00T state key the joint positions are sent as'),
    Param('role', 'cognition', 'what SAGE does with the actions', choices=('cognition',
                                                                           'teacher')),
    Param('feature_dim', 32, 'cognition role: length of the feature (padded or cut)', low=1,
          high=4096),
    Param('teacher_part', 'action.base', 'teacher role: action key whose first two values '
          'are (v m/s, w rad/s)'),
    Param('action_hz', 20.0, 'time between chunk steps is 1/action_hz', low=0.1, high=1000.0),
    Param('protocol', 'n1.6', 'server generation: n1.6 (run_gr00t_server.py) or n1.5 '
          '(scripts/inference_service.py)', choices=PROTOCOLS),
    Param('language_key', 'task', 'n1.6: language key of the instruction'),
    Param('api_token', '', 'token the server asks for (empty: none)'),
    Param('joint_names', [''], 'names of the chunk\'s columns for an arm controller, in the '
          'order of the sorted action keys (empty: action.<part>/<i>)'),
]


class GrootNode(GuardedNode):
    """See the module doc."""

    def __init__(self, **kwargs):
        super().__init__(kwargs.pop('node_name', 'groot'), **kwargs)
        self.p = declare_parameters(self, PARAMS)
        self.diag = Diagnostics(self)
        self.client = GrootClient(self.p['host'], self.p['port'], self.p['timeout_s'],
                                  self.p['api_token'], self.p['protocol'])
        self.image = self.joints = None
        self.task = ''
        self.answers = self.failures = 0
        sensor = qos_from_name('SENSOR_DATA')
        self.create_subscription(Image, 'camera/image_raw', self._on_image, sensor)
        self.create_subscription(JointState, 'joint_states', self._on_joints, sensor)
        self.create_subscription(String, 'sage/instruction', self._on_task,
                                 qos_from_name('LATCHED'))
        self.pub_chunk = self.create_publisher(JointTrajectory, 'groot/action_chunk', 10)
        self.pub_feature = self.create_publisher(Feature, 'sage/features/cognition_groot', 10)
        self.pub_teacher = self.create_publisher(Action, 'sage/teacher_action', 10)
        self._busy = threading.Lock()
        self.create_timer(1.0 / self.p['rate_hz'], self._tick)
        self.diag.set('OK', f'waiting for a camera image; server {self.client.address}')

    def _on_image(self, msg: Image) -> None:
        try:
            self.image = image_to_rgb(msg)         # GR00T takes RGB video
        except ValueError as exc:
            self.diag.set('WARN', f'dropped an image: {exc}')

    def _on_joints(self, msg: JointState) -> None:
        self.joints = np.asarray(msg.position, np.float64)

    def _on_task(self, msg: String) -> None:
        self.task = msg.data[:500]

    def _tick(self) -> None:
        if self.image is None or not self._busy.acquire(blocking=False):
            return          # nothing to send yet, or the previous request is still out
        threading.Thread(target=self._ask, daemon=True).start()

    def _ask(self) -> None:
        try:
            states = {self.p['state_part']: self.joints} if self.joints is not None else {}
            obs = observation({self.p['camera_key']: self.image}, states, self.task,
                              protocol=self.p['protocol'], language_key=self.p['language_key'])
            actions = self.client.get_action(obs)
            problem = self._publish(actions)
            self.answers += 1
            self.diag.set('WARN' if problem else 'OK', problem or f'{self.answers} action '
                          f'chunks', answers=self.answers, failures=self.failures)
        except (GrootError, ValueError) as exc:
            self.failures += 1
            self.diag.set('ERROR', f'GR00T: {exc}', failures=self.failures)
            if self.p['role'] == 'cognition':       # an absent policy is not to be trusted
                self.pub_feature.publish(make_feature(
                    self, 'cognition_groot', np.zeros(self.p['feature_dim']), 0.0))
        finally:
            self._busy.release()

    def _publish(self, actions: dict) -> str:
        """Publish a chunk and its use by role; return a problem to report, or ''."""
        keys = sorted(actions)
        chunks = [np.atleast_2d(np.asarray(actions[k], np.float64)) for k in keys]
        horizon = min(c.shape[0] for c in chunks)
        traj = JointTrajectory()
        traj.header.stamp = stamp(self)
        names = [f'{k}/{i}' for k, c in zip(keys, chunks) for i in range(c.shape[1])]
        wanted = [n for n in self.p['joint_names'] if n]
        problem = ''
        if wanted and len(wanted) != len(names):
            problem = (f'joint_names has {len(wanted)} names, the chunk {len(names)} columns '
                       f'({", ".join(keys)}): publishing {names[0]}, ...')
        traj.joint_names = wanted if len(wanted) == len(names) else names
        for t in range(horizon):
            secs = t / self.p['action_hz']
            traj.points.append(JointTrajectoryPoint(
                positions=np.concatenate([c[t] for c in chunks]).tolist(),
                time_from_start=Duration(sec=int(secs), nanosec=int((secs % 1) * 1e9))))
        self.pub_chunk.publish(traj)
        first = np.concatenate([c[0] for c in chunks])
        if self.p['role'] == 'cognition':
            vec = np.zeros(self.p['feature_dim'])
            vec[:min(len(first), len(vec))] = first[:len(vec)]
            self.pub_feature.publish(make_feature(self, 'cognition_groot', vec, 1.0))
        elif self.p['teacher_part'] in actions:
            v, w = (np.ravel(np.atleast_2d(actions[self.p['teacher_part']])[0])[:2].tolist()
                    + [0.0, 0.0])[:2]
            msg = Action(discrete_id=-1, continuous=[float(v), float(w)], confidence=1.0,
                         source='groot')
            msg.header.stamp = stamp(self)
            self.pub_teacher.publish(msg)
        return problem

    def destroy_node(self):
        """Wait for a request in flight (zmq sockets are not thread-safe), close, destroy."""
        self._busy.acquire(timeout=self.client.timeout_ms / 1000 + 1.0)
        self.client.close()
        return super().destroy_node()


def main(args=None):
    """Run the GR00T bridge."""
    raise SystemExit(run_node(GrootNode, args))
